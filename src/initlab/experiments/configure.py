"""From command-line flags and a TOML/YAML file to a checked :class:`TrainConfig`.

Precedence: TrainConfig defaults < task defaults (``--task lm`` picks Shakespeare and a GPT) <
``--config FILE`` < flags. The flags live in :mod:`.flags`, the file reader in
:mod:`.config_file`, the checks in :mod:`.checks` and the command bookkeeping in :mod:`.commands`.
"""
from __future__ import annotations

import argparse

from ..train.config import TrainConfig
from .config_file import load_config_file, split_file_values
from .flags import flag_values

LM_DEFAULTS = {"data": "shakespeare", "model": "gpt-mini"}


def build_config(args: argparse.Namespace, *, extra_keys: tuple[str, ...] = (),
                 base: dict | None = None) -> tuple[TrainConfig, dict]:
    """The effective TrainConfig and the command-level keys (from the file, overridden by flags).

    ``base`` (e.g. the config.json of a run being resumed) sits below the file and the flags. The
    config is not checked here: :func:`~initlab.experiments.checks.check_config` checks it and
    returns its :class:`~initlab.schemes.InitPlan`, which the caller passes on to the engine.
    """
    file_config, file_extra = {}, {}
    if getattr(args, "config", None):
        file_config, file_extra = split_file_values(load_config_file(args.config), extra_keys, args.config)
    flags = flag_values(args)
    values = dict(base or {})
    task = flags.get("task", file_config.get("task", values.get("task", "vision")))
    if task == "lm" and not base:
        values.update(LM_DEFAULTS)
    values.update(file_config)
    for key in ("model_options", "init_options"):  # dict flags merge into the file's dict
        if key in flags:
            flags[key] = {**dict(values.get(key) or {}), **flags[key]}
    values.update(flags)
    if "epochs" in flags and "steps" not in flags:
        values["steps"] = None  # a flag picks the budget unit, whatever the file said
    if "steps" in flags and "epochs" not in flags:
        values["epochs"] = None
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    extra = {k: getattr(args, k) for k in extra_keys if getattr(args, k, None) is not None}
    extra = {**file_extra, **extra}
    return TrainConfig.from_dict(values), extra
