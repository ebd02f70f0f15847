"""``compare`` and ``sweep`` as the command line states them: flags in, checked configs, results out.

The CLI (:mod:`initlab.cli.compare`, :mod:`initlab.cli.sweep`) and the results suite
(:mod:`initlab.results`) both go through here, so a results step runs exactly what its displayed
``initlab compare ...`` command runs, without the suite importing the CLI.
"""
from __future__ import annotations

import argparse
from typing import Callable

from ..errors import ConfigError
from .checks import check_config
from .commands import command_text, default_out, write_command
from .configure import build_config
from .flags import add_config_flags
from .grid import parse_ints, parse_lrs, parse_names, parse_seeds


def add_compare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inits", default=None, metavar="A,B,...",
                   help="comma-separated init specs, each a scheme name or names joined by '+' "
                        "(e.g. default,mimetic,nt+mimetic); default: default,mimetic")
    p.add_argument("--seeds", default=None, metavar="N|S1,S2",
                   help="number of seeds (starting at --seed) or a comma list; default 1")
    add_config_flags(p, init_flag=False)


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--widths", default=None, metavar="W1,W2,...", help="model widths, e.g. 64,128,256,512")
    p.add_argument("--lrs", default=None, metavar="LO..HI:N|A,B,...",
                   help="learning rates: N log-spaced values from LO to HI (e.g. 1e-4..1e-1:8) or a comma list")
    p.add_argument("--metric", default=None,
                   help="history key to minimize (default: train_loss for vision, val_loss for lm)")
    add_config_flags(p, width_flag=False, lr_flag=False)


def parse_command(command: str, argv: list[str]) -> argparse.Namespace:
    """Parse ``initlab COMMAND argv...`` flags (compare or sweep) without the CLI."""
    parser = argparse.ArgumentParser(prog=f"initlab {command}", allow_abbrev=False)
    {"compare": add_compare_flags, "sweep": add_sweep_flags}[command](parser)
    args = parser.parse_args(argv)
    args.command = command
    return args


def compare(args: argparse.Namespace, *, say: Callable[[str], None] = lambda msg: None):
    """Check every init (its whole plan) before any training, then :func:`run_compare`.
    Returns ``(base config, seeds, CompareResult)``."""
    base, extra = build_config(args, extra_keys=("inits", "seeds"), check=False)
    inits = parse_names(extra.get("inits", "default,mimetic"), "--inits")
    seeds = parse_seeds(extra.get("seeds", 1), first=base.seed)
    for i, init in enumerate(inits):
        check_config(base.replace(init=init), check_data=i == 0)
    out = base.out or default_out("compare")
    if base.resume:
        raise ConfigError("compare has no --resume; rerun the same command with the same --out to continue")
    base = base.replace(out=out)
    from ..train.lock import hold_directory
    from .compare import run_compare
    from .runner import is_main_process
    # one writer per --out: a second compare/sweep/train on it exits 2 naming this process
    with hold_directory(out, command=command_text(args), enabled=is_main_process()):
        write_command(out, args)
        result = run_compare(base, inits, seeds, out, progress=not args.quiet, log=say,
                             command=command_text(args))
    return base, seeds, result


def sweep(args: argparse.Namespace, *, say: Callable[[str], None] = lambda msg: None,
          notice: Callable[[str], None] = print):
    """Check the config at every width, then :func:`run_sweep`. Returns
    ``(base config, widths, lrs, analysis, info)``."""
    base, extra = build_config(args, extra_keys=("widths", "lrs", "metric"))
    if "widths" not in extra or "lrs" not in extra:
        raise ConfigError("sweep needs --widths (e.g. 64,128,256) and --lrs (e.g. 1e-4..1e-1:8)")
    widths = parse_ints(extra["widths"], "--widths")
    lrs = parse_lrs(extra["lrs"])
    if base.resume:
        raise ConfigError("sweep has no --resume; rerun the same command with the same --out to continue")
    out = base.out or default_out("sweep")
    base = base.replace(out=out)
    from ..train.init import init_plan
    from ..train.lock import hold_directory
    from .runner import is_main_process
    from .sweep import run_sweep
    note = None
    if base.base_width is None and not init_plan(base).parametrization.is_standard:
        # lr factors are then (n / n_base)^e: the lr grid means "the lr at the smallest width"
        base = base.replace(base_width=min(widths))
        note = f"note: --base-width not given; using the smallest width {min(widths)}"
    # one writer per --out: a second sweep/compare/train on it exits 2 naming this process
    with hold_directory(out, command=command_text(args), enabled=is_main_process()):
        write_command(out, args)
        if note:
            notice(note)
        analysis, info = run_sweep(base, widths, lrs, out, metric=extra.get("metric"),
                                   progress=not args.quiet, log=say, command=command_text(args))
    return base, widths, lrs, analysis, info


__all__ = ["add_compare_flags", "add_sweep_flags", "parse_command", "compare", "sweep"]
