"""``sweep``: the width × learning-rate grid behind every "does the lr transfer?" figure.

One training per (width, lr) cell, widest last. Each finished cell is appended to ``sweep.csv``
and leaves ``cells/w<width>/lr<lr>/result.json``; running the same command again skips those
cells (a cell interrupted with a checkpoint resumes), so a sweep can be stopped and continued.

Analysis (:func:`analyze`): the optimal lr per width (grid argmin; a parabola through the argmin
and its two neighbours in log2 lr refines it when the minimum is interior), the shift of log2 lr*
per doubling of width (0 = perfect transfer; -1 means lr* ∝ 1/width), and the loss lost at the
largest width when it uses the lr tuned at the smallest width.

The same grid runs across depth instead (``axis="depth"``, ``initlab sweep --depths 2,4,8,16``):
the sizes are then depths, the cells ``cells/d<depth>/lr<lr>``, and the shift is per doubling of
depth (the depth members ``depth-mup``/``completep`` aim at 0). In ``analysis.json`` the sizes stay
under ``"widths"`` (with ``"axis": "depth"``) so the readers of width sweeps read both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..output import atomic_write_text, read_csv, read_json, write_csv, write_json
from ..progress import labelled
from ..train.config import TrainConfig
from .grid import lr_label
from .plots import plot_transfer
from .records import RunRecord
from .runner import FINISHED, identity, run_cell, stop_if_interrupted
from .summary import format_table

# vision: the training loss averaged over the last evaluation interval (the classic transfer plot
# plots training loss; a held-out loss on a small training subset also measures overfitting)
DEFAULT_METRIC = {"vision": "train_loss", "lm": "val_loss"}
CSV_COLUMNS = ("width", "lr", "status", "metric", "value", "best_value", "wall_time_s", "epochs", "run_dir")


@dataclass
class SweepAnalysis:
    metric: str
    widths: list[int]
    lrs: list[float]
    table: dict[int, dict[float, float]]  # width -> lr -> final metric (inf if diverged)
    optimum: dict[int, float]  # width -> grid argmin lr
    optimum_value: dict[int, float]
    optimum_fit: dict[int, float]  # width -> parabola-refined lr (== grid lr at an edge)
    edge: dict[int, bool]  # optimum on the grid boundary: the true optimum may lie outside
    shifts: list[tuple[int, int, float]]  # (w1, w2, d log2 lr* / d log2 width)
    slope: float | None  # least-squares slope of log2 lr* vs log2 width
    transfer: dict = field(default_factory=dict)
    axis: str = "width"  # what ``widths`` holds: widths, or depths for a depth sweep

    def to_dict(self) -> dict:
        return {
            "metric": self.metric, "axis": self.axis, "widths": self.widths, "lrs": self.lrs,
            "table": {str(w): {lr_label(lr): v for lr, v in row.items()} for w, row in self.table.items()},
            "optimal_lr": {str(w): lr for w, lr in self.optimum.items()},
            "optimal_value": {str(w): v for w, v in self.optimum_value.items()},
            "optimal_lr_fit": {str(w): lr for w, lr in self.optimum_fit.items()},
            "optimum_on_grid_edge": {str(w): e for w, e in self.edge.items()},
            "log2_lr_shift_per_doubling": [{"from": a, "to": b, "shift": s} for a, b, s in self.shifts],
            "log2_lr_slope": self.slope,
            "transfer": self.transfer,
        }

    def report(self) -> str:
        ax = self.axis
        header = [ax, "lr* (grid)", f"{self.metric} at lr*", "lr* (fit)", "note"]
        rows = []
        for w in self.widths:
            if w not in self.optimum:
                rows.append([str(w), "—", "—", "—", "no finite result"])
                continue
            rows.append([str(w), f"{self.optimum[w]:.3g}", f"{self.optimum_value[w]:.4f}",
                         f"{self.optimum_fit[w]:.3g}", "on grid edge" if self.edge[w] else ""])
        lines = [format_table(header, rows, "lrrrl")]
        if self.shifts:
            parts = [f"{a}->{b}: {s:+.2f}" for a, b, s in self.shifts]
            lines.append(f"log2(lr*) shift per {ax} doubling: " + ", ".join(parts)
                         + (f"; fit: lr* ∝ {ax}^{self.slope:+.2f}" if self.slope is not None else ""))
        t = self.transfer
        if t:
            lines.append(f"transfer: lr {t['lr']:.3g} tuned at {ax} {t[f'from_{ax}']} used at {ax} "
                         f"{t[f'to_{ax}']}: {self.metric} {t['value']:.4f} vs best {t['best_value']:.4f} "
                         f"(lr {t['best_lr']:.3g}): {t['loss']:+.4f} lost")
        return "\n".join(lines)


def cell_dir(out: Path, width: int, lr: float, axis: str = "width") -> Path:
    return out / "cells" / f"{axis[0]}{width}" / f"lr{lr_label(lr)}"


def metric_value(record: RunRecord, metric: str) -> float:
    if record.status == "diverged":
        return math.inf
    value = record.final_metric(metric)
    return value if math.isfinite(value) else math.inf


def lowest(record: RunRecord, metric: str) -> float:
    """The lowest value of ``metric`` over the run's evaluations (inf if none is finite)."""
    values = [float(row[metric]) for row in record.history
              if isinstance(row.get(metric), (int, float)) and math.isfinite(float(row[metric]))]
    return min(values) if values else math.inf


def _sweep_identity(base: TrainConfig, axis: str = "width") -> dict:
    d = identity(base)
    d.pop(axis, None)
    d.pop("lr", None)
    return d


AXES = ("width", "depth")


def run_sweep(base: TrainConfig, widths: list[int], lrs: list[float], out: str | Path, *, metric: str | None = None,
              plan=None, progress=True, log: Callable[[str], None] = print,
              command: str | None = None, axis: str = "width") -> tuple[SweepAnalysis, dict]:
    """Every (width, lr) cell under ``base`` (``axis="depth"``: ``widths`` are depths). ``plan``:
    the base config's checked :class:`~initlab.schemes.InitPlan`, shared by every cell (width,
    depth and lr do not enter it)."""
    if axis not in AXES:
        raise ConfigError(f"a sweep runs across width or depth, got axis {axis!r}")
    out = Path(out)
    metric = metric or DEFAULT_METRIC[base.task]
    widths = sorted(widths)
    lrs = sorted(lrs)
    _check_widths(base, widths, axis)
    state_path = out / "sweep.json"
    if state_path.is_file():
        saved = read_json(state_path)
        if identity(saved.get("base") or {}) != _sweep_identity(base, axis) or saved.get("metric") != metric:
            raise ConfigError(f"{out} holds a sweep with a different configuration; pass a new --out "
                              f"(or the same flags as before to resume it)")
    out.mkdir(parents=True, exist_ok=True)
    write_json(state_path, {"base": _sweep_identity(base, axis), "metric": metric, "config": base.to_dict()})

    csv_path = out / "sweep.csv"
    rows = {}
    if csv_path.is_file():
        for row in read_csv(csv_path):
            try:
                rows[(int(row[axis]), lr_label(float(row["lr"])))] = row
            except (KeyError, ValueError):
                continue
    cells = [(w, lr) for w in widths for lr in lrs]
    ran = skipped = 0
    for k, (width, lr) in enumerate(cells, 1):
        key = (width, lr_label(lr))
        if key in rows and rows[key].get("status") in FINISHED:
            skipped += 1
            continue
        config = base.replace(**{axis: width}, lr=lr, out=str(cell_dir(out, width, lr, axis)), resume=False)
        record, reused = run_cell(config, {axis: width, "lr": lr}, plan=plan, command=command,
                                  progress=labelled(progress, f"[{k}/{len(cells)}] {axis[0]}{width} lr {lr:.3g}"))
        ran += 0 if reused else 1
        skipped += 1 if reused else 0
        stop_if_interrupted(record)
        value = metric_value(record, metric)
        rows[key] = {
            axis: width, "lr": lr_label(lr), "status": record.status, "metric": metric,
            "value": value, "best_value": lowest(record, metric),
            "wall_time_s": record.wall_time_s, "epochs": record.epochs_done(), "run_dir": record.run_dir,
        }
        write_csv(csv_path, _sorted_rows(rows), first=_columns(axis))
        log(f"[{k}/{len(cells)}] {axis}={width} lr={lr:.3g}: {metric}={value:.4f} "
            f"in {record.wall_time_s:.1f}s [{record.status}]" + (" (finished earlier, reused)" if reused else ""))
    write_csv(csv_path, _sorted_rows(rows), first=_columns(axis))
    analysis = analyze(rows.values(), widths, lrs, metric, axis=axis)
    write_json(out / "analysis.json", analysis.to_dict())
    atomic_write_text(out / "report.txt", analysis.report() + "\n")
    plot = plot_transfer(analysis.table, out / "transfer.png", metric=f"final {metric}",
                         title=f"lr transfer across {axis} (param={base.param}, init={base.init})",
                         optimum=analysis.optimum)
    return analysis, {"ran": ran, "skipped": skipped, "csv": csv_path, "plot": plot,
                      "analysis": out / "analysis.json"}


def _columns(axis: str) -> tuple:
    return (axis,) + CSV_COLUMNS[1:]


def _check_widths(base: TrainConfig, widths: list[int], axis: str = "width") -> None:
    from .checks import check_config

    for width in widths:
        check_config(base.replace(**{axis: width}), check_init=False, check_data=False)


def _sorted_rows(rows: dict) -> list[dict]:
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], float(k[1])))]


def analyze(rows, widths: list[int], lrs: list[float], metric: str, *, axis: str = "width") -> SweepAnalysis:
    """Optimal lr per width (or depth), its shift per doubling, and the cost of naive transfer."""
    wanted = {lr_label(lr): lr for lr in lrs}
    table: dict[int, dict[float, float]] = {w: {} for w in widths}
    for row in rows:
        w, label = int(row[axis] if axis in row else row["width"]), lr_label(float(row["lr"]))
        if w in table and label in wanted:
            value = float(row["value"]) if row.get("value") not in (None, "") else math.inf
            table[w][wanted[label]] = value if math.isfinite(value) else math.inf
    optimum, optimum_value, fit, edge = {}, {}, {}, {}
    for w in widths:
        points = sorted((lr, v) for lr, v in table[w].items() if math.isfinite(v))
        if not points:
            continue
        i = min(range(len(points)), key=lambda j: points[j][1])
        optimum[w], optimum_value[w] = points[i]
        grid = sorted(table[w])
        pos = grid.index(points[i][0])
        edge[w] = pos in (0, len(grid) - 1)
        fit[w] = _parabola_min(points, i)
    done = [w for w in widths if w in optimum]
    shifts = []
    for a, b in zip(done, done[1:]):
        shifts.append((a, b, (math.log2(fit[b]) - math.log2(fit[a])) / math.log2(b / a)))
    slope = None
    if len(done) >= 2:
        xs = [math.log2(w) for w in done]
        ys = [math.log2(fit[w]) for w in done]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else None
    transfer = {}
    if len(done) >= 2:
        small, large = done[0], done[-1]
        lr_small = optimum[small]
        value = table[large].get(lr_small, math.nan)
        transfer = {f"from_{axis}": small, f"to_{axis}": large, "lr": lr_small, "value": value,
                    "best_lr": optimum[large], "best_value": optimum_value[large],
                    "loss": value - optimum_value[large]}
    return SweepAnalysis(metric, list(widths), list(lrs), table, optimum, optimum_value, fit, edge, shifts,
                         slope, transfer, axis)


def _parabola_min(points: list[tuple[float, float]], i: int) -> float:
    """Vertex of the parabola through the argmin and its neighbours in log2(lr); grid lr at edges."""
    if i == 0 or i == len(points) - 1:
        return points[i][0]
    (l0, y0), (l1, y1), (l2, y2) = points[i - 1], points[i], points[i + 1]
    x0, x1, x2 = math.log2(l0), math.log2(l1), math.log2(l2)
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denom
    if a <= 0:
        return points[i][0]
    x = -b / (2 * a)
    x = min(max(x, x0), x2)  # never extrapolate beyond the measured neighbours
    return 2.0 ** x
