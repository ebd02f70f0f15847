"""``initlab sweep``: width × learning-rate grid; does the optimal lr transfer across width?

    initlab sweep --widths 64,128,256,512 --lrs 1e-4..1e-1:8 --param mu --base-width 64 \\
        --data fashion-mnist --train-size 5000 --epochs 2 --out runs/sweep-mu
    initlab sweep --widths 64 --depths 2,4,8,16 --lrs 1e-3..3e-2:6 --param completep \
        --data fashion-mnist --train-size 5000 --epochs 2 --out runs/sweep-completep-depth
"""
from __future__ import annotations

from ..experiments.invoke import add_sweep_flags, sweep


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", allow_abbrev=False,  # --width must never be read as --widths
        help="width (or depth) × lr grid: optimal lr per width (depth) and how far it moves",
        description="Train one model per (width, lr) cell and report the optimal lr per width, its shift "
                    "in log2 per doubling of width, and the loss lost at the largest width when it uses the "
                    "lr tuned at the smallest. Rerunning the same command continues an interrupted sweep.")
    add_sweep_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    base, widths, lrs, analysis, info = sweep(args, say=say)
    print()
    print(f"sweep {base.task} {base.data}, model {base.model}, param {base.param}, init {base.init}: "
          f"{len(widths)} {analysis.axis}s × {len(lrs)} lrs ({info['ran']} cells run now, "
          f"{info['skipped']} finished earlier)")
    print(analysis.report())
    print(f"\nwrote {base.out}/: sweep.csv, analysis.json, report.txt, transfer.png, cells/")
    return 0
