"""PNG figures of compare and sweep (drawn without pyplot, see :mod:`initlab.plotting`)."""
from __future__ import annotations

import math
from pathlib import Path

from ..plotting import save, subplots
from .records import RunRecord
from .summary import MetricSpec


def _aligned(curves: list[tuple[list[float], list[float]]]):
    """Points present in every seed's curve (same x), so the band is a real mean ± std."""
    common = None
    for xs, _ in curves:
        common = set(xs) if common is None else common & set(xs)
    xs = sorted(common or [])
    columns = []
    for x in xs:
        columns.append([ys[cxs.index(x)] for cxs, ys in curves])
    return xs, columns


def plot_curves(records: list[RunRecord], metric: MetricSpec, path: str | Path, *, group_by: str = "init",
                x: str = "epoch", title: str | None = None) -> Path:
    """Metric vs epoch, one line per group (mean over seeds) with a ±1 std band."""
    import numpy as np

    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(str(rec.labels[group_by]), []).append(rec)
    fig, ax = subplots(figsize=(6.4, 4.2), dpi=120)
    for name, recs in groups.items():
        curves = [rec.curve(metric.key, x) for rec in recs]
        curves = [c for c in curves if c[0]]
        if not curves:
            continue
        xs, columns = _aligned(curves)
        if not xs:  # seeds evaluated at different points: plot each seed
            for i, (cx, cy) in enumerate(curves):
                ax.plot(cx, np.asarray(cy) * metric.scale, label=name if i == 0 else None)
            continue
        values = np.asarray(columns, dtype=float) * metric.scale
        mean = np.nanmean(values, axis=1)
        line, = ax.plot(xs, mean, marker="o" if len(xs) <= 20 else None, ms=3, label=f"{name} (n={len(curves)})")
        if values.shape[1] > 1:
            std = np.nanstd(values, axis=1, ddof=1)
            ax.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(x)
    ax.set_ylabel(metric.title or metric.key)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # every run diverged before its first evaluation: no curves
        ax.legend()
    ax.set_title(title or f"{metric.key}: mean ± std over seeds")
    return save(fig, path)


def plot_transfer(table: dict[int, dict[float, float]], path: str | Path, *, metric: str, title: str,
                  optimum: dict[int, float] | None = None) -> Path:
    """The classic lr-transfer figure: final loss vs lr (log x), one curve per width."""

    fig, ax = subplots(figsize=(6.4, 4.2), dpi=120)
    finite_all = []
    for width in sorted(table):
        points = sorted(table[width].items())
        lrs = [lr for lr, v in points if v is not None and math.isfinite(v)]
        values = [v for lr, v in points if v is not None and math.isfinite(v)]
        finite_all += values
        line, = ax.plot(lrs, values, marker="o", ms=3, label=f"width {width}")
        if optimum and width in optimum and optimum[width] in table[width]:
            lr_star = optimum[width]
            ax.plot([lr_star], [table[width][lr_star]], marker="*", ms=12, color=line.get_color())
    ax.set_xscale("log")
    if finite_all:  # keep divergent-side blow-ups from flattening the interesting region
        lo = min(finite_all)
        hi = sorted(finite_all)[max(0, int(0.9 * (len(finite_all) - 1)))]
        if hi > lo:
            ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.3 * (hi - lo))
    top = ax.get_ylim()[1]
    for i, width in enumerate(sorted(table)):  # diverged cells: an x at the top edge
        bad = [lr for lr, v in table[width].items() if v is None or not math.isfinite(v)]
        if bad:
            ax.plot(bad, [top] * len(bad), "x", color=f"C{i}", ms=7, clip_on=False,
                    label="diverged" if i == 0 else None)
    ax.set_xlabel("learning rate")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    ax.set_title(title)
    return save(fig, path)
