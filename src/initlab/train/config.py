"""Configuration of one training run: what the CLI builds from flags or a TOML/YAML file.

Shared contract between the training engine (:mod:`initlab.train`) and the experiment commands
(``initlab train``/``compare``/``sweep``). Everything a run needs to be reproduced is here, and
``to_dict()`` is what a run directory's ``config.json`` holds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from ..errors import ConfigError


@dataclass
class TrainConfig:
    # task and data
    task: str = "vision"  # "vision" | "lm"
    data: str = "fashion-mnist"  # vision: fashion-mnist|mnist|cifar10|cifar100; lm: shakespeare|PATH
    data_root: str | None = None  # explicit dataset location (else INITLAB_DATA, then standard places)
    train_size: int | None = None  # class-balanced subset of the training split (vision)
    augment: bool = True  # vision: random crop with padding (+ flips where they make sense)
    block_size: int = 128  # lm: context length
    tokenizer: str = "char"  # lm: char (distinct characters of the text) | byte (UTF-8 bytes)
    # model
    model: str = "vit-micro"  # preset name from initlab.models.PRESETS
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    patch_size: int | None = None
    model_options: dict = field(default_factory=dict)  # pos, pool, fused_qkv, bias, ln_affine, ...
    # initialization and parametrization
    init: str = "default"  # scheme name from initlab.schemes (default, mimetic, trunc_normal, ...)
    init_options: dict = field(default_factory=dict)
    param: str = "standard"  # standard | nt | hybrid | mu | s=<float>
    base_width: int | None = None
    # optimization
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    epochs: float | None = None  # either epochs or steps
    steps: int | None = None
    batch_size: int = 128
    warmup: float = 0.05  # fraction of total steps if < 1, else a number of steps
    min_lr_ratio: float = 0.0  # cosine decays to lr * min_lr_ratio
    clip: float | None = 1.0  # gradient-norm clipping (None = off)
    label_smoothing: float = 0.0
    # evaluation, checkpoints, runtime
    eval_every: int | None = None  # steps between evaluations (None: once per epoch / 10 times)
    eval_batches: int | None = None  # cap evaluation cost (lm)
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end and on signals)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: str = "none"  # none | bf16
    compile: bool = False
    fsdp: bool = False  # under torchrun: shard with FSDP2 (fully_shard) instead of DDP
    out: str | None = None  # run directory
    resume: bool = False

    def __post_init__(self):
        if self.task not in ("vision", "lm"):
            raise ConfigError(f"task must be 'vision' or 'lm', got {self.task!r}")
        if self.epochs is not None and self.steps is not None:
            raise ConfigError("give either epochs or steps, not both")
        for name in ("lr", "batch_size"):
            v = getattr(self, name)
            if not (v > 0):
                raise ConfigError(f"{name} must be positive, got {v}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.amp not in ("none", "bf16"):
            raise ConfigError(f"amp must be 'none' or 'bf16', got {self.amp!r}")
        try:
            self.betas = tuple(float(b) for b in self.betas)
        except (TypeError, ValueError):
            raise ConfigError(f"betas must be two numbers B1,B2, got {self.betas!r}; e.g. 0.9,0.999") from None
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), got {self.betas}; e.g. 0.9,0.999 "
                              f"(AdamW's defaults; SGD uses the first as momentum)")
        if not self.eps > 0:
            raise ConfigError(f"eps must be positive, got {self.eps}")
        if self.clip is not None and not self.clip >= 0:
            raise ConfigError(f"clip must be a positive gradient norm, got {self.clip}; to turn "
                              f"clipping off use clip=None (--clip none)")
        if not self.warmup >= 0:
            raise ConfigError(f"warmup must be >= 0 (a fraction of the run if < 1, else steps), got {self.warmup}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})
