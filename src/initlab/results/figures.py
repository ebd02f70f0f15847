"""The results page's figures: Δ accuracy by data size, loss vs lr per width, the regime map,
and the step's own curves copied next to the page. Each is drawn with :mod:`initlab.plotting` and
written by :func:`initlab.plotting.save` (atomically); each returns its path, or None when there is
nothing to draw."""
from __future__ import annotations

import math
from pathlib import Path

from ..output import atomic_write_bytes
from ..plotting import save, subplots

#: how the regime map names a (position table, readout) cell
REGIME_NAMES = {("sincos", "mean"): "fixed sin-cos + mean pooling",
                ("sincos", "cls"): "fixed sin-cos + class token",
                ("learned", "mean"): "learned (std 0.02) + mean pooling",
                ("learned", "cls"): "learned (std 0.02) + class token",
                ("sincos-learned", "mean"): "learned, sin-cos at init + mean pooling",
                ("sincos-learned", "cls"): "learned, sin-cos at init + class token"}


def regime_name(pos: str, pool: str) -> str:
    return REGIME_NAMES.get((pos, pool), f"{pos} + {pool}")


def copy_figure(src: Path, dst: Path) -> Path:
    """A step's own figure (``curves.png``) copied into the page's image folder, atomically."""
    return atomic_write_bytes(dst, Path(src).read_bytes())


def plot_regime(rows: list[dict], path: Path) -> Path | None:
    rows = [r for r in rows if r["init"] != "default" and math.isfinite(r["delta"][0])]
    if not rows:
        return None
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
    ax.set_yticklabels([f"{regime_name(p, q)}, {t} tok, {n // 1000}k img, w{w}" for p, q, t, n, w in cells],
                       fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("final test accuracy − default's, same seed (points; bars: std over 3 seeds)")
    ax.legend(fontsize=7, loc="best")
    return save(fig, path, dpi=90, tight=False, bbox_inches="tight")


def plot_lm_regime(rows: list[dict], path: Path) -> Path | None:
    """The language map: Δ validation bpc vs default (early and final read-outs side by side), one
    row per (corpus, position scheme), one marker per init."""
    rows = [r for r in rows if r["init"] != "default" and math.isfinite(r["d_final"][0])]
    if not rows:
        return None
    cells = list(dict.fromkeys((r["corpus"], r["pos"]) for r in rows))
    inits = list(dict.fromkeys(r["init"] for r in rows))
    fig, axes = subplots(1, 2, figsize=(12, 0.5 * len(cells) * max(1, len(inits) / 4) + 1.8), sharey=True,
                         squeeze=False)
    step = 0.8 / max(1, len(inits))
    for ax, key, tokens in ((axes[0][0], "d_early", rows[0]["early_tokens"]),
                            (axes[0][1], "d_final", rows[0]["final_tokens"])):
        for j, init in enumerate(inits):
            ys, xs, es = [], [], []
            for i, cell in enumerate(cells):
                for r in rows:
                    if r["init"] == init and (r["corpus"], r["pos"]) == cell and math.isfinite(r[key][0]):
                        ys.append(i + (j - (len(inits) - 1) / 2) * step)
                        xs.append(r[key][0])
                        es.append(r[key][1] if math.isfinite(r[key][1]) else 0)
            ax.errorbar(xs, ys, xerr=es, fmt="o", capsize=2, ms=4, label=init)
        ax.axvline(0, color="k", lw=0.6)
        ax.set_xlabel(f"val bpc − default's, same seed, at {tokens / 1e6:.2f}M tokens (bars: std)", fontsize=8)
    axes[0][0].set_yticks(range(len(cells)))
    axes[0][0].set_yticklabels([f"{c}, {p}" for c, p in cells], fontsize=8)
    axes[0][0].invert_yaxis()
    axes[0][1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(fig, path, dpi=90, tight=False, bbox_inches="tight")


def plot_datasize(summary, path: Path) -> Path | None:
    """Final accuracy minus default's against the training-set size, one panel per token count;
    ``summary``: (tokens, images, vision row) triples."""
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
    return save(fig, path, dpi=90)


def plot_transfer(analyses: dict, path: Path, metric: str) -> Path | None:
    """``metric`` against lr, one curve per width and one panel per parametrization; stars at the optima."""
    fig, axes = subplots(1, len(analyses), figsize=(4.2 * len(analyses), 3.4), squeeze=False)
    for ax, (param, a) in zip(axes[0], analyses.items()):
        finite = [v for row in a.table.values() for v in row.values() if math.isfinite(v)]
        for w in a.widths:
            pts = sorted((lr, v) for lr, v in a.table[w].items() if math.isfinite(v))
            if not pts:
                continue
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"{a.axis} {w}")
            if w in a.optimum:
                ax.plot([a.optimum[w]], [a.optimum_value[w]], marker="*", ms=12, color=line.get_color())
        if finite:
            finite.sort()
            hi = finite[max(0, int(0.9 * len(finite)) - 1)]
            lo = finite[0]
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        ax.set_xscale("log")
        ax.set_xlabel(f"lr (at the smallest {a.axis})")
        ax.set_ylabel(metric)
        ax.set_title(param)
        ax.legend(fontsize=7)
    return save(fig, path, dpi=90)


def plot_wd_tau(rows: list[dict], path: Path) -> Path | None:
    """Final test accuracy against the decay timescale τ (left) and against the raw decay it
    implied (right), one curve per training-set size (mean ± std over seeds)."""
    sizes = sorted({r["train_size"] for r in rows})
    if not sizes:
        return None
    fig, axes = subplots(1, 2, figsize=(9.6, 3.6), squeeze=False)
    for size in sizes:
        mine = sorted((r for r in rows if r["train_size"] == size), key=lambda r: r["tau"])
        ys = [100 * r["acc"][0] for r in mine]
        es = [100 * r["acc"][1] if math.isfinite(r["acc"][1]) else 0 for r in mine]
        for ax, x in zip(axes[0], ("tau", "wd")):
            ax.errorbar([r[x] for r in mine], ys, yerr=es, marker="o", capsize=3, label=f"{size:,} images")
    for ax, label in zip(axes[0], ("weight-decay timescale τ = 1/(lr·wd) (epochs)", "weight decay wd (AdamW)")):
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("final test accuracy (%)")
        ax.legend(fontsize=7)
    return save(fig, path, dpi=90)


__all__ = ["plot_wd_tau", "REGIME_NAMES", "regime_name", "copy_figure", "plot_regime", "plot_datasize", "plot_transfer"]
