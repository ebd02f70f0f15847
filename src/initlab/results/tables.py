"""The results page's tables: rows per init from a step's records (means over seeds from the
experiments' own :func:`~initlab.experiments.summary.summarize`, the rest from :mod:`.statistics`),
formatted as Markdown with the exact command above each table, and the
figures of :mod:`.figures` linked under them. Each ``*_block`` function renders one
``<!-- results:KEY -->`` block of the page; :mod:`.page` holds the section -> block registry.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..experiments.records import RunRecord
from ..experiments.summary import MetricSpec, summarize
from ..output import markdown_table, read_json
from ..ratios import lm_position_content_ratio, position_content_ratio, ratio_images
from . import figures
from .profiles import Step
from .statistics import (at_step, by_init, final, first_reach, first_step_below, mean_std, noise_word,
                         joint_summary, paired_by_seed, paired_delta, step_records, training_seconds,
                         transfer_summary, wd_tau_rows)


@dataclass(frozen=True)
class Page:
    """Where a block reads and writes: the suite's ``out``, the page's folder and image folder,
    the profile and its block prefix (``long``, ``regime``, ...; None for the main page)."""

    profile: str
    out: Path
    doc_dir: Path
    img_dir: Path
    prefix: str | None = None

    def png(self, name: str) -> Path:
        """An image of this profile (``long-vision-datasize.png`` under the ``long`` prefix)."""
        return self.img_dir / (f"{self.prefix}-{name}" if self.prefix else name)

    def link(self, path: Path) -> str:
        """``path`` relative to the page (as Markdown links it)."""
        try:
            return str(Path(path).resolve().relative_to(self.doc_dir.resolve()))
        except ValueError:
            return str(path)


# -- formatting -------------------------------------------------------------------------------------
def fmt(mean: float, std: float, digits: int = 2, scale: float = 1.0) -> str:
    if not math.isfinite(mean):
        return "—"
    s = f"{mean * scale:.{digits}f}"
    return s + (f" ± {std * scale:.{digits}f}" if math.isfinite(std) else "")


def fmt_g(mean: float, std: float) -> str:
    """Epoch counts: 3 significant digits (0.25 epochs stays 0.25)."""
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.3g}" + (f" ± {std:.2g}" if math.isfinite(std) else "")


def _status(runs: list[dict]) -> str:
    return ",".join(sorted({r.get("status", "?") for r in runs}))


# -- rows -------------------------------------------------------------------------------------------
def _per_init(records: list[dict], key: str, higher: bool) -> dict[str, dict]:
    """The experiments' own aggregation (:func:`initlab.experiments.summary.summarize`) per init:
    final/best ``key`` mean and std over seeds (std nan, i.e. not shown, below two finite values)
    and the mean wall time."""
    rows = summarize([RunRecord.from_dict(r) for r in records], "init", MetricSpec(key, higher, key))
    out = {}
    for row in rows:
        out[row["init"]] = dict(
            final=(row[f"final_{key}_mean"], row[f"final_{key}_std"] if row["n_finite"] > 1 else math.nan),
            best=(row[f"best_{key}_mean"], row[f"best_{key}_std"] if row["n_best_finite"] > 1 else math.nan),
            wall=row["wall_time_s_mean"])
    return out


def vision_rows(records: list[dict]) -> list[dict]:
    """Per init: final/best accuracy (%) mean ± std, and epochs to reach default's mean final acc."""
    groups = by_init(records)
    stats = _per_init(records, "test_acc", True)
    target = stats["default"]["final"][0] if "default" in stats else math.nan
    rows = []
    for init, runs in groups.items():
        s = stats[init]
        reach = [first_reach(r["history"], "test_acc", target) for r in runs] if math.isfinite(target) else []
        reached = [e for e in reach if math.isfinite(e)]
        rows.append(dict(init=init, seeds=len(runs), final=s["final"], best=s["best"],
                         train_loss=mean_std([final(r, "train_loss") for r in runs]),
                         delta=(s["final"][0] - target) if math.isfinite(target) else math.nan,
                         reach=mean_std(reached), reached=len(reached),
                         epochs=max((r["history"][-1].get("epoch", math.nan) for r in runs if r["history"]),
                                    default=math.nan),
                         wall=s["wall"], status=_status(runs)))
    return rows


def lm_rows(records: list[dict]) -> list[dict]:
    """Per init: final/best validation bpc mean ± std and the difference to default's."""
    groups = by_init(records)
    stats = _per_init(records, "val_bpc", False)
    base = stats["default"]["final"][0] if "default" in stats else math.nan
    rows = []
    for init, runs in groups.items():
        s = stats[init]
        rows.append(dict(init=init, seeds=len(runs), final=s["final"], best=s["best"],
                         delta=s["final"][0] - base if math.isfinite(base) else math.nan,
                         wall=s["wall"], status=_status(runs)))
    return rows


def regime_rows(out: Path, steps: list[Step], data_root: str | None = None) -> list[dict]:
    """One row per (regime cell, init): final acc, Δ vs the same cell's default (paired by seed),
    and the cell's position/content ratio at init (:mod:`initlab.ratios`)."""
    cells: dict[tuple, dict] = {}
    images = ratio_images(data_root)  # loaded once for every cell's ratio
    for s in steps:
        lab = s.labels
        cell = (lab["pos"], lab["pool"], lab["tokens"], lab["train_size"], lab["width"])
        c = cells.setdefault(cell, dict(labels=lab, records=[], steps=[]))
        c["records"] += step_records(out / s.key)
        c["steps"].append(s)
    rows = []
    for cell, c in cells.items():
        lab = c["labels"]
        groups = by_init(c["records"])
        base = groups.get("default", [])
        ratio = position_content_ratio(lab["pos"], lab["pool"], lab["patch"], lab["width"], images=images)
        for init, runs in groups.items():
            acc = mean_std([100 * final(r, "test_acc") for r in runs])
            d, dsd, n = paired_delta(runs, base) if init != "default" else (math.nan, math.nan, 0)
            rows.append(dict(pos=lab["pos"], pool=lab["pool"], tokens=lab["tokens"], images=lab["train_size"],
                             width=lab["width"], head_dim=lab["width"] // lab["heads"], steps=lab["steps"],
                             ratio=ratio, init=init, seeds=len(runs), acc=acc, delta=(d, dsd), paired=n,
                             status=_status(runs)))
    return rows


#: the early read-out of the language map: the first evaluation at or after this many tokens
EARLY_TOKENS = 300_000


def lm_regime_rows(out: Path, steps: list[Step]) -> list[dict]:
    """One row per (corpus, position scheme, init) of the language map: validation bpc at
    :data:`EARLY_TOKENS` and at the end (mean ± std over seeds), both paired by seed against the
    same cell's ``default``, the step at which each seed first reaches default's mean final bpc, and
    the position/content ratio after the init (:func:`initlab.ratios.lm_position_content_ratio`)."""
    cells: dict[tuple, dict] = {}
    for s in steps:
        lab = s.labels
        c = cells.setdefault((lab["corpus"], lab["pos"]), dict(labels=lab, runs={}))
        c["runs"][lab["init"]] = (s, step_records(out / s.key))
    rows = []
    for (corpus, pos), c in cells.items():
        lab = c["labels"]
        tps = lab["tokens_per_step"]
        early = -(-EARLY_TOKENS // tps)  # steps: the first evaluation at or after it
        base = c["runs"].get("default", (None, []))[1]
        target = mean_std([final(r, "val_bpc") for r in base])[0] if base else math.nan
        for init, (s, runs) in c["runs"].items():
            if not runs:
                continue
            early_step = min((row["step"] for row in runs[0]["history"] if row["step"] >= early), default=early)
            reach = [first_step_below(r, "val_bpc", target) for r in runs] if math.isfinite(target) else []
            reached = [x for x in reach if math.isfinite(x)]
            d_final = paired_by_seed(runs, base, lambda r: final(r, "val_bpc")) if init != "default" else \
                (math.nan, math.nan, 0)
            d_early = paired_by_seed(runs, base, lambda r: at_step(r, "val_bpc", early)) if init != "default" else \
                (math.nan, math.nan, 0)
            shape = dict(width=lab["width"], depth=lab["depth"], heads=lab["heads"], pos=pos)
            rows.append(dict(corpus=corpus, pos=pos, init=init, seeds=len(runs), key=s.key,
                             ratio=lm_position_content_ratio(lab["model"], init, **shape),
                             early_step=early_step, early_tokens=early_step * tps, final_tokens=lab["steps"] * tps,
                             early=mean_std([at_step(r, "val_bpc", early) for r in runs]),
                             final=mean_std([final(r, "val_bpc") for r in runs]),
                             d_early=d_early[:2], n_early=d_early[2], d_final=d_final[:2], n_final=d_final[2],
                             reach=mean_std(reached), reached=len(reached), status=_status(runs)))
    return rows


# -- blocks -----------------------------------------------------------------------------------------
def _partial(page: Page, step: Step) -> str:
    if (page.out / step.key / "step.json").exists():
        return ""
    return "\n**Partial: this step had not finished; the rows hold the runs finished so far.**\n"


def _curves(page: Page, step: Step, alt: str) -> str:
    """The step's own curves.png, copied next to the page (named after the step) and linked."""
    curves = page.out / step.key / "curves.png"
    if not curves.exists():
        return ""
    dst = figures.copy_figure(curves, page.img_dir / f"{step.key}-curves.png")
    return f"\n\n![{alt}]({page.link(dst)})"


def _vision_batch(step: Step) -> int:
    return int(step.args[step.args.index("--batch-size") + 1])


def vision_block(page: Page, steps: list[Step]) -> str:
    parts, summary = [], []
    for s in sorted(steps, key=lambda s: (s.labels["tokens"], s.labels["train_size"])):
        recs = step_records(page.out / s.key)
        lab = s.labels
        steps_run = int(lab["train_size"] // _vision_batch(s) * lab["epochs"])
        head = (f"#### {lab['train_size']:,} training images, patch {lab['patch']} ({lab['tokens']} tokens), "
                f"{lab['epochs']:g} epoch(s) = {steps_run} steps\n\n```\n{s.display(page.out)}\n```\n")
        if not recs:
            parts.append(head + "\n*not run yet*\n")
            continue
        head += _partial(page, s)
        rows = vision_rows(recs)
        table = markdown_table(
            ["init", "final acc (%)", "best acc (%)", "Δ final vs default", "epochs to default's final",
             "final train loss", "seeds", "wall/run (s)", "status"],
            [[f"`{r['init']}`", fmt(*r["final"], 2, 100), fmt(*r["best"], 2, 100),
              f"{r['delta'] * 100:+.2f}" if math.isfinite(r["delta"]) else "—",
              (fmt_g(*r["reach"]) + (f" ({r['reached']}/{r['seeds']} reached)" if r["reached"] < r["seeds"] else ""))
              if r["reached"] else f"not reached (0/{r['seeds']})",
              fmt(*r["train_loss"], 3), str(r["seeds"]), f"{r['wall']:.0f}", r["status"]] for r in rows])
        parts.append(head + "\n" + table + _curves(page, s, f"test accuracy vs epoch, {s.key}") + "\n")
        for r in rows:
            summary.append((lab["tokens"], lab["train_size"], r))
    if summary:
        pic = figures.plot_datasize(summary, page.png("vision-datasize.png"))
        if pic:
            parts.insert(0, f"![final accuracy minus default's, by training-set size]({page.link(pic)})\n")
    return "\n".join(parts)


def lm_block(page: Page, steps: list[Step]) -> str:
    if not steps:
        return ""
    step = steps[0]
    head = (f"{step.labels['steps']} steps × {step.labels['tokens_per_step']:,} tokens per step\n\n"
            f"```\n{step.display(page.out)}\n```\n")
    recs = step_records(page.out / step.key)
    if not recs:
        return head + "\n*not run yet*\n"
    head += _partial(page, step)
    rows = lm_rows(recs)
    table = markdown_table(["init", "final val bpc", "best val bpc", "Δ final vs default", "seeds", "wall/run (s)",
                            "status"],
                           [[f"`{r['init']}`", fmt(*r["final"], 3), fmt(*r["best"], 3),
                             f"{r['delta']:+.3f}" if math.isfinite(r["delta"]) else "—", str(r["seeds"]),
                             f"{r['wall']:.0f}", r["status"]] for r in rows])
    return head + "\n" + table + _curves(page, step, "validation bpc vs training") + "\n"


def transfer_block(page: Page, steps: list[Step]) -> str:
    parts = []
    for task in ("vision", "lm"):
        group = [s for s in steps if s.labels["task"] == task]
        if not group:
            continue
        params = list(dict.fromkeys(s.labels["param"] for s in group))
        metric = "training loss (nats)" if task == "vision" else "validation loss (nats)"
        cmds = "\n".join(s.display(page.out) for s in group)
        rows, curves = [], {}
        for param in params:
            res = transfer_summary([page.out / s.key for s in group if s.labels["param"] == param])
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
        table = markdown_table(["param", "seeds", "lr* per width (grid; * = on grid edge)",
                                "log2 lr* shift per doubling", "fit exponent (lr* ∝ width^x)",
                                "fit exponent, per seed (mean ± std)", "largest width at smallest width's lr*",
                                "largest width at its own lr*", "loss lost by transferring",
                                "loss lost, per seed (mean ± std)"], rows)
        pic = ""
        if curves:
            p = figures.plot_transfer(curves, page.img_dir / f"transfer-{task}.png", metric)
            pic = f"\n\n![{metric} vs lr per width]({page.link(p)})" if p else ""
        title = "Vision (ViT, Fashion-MNIST)" if task == "vision" else "Language (char GPT, Shakespeare)"
        parts.append(f"#### {title}: {metric} at the end of training\n\n```\n{cmds}\n```\n\n{table}{pic}\n")
    return "\n".join(parts)


_TITLES = {"vision": "Vision (ViT, Fashion-MNIST)", "lm": "Language (char GPT, Shakespeare)"}


def depth_block(page: Page, steps: list[Step]) -> str:
    """Depth transfer: per task, one row per parametrization (the optimum per depth on the
    seed-mean table, its drift per seed, the loss lost at the deepest model with the shallowest
    model's lr), the lr-vs-loss picture; then the joint move (width and depth at once)."""
    parts = []
    budgets = [(task, b) for task in ("lm", "vision")
               for b in dict.fromkeys(s.labels.get("budget") for s in steps if s.labels["task"] == task
                                      and s.labels["kind"] == "depth")]
    for task, budget in budgets:
        group = [s for s in steps if s.labels["task"] == task and s.labels["kind"] == "depth"
                 and s.labels.get("budget") == budget]
        if not group:
            continue
        params = list(dict.fromkeys(s.labels["param"] for s in group))
        metric = "training loss (nats)" if task == "vision" else "validation loss (nats)"
        rows, curves = [], {}
        for param in params:
            res = transfer_summary([page.out / s.key for s in group if s.labels["param"] == param])
            if res is None:
                rows.append([param, "0", "*not run yet*"] + [""] * 8)
                continue
            a = res["analysis"]
            curves[param] = a
            lrs = ", ".join(f"{w}: {a.optimum[w]:.2g}{'*' if a.edge[w] else ''}" for w in a.widths if w in a.optimum)
            t = a.transfer
            n = res["seeds"]
            rows.append([f"`{param}`", str(n), lrs or "—",
                         ", ".join(f"{x:+.2f}" for _, _, x in a.shifts) or "—",
                         fmt(*res["slope"], 2),
                         f"{res['drift_mean_table']:+.0f}; " + (fmt(*res["drift"], 2) if n > 1
                                                                  else f"{res['drift'][0]:+.0f}"),
                         f"{t['value']:.4f}" if t and math.isfinite(t["value"]) else ("diverged" if t else "—"),
                         f"{t['best_value']:.4f} (lr {t['best_lr']:.2g})" if t else "—",
                         (f"{t['loss']:+.3f} ({100 * t['loss'] / t['best_value']:.1f}%)"
                          if t and math.isfinite(t["loss"]) and t["best_value"] > 0 else "—"),
                         fmt(*res["lost"], 3), fmt(*res["lost_pct"], 1)])
        first = group[0].labels
        depths = [int(x) for x in _arg(group[0], "--depths").split(",")]
        span = f"depth {depths[0]} → {depths[-1]}"
        table = markdown_table(["param", "seeds", "lr* per depth (seed-mean table; * = on grid edge)",
                                "log2 lr* shift per doubling", "fit exponent x in lr* ∝ depth^x, per seed",
                                f"lr* drift {span} (grid steps of 2×): seed-mean table; per seed",
                                "deepest at shallowest's lr* (seed mean)", "deepest at its own lr* (seed mean)",
                                "loss lost by transferring (seed-mean table)", "loss lost, per seed",
                                "loss lost (% of the best), per seed"], rows)
        pic = ""
        if curves:
            p = figures.plot_transfer(curves, page.png(f"{task}{budget or ''}.png"), metric)
            pic = f"\n\n![{metric} vs lr per depth]({page.link(p)})" if p else ""
        cmds = "\n".join(s.display(page.out) for s in group)
        parts.append(f"#### {_TITLES[task]}: {metric} after {_arg(group[0], '--steps')} steps, width {first['width']}, "
                     f"depths {', '.join(str(x) for x in depths)}"
                     f"\n\n<details><summary>the {len(group)} commands</summary>\n\n```\n{cmds}\n```\n</details>\n\n"
                     f"{table}{pic}\n")
    joint = [s for s in steps if s.labels["kind"] == "joint"]
    if joint:
        parts.append(_joint_table(page, steps, joint))
    return "\n".join(parts)


def _joint_table(page: Page, steps: list[Step], joint: list[Step]) -> str:
    rows = []
    j0 = joint[0].labels
    base_w, base_d, width = j0["base_width"], j0["base_depth"], j0["width"]
    for param in dict.fromkeys(s.labels["param"] for s in joint):
        mine = sorted((s for s in joint if s.labels["param"] == param), key=lambda s: s.labels["seed"])
        tuned = {s.labels["seed"]: s for s in steps if s.labels["kind"] == "depth" and not s.labels.get("budget")
                 and s.labels["param"] == param and s.labels["task"] == j0["task"]}  # the same budget
        pairs = [(tuned[s.labels["seed"]], s) for s in mine if s.labels["seed"] in tuned]
        depths = [int(x) for x in _arg(mine[0], "--depths").split(",")]
        for target in depths:
            res = joint_summary([page.out / a.key for a, _ in pairs], [page.out / b.key for _, b in pairs],
                                tuned_at=base_d, target=target)
            where = f"({width}, {target})"
            if res is None:
                rows.append([f"`{param}`", where, "0", "*not run yet*"] + [""] * 5)
                continue
            rows.append([f"`{param}`", where, str(res["seeds"]),
                         ", ".join(f"{p['lr']:.2g}" for p in res["pairs"]), fmt(*res["value"], 4),
                         fmt(*res["best"], 4),
                         ", ".join(f"{p['best_lr']:.2g}{'*' if p['edge'] else ''}" for p in res["pairs"]),
                         fmt(*res["loss"], 3), fmt(*res["loss_pct"], 1)])
    cmds = "\n".join(s.display(page.out) for s in joint)
    table = markdown_table(["param", "(width, depth)", "seeds", f"lr tuned at ({base_w}, {base_d}), per seed",
                            "loss there at that lr", "loss there at its own lr*", "its own lr*, per seed (* = grid edge)",
                            "loss lost", "loss lost (% of the best)"], rows)
    return (f"#### The joint move: tuned at (width {base_w}, depth {base_d}), used at width {width}\n\n"
            f"```\n{cmds}\n```\n\n{table}\n")


def wd_tau_block(page: Page, steps: list[Step]) -> str:
    """Weight decay as a timescale: per training-set size and τ, the raw decay it implied and the
    final test accuracy and loss; the best τ per size (mean test loss) and per seed."""
    rows = wd_tau_rows(page.out, steps)
    done = sum((page.out / s.key / "result.json").exists() for s in steps)
    cmds = "\n".join(s.display(page.out) for s in steps)
    head = (f"{done}/{len(steps)} runs finished. τ = 1/(lr·wd) in epochs; wd = the raw AdamW decay it sets "
            f"(1/(lr·τ·steps per epoch)); **bold** = the lowest mean test loss at that size.\n\n"
            f"<details><summary>the {len(steps)} commands</summary>\n\n```\n{cmds}\n```\n</details>\n")
    if not rows:
        return head + "\n*not run yet*\n"
    table = markdown_table(
        ["training images", "steps/epoch", "τ (epochs)", "wd implied", "seeds", "final test acc (%)",
         "final test loss"],
        [[f"{r['train_size']:,}", f"{r['steps_per_epoch']:.0f}", f"{r['tau']:g}", f"{r['wd']:.3g}", str(r["seeds"]),
          fmt(*r["acc"], 2, 100), ("**" + fmt(*r["loss"], 4) + "**") if r["best"] else fmt(*r["loss"], 4)]
         for r in rows])
    summary = []
    for size in sorted({r["train_size"] for r in rows}):
        mine = [r for r in rows if r["train_size"] == size]
        best = next(r for r in mine if r["best"])
        per_seed = mine[0]["best_tau_by_seed"]
        summary.append(f"- {size:,} images: best τ {best['tau']:g} epochs (wd {best['wd']:.3g}); per seed "
                       + (", ".join(f"s{k}: τ {v:g}" for k, v in sorted(per_seed.items())) or "—"))
    p = figures.plot_wd_tau(rows, page.png("wd-tau.png"))
    pic = f"\n\n![final test accuracy vs τ and vs raw weight decay]({page.link(p)})" if p else ""
    return head + "\n" + table + "\n\n" + "\n".join(summary) + pic + "\n"


def _arg(step: Step, flag: str) -> str:
    args = list(step.args)
    return args[args.index(flag) + 1]


def regime_block(page: Page, steps: list[Step]) -> str:
    rows = regime_rows(page.out, steps)
    done = sum((page.out / s.key / "step.json").exists() for s in steps)
    cmds = "\n".join(s.display(page.out) for s in steps)
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
        [[figures.regime_name(r["pos"], r["pool"]), f"{r['ratio']:.2f}",
          str(r["tokens"]), f"{r['images']:,}", f"{r['width']} ({r['head_dim']})", f"`{r['init']}`",
          str(r["seeds"]), fmt(*r["acc"], 2), fmt(*r["delta"], 2) if r["init"] != "default" else "—",
          noise_word(r["delta"], r["paired"]) + ("" if r["status"] == "completed" else f" ({r['status']})")]
         for r in rows])
    pic = ""
    p = figures.plot_regime(rows, page.png("map.png"))
    if p:
        pic = f"\n\n![Δ accuracy vs default per regime and init]({page.link(p)})"
    return head + "\n" + table + pic + "\n"


def _bpc_word(delta: tuple[float, float], n: int) -> str:
    """The noise word of a bpc difference (lower is better: a negative Δ is the gain)."""
    return noise_word((-delta[0], delta[1]), n)


def lm_regime_block(page: Page, steps: list[Step]) -> str:
    rows = lm_regime_rows(page.out, steps)
    done = sum((page.out / s.key / "step.json").exists() for s in steps)
    cmds = "\n".join(s.display(page.out) for s in steps)
    lab = steps[0].labels if steps else {}
    head = (f"{done}/{len(steps)} steps finished. Llama-style char model (`{lab.get('model')}`, width "
            f"{lab.get('width')}, depth {lab.get('depth')}, {lab.get('heads')} heads), "
            f"{lab.get('tokens_per_step', 0):,} tokens per step. Δ = validation bpc minus the same cell's "
            f"`default` at the same seed (mean ± std over the paired seeds; negative = better); *gain*/*loss* "
            f"when a paired t-test over the seeds rejects Δ = 0 at 5%, else *within noise*. p/x = RMS of "
            f"the position table over RMS of the token embeddings after the init (3 seeds; — : rotary "
            f"or no table). *steps to default's final*: the first evaluation (every "
            f"{steps[0].args[steps[0].args.index('--eval-every') + 1] if steps else '?'} steps) at or below "
            f"default's mean final bpc.\n\n"
            f"<details><summary>the {len(steps)} commands</summary>\n\n```\n{cmds}\n```\n</details>\n")
    if not rows:
        return head + "\n*not run yet*\n"
    table = markdown_table(
        ["corpus", "positions", "p/x", "init", "seeds", "bpc @ early (tokens)", "Δ early", "final bpc (tokens)",
         "Δ final", "reading (final)", "steps to default's final"],
        [[r["corpus"], r["pos"], f"{r['ratio']:.2f}" if math.isfinite(r["ratio"]) else "—", f"`{r['init']}`",
          str(r["seeds"]), f"{fmt(*r['early'], 3)} ({r['early_tokens'] / 1e3:.0f}k)",
          fmt(*r["d_early"], 3) if r["init"] != "default" else "—",
          f"{fmt(*r['final'], 3)} ({r['final_tokens'] / 1e6:.2f}M)",
          fmt(*r["d_final"], 3) if r["init"] != "default" else "—",
          (_bpc_word(r["d_final"], r["n_final"]) if r["init"] != "default" else "")
          + ("" if r["status"] == "completed" else f" ({r['status']})"),
          "—" if r["init"] == "default" else
          (fmt_g(*r["reach"]) + (f" ({r['reached']}/{r['seeds']})" if r["reached"] < r["seeds"] else ""))
          if r["reached"] else f"not reached (0/{r['seeds']})"]
         for r in rows])
    pic = ""
    p = figures.plot_lm_regime(rows, page.png("lm-map.png"))
    if p:
        pic = f"\n\n![Δ validation bpc vs default per position scheme and init]({page.link(p)})"
    return head + "\n" + table + pic + "\n"


THEORY_COMMAND = ("initlab probe --agreement --widths 512,1024 --depths 1,6,12,24 --params standard,nt,mu "
                  "--samples 128 --out docs/img")


def theory_block(page: Page, steps: list[Step]) -> str:
    """Summary of the probes' agreement table (docs/theory.md), read from the JSON it writes."""
    path = page.doc_dir / "img" / "theory_agreement.json"
    cmd = THEORY_COMMAND
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


def meta_block(page: Page, steps: list[Step]) -> str:
    """Steps finished, training time, and the wall clock of the invocations that trained."""
    out, profile = page.out, page.profile
    done = sum((out / s.key / "step.json").exists() for s in steps)
    line = (f"Profile `{profile}`: {done}/{len(steps)} steps finished, "
            f"{training_seconds(out, steps) / 60:.1f} min of training wall time summed over runs and sweep cells "
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


__all__ = ["Page", "fmt", "fmt_g", "vision_rows", "lm_rows", "regime_rows", "EARLY_TOKENS", "vision_block", "lm_block",
           "transfer_block", "depth_block", "wd_tau_block", "regime_block", "theory_block", "meta_block", "lm_regime_rows", "lm_regime_block"]
