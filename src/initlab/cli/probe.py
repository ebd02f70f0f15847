"""``initlab probe``: signal propagation at initialization, measured next to the leading-order theory.

    initlab probe --model vit --width 256 --depth 12 --param nt --out runs/probe
    initlab probe --model vit --depth 12 --widths 128,256,512 --out runs/probe-widths
    initlab probe --agreement --widths 512,1024 --depths 1,6,12,24 --params standard,nt,mu --out docs

The model is the paper's (arXiv 2304.02034 §1): pre-LN, bias-free, frozen LayerNorm affine, mean
pooling, learned position table; head_dim 64 unless ``--heads`` says otherwise.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import ConfigError, InitlabError
from ..experiments.grid import parse_ints
from ..output import write_json

IMAGE, PATCH = 28, 7


def add_parser(sub) -> None:
    p = sub.add_parser("probe", help="measure signal propagation at init next to the effective theory",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("vit", "gpt"), default="vit")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--heads", type=int, default=None, help="default: width // 64 (head_dim 64)")
    p.add_argument("--param", default="nt", help="standard, nt, hybrid, mu or s=<value>")
    p.add_argument("--init", default="default",
                   help="initialization scheme applied after the parametrization (e.g. mimetic); "
                        "'default' = the parametrization's own draws")
    p.add_argument("--widths", default=None, help="comma-separated widths: probe each and plot across widths")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tokens", type=int, default=16, help="sequence length for --model gpt")
    p.add_argument("--data", choices=("auto", "synthetic"), default="auto",
                   help="auto: Fashion-MNIST test images / Shakespeare when present, else synthetic")
    p.add_argument("--targets", action="store_true",
                   help="backward of the cross-entropy (default: of Σ_batch logit 0, which the theory predicts)")
    p.add_argument("--samples", type=int, default=128, help="Monte Carlo draws of attention logits per block")
    p.add_argument("--no-theory", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--agreement", action="store_true",
                   help="write the agreement table (widths x depths x params) to OUT/theory_agreement.{md,csv,png}")
    p.add_argument("--depths", default="1,6,12,24", help="depths for --agreement")
    p.add_argument("--params", default="standard,nt,mu", help="parametrizations for --agreement")
    p.add_argument("--seeds", default=None, help="comma-separated seeds for --agreement (default: --seed)")
    p.add_argument("--out", default=None, help="directory for JSON/CSV/PNG (nothing written without it)")
    p.set_defaults(run=run)


def build_model(kind: str, width: int, depth: int, heads: int | None, *, tokens: int = 16):
    from ..models import GPT, ViT

    heads = heads or max(1, width // 64)
    if width % heads:
        raise ConfigError(f"width {width} is not divisible by {heads} heads; pass --heads")
    common = dict(width=width, depth=depth, heads=heads, bias=False, ln_affine=False)
    if kind == "vit":
        return ViT(image_size=IMAGE, patch_size=PATCH, in_chans=1, num_classes=10, pool="mean", **common)
    return GPT(vocab_size=256, block_size=max(tokens, 16), **common)


def make_batch(kind: str, batch: int, tokens: int, data: str, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    g = torch.Generator().manual_seed(seed)
    if kind == "vit":
        if data == "auto":
            try:
                from ..data import load_vision

                d = load_vision("fashion-mnist", split="test")
                idx = torch.randperm(len(d.labels), generator=g)[:batch]
                x = d.images[idx].float() / 255.0
                x = (x - 0.2860) / 0.3530  # Fashion-MNIST mean/std
                return x, d.labels[idx], "Fashion-MNIST test images (normalized)"
            except InitlabError:  # the data is optional (missing or unreadable): synthetic instead
                pass
        return (torch.randn(batch, 1, IMAGE, IMAGE, generator=g), torch.randint(0, 10, (batch,), generator=g),
                "synthetic N(0,1) images")
    if data == "auto":
        try:
            from ..data import load_text

            text = load_text("shakespeare").encode("latin-1", "replace")
            buf = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
            starts = torch.randint(0, len(buf) - tokens - 1, (batch,), generator=g)
            win = torch.stack([buf[s:s + tokens + 1] for s in starts.tolist()])
            return win[:, :-1], win[:, 1:], "Shakespeare byte windows"
        except InitlabError:  # the text is optional: random bytes instead
            pass
    t = torch.randint(0, 256, (batch, tokens + 1), generator=g)
    return t[:, :-1], t[:, 1:], "uniform random bytes"


def init_model(model, param: str, init: str, seed: int):
    """Every weight as ``param`` prescribes, then ``init`` on top: one plan, one generator."""
    from ..schemes.plan import InitPlan

    plan = InitPlan.build(init or "default", param=param, always_parametrize=True)
    plan.initialize_(model, seed)
    return plan.parametrization


def constants_for(model, p, init: str):
    """The declared constants of the parametrization, or (after another scheme) the weights' own."""
    from ..theory import Constants, constants_of

    if init in ("default", "none", ""):
        n_patch = PATCH * PATCH if "patch_size" in getattr(model, "config", {}) else 1
        return Constants.from_parametrization(p, width=model.width, mlp_ratio=4, n_patch=n_patch)
    return constants_of(model)


def probe_one(args, width: int, depth: int, param: str, *, predict: bool):
    from ..probe import probe

    model = build_model(args.model, width, depth, args.heads, tokens=args.tokens)
    p = init_model(model, param, args.init, args.seed)
    x, y, source = make_batch(args.model, args.batch, args.tokens, args.data, args.seed + 100)
    rep = probe(model, x, y if args.targets else None, predict=predict,
                constants=constants_for(model, p, args.init) if predict else None,
                samples=args.samples, seed=args.seed)
    rep.meta.update(param=param, init=args.init, data=source, seed=args.seed)
    return rep


def run(args) -> int:
    if args.agreement:
        return run_agreement(args)
    widths = parse_ints(args.widths, "--widths") if args.widths else [args.width]
    predict = not args.no_theory
    out = Path(args.out) if args.out else None
    reports = []
    for w in widths:
        rep = probe_one(args, w, args.depth, args.param, predict=predict)
        reports.append(rep)
        print(rep.table())
        print(f"(data: {rep.meta['data']}; param {args.param}, init {args.init})\n")
        if out:
            stem = "probe" if len(widths) == 1 else f"probe_w{w}"
            rep.write_json(out / f"{stem}.json")
            rep.write_csv(out / f"{stem}.csv")
            rep.plot(out / f"{stem}.png", title=f"{args.model} n={w} L={args.depth} {args.param}/{args.init}")
    if out and len(widths) > 1:
        plot_widths(reports, out / "widths.png")
    if out:
        print(f"wrote {out}/")
    return 0


def plot_widths(reports, path: Path) -> Path:
    """G, cosine and mlp_out gradient RMS per block, one colour per width; theory dashed."""
    from ..plotting import subplots

    fig, axes = subplots(1, 3, figsize=(14, 4))
    for j, rep in enumerate(reports):
        c = f"C{j}"
        x = range(1, rep.depth + 1)
        pb = (rep.predicted or {}).get("blocks") or []
        pg = ((rep.predicted or {}).get("grads") or {}).get("blocks") or []
        axes[0].plot(x, [b["G"] for b in rep.blocks], "o", ms=4, color=c, label=f"n={rep.width}")
        axes[1].plot(x, [b["cosine"] for b in rep.blocks], "o", ms=4, color=c)
        axes[2].semilogy(x, [rep.grad_rms("mlp_out", i) for i in range(rep.depth)], "o", ms=4, color=c)
        if pb:
            axes[0].plot(x, [p["G"] for p in pb], "--", color=c)
            axes[1].plot(x, [p["cosine"] for p in pb], "--", color=c)
        if pg:
            axes[2].semilogy(x, [p["mlp_out"] for p in pg], "--", color=c)
    for ax, t in zip(axes, ("residual G", "token-token cosine", "grad RMS mlp_out")):
        ax.set_title(t + " (dashed: theory)")
        ax.set_xlabel("block")
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def run_agreement(args) -> int:
    """Relative error of G (every block) and of gradient RMS (every group) per width x depth x param
    (x seed): one fresh draw of the weights per row, the prediction never fitted."""
    widths = parse_ints(args.widths or str(args.width), "--widths")
    depths = parse_ints(args.depths, "--depths")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    params = [p.strip() for p in args.params.split(",") if p.strip()]
    out = Path(args.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    kept = {}
    for param in params:
        for w in widths:
            for d in depths:
                for seed in seeds:
                    args.seed = seed
                    rep = probe_one(args, w, d, param, predict=True)
                    cmp = rep.comparison()
                    gs = [c["rel_error"] for c in cmp if c["quantity"] == "G" and c["block"] is not None
                          and c["block"] >= 0]
                    g = [abs(e) for e in gs]
                    grads = [c for c in cmp if c["quantity"].startswith("grad_rms") and c["rel_error"] is not None
                             and c["quantity"] != "grad_rms.head_bias"]  # head bias: exactly N·B/√n_out
                    qk = [c["rel_error"] for c in grads if c["quantity"] in ("grad_rms.q", "grad_rms.k")]
                    gr = [abs(c["rel_error"]) for c in grads if c["quantity"] not in ("grad_rms.q", "grad_rms.k")]
                    stem = next(c["rel_error"] for c in cmp if c["quantity"] == "G" and c["block"] == -1)
                    row = dict(param=param, width=w, depth=d, seed=seed, G_final=rep.blocks[-1]["G"],
                               G_final_pred=rep.predicted["blocks"][-1]["G"], G_stem_rel=stem,
                               G_signed_mean_rel=sum(gs) / len(gs), G_max_rel=max(g), G_mean_rel=sum(g) / len(g),
                               grad_median_rel=sorted(gr)[len(gr) // 2], grad_max_rel=max(gr),
                               grad_groups=len(gr), qk_signed_mean_rel=sum(qk) / len(qk),
                               qk_max_rel=max(abs(e) for e in qk))
                    rows.append(row)
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                          flush=True)
                    if d == max(depths):
                        rep.write_json(out / f"theory_agreement_{param}_w{w}_d{d}_s{seed}.json")
                        if seed == seeds[0]:
                            kept[(param, w)] = rep
    write_json(out / "theory_agreement.json", rows, indent=1)
    md = ["| param | width | depth | seed | G last block (measured / theory) | G stem | "
          "max \\|err\\| G over blocks | mean \\|err\\| G | grad RMS median \\|err\\| | "
          "grad RMS max \\|err\\| (groups) | q,k grad: mean err / max \\|err\\| |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['param']} | {r['width']} | {r['depth']} | {r['seed']} | {r['G_final']:.3f} / "
                  f"{r['G_final_pred']:.3f} | {100 * r['G_stem_rel']:+.1f}% | {100 * r['G_max_rel']:.1f}% | "
                  f"{100 * r['G_mean_rel']:.1f}% | {100 * r['grad_median_rel']:.1f}% | "
                  f"{100 * r['grad_max_rel']:.1f}% ({r['grad_groups']}) | "
                  f"{100 * r['qk_signed_mean_rel']:+.1f}% / {100 * r['qk_max_rel']:.1f}% |")
    (out / "theory_agreement.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    if kept:
        plot_agreement(kept, out / "theory_agreement.png")
    print(f"wrote {out}/theory_agreement.{{md,json,png}}")
    return 0


def plot_agreement(kept: dict, path: Path) -> Path:
    from ..plotting import subplots

    fig, axes = subplots(1, 2, figsize=(12, 4.5))
    for j, ((param, w), rep) in enumerate(sorted(kept.items())):
        c = f"C{j}"
        x = range(1, rep.depth + 1)
        pb = rep.predicted["blocks"]
        axes[0].plot(x, [b["G"] for b in rep.blocks], "o", ms=3, color=c, label=f"{param} n={w}")
        axes[0].plot(x, [p["G"] for p in pb], "-", lw=0.8, color="k" if j == 0 else c)
        pg = rep.predicted["grads"]["blocks"]
        axes[1].semilogy(x, [rep.grad_rms("mlp_out", i) for i in range(rep.depth)], "o", ms=3, color=c)
        axes[1].semilogy(x, [p["mlp_out"] for p in pg], "-", lw=0.8, color=c)
        axes[1].semilogy(x, [rep.grad_rms("q", i) for i in range(rep.depth)], "^", ms=3, color=c)
        axes[1].semilogy(x, [p["q"] for p in pg], ":", lw=0.8, color=c)
    axes[0].set_title("residual-stream G per block: measured (dots) vs leading order (lines)")
    axes[1].set_title("gradient RMS of Σ logit_0: mlp_out (o, —) and q (^, ···)")
    for ax in axes:
        ax.set_xlabel("block")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
