"""Everything initlab writes for people and other programs: files and tables.

* :func:`atomic_write_text` / :func:`atomic_write_bytes`: readers see the old or the new content,
  never a mix (temporary file in the same folder, flushed and fsync'ed, renamed, folder fsync'ed);
* :func:`write_json` / :func:`read_json`: one policy for numbers JSON cannot hold: NaN and ±inf are
  written as ``null``, so every file is valid JSON (``allow_nan=False`` guards it); tensors and
  numpy scalars become plain numbers (:func:`python_value`);
* :func:`text_table` (aligned monospace columns) and :func:`markdown_table`.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (creating its folder) so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def python_value(value):
    """Tensors/numpy scalars -> Python numbers, recursively (tuples -> lists, keys -> str); NaN kept."""
    if isinstance(value, dict):
        return {str(k): python_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [python_value(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            return str(value)
    return str(value)


def _null_nonfinite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _null_nonfinite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_null_nonfinite(v) for v in value]
    return value


def to_json(data, *, indent: int | None = 2) -> str:
    """Valid JSON text of ``data``: NaN and ±inf become null."""
    return json.dumps(_null_nonfinite(python_value(data)), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, data, *, indent: int | None = 2) -> Path:
    """Atomically write ``data`` as valid JSON (NaN and inf as null); returns the path."""
    return atomic_write_text(path, to_json(data, indent=indent) + "\n")


def read_json(path: str | os.PathLike):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def text_table(rows, *, align: str | None = None, rule: bool = False) -> str:
    """Aligned monospace columns. ``rows[0]`` is the header; ``align`` has one ``l``/``r`` per
    column (default all left); ``rule`` puts a dashed line under the header."""
    rows = [[str(c) for c in r] for r in rows]
    n = max(len(r) for r in rows)
    align = align or "l" * n
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(n)]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    lines = [line(r) for r in rows]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


__all__ = ["fsync_dir", "atomic_write_bytes", "atomic_write_text", "python_value", "to_json", "write_json", "read_json",
           "text_table", "markdown_table"]
