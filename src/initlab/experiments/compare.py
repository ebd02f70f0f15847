"""``compare``: one training per (init, seed) under one base config, summarized over seeds.

Outputs in ``out``::

    command.txt      the command line
    config.json      base config + inits + seeds
    runs/<init>-s<seed>/   each run's directory (config.json, command.txt, metrics.csv, summary.json,
                           checkpoint.pt from the engine; result.json from compare)
    metrics.csv      every logged row of every run (init, seed, step, epoch, metrics...)
    metrics.json     the same as a list of run records
    summary.csv/json one row per init: final/best metric mean ± std over seeds, epochs, times
    table.txt        the printed table
    curves.png       metric vs epoch per init, mean ± std band
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..output import atomic_write_text, write_csv, write_json
from ..progress import labelled
from ..train.config import TrainConfig
from .plots import plot_curves
from .records import RunRecord
from .runner import run_cell, slug, stop_if_interrupted
from .summary import MetricSpec, compare_table, primary_metric, summarize


@dataclass
class CompareResult:
    records: list[RunRecord]
    summary: list[dict]
    table: str
    metric: MetricSpec
    out: Path
    files: dict[str, Path]


def run_compare(base: TrainConfig, inits: list[str], seeds: list[int], out: str | Path, *,
                plans: dict | None = None, progress=True, log: Callable[[str], None] = print,
                command: str | None = None) -> CompareResult:
    """One run per (init, seed). ``plans`` maps each init to its checked
    :class:`~initlab.schemes.InitPlan` (built when the config was checked; the engine builds it
    when missing)."""
    plans = plans or {}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"base": base.to_dict(), "inits": list(inits), "seeds": list(seeds)})
    records: list[RunRecord] = []
    total = len(inits) * len(seeds)
    for i, init in enumerate(inits):
        for j, seed in enumerate(seeds):
            k = i * len(seeds) + j + 1
            config = base.replace(init=init, seed=seed, out=str(out / "runs" / f"{slug(init)}-s{seed}"), resume=False)
            record, reused = run_cell(config, {"init": init, "seed": seed}, plan=plans.get(init),
                                       progress=labelled(progress, f"[{k}/{total}] {init} s{seed}"),
                                       command=command)
            stop_if_interrupted(record)
            records.append(record)
            log(f"[{k}/{total}] init={init} seed={seed}: {_brief(record, base.task)}"
                + (" (finished earlier, reused)" if reused else ""))
    return write_compare_outputs(records, base.task, out)


def _brief(record: RunRecord, task: str) -> str:
    import math

    metric = primary_metric(task, [record])
    value = record.final_metric(metric.key)
    shown = (f"{value * metric.scale:.{metric.digits}f}{'%' if metric.scale == 100 else ''}"
             if math.isfinite(value) else "—")  # a diverged run has no final value, not "nan%"
    return f"{metric.key}={shown} in {record.wall_time_s:.1f}s [{record.status}]"


def write_compare_outputs(records: list[RunRecord], task: str, out: Path) -> CompareResult:
    metric = primary_metric(task, records)
    summary = summarize(records, "init", metric)
    table = compare_table(summary, metric)
    rows = []
    for rec in records:
        for row in rec.history:
            rows.append({**rec.labels, **row})
    files = {
        "metrics.csv": write_csv(out / "metrics.csv", rows, first=("init", "seed", "step", "epoch")),
        "metrics.json": write_json(out / "metrics.json", [r.to_dict() for r in records]),
        "summary.csv": write_csv(out / "summary.csv", summary),
        "summary.json": write_json(out / "summary.json", {"metric": metric.key,
                                                            "higher_is_better": metric.higher_is_better,
                                                            "rows": summary}),
    }
    files["table.txt"] = atomic_write_text(out / "table.txt", table + "\n")
    files["curves.png"] = plot_curves(records, metric, out / "curves.png", group_by="init",
                                      title=f"{metric.key} per init (mean ± std over seeds)")
    return CompareResult(records, summary, table, metric, out, files)
