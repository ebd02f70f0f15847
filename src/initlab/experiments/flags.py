"""The command-line flags every experiment command shares, each generated from one TrainConfig field.

The flag's name, help, type and group are declared with the field
(:func:`initlab.train.config.setting`); this module turns them into argparse flags and reads the
given ones back (:func:`flag_values`).

Flags default to "not given" (``None``), so a flag overrides the config file only when it is on
the command line; ``--model-option``/``--init-option`` values use initlab's one value grammar
(:func:`initlab.values.parse_value`), the same as options inside an init spec.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from ..train.config import GROUPS, TrainConfig
from ..values import parse_value

CONFIG_FIELDS = {f.name for f in fields(TrainConfig)}


def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), parse_value(value.strip())


OFF = "off"  # "--clip none" (None itself means "flag not given")


def _optional_float(text: str):
    if text.lower() in ("none", "off", "0"):
        return OFF
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _betas(text: str):
    try:
        b1, b2 = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers B1,B2 (e.g. 0.9,0.999), got {text!r}") from None
    return (b1, b2)


_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}
_TYPES = {"key_value": _key_value, "betas": _betas, "optional_float": _optional_float}


def _default(name: str) -> str:
    value = _DEFAULTS[name]
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    return f"default {value}"


def add_config_flags(parser: argparse.ArgumentParser, *, init_flag: bool = True, width_flag: bool = True,
                     lr_flag: bool = True, seed_flag: bool = True) -> None:
    """The flags every experiment command shares: one per :class:`TrainConfig` field, generated from
    the field's :func:`~initlab.train.config.setting` (name, help, type, group), so a new field is a
    new flag with no edit here. A command leaves out the flags it replaces by its own (``compare``
    has ``--inits``, ``sweep`` ``--widths``/``--lrs``)."""
    skip = {name for name, keep in (("init", init_flag), ("width", width_flag), ("lr", lr_flag),
                                    ("seed", seed_flag)) if not keep}
    groups = [parser.add_argument_group(title) for title in GROUPS]
    groups[0].add_argument("--config", metavar="FILE",
                           help="TOML (.toml), YAML (.yaml/.yml) or JSON file of config keys")
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli", False) or f.name in skip:
            continue
        spec = dict(meta["flag"])
        name = spec.pop("name", "--" + f.name.replace("_", "-"))
        if isinstance(spec.get("type"), str):
            spec["type"] = _TYPES[spec["type"]]
        help_text = meta["help"]
        if "{default}" in help_text:
            help_text = help_text.replace("{default}", _default(f.name))
        # None = "not given": only flags on the command line override the config file
        groups[meta["group"]].add_argument(name, dest=f.name, default=None, help=help_text, **spec)
    groups[-1].add_argument("--quiet", action="store_true",
                            help="no live progress line, no per-evaluation or per-run lines")


def flag_values(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line (``None`` = not given)."""
    values = {}
    for name in CONFIG_FIELDS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("model_options", "init_options"):
            value = dict(value)
        elif value is OFF:
            value = None
        values[name] = value
    return values
