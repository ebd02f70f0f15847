"""``initlab coordcheck``: per-role activation and update sizes across widths after a few steps.

    initlab coordcheck --widths 64,128,256,512 --params standard,nt,mu --lr 2e-3 --out runs/cc
    initlab coordcheck --hf gpt2 --widths 64,128 --depth 2 --params standard,mu
    initlab coordcheck --model gpt --widths 64 --depths 2,4,8,16 --params mu,completep --lr 1e-2

Flat curves mean the parametrization transfers across width (μP's coordinate check); the
standard parametrization at one learning rate grows with width. Model: the paper's ViT (pre-LN,
bias-free, frozen LN affine, mean pooling) or any ``--hf`` type / ``--config`` file, head_dim 32,
on one fixed batch. The work lives in :func:`initlab.probe.runs.run_coordcheck`.
"""
from __future__ import annotations

from ..experiments.grid import parse_ints
from .probe import add_model_flags, model_spec


def add_parser(sub) -> None:
    p = sub.add_parser("coordcheck", help="coordinate check: activation/update sizes across widths",
                       description=__doc__.split("\n\n")[0])
    add_model_flags(p)
    p.add_argument("--widths", default="64,128,256")
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--depths", default=None,
                   help="comma-separated depths: sweep depth too (base depth the smallest; flat curves "
                        "across depth under depth-mup/completep)")
    p.add_argument("--params", default="standard,nt,mu")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, default=2e-3, help="base lr (the factors are 1 at the smallest width)")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--data", choices=("auto", "synthetic"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..probe.runs import run_coordcheck

    res = run_coordcheck(model_spec(args), parse_ints(args.widths, "--widths"), args.depth,
                         [p.strip() for p in args.params.split(",") if p.strip()],
                         optimizer=args.optimizer, lr=args.lr, steps=args.steps, batch=args.batch,
                         data=args.data, seed=args.seed, out=args.out,
                         depths=parse_ints(args.depths, "--depths") if args.depths else None)
    print(res.check.table())
    depths = f", base depth {min(parse_ints(args.depths, '--depths'))}" if args.depths else ""
    print(f"(data: {res.data}; {args.optimizer} lr {args.lr}, {args.steps} steps, base width "
          f"{min(parse_ints(args.widths, '--widths'))}{depths})")
    if args.out:
        print(f"wrote {args.out}/coordcheck.{{csv,png}}, coordcheck_act.png")
    return 0
