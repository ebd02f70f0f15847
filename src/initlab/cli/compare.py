"""``initlab compare``: several inits, several seeds, one table.

    initlab compare --data fashion-mnist --train-size 5000 --inits default,mimetic \\
        --model vit-micro --epochs 4 --seeds 3 --out runs/cmp
"""
from __future__ import annotations

from ..experiments.invoke import add_compare_flags, compare


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", allow_abbrev=False,  # --width must never be read as --widths
        help="train one model per (init, seed) and tabulate mean ± std",
        description="Train the same configuration under several initialization schemes and seeds; print "
                    "final/best test accuracy (vision) or validation bits per character (lm) as mean ± std "
                    "over seeds; write metrics.csv/json, summary.csv/json and curves.png to --out.")
    add_compare_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    base, seeds, result = compare(args, say=say)
    print()
    print(f"{base.task} {base.data}, model {base.model}, {len(seeds)} seed(s); final = last evaluation, "
          f"best = best evaluation")
    print(result.table)
    print(f"\nwrote {base.out}/: summary.csv, summary.json, metrics.csv, metrics.json, curves.png, runs/")
    return 0
