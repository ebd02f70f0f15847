"""Statistics over seeds and the text tables the commands print."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from ..output import text_table
from .records import PRIMARY, RunRecord


def mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean and sample standard deviation (0 for one value) of the finite values, and their count."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return math.nan, math.nan, 0
    mean = statistics.fmean(finite)
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return mean, std, len(finite)


@dataclass(frozen=True)
class MetricSpec:
    key: str  # history key, e.g. test_acc, val_bpc
    higher_is_better: bool
    label: str  # column title
    scale: float = 1.0  # display factor (100 for accuracies stored as fractions)
    digits: int = 2
    title: str = ""  # axis label

    def show(self, mean: float, std: float, n: int) -> str:
        if n == 0:
            return "—"
        m, s = mean * self.scale, std * self.scale
        return f"{m:.{self.digits}f} ± {s:.{self.digits}f}" if n > 1 else f"{m:.{self.digits}f}"


def primary_metric(task: str, records: list[RunRecord] | None = None) -> MetricSpec:
    key, higher = PRIMARY[task]
    if task == "vision":
        # accuracies may be fractions (0..1) or percentages; show percent either way
        values = [r.final_metric(key) for r in records or []]
        finite = [v for v in values if math.isfinite(v)]
        scale = 100.0 if not finite or max(finite) <= 1.0 else 1.0
        return MetricSpec(key, higher, "acc (%)", scale, 2, "test accuracy (%)" if scale == 100 else "test accuracy")
    return MetricSpec(key, higher, "val bpc", 1.0, 3, "validation bits per character")


def summarize(records: list[RunRecord], group_by: str, metric: MetricSpec) -> list[dict]:
    """One row per group (e.g. per init), in first-seen order: mean/std of final and best metric."""
    groups: dict[str, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(str(rec.labels[group_by]), []).append(rec)
    rows = []
    for name, recs in groups.items():
        fm, fs, fn = mean_std([r.final_metric(metric.key) for r in recs])
        bm, bs, bn = mean_std([r.best_metric(metric.key, metric.higher_is_better) for r in recs])
        epochs = [r.epochs_done() for r in recs]
        em, _, _ = mean_std(epochs)
        wall = [r.wall_time_s for r in recs]
        per_epoch = [r.wall_time_s / e for r, e in zip(recs, epochs) if math.isfinite(e) and e > 0]
        pm, _, _ = mean_std(per_epoch)
        statuses = sorted({r.status for r in recs})
        rows.append({
            group_by: name,
            "seeds": len(recs),
            "seed_list": ",".join(str(r.labels.get("seed", "")) for r in recs),
            f"final_{metric.key}_mean": fm, f"final_{metric.key}_std": fs,
            f"best_{metric.key}_mean": bm, f"best_{metric.key}_std": bs,
            "epochs": em,
            "s_per_epoch": pm,
            "wall_time_s_mean": mean_std(wall)[0],
            "wall_time_s_total": float(sum(wall)),
            "status": "+".join(statuses),
            "n_finite": fn,
            "n_best_finite": bn,
        })
    return rows


def format_table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """Plain monospace table with a rule under the header; ``align`` is one char per column
    ('l' or 'r'; default: first left, the rest right)."""
    return text_table([header, *rows], align=align or "l" + "r" * (len(header) - 1), rule=True)


def compare_table(summary: list[dict], metric: MetricSpec, group_by: str = "init") -> str:
    header = [group_by, f"final {metric.label}", f"best {metric.label}", "seeds", "epochs", "s/epoch", "wall (s)", "status"]
    rows = []
    for row in summary:
        k = metric.key
        rows.append([
            row[group_by],
            metric.show(row[f"final_{k}_mean"], row[f"final_{k}_std"], row["n_finite"]),
            metric.show(row[f"best_{k}_mean"], row[f"best_{k}_std"], row["n_best_finite"]),
            str(row["seeds"]),
            _num(row["epochs"], 3),
            _num(row["s_per_epoch"], 3),
            _num(row["wall_time_s_mean"], 3),
            row["status"],
        ])
    return format_table(header, rows, "lrrrrrrl")


def _num(value: float, sig: int) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) >= 10 ** sig:
        return f"{value:.0f}"
    return f"{value:.{sig}g}"
