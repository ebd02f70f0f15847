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

A checkpoint holds tensors and plain Python values only (the RNG states too), so it is read with
``torch.load(..., weights_only=True)``: opening a checkpoint someone else wrote cannot run their
code. Format-1 checkpoints (initlab before format 2) pickled numpy's RNG state and are refused
with a message; a user who trusts such a file upgrades it once, explicitly::

    python -m initlab.train.upgrade runs/m1    # a run directory or one checkpoint file
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
FORMAT_VERSION = 2  # 2: RNG states as tensors and plain values (weights_only loads)

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


def _reason(exc: Exception) -> str:
    """One line of why torch could not read a file (its weights-only messages span a page)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else type(exc).__name__)
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def _step_of(path: Path) -> str:
    try:
        return str(torch.load(path, map_location="cpu", weights_only=True).get("step", "?"))
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
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():
            raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_reason(exc)}); "
                                  f"{fix}") from exc
        raise CheckpointError(
            f"checkpoint {path} holds pickled Python objects besides tensors (an initlab checkpoint of "
            f"format 1, which stored numpy's RNG state, or a file from elsewhere), so it is not "
            f"loaded: unpickling it could run code from the file. If you trust it, upgrade it once "
            f"with: python -m initlab.train.upgrade {path}") from None
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError, AttributeError, ImportError, IndexError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_reason(exc)}); "
                              f"{fix}") from exc
    needed = ("format_version", "step", "model", "optimizer", "scheduler", "config")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        missing = [k for k in needed if not isinstance(state, dict) or k not in state]
        raise CheckpointError(f"checkpoint {path} is not an initlab training checkpoint "
                              f"(missing {', '.join(missing)}); {fix}")
    # format 1 read safely (no numpy RNG state in it) has the same layout as format 2
    if state["format_version"] not in (1, FORMAT_VERSION):
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


def _plain_rng(rng: dict) -> dict:
    """A format-1 RNG state (numpy's as a tuple holding an array) as format 2 stores it."""
    rng = dict(rng)
    np_state = rng.get("numpy")
    if isinstance(np_state, tuple):
        name, keys, pos, has_gauss, cached = np_state
        rng["numpy"] = {"name": str(name), "keys": torch.as_tensor(keys.astype("int64")),
                        "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return rng


def upgrade_checkpoint(path: str | os.PathLike) -> list[Path]:
    """Rewrite format-1 checkpoints as format 2 (loadable with ``weights_only=True``), in place.

    ``path``: a checkpoint file, or a run directory (its checkpoint and last-good copy). This loads
    the old file with ``weights_only=False``, i.e. it runs whatever the file pickled: call it only
    on files you trust. Returns the files rewritten (files already in format 2 are left alone).
    """
    path = Path(path)
    files = [path / n for n in (CHECKPOINT, LAST_GOOD) if (path / n).exists()] if path.is_dir() else [path]
    if not files or not all(f.exists() for f in files):
        raise CheckpointError(f"no checkpoint at {path}")
    done = []
    for f in files:
        try:
            torch.load(f, map_location="cpu", weights_only=True)
            continue  # already safe to load
        except pickle.UnpicklingError as exc:
            if "unsupported global" not in str(exc).lower():
                raise CheckpointError(f"{f} is corrupt or truncated ({_reason(exc)}); nothing to "
                                      f"upgrade") from None
        except Exception as exc:  # noqa: BLE001 - a damaged file, whatever torch raises for it
            raise CheckpointError(f"{f} is corrupt or truncated ({_reason(exc)}); nothing to "
                                  f"upgrade") from None
        try:
            state = torch.load(f, map_location="cpu", weights_only=False)  # trusted by the caller
        except Exception as exc:  # noqa: BLE001 - a damaged file, whatever torch raises for it
            raise CheckpointError(f"{f} is corrupt or truncated ({_reason(exc)}); nothing to "
                                  f"upgrade") from None
        if not isinstance(state, dict) or state.get("format_version") != 1:
            raise CheckpointError(f"{f} is not an initlab checkpoint of format 1; nothing to upgrade")
        state = {**state, "format_version": FORMAT_VERSION, "rng": _plain_rng(state.get("rng", {}))}
        buf = io.BytesIO()
        torch.save(state, buf)
        try:
            torch.load(io.BytesIO(buf.getvalue()), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CheckpointError(f"{f} holds objects besides tensors and plain values even after its "
                                  f"RNG state is converted ({_reason(exc)}); it cannot be upgraded") from None
        write_replace(f, buf.getbuffer())
        done.append(f)
    return done

