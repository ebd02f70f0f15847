"""``initlab sweep``: width × learning-rate grid; does the optimal lr transfer across width?

    initlab sweep --widths 64,128,256,512 --lrs 1e-4..1e-1:8 --param mu --base-width 64 \\
        --data fashion-mnist --train-size 5000 --epochs 2 --out runs/sweep-mu
"""
from __future__ import annotations

from ..experiments.commands import command_text, default_out, write_command
from ..experiments.configure import build_config
from ..experiments.flags import add_config_flags
from ..experiments.grid import parse_ints, parse_lrs


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", allow_abbrev=False,  # --width must never be read as --widths
        help="width × lr grid: optimal lr per width and how far it moves",
        description="Train one model per (width, lr) cell and report the optimal lr per width, its shift "
                    "in log2 per doubling of width, and the loss lost at the largest width when it uses the "
                    "lr tuned at the smallest. Rerunning the same command continues an interrupted sweep.")
    p.add_argument("--widths", default=None, metavar="W1,W2,...", help="model widths, e.g. 64,128,256,512")
    p.add_argument("--lrs", default=None, metavar="LO..HI:N|A,B,...",
                   help="learning rates: N log-spaced values from LO to HI (e.g. 1e-4..1e-1:8) or a comma list")
    p.add_argument("--metric", default=None,
                   help="history key to minimize (default: train_loss for vision, val_loss for lm)")
    add_config_flags(p, width_flag=False, lr_flag=False)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..errors import ConfigError

    base, extra = build_config(args, extra_keys=("widths", "lrs", "metric"))
    if "widths" not in extra or "lrs" not in extra:
        raise ConfigError("sweep needs --widths (e.g. 64,128,256) and --lrs (e.g. 1e-4..1e-1:8)")
    widths = parse_ints(extra["widths"], "--widths")
    lrs = parse_lrs(extra["lrs"])
    if base.resume:
        raise ConfigError("sweep has no --resume; rerun the same command with the same --out to continue")
    out = base.out or default_out("sweep")
    base = base.replace(out=out)
    note = ""
    if base.base_width is None and _not_standard(base):
        # lr factors are then (n / n_base)^e: the lr grid means "the lr at the smallest width"
        base = base.replace(base_width=min(widths))
        note = f"note: --base-width not given; using the smallest width {min(widths)}\n"
    write_command(out, args)

    from ..experiments.sweep import run_sweep

    if note:
        print(note, end="")
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    analysis, info = run_sweep(base, widths, lrs, out, metric=extra.get("metric"), progress=not args.quiet,
                               log=say, command=command_text(args))
    print()
    print(f"sweep {base.task} {base.data}, model {base.model}, param {base.param}, init {base.init}: "
          f"{len(widths)} widths × {len(lrs)} lrs ({info['ran']} cells run now, {info['skipped']} finished earlier)")
    print(analysis.report())
    print(f"\nwrote {out}/: sweep.csv, analysis.json, report.txt, transfer.png, cells/")
    return 0


def _not_standard(config) -> bool:
    from ..train.init import init_plan
    return not init_plan(config).parametrization.is_standard
