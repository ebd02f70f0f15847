"""The results page: Markdown tables (mean ± sample std over seeds, the exact command above each
table) inside ``<!-- results:KEY -->`` blocks of the page (the prose around them is kept), and PNGs.

The numbers come from the experiments' own records and aggregation (:class:`RunRecord`,
:func:`initlab.experiments.summary.mean_std`, :func:`initlab.experiments.sweep.analyze`).
"""
from __future__ import annotations

import csv
import math
import re
import shutil
import statistics
from pathlib import Path

from ..experiments.records import RunRecord
from ..experiments.summary import mean_std as summary_mean_std
from ..experiments.sweep import analyze
from ..errors import InitlabError
from ..output import markdown_table, read_json
from .profiles import SECTIONS, Step, profile_settings

def mean_std(values: list[float]) -> tuple[float, float]:
    """:func:`initlab.experiments.summary.mean_std` for the tables: the std is nan (not shown) for
    fewer than two finite values."""
    mean, std, n = summary_mean_std(values)
    return mean, (std if n > 1 else math.nan)


def fmt(mean: float, std: float, digits: int = 2, scale: float = 1.0) -> str:
    if not math.isfinite(mean):
        return "—"
    s = f"{mean * scale:.{digits}f}"
    return s + (f" ± {std * scale:.{digits}f}" if math.isfinite(std) else "")


def _fmt_g(mean: float, std: float) -> str:
    """Epoch counts: 3 significant digits (0.25 epochs stays 0.25)."""
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.3g}" + (f" ± {std:.2g}" if math.isfinite(std) else "")


def _records(step_out: Path) -> list[dict]:
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


def first_reach(history: list[dict], key: str, target: float, higher: bool = True) -> float:
    """Epoch of the first evaluation whose ``key`` reaches ``target`` (nan if never)."""
    for row in history:
        v = row.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and (v >= target if higher else v <= target):
            return float(row.get("epoch", math.nan))
    return math.nan


def vision_rows(records: list[dict]) -> list[dict]:
    """Per init: final/best accuracy (%) mean ± std, and epochs to reach default's mean final acc."""
    by_init: dict[str, list[dict]] = {}
    for r in records:
        by_init.setdefault(r["labels"]["init"], []).append(r)

    def final(r):
        return _final(r, "test_acc")

    base = [final(r) for r in by_init.get("default", [])]
    target = mean_std(base)[0]
    rows = []
    for init, runs in by_init.items():
        finals = [final(r) for r in runs]
        bests = [_best(r, "test_acc", True) for r in runs]
        reach = [first_reach(r["history"], "test_acc", target) for r in runs] if math.isfinite(target) else []
        reached = [e for e in reach if math.isfinite(e)]
        rows.append(dict(init=init, seeds=len(runs), final=mean_std(finals), best=mean_std(bests),
                         train_loss=mean_std([_final(r, "train_loss") for r in runs]),
                         delta=(mean_std(finals)[0] - target) if math.isfinite(target) else math.nan,
                         reach=mean_std(reached), reached=len(reached),
                         epochs=max((r["history"][-1].get("epoch", math.nan) for r in runs if r["history"]),
                                    default=math.nan),
                         wall=statistics.fmean(r.get("wall_time_s", 0.0) for r in runs),
                         status=",".join(sorted({r.get("status", "?") for r in runs}))))
    return rows


def lm_rows(records: list[dict]) -> list[dict]:
    by_init: dict[str, list[dict]] = {}
    for r in records:
        by_init.setdefault(r["labels"]["init"], []).append(r)
    base = mean_std([_final(r, "val_bpc") for r in by_init.get("default", [])])[0]
    rows = []
    for init, runs in by_init.items():
        finals = [_final(r, "val_bpc") for r in runs]
        rows.append(dict(init=init, seeds=len(runs), final=mean_std(finals),
                         best=mean_std([_best(r, "val_bpc", False) for r in runs]),
                         delta=mean_std(finals)[0] - base if math.isfinite(base) else math.nan,
                         wall=statistics.fmean(r.get("wall_time_s", 0.0) for r in runs),
                         status=",".join(sorted({r.get("status", "?") for r in runs}))))
    return rows


def _final(r: dict, key: str) -> float:
    """The run's final ``key`` (its ``final`` entry, else the last evaluation that has it)."""
    return RunRecord.from_dict(r).final_metric(key)


def _best(r: dict, key: str, higher: bool) -> float:
    return RunRecord.from_dict(r).best_metric(key, higher)


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


def _wall(out: Path, steps: list[Step]) -> float:
    """Seconds of training behind the tables: every compare run's and sweep cell's own wall time.
    (A step's ``step.json`` holds only its last invocation, which may have added a few runs.)"""
    total = 0.0
    for s in steps:
        if s.command == "sweep":
            path = out / s.key / "sweep.csv"
            if path.exists():
                with open(path, newline="") as f:
                    total += sum(float(row.get("wall_time_s") or 0.0) for row in csv.DictReader(f))
        else:
            total += sum(float(r.get("wall_time_s") or 0.0) for r in _records(out / s.key))
    return total


def vision_block(out: Path, steps: list[Step], img_dir: Path, doc_dir: Path,
                 datasize_png: str = "vision-datasize.png") -> str:
    parts = []
    summary = []
    for s in sorted(steps, key=lambda s: (s.labels["tokens"], s.labels["train_size"])):
        recs = _records(out / s.key)
        lab = s.labels
        steps_run = int(lab["train_size"] // _vision_batch(s) * lab["epochs"])
        head = (f"#### {lab['train_size']:,} training images, patch {lab['patch']} ({lab['tokens']} tokens), "
                f"{lab['epochs']:g} epoch(s) = {steps_run} steps\n\n```\n{s.display(out)}\n```\n")
        if not recs:
            parts.append(head + "\n*not run yet*\n")
            continue
        if not (out / s.key / "step.json").exists():
            head += "\n**Partial: this step had not finished; the rows hold the runs finished so far.**\n"
        rows = vision_rows(recs)
        table = markdown_table(
            ["init", "final acc (%)", "best acc (%)", "Δ final vs default", "epochs to default's final",
             "final train loss", "seeds", "wall/run (s)", "status"],
            [[f"`{r['init']}`", fmt(*r["final"], 2, 100), fmt(*r["best"], 2, 100),
              f"{r['delta'] * 100:+.2f}" if math.isfinite(r["delta"]) else "—",
              (_fmt_g(*r["reach"]) + (f" ({r['reached']}/{r['seeds']} reached)" if r["reached"] < r["seeds"] else ""))
              if r["reached"] else f"not reached (0/{r['seeds']})",
              fmt(*r["train_loss"], 3), str(r["seeds"]), f"{r['wall']:.0f}", r["status"]] for r in rows])
        curves = out / s.key / "curves.png"
        pic = ""
        if curves.exists():
            dst = img_dir / f"{s.key}-curves.png"
            shutil.copyfile(curves, dst)
            pic = f"\n\n![test accuracy vs epoch, {s.key}]({_rel(dst, doc_dir)})"
        parts.append(head + "\n" + table + pic + "\n")
        for r in rows:
            summary.append((lab["tokens"], lab["train_size"], r))
    if summary:
        pic = _plot_datasize(summary, img_dir / datasize_png)
        if pic:
            parts.insert(0, f"![final accuracy minus default's, by training-set size]({_rel(pic, doc_dir)})\n")
    return "\n".join(parts)


def _vision_batch(step: Step) -> int:
    return int(step.args[step.args.index("--batch-size") + 1])


def lm_block(out: Path, step: Step, img_dir: Path, doc_dir: Path) -> str:
    head = (f"{step.labels['steps']} steps × {step.labels['tokens_per_step']:,} tokens per step\n\n"
            f"```\n{step.display(out)}\n```\n")
    recs = _records(out / step.key)
    if not recs:
        return head + "\n*not run yet*\n"
    if not (out / step.key / "step.json").exists():
        head += "\n**Partial: this step had not finished; the rows hold the runs finished so far.**\n"
    rows = lm_rows(recs)
    table = markdown_table(["init", "final val bpc", "best val bpc", "Δ final vs default", "seeds", "wall/run (s)",
                       "status"],
                      [[f"`{r['init']}`", fmt(*r["final"], 3), fmt(*r["best"], 3),
                        f"{r['delta']:+.3f}" if math.isfinite(r["delta"]) else "—", str(r["seeds"]),
                        f"{r['wall']:.0f}", r["status"]] for r in rows])
    pic = ""
    curves = out / step.key / "curves.png"
    if curves.exists():
        dst = img_dir / f"{step.key}-curves.png"  # as the vision steps: named after the step
        shutil.copyfile(curves, dst)
        pic = f"\n\n![validation bpc vs training]({_rel(dst, doc_dir)})"
    return head + "\n" + table + pic + "\n"


def transfer_block(out: Path, steps: list[Step], img_dir: Path, doc_dir: Path) -> str:
    parts = []
    for task in ("vision", "lm"):
        group = [s for s in steps if s.labels["task"] == task]
        if not group:
            continue
        params = list(dict.fromkeys(s.labels["param"] for s in group))
        metric = "training loss (nats)" if task == "vision" else "validation loss (nats)"
        cmds = "\n".join(s.display(out) for s in group)
        rows, curves = [], {}
        for param in params:
            res = transfer_summary([out / s.key for s in group if s.labels["param"] == param])
            if res is None:
                rows.append([param, "0", "*not run yet*", "", "", "", "", "", "", ""])
                continue
            a = res["analysis"]
            curves[param] = a
            lrs = ", ".join(f"{w}: {a.optimum[w]:.2g}{'*' if a.edge[w] else ''}" for w in a.widths if w in a.optimum)
            shifts = ", ".join(f"{s:+.2f}" for _, _, s in a.shifts)
            t = a.transfer
            rows.append([param, str(res["seeds"]), lrs or "—", shifts or "—",
                         f"{a.slope:+.2f}" if a.slope is not None else "—",
                         fmt(*res["slope"], 2) if res["seeds"] > 1 else "—",
                         f"{t['value']:.4f}" if t and math.isfinite(t["value"]) else ("diverged" if t else "—"),
                         f"{t['best_value']:.4f} (lr {t['best_lr']:.2g})" if t else "—",
                         f"{t['loss']:+.4f}" if t and math.isfinite(t["loss"]) else ("∞" if t else "—"),
                         fmt(*res["lost"], 3) if res["seeds"] > 1 else "—"])
        table = markdown_table(["param", "seeds", "lr* per width (grid; * = on grid edge)", "log2 lr* shift per doubling",
                           "fit exponent (lr* ∝ width^x)", "fit exponent, per seed (mean ± std)",
                           "largest width at smallest width's lr*", "largest width at its own lr*",
                           "loss lost by transferring", "loss lost, per seed (mean ± std)"], rows)
        pic = ""
        if curves:
            p = _plot_transfer(curves, img_dir / f"transfer-{task}.png", metric)
            pic = f"\n\n![{metric} vs lr per width]({_rel(p, doc_dir)})" if p else ""
        title = "Vision (ViT, Fashion-MNIST)" if task == "vision" else "Language (char GPT, Shakespeare)"
        parts.append(f"#### {title}: {metric} at the end of training\n\n```\n{cmds}\n```\n\n{table}{pic}\n")
    return "\n".join(parts)


REGIME_NAMES = {("sincos", "mean"): "fixed sin-cos + mean pooling",
                 ("sincos", "cls"): "fixed sin-cos + class token",
                 ("learned", "mean"): "learned (std 0.02) + mean pooling",
                 ("learned", "cls"): "learned (std 0.02) + class token",
                 ("sincos-learned", "mean"): "learned, sin-cos at init + mean pooling",
                 ("sincos-learned", "cls"): "learned, sin-cos at init + class token"}


def ratio_images(data_root: str | None = None):
    """The 256 images :func:`position_content_ratio` embeds: the first Fashion-MNIST test images,
    normalized, when they are found, else unit-variance noise of the same shape."""
    import torch
    try:
        from ..data import load_vision
        test = load_vision("fashion-mnist", root=data_root, split="test")
    except (InitlabError, OSError):  # no data here: noise of the same variance
        return torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = test.images[:256].float() / 255.0
    return ((x - x.mean()) / x.std()).reshape(-1, 1, 28, 28)


def position_content_ratio(pos: str, pool: str, patch: int, width: int, data_root: str | None = None,
                           stems: int = 8, images=None) -> float:
    """RMS of the position table over RMS of the patch-embedded content at init (PyTorch's default
    stem, averaged over ``stems`` seeded draws of the model), on ``images`` (default
    :func:`ratio_images`): the variable that decides what QK ≈ I attends to at init.
    Deterministic: the draws use their own seeds, the global RNG is left as it was."""
    import torch

    from ..models import ViT
    if images is None:
        images = ratio_images(data_root)
    content_ms = table_ms = 0.0
    for seed in range(stems):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = ViT(patch_size=patch, width=width, heads=2, depth=1, pos=pos, pool=pool)
        with torch.no_grad():
            content = model.patch_embed(images).flatten(2).transpose(1, 2)
            content_ms += float(content.pow(2).mean()) / stems
            table_ms += float(model.pos_embed.detach()[0, -content.shape[1]:].pow(2).mean()) / stems
    return (table_ms / content_ms) ** 0.5


def paired_delta(runs: list[dict], base: list[dict]) -> tuple[float, float, int]:
    """Mean ± sample std over seeds of (final acc − default's final acc at the same seed), points."""
    by_seed = {r["labels"].get("seed"): _final(r, "test_acc") for r in base}
    diffs = [100 * (_final(r, "test_acc") - by_seed[r["labels"].get("seed")]) for r in runs
             if r["labels"].get("seed") in by_seed]
    m, sd = mean_std(diffs)
    return m, sd, len(diffs)


def regime_rows(out: Path, steps: list[Step], data_root: str | None = None) -> list[dict]:
    """One row per (regime cell, init): final acc, Δ vs the same cell's default (paired by seed)."""
    cells: dict[tuple, dict] = {}
    images = ratio_images(data_root)  # loaded once for every cell's ratio
    for s in steps:
        lab = s.labels
        cell = (lab["pos"], lab["pool"], lab["tokens"], lab["train_size"], lab["width"])
        c = cells.setdefault(cell, dict(labels=lab, records=[], steps=[]))
        c["records"] += _records(out / s.key)
        c["steps"].append(s)
    rows = []
    for cell, c in cells.items():
        lab = c["labels"]
        by_init: dict[str, list[dict]] = {}
        for r in c["records"]:
            by_init.setdefault(r["labels"]["init"], []).append(r)
        base = by_init.get("default", [])
        ratio = position_content_ratio(lab["pos"], lab["pool"], lab["patch"], lab["width"], images=images)
        for init, runs in by_init.items():
            acc = mean_std([100 * _final(r, "test_acc") for r in runs])
            d, dsd, n = paired_delta(runs, base) if init != "default" else (math.nan, math.nan, 0)
            rows.append(dict(pos=lab["pos"], pool=lab["pool"], tokens=lab["tokens"], images=lab["train_size"],
                             width=lab["width"], head_dim=lab["width"] // lab["heads"], steps=lab["steps"],
                             ratio=ratio, init=init, seeds=len(runs), acc=acc, delta=(d, dsd), paired=n,
                             status=",".join(sorted({r.get("status", "?") for r in runs}))))
    return rows


# two-sided 95% critical values of Student's t for 1..10 degrees of freedom
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def _noise_word(delta: tuple[float, float], n: int) -> str:
    """"gain"/"loss" when the paired t-test over ``n`` seeds rejects Δ = 0 at 5%, else "within
    noise" (3 seeds: |Δ| must exceed 4.30 · std/√3 = 2.48 std)."""
    m, sd = delta
    if not math.isfinite(m):
        return ""
    if n < 2 or not math.isfinite(sd):
        return "within noise"
    t_crit = T_975[min(n - 1, len(T_975)) - 1]
    if sd == 0 or abs(m) / (sd / math.sqrt(n)) > t_crit:
        return "gain" if m > 0 else "loss"
    return "within noise"


def regime_block(out: Path, steps: list[Step], img_dir: Path, doc_dir: Path,
                 png: str = "regime-map.png") -> str:
    rows = regime_rows(out, steps)
    done = sum((out / s.key / "step.json").exists() for s in steps)
    cmds = "\n".join(s.display(out) for s in steps)
    head = (f"{done}/{len(steps)} steps finished. Δ = final test accuracy minus the same cell's "
            f"`default` at the same seed (mean ± std over the paired seeds, points); *gain*/*loss* "
            f"when a paired t-test over the seeds rejects Δ = 0 at 5% (3 seeds: |Δ| > 2.48 std), "
            f"else *within noise*. p/x = RMS of the position table over RMS of the patch-embedded "
            f"content at init (256 test images, 8 stems).\n\n"
            f"<details><summary>the {len(steps)} commands</summary>\n\n```\n{cmds}\n```\n</details>\n")
    if not rows:
        return head + "\n*not run yet*\n"
    table = markdown_table(
        ["position table + readout", "p/x at init", "tokens", "images", "width (head dim)", "init", "seeds",
         "final acc (%)", "Δ vs default (points)", "reading"],
        [[REGIME_NAMES.get((r["pos"], r["pool"]), f"{r['pos']} + {r['pool']}"), f"{r['ratio']:.2f}",
          str(r["tokens"]), f"{r['images']:,}", f"{r['width']} ({r['head_dim']})", f"`{r['init']}`",
          str(r["seeds"]), fmt(*r["acc"], 2), fmt(*r["delta"], 2) if r["init"] != "default" else "—",
          _noise_word(r["delta"], r["paired"]) + ("" if r["status"] == "completed" else f" ({r['status']})")]
         for r in rows])
    pic = ""
    p = _plot_regime(rows, img_dir / png)
    if p:
        pic = f"\n\n![Δ accuracy vs default per regime and init]({_rel(p, doc_dir)})"
    return head + "\n" + table + pic + "\n"


def _plot_regime(rows: list[dict], path: Path) -> Path | None:
    rows = [r for r in rows if r["init"] != "default" and math.isfinite(r["delta"][0])]
    if not rows:
        return None
    from ..plotting import subplots
    cells = list(dict.fromkeys((r["pos"], r["pool"], r["tokens"], r["images"], r["width"]) for r in rows))
    inits = list(dict.fromkeys(r["init"] for r in rows))
    fig, ax = subplots(figsize=(10, 0.45 * len(cells) * max(1, len(inits) / 3) + 1.5))
    step = 0.8 / max(1, len(inits))
    for j, init in enumerate(inits):
        ys, xs, es = [], [], []
        for i, cell in enumerate(cells):
            for r in rows:
                if r["init"] == init and (r["pos"], r["pool"], r["tokens"], r["images"], r["width"]) == cell:
                    ys.append(i + (j - (len(inits) - 1) / 2) * step)
                    xs.append(r["delta"][0])
                    es.append(r["delta"][1] if math.isfinite(r["delta"][1]) else 0)
        ax.errorbar(xs, ys, xerr=es, fmt="o", capsize=2, ms=4, label=init)
    ax.set_yticks(range(len(cells)))
    ax.set_yticklabels([f"{REGIME_NAMES.get((p, q), p + ' + ' + q)}, {t} tok, {n // 1000}k img, w{w}"
                        for p, q, t, n, w in cells], fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("final test accuracy − default's, same seed (points; bars: std over 3 seeds)")
    ax.legend(fontsize=7, loc="best")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path


def _rel(path: Path, doc_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(doc_dir.resolve()))
    except ValueError:
        return str(path)


def _plot_datasize(summary, path: Path) -> Path | None:
    from ..plotting import subplots
    token_counts = sorted({t for t, _, _ in summary})
    fig, axes = subplots(1, len(token_counts), figsize=(5 * len(token_counts), 3.6), squeeze=False)
    for ax, tokens in zip(axes[0], token_counts):
        inits = list(dict.fromkeys(r["init"] for t, _, r in summary if t == tokens))
        for init in inits:
            pts = sorted((n, r) for t, n, r in summary if t == tokens and r["init"] == init)
            xs = [n for n, _ in pts]
            ys = [r["delta"] * 100 for _, r in pts]
            es = [r["final"][1] * 100 if math.isfinite(r["final"][1]) else 0 for _, r in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=init)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.set_ylabel("final test acc − default's (points)")
        ax.set_title(f"{tokens} tokens")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _plot_transfer(analyses: dict, path: Path, metric: str) -> Path | None:
    from ..plotting import subplots
    fig, axes = subplots(1, len(analyses), figsize=(4.2 * len(analyses), 3.4), squeeze=False)
    for ax, (param, a) in zip(axes[0], analyses.items()):
        finite = [v for row in a.table.values() for v in row.values() if math.isfinite(v)]
        for w in a.widths:
            pts = sorted((lr, v) for lr, v in a.table[w].items() if math.isfinite(v))
            if not pts:
                continue
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"width {w}")
            if w in a.optimum:
                ax.plot([a.optimum[w]], [a.optimum_value[w]], marker="*", ms=12, color=line.get_color())
        if finite:
            finite.sort()
            hi = finite[max(0, int(0.9 * len(finite)) - 1)]
            lo = finite[0]
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        ax.set_xscale("log")
        ax.set_xlabel("lr (at the smallest width)")
        ax.set_ylabel(metric)
        ax.set_title(param)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def theory_block(doc_dir: Path) -> str:
    """Summary of the probes' agreement table (docs/theory.md), read from the JSON it writes."""
    path = doc_dir / "img" / "theory_agreement.json"
    cmd = ("initlab probe --agreement --widths 512,1024 --depths 1,6,12,24 --params standard,nt,mu "
           "--samples 128 --out docs/img")
    if not path.exists():
        return f"```\n{cmd}\n```\n\n*agreement table not found ({path.name}); run the command above*\n"
    rows = read_json(path)
    out_rows = []
    for param in dict.fromkeys(r["param"] for r in rows):
        for width in sorted({r["width"] for r in rows if r["param"] == param}):
            rs = sorted((r for r in rows if r["param"] == param and r["width"] == width), key=lambda r: r["depth"])
            deepest = rs[-1]
            out_rows.append([param, str(width), ",".join(str(r["depth"]) for r in rs),
                             f"{deepest['G_final']:.3f} / {deepest['G_final_pred']:.3f}",
                             f"{100 * max(abs(r['G_max_rel']) for r in rs):.1f}%",
                             f"{100 * statistics.median(abs(r['grad_median_rel']) for r in rs):.1f}%",
                             f"{100 * max(abs(r['grad_max_rel']) for r in rs):.1f}%",
                             f"{100 * max(abs(r['qk_max_rel']) for r in rs):.0f}%"])
    table = markdown_table(["param", "width", "depths", "G at the deepest block (measured / theory)",
                       "max \\|err\\| of G over blocks and depths", "median grad-RMS \\|err\\|",
                       "max grad-RMS \\|err\\| (v, o, MLP, stem, head)", "max q/k grad \\|err\\|"], out_rows)
    return f"```\n{cmd}\n```\n\n(from `docs/img/{path.name}`, seed 0)\n\n{table}\n"


BLOCK = re.compile(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", re.S)

SKELETON = """# Results: what initlab's claims look like when we measure them

Generated by `initlab results --profile {profile}`; prose outside the `results:` blocks is kept
when the tables are regenerated.

<!-- results:meta -->
<!-- /results:meta -->

## 1. Small-data vision

<!-- results:vision -->
<!-- /results:vision -->

## 2. Language

<!-- results:lm -->
<!-- /results:lm -->

## 3. Width transfer

<!-- results:transfer -->
<!-- /results:transfer -->

## 4. Theory at initialization

<!-- results:theory -->
<!-- /results:theory -->
"""


def write_report(profile: str, steps: list[Step], out: Path, *, doc: str | Path, img_dir: str | Path) -> Path:
    doc, img_dir = Path(doc), Path(img_dir)
    doc.parent.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    by = {sec: [s for s in steps if s.section == sec] for sec in SECTIONS}
    prefix = profile_settings(profile).get("prefix")
    blocks = {"meta": _meta_line(profile, steps, out)}
    if by["vision"]:
        blocks["vision"] = vision_block(out, by["vision"], img_dir, doc.parent,
                                        datasize_png=f"{prefix + '-' if prefix else ''}vision-datasize.png")
    if "regime" in profile_settings(profile):  # a regime map fills its own two blocks only
        blocks = {f"{prefix}_meta": blocks["meta"],
                  f"{prefix}_map": regime_block(out, by["regime"], img_dir, doc.parent, f"{prefix}-map.png")}
    elif prefix is None:  # the main profiles fill every block of the page; `long` only its own
        blocks["lm"] = lm_block(out, by["lm"][0], img_dir, doc.parent) if by["lm"] else ""
        blocks["transfer"] = transfer_block(out, by["transfer"], img_dir, doc.parent)
        blocks["theory"] = theory_block(doc.parent)
    else:
        if by["lm"]:
            blocks["lm"] = lm_block(out, by["lm"][0], img_dir, doc.parent)
        blocks = {f"{prefix}_{key}": body for key, body in blocks.items()}
    text = doc.read_text() if doc.exists() else SKELETON.format(profile=profile)
    for key, body in blocks.items():
        marker = f"<!-- results:{key} -->"
        new = f"{marker}\n{body.strip()}\n<!-- /results:{key} -->"
        if marker in text:
            text = BLOCK.sub(lambda m, k=key, n=new: n if m.group(1) == k else m.group(0), text)
        else:
            text = text.rstrip() + f"\n\n{new}\n"
    doc.write_text(text)
    return doc


def _meta_line(profile: str, steps: list[Step], out: Path) -> str:
    done = sum((out / s.key / "step.json").exists() for s in steps)
    line = (f"Profile `{profile}`: {done}/{len(steps)} steps finished, "
            f"{_wall(out, steps) / 60:.1f} min of training wall time summed over runs and sweep cells "
            f"(`initlab results --profile {profile} --out {out}`).")
    path = out / "sessions.json"
    keys = {s.key for s in steps}
    if path.exists():
        runs = [r for r in read_json(path) if r.get("profile") == profile and set(r["steps"]) & keys]
        if runs:
            parts = [f"{r['wall_s'] / 60:.1f} min for {len(r['steps'])} step(s) with --jobs {r['jobs']} "
                     f"({r['finished']})" for r in runs]
            line += " Wall clock of the invocations that trained: " + "; ".join(parts) + "."
    return line
