"""One writer per run directory: an advisory lock that ``train``, ``compare``, ``sweep`` and
``results`` hold on their output directory while they write it.

    with hold_directory("runs/m1"):          # LockedError if another process holds it
        ...

The lock is ``fcntl.flock`` on ``DIR/.initlab.lock``; the file also records who holds it (pid,
host, command, start time) so that a refused process can name the holder in its one-line error.
The kernel drops a ``flock`` when its process dies, however it dies (``kill -9`` included), so a
lock file left by a dead process is simply taken over by the next writer: a stale lock never
blocks anyone, and two live processes never both hold it. The file itself is never deleted
(deleting it would let a third process lock a new file while the second still holds the old one).

Within one process the lock is re-entrant: ``compare`` holds its ``--out`` and each of its runs
locks that run's own directory; ``train`` holds the run directory in the CLI and again in the
engine. Filesystems without ``flock`` (some network mounts) run unlocked.
"""
from __future__ import annotations

import errno
import json
import os
import shlex
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConfigError, LockedError

LOCK_FILE = ".initlab.lock"

_held: dict[str, list] = {}  # realpath of the directory -> [fd, depth]
_held_guard = threading.Lock()


def _describe_os_error(exc: OSError, path: Path, flag: str) -> str:
    where = f"{flag} {path}" if flag else str(path)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) or isinstance(exc, (FileExistsError, NotADirectoryError)):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker == path:
            return f"{where} is a file, not a directory; pass a directory path (it is created if missing)"
        if blocker is not None:
            return f"{where} lies under {blocker}, which is a file; pass a path inside a directory"
        return f"{where} is not a directory ({exc.strerror}); pass a directory path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "the file system is read-only" if exc.errno == errno.EROFS else "permission denied"
        return f"cannot write to {where} ({why}); pick a directory you can write to"
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return f"cannot write to {where}: no space left on the device; free some space or pick another directory"
    return f"cannot use {where} as an output directory ({exc.strerror or exc}); pick another directory"


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    command = str(info.get("command") or "")
    if len(command) > 100:
        command = command[:97] + "..."
    parts = [f"process {info['pid']}"]
    if info.get("host") and info["host"] != socket.gethostname():
        parts.append(f"on {info['host']}")
    extra = ", ".join(x for x in (f"`{command}`" if command else "",
                                  f"since {info['since']}" if info.get("since") else "") if x)
    return " ".join(parts) + (f" ({extra})" if extra else "")


def _own_command() -> str:
    argv = list(sys.argv)
    if not argv or not argv[0]:
        return ""
    if os.path.basename(argv[0]) == "initlab" or argv[0].endswith(os.path.join("initlab", "__main__.py")):
        argv[0] = "initlab"
    return shlex.join(argv)


def _flock(fd: int) -> bool:
    """True once locked (or when the file system has no flock), False if another process holds it."""
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return True  # a file system without flock: run unlocked rather than not at all
        raise


def acquire(path: str | os.PathLike, *, flag: str = "--out", what: str = "directory",
            command: str | None = None) -> None:
    """Create ``path`` if needed and lock it for this process (re-entrant); see the module doc.

    Raises :class:`~initlab.errors.LockedError` naming the holder if another process has it, and
    :class:`~initlab.errors.ConfigError` if ``path`` cannot be a writable directory (a file, under
    a file, read-only, no space).
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(_describe_os_error(exc, path, flag)) from None
    key = os.path.realpath(path)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            return
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            raise ConfigError(_describe_os_error(exc, path, flag)) from None
        try:
            if not _flock(fd):
                holder = _holder(fd)
                raise LockedError(f"{what} {path} is in use by {holder}; only one process may write it: "
                                  f"wait for that one to finish (or stop it), or pass another {flag}")
            if command is None:
                command = _own_command()
            record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, record.encode("utf-8") + b"\n")
        except OSError as exc:
            os.close(fd)
            raise ConfigError(_describe_os_error(exc, path, flag)) from None
        except BaseException:
            os.close(fd)
            raise
        _held[key] = [fd, 1]


def release(path: str | os.PathLike) -> None:
    """Undo one :func:`acquire`; the last one empties the lock file and drops the lock."""
    key = os.path.realpath(path)
    with _held_guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        fd = entry[0]
        try:
            os.ftruncate(fd, 0)  # nobody holds it now; the file stays (see the module doc)
        except OSError:
            pass
        os.close(fd)  # closing the descriptor drops the flock


def is_held(path: str | os.PathLike) -> bool:
    """Whether this process holds the lock of ``path``."""
    return os.path.realpath(path) in _held


@contextmanager
def hold_directory(path: str | os.PathLike, *, flag: str = "--out", what: str = "directory",
                   command: str | None = None, enabled: bool = True):
    """``acquire`` ... ``release`` around a block (a no-op when ``enabled`` is False)."""
    if not enabled:
        yield
        return
    acquire(path, flag=flag, what=what, command=command)
    try:
        yield
    finally:
        release(path)
