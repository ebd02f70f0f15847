"""``initlab compare``: several inits, several seeds, one table.

    initlab compare --data fashion-mnist --train-size 5000 --inits default,mimetic \\
        --model vit-micro --epochs 4 --seeds 3 --out runs/cmp
"""
from __future__ import annotations

from ..errors import ConfigError
from ..experiments.configure import add_config_flags, build_config, command_text, default_out, write_command
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
    from ..experiments.configure import check_config

    for i, init in enumerate(inits):  # every init checked (names, param agreement) before any training
        check_config(base.replace(init=init), check_data=i == 0)
    out = base.out or default_out("compare")
    if base.resume:
        raise ConfigError("compare has no --resume; rerun the same command with the same --out to continue")
    base = base.replace(out=out)
    from ..experiments.compare import run_compare
    from ..experiments.runner import is_main_process
    from ..train.lock import hold_directory

    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    # one writer per --out: a second compare/sweep/train on it exits 2 naming this process
    with hold_directory(out, command=command_text(args), enabled=is_main_process()):
        write_command(out, args)
        result = run_compare(base, inits, seeds, out, progress=not args.quiet, log=say,
                             command=command_text(args))
    print()
    print(f"{base.task} {base.data}, model {base.model}, {len(seeds)} seed(s); final = last evaluation, "
          f"best = best evaluation")
    print(result.table)
    print(f"\nwrote {out}/: summary.csv, summary.json, metrics.csv, metrics.json, curves.png, runs/")
    return 0
