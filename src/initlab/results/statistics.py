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


def _sweep_rows(t: dict) -> list[dict]:
    """One ``analysis.json`` table as the sweep's rows (sizes under ``"width"``, as analyze reads)."""
    return [{"width": int(w), "lr": float(label), "value": math.inf if v is None else float(v)}
            for w, row in t["table"].items() for label, v in row.items()]


def grid_steps(lr_a: float, lr_b: float, lrs: list[float]) -> float:
    """How many steps of the (log-spaced) lr grid lie between ``lr_a`` and ``lr_b`` (signed)."""
    grid = sorted(lrs)
    if len(grid) < 2:
        return math.nan
    step = math.log2(grid[-1] / grid[0]) / (len(grid) - 1)
    return math.log2(lr_b / lr_a) / step


def transfer_summary(step_outs: list[Path]) -> dict | None:
    """Average the cells of one (task, param) over seeds, then the sweep analysis on the mean; the
    same analysis per seed gives the spreads: the fit exponent, the optimum's drift from the
    smallest to the largest size in grid steps, and the loss lost by transferring (absolute and
    in % of the largest size's own best). Width and depth sweeps alike (``analysis.json``'s axis)."""
    tables = []
    for d in step_outs:
        path = d / "analysis.json"
        if path.exists():
            tables.append(read_json(path))
    if not tables:
        return None
    widths = [int(w) for w in tables[0]["widths"]]
    lrs = [float(x) for x in tables[0]["lrs"]]
    axis = tables[0].get("axis", "width")
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
    a = analyze(rows, widths, lrs, tables[0]["metric"], axis=axis)
    # the spread over seeds: each seed's sweep analysed on its own
    per_seed = [analyze(_sweep_rows(t), widths, lrs, t["metric"], axis=axis) for t in tables]
    slopes = [b.slope for b in per_seed if b.slope is not None]
    lost = [b.transfer["loss"] for b in per_seed if b.transfer]
    lost_pct = [100 * b.transfer["loss"] / b.transfer["best_value"] for b in per_seed
                if b.transfer and b.transfer["best_value"] > 0]
    drift = [grid_steps(b.optimum[widths[0]], b.optimum[widths[-1]], lrs) for b in per_seed
             if widths[0] in b.optimum and widths[-1] in b.optimum]
    return dict(analysis=a, seeds=len(tables), slope=mean_std(slopes), lost=mean_std(lost),
                lost_pct=mean_std(lost_pct), drift=mean_std(drift), per_seed=per_seed,
                drift_mean_table=(grid_steps(a.optimum[widths[0]], a.optimum[widths[-1]], lrs)
                                  if widths[0] in a.optimum and widths[-1] in a.optimum else math.nan))


def joint_summary(tuned_outs: list[Path], target_outs: list[Path], *, tuned_at: int, target: int) -> dict | None:
    """The joint move: per seed, the lr tuned in ``tuned_outs``' sweep at size ``tuned_at`` (its grid
    argmin) used in ``target_outs``' sweep (same seed, a grid that contains it) at size ``target``, against
    the best lr there. Returns the per-seed numbers and their mean ± std (None before any pair)."""
    pairs = []
    for a_dir, b_dir in zip(tuned_outs, target_outs):
        pa, pb = a_dir / "analysis.json", b_dir / "analysis.json"
        if not (pa.exists() and pb.exists()):
            continue
        ta, tb = read_json(pa), read_json(pb)
        lrs = [float(x) for x in tb["lrs"]]
        sa = analyze(_sweep_rows(ta), [int(w) for w in ta["widths"]], [float(x) for x in ta["lrs"]], ta["metric"])
        sb = analyze(_sweep_rows(tb), [int(w) for w in tb["widths"]], lrs, tb["metric"])
        if tuned_at not in sa.optimum or target not in sb.optimum:
            continue
        lr = sa.optimum[tuned_at]
        value = min((v for k, v in sb.table[target].items() if math.isclose(k, lr, rel_tol=1e-6)), default=math.nan)
        best = sb.optimum_value[target]
        pairs.append(dict(lr=lr, value=value, best_lr=sb.optimum[target], best_value=best, loss=value - best,
                          loss_pct=100 * (value - best) / best if best > 0 else math.nan,
                          steps=grid_steps(lr, sb.optimum[target], lrs), edge=sb.edge[target]))
    if not pairs:
        return None
    return dict(pairs=pairs, seeds=len(pairs), loss=mean_std([p["loss"] for p in pairs]),
                loss_pct=mean_std([p["loss_pct"] for p in pairs]), steps=mean_std([p["steps"] for p in pairs]),
                value=mean_std([p["value"] for p in pairs]), best=mean_std([p["best_value"] for p in pairs]))


def wd_tau_rows(out: Path, steps: list[Step]) -> list[dict]:
    """Per (train size, τ): the raw decay the timescale implied (1/(lr·τ·steps per epoch), the steps
    per epoch read off the run), final test accuracy and loss over the finished seeds, and, per
    train size, which τ is best (by mean test loss) on the seed-mean and per seed."""
    from ..parametrization import weight_decay_from_timescale
    cells: dict[tuple[int, float], list[dict]] = {}
    for s in steps:
        path = out / s.key / "result.json"
        if path.exists():
            r = read_json(path)
            if r.get("status") == "completed":
                cells.setdefault((s.labels["train_size"], s.labels["tau"]), []).append(dict(r, seed=s.labels["seed"]))
    rows = []
    for (size, tau), runs in sorted(cells.items()):
        f = runs[0]["final"]
        per_epoch = f["step"] / f["epoch"]
        lr = next(s.labels["lr"] for s in steps if s.labels["train_size"] == size)
        rows.append(dict(train_size=size, tau=tau, steps_per_epoch=per_epoch,
                         wd=weight_decay_from_timescale(tau, lr=lr, steps_per_epoch=per_epoch),
                         acc=mean_std([r["final"]["test_acc"] for r in runs]),
                         loss=mean_std([r["final"]["test_loss"] for r in runs]), seeds=len(runs),
                         by_seed={r["seed"]: r["final"]["test_loss"] for r in runs}))
    for size in {r["train_size"] for r in rows}:
        mine = [r for r in rows if r["train_size"] == size]
        best = min(mine, key=lambda r: r["loss"][0])
        for r in mine:
            r["best"] = r is best
        seeds = set.intersection(*(set(r["by_seed"]) for r in mine))
        best_by_seed = {seed: min(mine, key=lambda r: r["by_seed"][seed])["tau"] for seed in seeds}
        for r in mine:
            r["best_tau_by_seed"] = best_by_seed
    return rows


def training_seconds(out: Path, steps: list[Step]) -> float:
    """Seconds of training behind the tables: every compare run's and sweep cell's own wall time.
    (A step's ``step.json`` holds only its last invocation, which may have added a few runs.)"""
    total = 0.0
    for s in steps:
        if s.command == "sweep":
            path = out / s.key / "sweep.csv"
            if path.exists():
                total += sum(float(row.get("wall_time_s") or 0.0) for row in read_csv(path))
        elif s.command == "train":
            path = out / s.key / "result.json"
            if path.exists():
                total += float(read_json(path).get("wall_time_s") or 0.0)
        else:
            total += sum(float(r.get("wall_time_s") or 0.0) for r in step_records(out / s.key))
    return total


__all__ = ["mean_std", "step_records", "by_init", "final", "first_reach", "paired_delta", "T_975",
           "at_step", "first_step_below", "paired_by_seed",
           "noise_word", "grid_steps", "transfer_summary", "joint_summary", "wd_tau_rows", "training_seconds"]
