"""Reading a ``--config FILE``: TOML, YAML or JSON, flat keys ('-' in keys read as '_')."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ConfigError
from .flags import CONFIG_FIELDS


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
