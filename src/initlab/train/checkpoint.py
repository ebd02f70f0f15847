"""Checkpoints that survive crashes: atomic writes, a last-good copy, loud failures.

Layout in a run directory:

* ``checkpoint.pt`` -- the newest checkpoint;
* ``checkpoint.last_good.pt`` -- the one before it (kept so that a checkpoint damaged after it
  was written, e.g. by a full disk or a bad copy, never costs the whole run).

A checkpoint is written to a temporary file in the same directory, flushed and fsync'ed, and only
then renamed over the old one (``os.replace`` is atomic on POSIX), so a kill at any moment leaves
either the old or the new file, never a half-written one. A file that cannot be read raises
:class:`~initlab.errors.CheckpointError` naming the file and the fix: a run is never restarted
from scratch behind the user's back.
"""
from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..output import NO_SPACE, write_replace
from .config import ON_RESUME, RUNTIME, TrainConfig

CHECKPOINT = "checkpoint.pt"
LAST_GOOD = "checkpoint.last_good.pt"
FORMAT_VERSION = 1

# config keys that may change between an interrupted run and its resumption: where things are
# written or read from, how fast it runs, what is measured, and the run's length; declared with
# the fields themselves (initlab.train.config: effect=RUNTIME or ON_RESUME)
RESUME_MAY_CHANGE = TrainConfig.fields_with(RUNTIME, ON_RESUME)


def save_checkpoint(state: dict, run_dir: str | os.PathLike) -> Path:
    """Atomically write ``state`` as ``run_dir/checkpoint.pt``; the previous one becomes last-good.

    A full disk (or quota) raises :class:`CheckpointError` ("cannot write the checkpoint: no space
    left ...") and leaves the previous checkpoints as they were.
    """
    run_dir = Path(run_dir)
    path, last_good = run_dir / CHECKPOINT, run_dir / LAST_GOOD
    # serialize in memory first: torch's zip writer reports a failed write as an opaque
    # "unexpected pos" RuntimeError, a plain os.write reports ENOSPC as such
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    data = buf.getbuffer()

    def rotate():
        # a kill between these two renames leaves only last_good + no checkpoint.pt;
        # find_checkpoint() then resumes from last_good, which is the newest complete state
        if path.exists():
            os.replace(path, last_good)

    try:
        write_replace(path, data, before_replace=rotate)
    except OSError as exc:
        kept = find_checkpoint(run_dir)
        keep = (f"the previous checkpoint {kept} (step {_step_of(kept)}) is kept" if kept is not None
                else "no earlier checkpoint exists")
        if exc.errno in NO_SPACE:
            raise CheckpointError(f"cannot write the checkpoint: no space left on the device of "
                                  f"{run_dir} (it needs {len(data) / 2**20:.1f} MiB); {keep}. Free "
                                  f"some space, then resume the run (initlab train --resume "
                                  f"{run_dir}, or rerun the same compare/sweep command)") from None
        raise CheckpointError(f"cannot write the checkpoint in {run_dir}: {exc.strerror or exc}; "
                              f"{keep}. Fix the directory (permissions, mount), then resume the "
                              f"run") from None
    return path


def _step_of(path: Path) -> str:
    try:
        return str(torch.load(path, map_location="cpu", weights_only=False).get("step", "?"))
    except Exception:  # noqa: BLE001 - only used to word an error message
        return "?"


def find_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a resumed run starts from, or None if the directory has none."""
    run_dir = Path(run_dir)
    for name in (CHECKPOINT, LAST_GOOD):
        if (run_dir / name).exists():
            return run_dir / name
    return None


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint; any damage raises :class:`CheckpointError` (never a silent fresh start)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    fix = (f"move {path.parent / LAST_GOOD} over it to resume from the previous checkpoint"
           if path.name == CHECKPOINT and (path.parent / LAST_GOOD).exists()
           else "delete the run directory (or pick another --out) to start over")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError, AttributeError, ImportError, IndexError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: "
                              f"{exc}); {fix}") from exc
    needed = ("format_version", "step", "model", "optimizer", "scheduler", "config")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        missing = [k for k in needed if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"checkpoint {path} is not an initlab training checkpoint "
                              f"(missing {', '.join(missing)}); {fix}")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format {state['format_version']}, this "
                              f"initlab reads format {FORMAT_VERSION}; resume it with the "
                              f"initlab version that wrote it")
    return state


def config_differences(saved: dict, current: dict) -> list[str]:
    """The settings that differ in ways that change what a resumed run computes."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        if key in RESUME_MAY_CHANGE:
            continue
        a, b = saved.get(key), current.get(key)
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)
        if a != b:
            diffs.append(f"{key}: checkpoint has {a!r}, now {b!r}")
    return diffs
