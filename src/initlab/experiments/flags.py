"""The command-line flags every experiment command shares, each mapped to one TrainConfig field.

Flags default to "not given" (``None``), so a flag overrides the config file only when it is on
the command line; ``--model-option``/``--init-option`` values use initlab's one value grammar
(:func:`initlab.values.parse_value`), the same as options inside an init spec.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from ..train.config import TrainConfig
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


def _default(name: str) -> str:
    value = _DEFAULTS[name]
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    return f"default {value}"


_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def add_config_flags(parser: argparse.ArgumentParser, *, init_flag: bool = True, width_flag: bool = True,
                     lr_flag: bool = True, seed_flag: bool = True) -> None:
    """The flags every experiment command shares; each maps to one :class:`TrainConfig` field."""
    S = None  # "not given": only given flags override the config file
    d = _default
    g = parser.add_argument_group("configuration (flags override --config FILE)")
    g.add_argument("--config", metavar="FILE", help="TOML (.toml), YAML (.yaml/.yml) or JSON file of config keys")
    g.add_argument("--task", choices=("vision", "lm"), default=S, help="image classification or character LM (default vision)")
    g.add_argument("--data", default=S, metavar="NAME|PATH",
                   help="vision: fashion-mnist|mnist|cifar10|cifar100 (default fashion-mnist); "
                        "lm: shakespeare (default) or a text file")
    g.add_argument("--data-root", default=S, metavar="DIR", help="where the dataset files are (else INITLAB_DATA, standard places)")
    g.add_argument("--train-size", type=int, default=S, metavar="N", help="class-balanced training subset (vision; default all)")
    g.add_argument("--no-augment", dest="augment", action="store_const", const=False, default=S,
                   help="no random crop/flip (vision)")
    g.add_argument("--block-size", type=int, default=S, metavar="T", help=f"context length (lm; {d('block_size')})")
    g.add_argument("--tokenizer", choices=("char", "byte"), default=S, help=f"lm tokens ({d('tokenizer')})")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=S, metavar="PRESET",
                   help="preset: vit-micro (default), vit-mini, vit-tiny, ...; gpt-micro, gpt-mini (lm default), gpt-char, ...")
    if width_flag:
        g.add_argument("--width", type=int, default=S, metavar="N", help="override the preset's width")
    g.add_argument("--depth", type=int, default=S, metavar="L", help="override the preset's depth")
    g.add_argument("--heads", type=int, default=S, metavar="H", help="override the preset's heads (must divide width)")
    g.add_argument("--patch-size", type=int, default=S, metavar="P", help="vision patch size (default 7 on 28px, 4 on 32px)")
    g.add_argument("--model-option", dest="model_options", action="append", type=_key_value, default=S,
                   metavar="KEY=VALUE", help="extra model argument, e.g. pos=sincos, pool=mean (repeatable)")
    g = parser.add_argument_group("initialization and parametrization")
    if init_flag:
        g.add_argument("--init", default=S, metavar="SCHEME",
                       help="scheme from `initlab schemes`, or names joined by '+' applied left to right "
                            "(e.g. nt+mimetic); default default")
    g.add_argument("--init-option", dest="init_options", action="append", type=_key_value, default=S,
                   metavar="KEY=VALUE", help="option passed to the scheme(s) (repeatable)")
    g.add_argument("--param", default=S, metavar="P", help=f"standard | nt | hybrid | mu | s=<0..1> ({d('param')})")
    g.add_argument("--base-width", type=int, default=S, metavar="N", help="width at which lr factors are 1")
    g = parser.add_argument_group("optimization")
    g.add_argument("--optimizer", choices=("adamw", "sgd"), default=S, help=d("optimizer"))
    if lr_flag:
        g.add_argument("--lr", type=float, default=S, help=d("lr"))
    g.add_argument("--weight-decay", type=float, default=S, metavar="WD", help=d("weight_decay"))
    g.add_argument("--betas", type=_betas, default=S, metavar="B1,B2", help=d("betas"))
    g.add_argument("--epochs", type=float, default=S, metavar="E", help="training length in epochs (default 1)")
    g.add_argument("--steps", type=int, default=S, metavar="N", help="train for N steps instead of epochs")
    g.add_argument("--batch-size", type=int, default=S, metavar="B", help=d("batch_size"))
    g.add_argument("--warmup", type=float, default=S, help=f"fraction of steps if < 1, else steps ({d('warmup')})")
    g.add_argument("--min-lr-ratio", type=float, default=S, metavar="R", help=f"cosine floor / lr ({d('min_lr_ratio')})")
    g.add_argument("--clip", type=_optional_float, default=S, metavar="NORM|none", help=f"gradient-norm clip ({d('clip')})")
    g.add_argument("--label-smoothing", type=float, default=S, metavar="EPS", help=d("label_smoothing"))
    g = parser.add_argument_group("evaluation and runtime")
    g.add_argument("--eval-every", type=int, default=S, metavar="STEPS",
                   help="steps between evaluations (default: every epoch for vision, 10 per run otherwise)")
    g.add_argument("--eval-batches", type=int, default=S, metavar="N", help="cap on evaluation batches (lm)")
    g.add_argument("--checkpoint-every", type=int, default=S, metavar="STEPS",
                   help="steps between checkpoints (default 0: at the end and on Ctrl-C/SIGTERM)")
    if seed_flag:
        g.add_argument("--seed", type=int, default=S, help=d("seed"))
    g.add_argument("--device", default=S, help="auto | cpu | cuda | cuda:N | mps (default auto)")
    g.add_argument("--amp", choices=("none", "bf16"), default=S, help=d("amp"))
    g.add_argument("--compile", action="store_const", const=True, default=S, help="torch.compile the model")
    g.add_argument("--fsdp", action="store_const", const=True, default=S,
                   help="under torchrun: shard the model with FSDP2 (fully_shard) instead of DDP")
    g.add_argument("--out", default=S, metavar="DIR", help="output directory (default runs/<command>-<time>)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")


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
