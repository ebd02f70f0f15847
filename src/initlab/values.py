"""The one grammar for option values written as text: ``key=value`` in an init spec
(``mimetic(qk=yes)``), ``--init-option``/``--model-option`` flags and config files.

``true/yes/on`` and ``false/no/off`` are booleans, ``none/null`` is None, integers and floats are
numbers, ``[...]``/``{...}`` are JSON, and anything else is a string (surrounding quotes dropped).
"""
from __future__ import annotations

import json

TRUE = ("true", "yes", "on")
FALSE = ("false", "no", "off")
NONE = ("none", "null")


def parse_value(text: str):
    """``"yes"`` -> True, ``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"none"`` -> None, ``"[1, 2]"`` -> [1, 2],
    ``"'a'"`` -> ``"a"``; anything else stays the (stripped) string."""
    t = str(text).strip()
    low = t.lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    if low in NONE:
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        pass
    if t[:1] in "[{":
        try:
            return json.loads(t)
        except ValueError:
            return t
    return t.strip("'\"")


__all__ = ["parse_value"]
