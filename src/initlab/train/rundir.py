"""The run directory: what a run leaves on disk besides its checkpoints.

* ``config.json`` -- the :class:`TrainConfig` (``TrainConfig.from_dict`` reads it back);
* ``command.txt`` -- the exact command line, when there was one (resumptions add theirs below);
* ``metrics.csv`` -- one row per evaluation, appended as the run goes (rewritten from the
  checkpoint's history on resume, so rows past the checkpoint a killed run never reached vanish);
* ``summary.json`` -- status, final and best metrics, throughput, written at the end (also when
  interrupted or diverged);
* ``checkpoint.pt`` / ``checkpoint.last_good.pt`` -- see :mod:`initlab.train.checkpoint`.

Only rank 0 writes (``main=False`` makes every method a no-op).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..output import atomic_write_text, write_json
from .config import TrainConfig


class RunDir:
    def __init__(self, path: str | os.PathLike, *, main: bool = True):
        self.path = Path(path)
        self.main = main
        self._fields: list[str] | None = None
        if main:
            self.path.mkdir(parents=True, exist_ok=True)

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
        self._fields = None
        if history:
            buf = io.StringIO()
            self._fields = list(history[0])
            w = csv.DictWriter(buf, fieldnames=self._fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(history)
            atomic_write_text(self.metrics_path, buf.getvalue())
        elif self.metrics_path.exists():
            self.metrics_path.unlink()

    def append_metrics(self, row: dict) -> None:
        if not self.main:
            return
        new = self._fields is None
        if new:
            self._fields = list(row)
        with open(self.metrics_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self._fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
            f.flush()
            os.fsync(f.fileno())

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
