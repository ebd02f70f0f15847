"""``train``, ``compare`` and ``sweep`` as the command line states them: flags in, checked
configs and their init plans, results out.

The CLI (:mod:`initlab.cli.train`, :mod:`initlab.cli.compare`, :mod:`initlab.cli.sweep`) and the
results suite (:mod:`initlab.results`) both go through here, so a results step runs exactly what
its displayed ``initlab compare ...`` command runs, without the suite importing the CLI. Each body
checks its config(s) once, keeps the :class:`~initlab.schemes.InitPlan` that check built and passes
it down to the engine (config -> plan -> engine -> optimizer).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .checks import check_config
from .commands import command_text, default_out, record_command, write_command
from .configure import build_config
from .flags import add_config_flags
from .grid import parse_inits, parse_ints, parse_lrs, parse_seeds


def add_compare_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inits", default=None, metavar="A,B,...",
                   help="comma-separated init specs, each a scheme name or names joined by '+' "
                        "(e.g. default,mimetic,nt+mimetic); default: default,mimetic")
    p.add_argument("--seeds", default=None, metavar="N|S1,S2",
                   help="number of seeds (starting at --seed) or a comma list; default 1")
    add_config_flags(p, init_flag=False)


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--widths", default=None, metavar="W1,W2,...", help="model widths, e.g. 64,128,256,512")
    p.add_argument("--depths", default=None, metavar="L1,L2,...",
                   help="sweep across depth instead, at the preset's (or --width's) width, e.g. 2,4,8,16")
    p.add_argument("--lrs", default=None, metavar="LO..HI:N|A,B,...",
                   help="learning rates: N log-spaced values from LO to HI (e.g. 1e-4..1e-1:8) or a comma list")
    p.add_argument("--metric", default=None,
                   help="history key to minimize (default: train_loss for vision, val_loss for lm)")
    add_config_flags(p, width_flag=False, lr_flag=False)


def add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                   help="continue the run in DIR (or in --out) from its last checkpoint")
    add_config_flags(p)


def parse_command(command: str, argv: list[str]) -> argparse.Namespace:
    """Parse ``initlab COMMAND argv...`` flags (train, compare or sweep) without the CLI."""
    parser = argparse.ArgumentParser(prog=f"initlab {command}", allow_abbrev=False)
    {"train": add_train_flags, "compare": add_compare_flags, "sweep": add_sweep_flags}[command](parser)
    args = parser.parse_args(argv)
    args.command = command
    return args


def _progress(args: argparse.Namespace, progress):
    """``progress`` when the caller gives one (the results suite labels its steps), else the flags'."""
    return progress if progress is not None else not args.quiet


def compare(args: argparse.Namespace, *, say: Callable[[str], None] = lambda msg: None, progress=None):
    """Check every init (its whole plan) before any training, then :func:`run_compare`.
    Returns ``(base config, seeds, CompareResult)``."""
    base, extra = build_config(args, extra_keys=("inits", "seeds"))
    inits = parse_inits(extra.get("inits", "default,mimetic"))
    seeds = parse_seeds(extra.get("seeds", 1), first=base.seed)
    plans = {init: check_config(base.replace(init=init), check_data=i == 0) for i, init in enumerate(inits)}
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
        result = run_compare(base, inits, seeds, out, plans=plans, progress=_progress(args, progress), log=say,
                             command=command_text(args))
    return base, seeds, result


def sweep(args: argparse.Namespace, *, say: Callable[[str], None] = lambda msg: None,
          notice: Callable[[str], None] = print, progress=None):
    """Check the config at every width, then :func:`run_sweep`. Returns
    ``(base config, widths, lrs, analysis, info)``."""
    base, extra = build_config(args, extra_keys=("widths", "depths", "lrs", "metric"))
    if "lrs" not in extra or not ("widths" in extra or "depths" in extra):
        raise ConfigError("sweep needs --widths (e.g. 64,128,256) or --depths (e.g. 2,4,8,16), and --lrs "
                          "(e.g. 1e-4..1e-1:8)")
    widths = parse_ints(extra["widths"], "--widths") if "widths" in extra else None
    depths = parse_ints(extra["depths"], "--depths") if "depths" in extra else None
    axis = "width"
    if depths is not None and len(depths) > 1:
        if widths is not None and len(widths) > 1:
            raise ConfigError("sweep one axis at a time: --widths W1,W2,... or --depths L1,L2,... (with at "
                              "most one width, e.g. --widths 256 --depths 2,4,8,16)")
        axis = "depth"
        if widths is not None:
            base = base.replace(width=widths[0])
        widths = depths
    elif depths is not None:
        base = base.replace(depth=depths[0])
    if widths is None:
        raise ConfigError("sweep needs two or more --widths, or two or more --depths")
    plan = check_config(base)
    lrs = parse_lrs(extra["lrs"])
    if base.resume:
        raise ConfigError("sweep has no --resume; rerun the same command with the same --out to continue")
    out = base.out or default_out("sweep")
    base = base.replace(out=out)
    from ..train.init import init_plan
    from ..train.lock import hold_directory
    from .runner import is_main_process
    from .sweep import run_sweep
    notes = []
    if base.base_width is None and not plan.parametrization.is_standard:
        # lr factors are then (n / n_base)^e: the lr grid means "the lr at the smallest width";
        # the config changed, so its plan is built for the new base width
        if axis == "width":
            base = base.replace(base_width=min(widths))
            notes.append(f"note: --base-width not given; using the smallest width {min(widths)}")
        else:  # a depth sweep: the lr factors are 1 at the sweep's one width
            from ..models import PRESETS
            width = base.width or PRESETS.get(base.model, (None, {}))[1].get("width")
            if width is not None:
                base = base.replace(base_width=int(width))
                notes.append(f"note: --base-width not given; using the model's width {width}")
    if axis == "depth" and base.base_depth is None and plan.parametrization.depth_alpha is not None:
        base = base.replace(base_depth=min(widths))  # the depth factors are 1 at the shallowest model
        notes.append(f"note: --base-depth not given; using the smallest depth {min(widths)}")
    if notes:
        plan = init_plan(base)
    note = "\n".join(notes) or None
    # one writer per --out: a second sweep/compare/train on it exits 2 naming this process
    with hold_directory(out, command=command_text(args), enabled=is_main_process()):
        write_command(out, args)
        if note:
            notice(note)
        analysis, info = run_sweep(base, widths, lrs, out, metric=extra.get("metric"), plan=plan,
                                   progress=_progress(args, progress), log=say, command=command_text(args),
                                   axis=axis)
    return base, widths, lrs, analysis, info


def train(args: argparse.Namespace, *, progress=None):
    """One run as ``initlab train`` states it (``args.resume``: True, a run directory or None;
    ``args`` is not changed). Returns ``(record, config, out, main)``: the run's
    :class:`~initlab.experiments.records.RunRecord`, its config, run directory, and whether this
    process is rank 0 (the one that reports). ``progress``: the live line (default: unless
    ``--quiet``), as for :func:`compare` and :func:`sweep`."""
    from ..train.lock import hold_directory
    from .runner import is_main_process, run_cell

    resume = getattr(args, "resume", None)
    base = _resumed_config(resume, args.out) if resume else None
    # --resume is read here, not as a config flag: build the config from a copy without it
    config, _ = build_config(argparse.Namespace(**{**vars(args), "resume": None}), base=base)
    out = config.out or default_out("train")
    config = config.replace(out=out, resume=bool(resume))
    plan = check_config(config)
    command = command_text(args)
    main = is_main_process()
    # one writer per run directory: taken before anything is written (creates out; a file, a
    # read-only place or another process holding it is a one-line error here)
    with hold_directory(out, flag="--out", what="run directory", command=command, enabled=main):
        record, _ = run_cell(config, {"init": config.init, "seed": config.seed}, plan=plan,
                             progress=_progress(args, progress), reuse=False,
                             command=command)
        if main and not (Path(out) / "command.txt").exists():  # the engine records it; keep one either way
            record_command(out, command)
    return record, config, out, main


def _resumed_config(resume, out) -> dict:
    """The saved config of the run ``--resume [DIR]`` continues (its ``out`` set to that directory)."""
    from .records import read_json

    run_dir = resume if isinstance(resume, str) else out
    if not run_dir:
        raise ConfigError("--resume needs a run directory: --resume DIR (or --resume --out DIR)")
    if out and isinstance(resume, str) and Path(out) != Path(resume):
        raise ConfigError(f"--resume {resume} and --out {out} name different directories")
    saved = Path(run_dir) / "config.json"
    if not saved.is_file():
        raise ConfigError(f"cannot resume: {saved} not found (is {run_dir} a run directory?)")
    try:
        base = read_json(saved)
    except ValueError as exc:
        raise ConfigError(f"cannot resume: {saved} is not valid JSON ({exc})") from None
    return {**base, "out": str(run_dir)}


__all__ = ["add_compare_flags", "add_sweep_flags", "parse_command", "compare", "sweep", "train"]
