"""Parsing of grid flags: ``--lrs 1e-4..1e-1:8``, ``--widths 64,128``, ``--seeds 3``,
``--inits a,b+c(k=1,j=2)``.

All parsers raise :class:`~initlab.errors.ConfigError` with a message that shows the accepted
syntax, so the CLI turns a typo into one line and exit code 2.
"""
from __future__ import annotations

import math

from ..errors import ConfigError

LR_SYNTAX = "use LO..HI:N (N log-spaced values, e.g. 1e-4..1e-1:8) or a comma list (e.g. 1e-3,3e-3)"


def _positive_float(text: str, what: str, whole: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"bad {what} {whole!r}: {text!r} is not a number; {LR_SYNTAX}") from None
    if not (value > 0) or math.isinf(value):
        raise ConfigError(f"bad {what} {whole!r}: {text!r} must be a positive finite number")
    return value


def parse_lrs(spec: str | list | tuple) -> list[float]:
    """Learning rates from ``"LO..HI:N"`` (log-spaced, both ends included) or ``"a,b,c"``.

    A list of numbers (from a TOML/YAML file) is accepted as is. Values come back sorted and
    without duplicates, because a sweep's analysis walks the lr axis in order.
    """
    if isinstance(spec, (list, tuple)):
        values = [_positive_float(str(v), "lr list", str(spec)) for v in spec]
    else:
        text = str(spec).strip().replace(" ", "")
        if not text:
            raise ConfigError(f"empty lr list; {LR_SYNTAX}")
        if ".." in text:
            bounds, sep, count = text.partition(":")
            if not sep:
                raise ConfigError(f"bad lr range {spec!r}: missing ':N' (number of values); {LR_SYNTAX}")
            lo_text, _, hi_text = bounds.partition("..")
            lo = _positive_float(lo_text, "lr range", spec)
            hi = _positive_float(hi_text, "lr range", spec)
            n = _int_at_least(count, 1, f"bad lr range {spec!r}: N={count!r} is not an integer; {LR_SYNTAX}",
                              f"bad lr range {spec!r}: N must be >= 1")
            if lo > hi:
                raise ConfigError(f"bad lr range {spec!r}: LO must not exceed HI; {LR_SYNTAX}")
            if n == 1 or lo == hi:
                values = [lo]
            else:
                a, b = math.log(lo), math.log(hi)
                values = [math.exp(a + (b - a) * i / (n - 1)) for i in range(n)]
                values[0], values[-1] = lo, hi  # exact ends, not exp(log(x))
        else:
            values = [_positive_float(part, "lr list", spec) for part in text.split(",") if part]
    values = sorted(set(float(f"{v:.12g}") for v in values))  # round away float noise of exp/log
    if not values:
        raise ConfigError(f"empty lr list {spec!r}; {LR_SYNTAX}")
    return values


def _int_at_least(text: str, minimum: int, not_int: str, too_small: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(not_int) from None
    if value < minimum:
        raise ConfigError(too_small)
    return value


def _int_list(items, spec, what: str, *, minimum: int, below: str, hint: str = "") -> list[int]:
    """Distinct integers >= ``minimum`` from ``items``, order kept; one-line errors naming ``what``."""
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        value = _int_at_least(text, minimum, f"bad {what} {spec!r}: {text!r} is not an integer{hint}",
                              f"bad {what} {spec!r}: {below.format(value=text.strip())}")
        if value not in out:
            out.append(value)
    return out


def parse_ints(spec: str | int | list | tuple, what: str) -> list[int]:
    """Positive integers from ``"64,128,256"`` (or a list from a config file), order kept."""
    items = spec if isinstance(spec, (list, tuple)) else ([spec] if isinstance(spec, int) else str(spec).split(","))
    out = _int_list(items, spec, what, minimum=1, below="{value} must be positive",
                    hint=" (use a comma list, e.g. 64,128)")
    if not out:
        raise ConfigError(f"empty {what} list")
    return out


def parse_seeds(spec: str | int | list | tuple, first: int = 0) -> list[int]:
    """Seeds from a count (``"3"`` -> first, first+1, first+2) or an explicit list (``"0,7,9"``)."""
    if isinstance(spec, (list, tuple)):
        return _seed_list(list(spec), spec)
    text = str(spec).strip()
    if "," in text:
        return _seed_list(text.split(","), spec)
    count = _int_at_least(text, 1, f"bad --seeds {spec!r}: give a count (e.g. 3) or a comma list (e.g. 0,1,2)",
                          f"bad --seeds {spec!r}: the number of seeds must be >= 1")
    return list(range(first, first + count))


def _seed_list(items, spec) -> list[int]:
    seeds = _int_list(items, spec, "--seeds", minimum=0, below="seeds must be >= 0")
    if not seeds:
        raise ConfigError(f"empty --seeds list {spec!r}")
    return seeds


def parse_names(spec: str | list | tuple, what: str) -> list[str]:
    """Comma-separated names (``"vision,lm"``), order kept, duplicates dropped. Init specs, whose
    options may hold commas, go through :func:`parse_inits`."""
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    names = []
    for item in items:
        name = str(item).strip()
        if name and name not in names:
            names.append(name)
    if not names:
        raise ConfigError(f"empty {what} list")
    return names


def parse_inits(spec: str | list | tuple) -> list[str]:
    """Init specs from ``--inits`` or a config file's ``inits``: split at top-level commas by the
    spec grammar's own splitter (:func:`initlab.schemes.split_specs`), so
    ``"default,trunc_normal(std=0.01,truncate=3)"`` is two specs; order kept, duplicates dropped."""
    from ..schemes import split_specs

    items = spec if isinstance(spec, (list, tuple)) else split_specs(str(spec))
    return parse_names(items, "--inits")


def lr_label(lr: float) -> str:
    """A stable text form of a learning rate, used as a key in CSV files and directory names."""
    return f"{lr:.6g}"
