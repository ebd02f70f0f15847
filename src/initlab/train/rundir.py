"""The run directory: what a run leaves on disk besides its checkpoints.

* ``config.json`` -- the :class:`TrainConfig` (``TrainConfig.from_dict`` reads it back);
* ``command.txt`` -- the exact command line, when there was one (resumptions add theirs below);
* ``metrics.csv`` -- one row per evaluation, rewritten atomically after each one (from the
  checkpoint's history on resume, so rows past the checkpoint a killed run never reached vanish);
* ``summary.json`` -- status, final and best metrics, throughput, written at the end (also when
  interrupted or diverged);
* ``run.json`` -- the run's id; every checkpoint carries it, so a checkpoint of another run
  copied into this directory is refused instead of being continued as if it were this run's;
* ``checkpoint.pt`` / ``checkpoint.last_good.pt`` -- see :mod:`initlab.train.checkpoint`;
* ``.initlab.lock`` -- the advisory lock of the process writing the directory
  (:mod:`initlab.train.lock`).

Only rank 0 writes (``main=False`` makes every method a no-op). Temporary files a killed writer
left behind (``.checkpoint.pt.*.tmp`` ...) are removed when a run directory is opened again.
"""
from __future__ import annotations

import csv
import io
import json
import os
import uuid
from pathlib import Path

from ..output import atomic_write_text, remove_orphan_temp_files, write_csv, write_json
from .config import TrainConfig

RUN_FILE = "run.json"


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


class RunDir:
    def __init__(self, path: str | os.PathLike, *, main: bool = True):
        self.path = Path(path)
        self.main = main
        self._fields: list[str] | None = None
        self._rows: list[dict] = []
        if main:
            self.path.mkdir(parents=True, exist_ok=True)
            remove_orphan_temp_files(self.path)

    # -- identity ----------------------------------------------------------------------------
    def run_id(self) -> str | None:
        """The id in ``run.json`` (None when the directory has none: a new or pre-id run)."""
        try:
            data = json.loads((self.path / RUN_FILE).read_text())
        except (OSError, ValueError):
            return None
        value = data.get("run_id") if isinstance(data, dict) else None
        return str(value) if value else None

    def write_run_id(self, run_id: str) -> None:
        if self.main and self.run_id() != run_id:
            write_json(self.path / RUN_FILE, {"run_id": run_id})

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.csv"

    def start(self, config: TrainConfig, command: str | None, history: list[dict], *,
              resumed: bool = False) -> None:
        if not self.main:
            return
        write_json(self.path / "config.json", config.to_dict())
        if command:
            # a resumed run adds its command line under the one that started the run
            previous = ""
            if resumed and (self.path / "command.txt").exists():
                previous = (self.path / "command.txt").read_text()
            atomic_write_text(self.path / "command.txt", previous + command + "\n")
        # metrics.csv restarts from the history the run resumes from
        self._rows = [dict(r) for r in history]
        self._fields = list(history[0]) if history else None
        if history:
            write_csv(self.metrics_path, self._rows, fields=self._fields, exact=True)
        elif self.metrics_path.exists():
            self.metrics_path.unlink()

    def append_metrics(self, row: dict) -> None:
        """One evaluation more: ``metrics.csv`` is rewritten whole and atomically (a reader or a
        kill never sees half a row); the columns are those of the first row."""
        if not self.main:
            return
        if self._fields is None:
            self._fields = list(row)
        self._rows.append(dict(row))
        write_csv(self.metrics_path, self._rows, fields=self._fields, exact=True)

    def write_summary(self, result) -> None:
        if not self.main:
            return
        write_json(self.path / "summary.json", result.to_dict())


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.csv`` with numbers parsed back to int/float."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for k, v in row.items():
                try:
                    parsed[k] = int(v)
                except ValueError:
                    try:
                        parsed[k] = float(v)
                    except ValueError:
                        parsed[k] = v
            rows.append(parsed)
    return rows
