"""``initlab coordcheck``: per-role activation and update sizes across widths after a few steps.

    initlab coordcheck --widths 64,128,256,512 --params standard,nt,mu --lr 2e-3 --out runs/cc

Flat curves mean the parametrization transfers across width (μP's coordinate check); the
standard parametrization at one learning rate grows with width. Model: the paper's ViT
(pre-LN, bias-free, frozen LN affine, mean pooling), head_dim 32, on one fixed batch.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..experiments.grid import parse_ints
from .probe import build_model, make_batch


def add_parser(sub) -> None:
    p = sub.add_parser("coordcheck", help="coordinate check: activation/update sizes across widths",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("vit", "gpt"), default="vit")
    p.add_argument("--widths", default="64,128,256")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--params", default="standard,nt,mu")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, default=2e-3, help="base lr (the factors are 1 at the smallest width)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--data", choices=("auto", "synthetic"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..coord_check import coord_check

    widths = parse_ints(args.widths, "--widths")
    x, y, source = make_batch(args.model, args.batch, args.tokens, args.data, args.seed)
    params = [p.strip() for p in args.params.split(",") if p.strip()]
    cc = coord_check(lambda w: build_model(args.model, w, args.depth, max(1, w // 32), tokens=args.tokens),
                     widths, x, y, params=params, optimizer=args.optimizer, lr=args.lr, steps=args.steps,
                     seed=args.seed)
    print(cc.table())
    print(f"(data: {source}; {args.optimizer} lr {args.lr}, {args.steps} steps, base width {min(widths)})")
    if args.out:
        out = Path(args.out)
        cc.write_csv(out / "coordcheck.csv")
        cc.plot(out / "coordcheck.png", key="delta")
        cc.plot(out / "coordcheck_act.png", key="act")
        print(f"wrote {out}/coordcheck.{{csv,png}}, coordcheck_act.png")
    return 0
