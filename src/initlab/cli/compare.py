"""``initlab compare``: several inits, several seeds, one table.

    initlab compare --data fashion-mnist --train-size 5000 --inits default,mimetic \\
        --model vit-micro --epochs 4 --seeds 3 --out runs/cmp
"""
from __future__ import annotations

from ..errors import ConfigError
from ..experiments.checks import check_config
from ..experiments.commands import command_text, default_out, write_command
from ..experiments.configure import build_config
from ..experiments.flags import add_config_flags
from ..experiments.grid import parse_names, parse_seeds


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", allow_abbrev=False,  # --width must never be read as --widths
        help="train one model per (init, seed) and tabulate mean ± std",
        description="Train the same configuration under several initialization schemes and seeds; print "
                    "final/best test accuracy (vision) or validation bits per character (lm) as mean ± std "
                    "over seeds; write metrics.csv/json, summary.csv/json and curves.png to --out.")
    p.add_argument("--inits", default=None, metavar="A,B,...",
                   help="comma-separated init specs, each a scheme name or names joined by '+' "
                        "(e.g. default,mimetic,nt+mimetic); default: default,mimetic")
    p.add_argument("--seeds", default=None, metavar="N|S1,S2",
                   help="number of seeds (starting at --seed) or a comma list; default 1")
    add_config_flags(p, init_flag=False)
    p.set_defaults(run=run)


def run(args) -> int:
    base, extra = build_config(args, extra_keys=("inits", "seeds"), check=False)
    inits = parse_names(extra.get("inits", "default,mimetic"), "--inits")
    seeds = parse_seeds(extra.get("seeds", 1), first=base.seed)
    for i, init in enumerate(inits):  # every init's whole plan checked before any training
        check_config(base.replace(init=init), check_data=i == 0)
    out = base.out or default_out("compare")
    if base.resume:
        raise ConfigError("compare has no --resume; rerun the same command with the same --out to continue")
    base = base.replace(out=out)
    write_command(out, args)

    from ..experiments.compare import run_compare

    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    result = run_compare(base, inits, seeds, out, progress=not args.quiet, log=say,
                         command=command_text(args))
    print()
    print(f"{base.task} {base.data}, model {base.model}, {len(seeds)} seed(s); final = last evaluation, "
          f"best = best evaluation")
    print(result.table)
    print(f"\nwrote {out}/: summary.csv, summary.json, metrics.csv, metrics.json, curves.png, runs/")
    return 0
