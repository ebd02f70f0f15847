"""The numbers behind the results page: run records of a step, means and spreads over seeds,
paired differences and their significance, the sweep summary over seeds, the training time.

Everything here reads outputs and returns numbers; :mod:`.tables` turns them into Markdown.
The records and their aggregation are the experiments' own (:class:`RunRecord`,
:func:`initlab.experiments.summary.mean_std`, :func:`initlab.experiments.sweep.analyze`).
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

from ..experiments.records import RunRecord
from ..experiments.summary import mean_std as summary_mean_std
from ..experiments.sweep import analyze
from ..output import read_csv, read_json
from .profiles import Step


def mean_std(values: list[float]) -> tuple[float, float]:
    """:func:`initlab.experiments.summary.mean_std` for the tables: the std is nan (not shown) for
    fewer than two finite values."""
    mean, std, n = summary_mean_std(values)
    return mean, (std if n > 1 else math.nan)


def step_records(step_out: Path) -> list[dict]:
    """The step's run records: compare's metrics.json, or (step still running or cut short) the
    finished runs' own result.json files."""
    path = step_out / "metrics.json"
    if path.exists():
        data = read_json(path)
        return data if isinstance(data, list) else data.get("runs", data.get("records", []))
    records = []
    for result in sorted(step_out.glob("runs/*/result.json")):
        r = read_json(result)
        if r.get("status") in ("completed", "diverged"):
            records.append(r)
    return records


def by_init(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by their ``init`` label, in order of first appearance."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["labels"]["init"], []).append(r)
    return groups


def final(r: dict, key: str) -> float:
    """The run's final ``key`` (its ``final`` entry, else the last evaluation that has it)."""
    return RunRecord.from_dict(r).final_metric(key)


def first_reach(history: list[dict], key: str, target: float, higher: bool = True) -> float:
    """Epoch of the first evaluation whose ``key`` reaches ``target`` (nan if never)."""
    for row in history:
        v = row.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and (v >= target if higher else v <= target):
            return float(row.get("epoch", math.nan))
    return math.nan


def paired_delta(runs: list[dict], base: list[dict]) -> tuple[float, float, int]:
    """Mean ± sample std over seeds of (final acc − default's final acc at the same seed), points."""
    by_seed = {r["labels"].get("seed"): final(r, "test_acc") for r in base}
    diffs = [100 * (final(r, "test_acc") - by_seed[r["labels"].get("seed")]) for r in runs
             if r["labels"].get("seed") in by_seed]
    m, sd = mean_std(diffs)
    return m, sd, len(diffs)


def at_step(r: dict, key: str, step: int) -> float:
    """``key`` at the run's first evaluation at or after ``step`` (nan if none)."""
    for row in r["history"]:
        v = row.get(key)
        if row.get("step", -1) >= step and isinstance(v, (int, float)):
            return float(v)
    return math.nan


def first_step_below(r: dict, key: str, target: float) -> float:
    """Step of the run's first evaluation whose ``key`` is at or below ``target`` (nan if never)."""
    for row in r["history"]:
        v = row.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and v <= target:
            return float(row["step"])
    return math.nan


def paired_by_seed(runs: list[dict], base: list[dict], value) -> tuple[float, float, int]:
    """Mean ± sample std over seeds of ``value(run) - value(base run of the same seed)``."""
    by_seed = {r["labels"].get("seed"): value(r) for r in base}
    diffs = [value(r) - by_seed[r["labels"].get("seed")] for r in runs if r["labels"].get("seed") in by_seed]
    m, sd = mean_std(diffs)
    return m, sd, len(diffs)


# two-sided 95% critical values of Student's t for 1..10 degrees of freedom
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def noise_word(delta: tuple[float, float], n: int) -> str:
    """"gain"/"loss" when the paired t-test over ``n`` seeds rejects Δ = 0 at 5%, else "within
    noise" (3 seeds: |Δ| must exceed 4.30 · std/√3 = 2.48 std)."""
    m, sd = delta
    if not math.isfinite(m):
        return ""
    if m == 0:
        return "within noise"
    if n < 2 or not math.isfinite(sd):
        return "within noise"
    t_crit = T_975[min(n - 1, len(T_975)) - 1]
    if sd == 0 or abs(m) / (sd / math.sqrt(n)) > t_crit:
        return "gain" if m > 0 else "loss"
    return "within noise"


def transfer_summary(step_outs: list[Path]) -> dict | None:
    """Average the cells of one (task, param) over seeds, then the sweep analysis on the mean."""
    tables = []
    for d in step_outs:
        path = d / "analysis.json"
        if path.exists():
            tables.append(read_json(path))
    if not tables:
        return None
    widths = [int(w) for w in tables[0]["widths"]]
    lrs = [float(x) for x in tables[0]["lrs"]]
    cells: dict[tuple[int, str], list[float]] = {}
    for t in tables:
        for w, row in t["table"].items():
            for label, v in row.items():
                cells.setdefault((int(w), label), []).append(math.inf if v is None else float(v))
    rows = []
    for (w, label), vals in cells.items():
        finite = [v for v in vals if math.isfinite(v)]
        rows.append({"width": w, "lr": float(label), "value": statistics.fmean(finite) if len(finite) == len(vals)
                     else math.inf})
    a = analyze(rows, widths, lrs, tables[0]["metric"])
    # the spread over seeds: each seed's sweep analysed on its own
    per_seed = [analyze([{"width": int(w), "lr": float(label), "value": v}
                         for w, row in t["table"].items() for label, v in row.items()],
                        widths, lrs, t["metric"]) for t in tables]
    slopes = [b.slope for b in per_seed if b.slope is not None]
    lost = [b.transfer["loss"] for b in per_seed if b.transfer]
    return dict(analysis=a, seeds=len(tables), slope=mean_std(slopes), lost=mean_std(lost))


def training_seconds(out: Path, steps: list[Step]) -> float:
    """Seconds of training behind the tables: every compare run's and sweep cell's own wall time.
    (A step's ``step.json`` holds only its last invocation, which may have added a few runs.)"""
    total = 0.0
    for s in steps:
        if s.command == "sweep":
            path = out / s.key / "sweep.csv"
            if path.exists():
                total += sum(float(row.get("wall_time_s") or 0.0) for row in read_csv(path))
        else:
            total += sum(float(r.get("wall_time_s") or 0.0) for r in step_records(out / s.key))
    return total


__all__ = ["mean_std", "step_records", "by_init", "final", "first_reach", "paired_delta", "T_975",
           "at_step", "first_step_below", "paired_by_seed",
           "noise_word", "transfer_summary", "training_seconds"]
