"""Fail fast, in one line, on mistakes that would otherwise surface deep inside a run.

Dataset facts (image side, aliases such as ``fmnist``) come from the data module's
:class:`~initlab.data.DatasetSpec`; the init spec and parametrization are checked by building the
run's one :class:`~initlab.schemes.InitPlan`.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..schemes.plan import InitPlan
from ..train.config import TrainConfig


def check_config(config: TrainConfig, *, check_init: bool = True, check_data: bool = True) -> InitPlan | None:
    """Fail fast, in one line, on mistakes that would otherwise surface deep inside a run.

    Returns the run's validated :class:`InitPlan` (``None`` with ``check_init=False``): pass it to
    :func:`initlab.train.run` (``plan=``), which then does not build it again."""
    from ..data import dataset_spec
    from ..models import PRESETS, check_model_options
    from ..train.tasks import default_patch_size

    if config.model not in PRESETS:
        raise ConfigError(f"unknown model preset {config.model!r}; choose one of {', '.join(PRESETS)}")
    cls, preset = PRESETS[config.model]
    if getattr(cls, "TASK", None) != config.task:
        kind = "vit-*" if config.task == "vision" else "gpt-* or llama-*"
        raise ConfigError(f"model {config.model!r} does not fit task {config.task!r}; use a {kind} preset")
    check_model_options(config.model, config.model_options)  # --model-option bogus=1: one line, now
    shape = {**preset, **{k: v for k, v in config.model_options.items() if k in ("width", "heads", "patch_size")}}
    for key in ("width", "depth", "heads", "patch_size"):
        value = getattr(config, key)
        if value is not None:
            if value <= 0:
                raise ConfigError(f"--{key.replace('_', '-')} must be positive, got {value}")
            shape[key] = value
    width, heads = shape["width"], shape["heads"]
    if width % heads:
        divisors = [h for h in range(1, min(width, 16) + 1) if width % h == 0]
        raise ConfigError(f"width {width} is not divisible by heads {heads}; pass --heads that divides the "
                          f"width (e.g. {', '.join(map(str, divisors))})")
    if config.task == "vision":
        side = config.model_options.get("image_size") or dataset_spec(config.data).size
        patch = shape.get("patch_size")
        if patch is None and side:  # the engine's choice when no patch size is given
            patch = default_patch_size(side)
        if side and side % patch:
            options = [p for p in range(1, side + 1) if side % p == 0]
            raise ConfigError(f"patch size {patch} does not divide the {side}x{side} images of {config.data}; "
                              f"use one of {', '.join(map(str, options))}")
        if config.train_size is not None and config.train_size <= 0:
            raise ConfigError(f"--train-size must be positive, got {config.train_size}")
    for name in ("epochs", "steps"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ConfigError(f"--{name} must be positive, got {value}")
    if config.checkpoint_every < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0, got {config.checkpoint_every}")
    if not 0 <= config.label_smoothing < 1:
        raise ConfigError(f"--label-smoothing must be in [0, 1), got {config.label_smoothing}")
    plan = check_init_plan(config) if check_init else None
    if check_data:
        check_data_available(config)
    return plan


def check_init_plan(config: TrainConfig) -> InitPlan:
    """The init spec, every option of every scheme, ``--param`` and their agreement: the run's
    :class:`~initlab.schemes.InitPlan`, built once, before anything trains, and returned."""
    from ..train.init import init_plan
    return init_plan(config)


def check_data_available(config: TrainConfig) -> None:
    """A missing dataset is a one-line error before training, not a traceback during it."""
    from ..data import TEXTS, check_text_available, dataset_spec, locate
    if config.task == "lm":
        name = config.data
        if name in TEXTS:
            check_text_available(name)  # DataError (one line, with the install hint) when absent
            return
        if not Path(name).expanduser().is_file():
            raise ConfigError(f"text data {name!r} not found: pass --data {' or --data '.join(TEXTS)} "
                              f"or the path of a text file")
        return
    # vision: the data module's search path (--data-root, INITLAB_DATA, standard places)
    spec = dataset_spec(config.data)  # ConfigError for an unknown name
    for split in ("train", "test"):
        locate(spec, root=config.data_root, split=split)  # DataError naming where it looked
