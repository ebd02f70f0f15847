"""Run records: what one training run produced, as plain rows, and how it is written to disk.

A :class:`RunRecord` is the engine's ``RunResult`` reduced to JSON-able data plus the labels of
the experiment cell it belongs to (init, seed, width, lr). Files are written atomically
(:mod:`initlab.output`), so an interrupted command never leaves half a CSV behind.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..output import columns_of, python_value, read_csv, read_json, write_csv, write_json

# Primary metric per task: (history key, higher is better, label, scale for display)
PRIMARY = {
    "vision": ("test_acc", True),
    "lm": ("val_bpc", False),
}


@dataclass
class RunRecord:
    labels: dict  # e.g. {"init": "mimetic", "seed": 0}
    history: list[dict]
    final: dict
    best: dict
    wall_time_s: float
    status: str
    run_dir: str | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_result(cls, result, labels: dict) -> "RunRecord":
        history = [python_value(dict(row)) for row in (getattr(result, "history", None) or [])]
        run_dir = getattr(result, "run_dir", None)
        return cls(labels=dict(labels), history=history,
                   final=python_value(dict(getattr(result, "final", None) or (history[-1] if history else {}))),
                   best=python_value(dict(getattr(result, "best", None) or {})),
                   wall_time_s=float(getattr(result, "wall_time_s", 0.0) or 0.0),
                   status=str(getattr(result, "status", "completed")),
                   run_dir=str(run_dir) if run_dir is not None else None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunRecord":
        return cls(labels=d["labels"], history=d.get("history") or [], final=d.get("final") or {},
                   best=d.get("best") or {}, wall_time_s=d.get("wall_time_s", 0.0),
                   status=d.get("status", "?"), run_dir=d.get("run_dir"), extra=d.get("extra", {}))

    def exit_code(self) -> int:
        """What ``initlab train`` exits with for this run: 128 + the signal when interrupted (130
        SIGINT, 143 SIGTERM), 1 when diverged (a result, not a crash), else 0."""
        if self.status == "interrupted":
            import signal
            return 128 + int(self.extra.get("signal") or signal.SIGINT)
        return 1 if self.status == "diverged" else 0

    # ---- derived numbers ------------------------------------------------------------------
    def final_metric(self, key: str) -> float:
        """The metric at the end of training (``final``, else the last history row that has it)."""
        if key in self.final and _is_number(self.final[key]):
            return float(self.final[key])
        for row in reversed(self.history):
            if key in row and _is_number(row[key]):
                return float(row[key])
        return math.nan

    def best_metric(self, key: str, higher_is_better: bool) -> float:
        """Best value over evaluations (the engine's ``best`` if it has the key)."""
        if key in self.best and _is_number(self.best[key]):
            return float(self.best[key])
        values = [float(row[key]) for row in self.history if key in row and _is_number(row[key])]
        values = [v for v in values if math.isfinite(v)]
        if not values:
            return math.nan
        return max(values) if higher_is_better else min(values)

    def epochs_done(self) -> float:
        for source in (self.final, *reversed(self.history)):
            if _is_number(source.get("epoch")):
                return float(source["epoch"])
        return math.nan

    def curve(self, key: str, x: str = "epoch") -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for row in self.history:
            if key in row and _is_number(row[key]) and _is_number(row.get(x)):
                xs.append(float(row[x]))
                ys.append(float(row[key]))
        return xs, ys


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
# one CSV writer for every table initlab writes: initlab.output (columns_of, write_csv, read_csv)


def write_run_files(record: RunRecord, run_dir: str | os.PathLike) -> None:
    """Per-run metrics: ``result.json`` (labels, history, final, best, status, config) and
    ``metrics.csv`` (one row per evaluation) unless the engine already wrote it."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.csv").exists():
        write_csv(run_dir / "metrics.csv", record.history, first=("step", "epoch"))
    write_json(run_dir / "result.json", record.to_dict())


def load_run_record(run_dir: str | os.PathLike) -> RunRecord | None:
    """The record a finished run left in ``run_dir/result.json`` (None if absent or unreadable)."""
    path = Path(run_dir) / "result.json"
    if not path.is_file():
        return None
    try:
        return RunRecord.from_dict(read_json(path))
    except (ValueError, KeyError, TypeError):
        return None
