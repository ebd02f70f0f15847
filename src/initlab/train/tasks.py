"""The two tasks the engine trains: image classification and character/byte language modelling.

A :class:`Task` bundles what the loop needs and nothing else: the model, the training stream
(batches as a function of the step), the training loss and the evaluation. Data come from
:mod:`initlab.data`; models from :func:`initlab.models.create_model`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .batches import TextStream, VisionStream
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_

LN2 = math.log(2.0)
VAL_FRACTION = 0.1  # lm: the last 10% of the text (contiguous) is the validation split


@dataclass
class Task:
    kind: str  # "vision" | "lm"
    model: nn.Module
    stream: VisionStream | TextStream
    evaluate: Callable[[nn.Module], dict]  # model (possibly wrapped) -> metrics
    items_per_step: int  # images or tokens per global step
    unit: str  # "img" | "tok"
    primary: str  # metric that defines "best": test_acc (max) or val_loss (min)
    info: dict = field(default_factory=dict)  # data facts for summary.json / the checkpoint
    metric_keys: tuple[str, ...] = ()  # what evaluate() returns

    @property
    def steps_per_epoch(self) -> int:
        return self.stream.steps_per_epoch

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                               label_smoothing=label_smoothing)

    def better(self, a: dict, b: dict | None) -> bool:
        if b is None:
            return True
        return a[self.primary] > b[self.primary] if self.primary == "test_acc" else a[self.primary] < b[self.primary]


def preset_family(name: str) -> str:
    from ..models import PRESETS
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    return getattr(PRESETS[name][0], "TASK", "other")


def _overrides(config: TrainConfig) -> dict:
    o = {k: getattr(config, k) for k in ("width", "depth", "heads") if getattr(config, k) is not None}
    return {**o, **config.model_options}


def build_model(config: TrainConfig, **shape) -> nn.Module:
    from ..models import create_model
    family = preset_family(config.model)
    if family != config.task:
        raise ConfigError(f"model {config.model!r} is a {family} model but task is {config.task!r}; "
                          f"pick a {'vit-*' if config.task == 'vision' else 'gpt-* or llama-*'} preset")
    return create_model(config.model, **shape, **_overrides(config))


def _amp(device: torch.device, amp: str):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp == "bf16")


# ---------------------------------------------------------------------------------------------
# vision

def default_patch_size(side: int) -> int:
    """The patch size of a vision run that names none: 7 on 28px images (a 4x4 grid), 4 on 32px
    ones (8x8), else 1. The config check (:mod:`initlab.experiments.checks`) reads it from here."""
    return 7 if side % 7 == 0 else 4 if side % 4 == 0 else 1


def build_vision(config: TrainConfig, device: torch.device, dist: DistInfo) -> Task:
    from ..data import VisionBatches, balanced_subset, dataset_spec, load_vision
    spec = dataset_spec(config.data)
    train = load_vision(config.data, root=config.data_root, split="train")
    test = load_vision(config.data, root=config.data_root, split="test")
    # normalize with the full training split's statistics: a train-size sweep keeps one input scale
    mean, std = train.channel_stats()
    if config.train_size is not None:
        if not 0 < config.train_size <= len(train):
            raise ConfigError(f"train_size must be in 1..{len(train)}, got {config.train_size}")
        train = train.subset(balanced_subset(train.labels, config.train_size, seed=config.seed))
    if config.batch_size > len(train):
        raise ConfigError(f"batch_size {config.batch_size} is larger than the training set "
                          f"({len(train)} examples); lower batch_size or raise train_size")
    c, h, w = train.image_shape
    shape = dict(image_size=h, in_chans=c, num_classes=train.num_classes)
    if config.patch_size is not None:
        shape["patch_size"] = config.patch_size
    elif "patch_size" not in config.model_options:
        shape["patch_size"] = default_patch_size(h)
    model = build_model(config, **shape)
    # every step has exactly batch_size examples (drop_last), whatever the number of processes
    train_batches = VisionBatches(train, batch_size=config.batch_size, device=device, shuffle=True,
                                  augment=config.augment, seed=config.seed, mean=mean, std=std,
                                  drop_last=True, rank=dist.rank, world_size=dist.world_size)
    test_batches = VisionBatches(test, batch_size=max(config.batch_size, 256), device=device,
                                 shuffle=False, augment=False, mean=mean, std=std, drop_last=False,
                                 rank=dist.rank, world_size=dist.world_size)

    @torch.no_grad()
    def evaluate(net: nn.Module) -> dict:
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
        for x, y in test_batches.epoch(0):
            with _amp(device, config.amp):
                logits = net(x)
            logits = logits.float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
            sums[1] += (logits.argmax(-1) == y).sum()
            sums[2] += y.numel()
        all_reduce_(sums, dist)
        loss, correct, n = sums.tolist()
        return {"test_loss": loss / n, "test_acc": correct / n}

    info = dict(dataset=spec.name, train_examples=len(train), test_examples=len(test),
                image_shape=[c, h, w], num_classes=train.num_classes, mean=mean.tolist(),
                std=std.tolist(), augment=str(train_batches.augment), source=train.source)
    return Task("vision", model, VisionStream(train_batches), evaluate, config.batch_size, "img",
                "test_acc", info, ("test_loss", "test_acc"))


# ---------------------------------------------------------------------------------------------
# language modelling

def build_lm(config: TrainConfig, device: torch.device, dist: DistInfo) -> Task:
    from ..data import load_text, lm_eval_batches, split_tokens
    text = load_text(config.data)
    kind = getattr(config, "tokenizer", "char")
    tokenizer = make_tokenizer(kind, text)
    tokens = torch.as_tensor(tokenizer.encode(text), dtype=torch.int64)
    train_tokens, val_tokens = split_tokens(tokens, VAL_FRACTION)
    if len(val_tokens) < config.block_size + 1:
        raise ConfigError(f"the validation split ({len(val_tokens)} tokens, the last 10% of the text) "
                          f"is shorter than block_size+1 = {config.block_size + 1}; use a longer "
                          f"text or a smaller block_size")
    model = build_model(config, vocab_size=tokenizer.vocab_size, block_size=config.block_size)
    stream = TextStream(train_tokens, batch_size=config.batch_size, block_size=config.block_size,
                        seed=config.seed, rank=dist.rank, world_size=dist.world_size, device=device)
    val_tokens = val_tokens.to(device)

    @torch.no_grad()
    def evaluate(net: nn.Module) -> dict:
        sums = torch.zeros(2, dtype=torch.float64, device=device)  # nats, tokens
        batches = lm_eval_batches(val_tokens, config.batch_size, config.block_size,
                                  max_batches=config.eval_batches)
        for i, (x, y) in enumerate(batches):
            if i % dist.world_size != dist.rank:
                continue  # rank r evaluates batches r, r+N, ...
            with _amp(device, config.amp):
                logits = net(x)
            sums[0] += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                                       reduction="sum").double()
            sums[1] += y.numel()
        all_reduce_(sums, dist)
        nats, n = sums.tolist()
        return {"val_loss": nats / n, "val_bpc": nats / n / LN2}

    info = dict(text=config.data, tokenizer=tokenizer.to_dict(), vocab_size=tokenizer.vocab_size,
                train_tokens=len(train_tokens), val_tokens=len(val_tokens), text_chars=len(text))
    return Task("lm", model, stream, evaluate, config.batch_size * config.block_size, "tok",
                "val_loss", info, ("val_loss", "val_bpc"))


def make_tokenizer(kind: str, text: str):
    from ..data import ByteTokenizer, CharTokenizer
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "byte":
        return ByteTokenizer()
    raise ConfigError(f"tokenizer must be 'char' or 'byte', got {kind!r}")


def build_task(config: TrainConfig, device: torch.device, dist: DistInfo) -> Task:
    return (build_vision if config.task == "vision" else build_lm)(config, device, dist)
