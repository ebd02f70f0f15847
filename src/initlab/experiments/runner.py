"""Running one configured training through the engine, with a record on disk.

Every experiment cell goes through :func:`run_cell`: it calls ``initlab.train.run`` (looked up at
call time, so tests can substitute a fake engine) and leaves ``result.json`` in the run directory
(plus ``config.json``/``metrics.csv`` when the engine wrote none). A cell whose ``result.json``
says it finished with the same config is not run again, and one with a checkpoint resumes: that is
what makes ``compare`` and ``sweep`` resumable.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import Interrupted
from ..train.config import RUNTIME, TrainConfig
from ..train.distributed import env_rank
from ..train.lock import hold_directory
from .records import RunRecord, load_run_record, write_json, write_run_files

FINISHED = ("completed", "diverged")  # a diverged run is a result (inf loss), not something to retry

# config fields that do not change what a run computes: declared with the fields (effect=RUNTIME)
_NON_IDENTITY = TrainConfig.fields_with(RUNTIME)


def slug(text: str) -> str:
    """A file-name-safe form of an init spec or label."""
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", str(text)).strip("_") or "run"


def engine_run():
    """``initlab.train.run``, looked up at call time (tests substitute a fake engine)."""
    from .. import train as engine
    return engine.run


def identity(config: TrainConfig | dict) -> dict:
    """The fields that decide what a run computes. A field at None is left out, so a record saved
    before an optional field existed (``base_depth``, ``wd_tau``, ...) keeps its identity."""
    d = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    d = {k: v for k, v in d.items() if k not in _NON_IDENTITY and v is not None}
    if "betas" in d:
        d["betas"] = list(d["betas"])
    return d


def finished_record(config: TrainConfig, run_dir: Path) -> RunRecord | None:
    """The stored record of this exact config in ``run_dir`` if it finished, else None."""
    record = load_run_record(run_dir)
    if record is None or record.status not in FINISHED:
        return None
    saved = record.extra.get("config")
    if saved is None or identity(saved) != identity(config):
        return None
    return record


def save_config(config: TrainConfig, run_dir: Path) -> None:
    write_json(Path(run_dir) / "config.json", config.to_dict())


def run_cell(config: TrainConfig, labels: dict, *, plan=None, progress=True, reuse: bool = True,
             command: str | None = None) -> tuple[RunRecord, bool]:
    """Train ``config`` (its ``out`` is the run directory); return (record, reused?).

    ``plan``: the config's :class:`~initlab.schemes.InitPlan` (from
    :func:`~initlab.experiments.checks.check_config`), handed to the engine; ``progress``: a bool
    or a :class:`~initlab.progress.Progress` (rank 0 only).

    With ``reuse``, a run directory whose ``result.json`` holds a finished run of the same config is
    read instead of trained again, and one that holds a checkpoint (an interrupted run) is resumed:
    the engine refuses, in one line, a checkpoint whose config differs in what it computes.
    """
    run_dir = Path(config.out)
    main = is_main_process()
    # one writer per run directory (re-entrant: the engine takes the same lock again)
    with hold_directory(run_dir, flag="--out", what="run directory", command=command, enabled=main):
        return _run_cell(config, labels, run_dir, main, plan=plan, progress=progress, reuse=reuse,
                         command=command)


def _run_cell(config: TrainConfig, labels: dict, run_dir: Path, main: bool, *, plan, progress,
              reuse: bool, command: str | None) -> tuple[RunRecord, bool]:
    if reuse:
        record = finished_record(config, run_dir)
        if record is not None:
            return record, True
        if _has_checkpoint(run_dir):
            config = config.replace(resume=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    if main and not (run_dir / "config.json").exists():
        save_config(config, run_dir)
    kwargs = {"progress": progress if main else False}
    if plan is not None:
        kwargs["plan"] = plan
    if command is not None:
        kwargs["command"] = command
    result = engine_run()(config, **kwargs)
    record = RunRecord.from_result(result, labels)
    record.run_dir = str(run_dir)
    record.extra["config"] = config.to_dict()
    if getattr(result, "signal", None) is not None:
        record.extra["signal"] = int(result.signal)
    for key in ("step", "total_steps"):  # where an interrupted or diverged run stopped
        if isinstance(getattr(result, key, None), int):
            record.extra[key] = getattr(result, key)
    if main:  # under torchrun only rank 0 writes files (the engine already does the same)
        if not (run_dir / "config.json").exists():
            save_config(config, run_dir)
        write_run_files(record, run_dir)
    return record, False


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a torchrun launch."""
    return env_rank() == 0


def stop_if_interrupted(record: RunRecord) -> None:
    """A run stopped by Ctrl-C/SIGTERM stops the whole experiment (not just that run)."""
    if record.status == "interrupted":
        import signal
        import sys

        signum = int(record.extra.get("signal") or signal.SIGINT)
        print(f"run in {record.run_dir} interrupted; its checkpoint is kept: rerun the same command to "
              f"continue", file=sys.stderr)
        raise Interrupted(signum)


def _has_checkpoint(run_dir: Path) -> bool:
    """An engine checkpoint in ``run_dir`` (checkpoint.pt or its last-good copy)."""
    from ..train.checkpoint import find_checkpoint
    return run_dir.is_dir() and find_checkpoint(run_dir) is not None
