"""Everything initlab writes for people and other programs: files and tables.

* :func:`atomic_write_text` / :func:`atomic_write_bytes` / :func:`write_replace`: readers see the
  old or the new content, never a mix (a hidden ``.NAME.<random>.tmp`` in the same folder, created
  under the process umask, fsync'ed, renamed, folder fsync'ed; removed on failure, and by
  :func:`remove_orphan_temp_files` if a kill left it);
* :func:`write_json` / :func:`read_json`: one policy for numbers JSON cannot hold: NaN and ±inf are
  written as ``null``, so every file is valid JSON (``allow_nan=False`` guards it); tensors and
  numpy scalars become plain numbers (:func:`python_value`);
* :func:`write_csv`: rows with possibly different keys as one CSV (the union of their columns);
* :func:`atomic_stream`: a file object for data too large to hold in memory (a download), renamed
  into place only when the block ends without an error;
* :func:`text_table` (aligned monospace columns) and :func:`markdown_table`.

This module and :mod:`initlab.plotting` (figures, through :func:`atomic_write_bytes`) are the only
places initlab writes files; ``tests/test_public_api.py`` holds every other module to it.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable


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


NO_SPACE = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new hidden temporary file next to ``path`` (``.NAME.<random>.tmp``).

    Created with mode 0666 so the process umask applies, as for every other file initlab writes
    (``tempfile.mkstemp`` would make it 0600).
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "could not create a unique temporary file", str(path.parent))


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    os.fsync(fd)


def write_replace(path: str | os.PathLike, data, before_replace: Callable[[], None] | None = None) -> Path:
    """Write ``data`` to a temporary file next to ``path``, fsync it, call ``before_replace`` (if
    given), rename it over ``path`` and fsync the folder. On any failure the temporary file is
    removed and ``path`` is as it was; an ``OSError`` (e.g. ENOSPC) is raised as such."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (creating its folder) so readers never see a partial file."""
    return write_replace(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_stream(path: str | os.PathLike):
    """``with atomic_stream(path) as f: f.write(...)``: a binary file object on a hidden temporary
    file next to ``path``; when the block ends normally it is fsync'ed and renamed over ``path``,
    when it raises, the temporary file is removed and ``path`` is as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def remove_orphan_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a writer killed mid-write left in ``folder``.

    Only call this while holding the folder's lock (:mod:`initlab.train.lock`): then no other
    process can be writing one of them.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed


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


def columns_of(rows: list[dict], first: tuple[str, ...] = ()) -> list[str]:
    """``first`` (those present), then every other key in order of first appearance."""
    cols = [c for c in first if any(c in r for r in rows)]
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


def _csv_cell(value):
    if isinstance(value, float):
        return f"{value:.8g}"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(python_value(value))
    return value


def csv_text(rows: list[dict], *, first: tuple[str, ...] = (), fields: list[str] | None = None,
             exact: bool = False) -> str:
    """CSV text of ``rows``: columns ``fields`` (default :func:`columns_of`), blank = missing.
    Floats get 8 significant digits and dicts/lists JSON, unless ``exact`` (values as ``str``
    writes them: a run's metrics.csv reads back to the very floats of its history)."""
    cols = list(fields) if fields is not None else columns_of(rows, first)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row if exact else {k: _csv_cell(v) for k, v in row.items()})
    return buf.getvalue()


def write_csv(path: str | os.PathLike, rows: list[dict], first: tuple[str, ...] = (), *,
              fields: list[str] | None = None, exact: bool = False) -> Path:
    """Rows with possibly different keys -> one CSV with the union of columns, atomically
    (:func:`csv_text` for the options)."""
    return atomic_write_text(path, csv_text(rows, first=first, fields=fields, exact=exact))


def read_csv(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


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


__all__ = ["fsync_dir", "atomic_write_bytes", "atomic_write_text", "atomic_stream", "write_replace", "python_value",
           "to_json", "write_json", "read_json", "columns_of", "csv_text", "write_csv", "read_csv",
           "text_table", "markdown_table"]
