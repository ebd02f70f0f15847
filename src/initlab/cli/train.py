"""``initlab train``: one run, written to a run directory that ``--resume`` can continue.

    initlab train --data fashion-mnist --model vit-mini --init mimetic --epochs 10 --out runs/m1
    initlab train --resume runs/m1 --epochs 20      # continue (and extend) that run
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..experiments.commands import command_text, default_out
from ..experiments.configure import build_config
from ..experiments.flags import add_config_flags


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", allow_abbrev=False,  # --width must never be read as --widths
        help="train one model (vision or character LM) into a run directory",
        description="Train one model. The run directory gets config.json (the effective config), "
                    "command.txt, checkpoints, metrics.csv, summary.json and result.json. --resume DIR continues a run "
                    "from its last checkpoint with its saved config (flags given now override it).")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="DIR",
                   help="continue the run in DIR (or in --out) from its last checkpoint")
    add_config_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..experiments.records import read_json
    from ..experiments.runner import is_main_process, run_cell

    base = None
    if args.resume:
        run_dir = args.resume if isinstance(args.resume, str) else args.out
        if not run_dir:
            raise ConfigError("--resume needs a run directory: --resume DIR (or --resume --out DIR)")
        if args.out and isinstance(args.resume, str) and Path(args.out) != Path(args.resume):
            raise ConfigError(f"--resume {args.resume} and --out {args.out} name different directories")
        saved = Path(run_dir) / "config.json"
        if not saved.is_file():
            raise ConfigError(f"cannot resume: {saved} not found (is {run_dir} a run directory?)")
        try:
            base = read_json(saved)
        except ValueError as exc:
            raise ConfigError(f"cannot resume: {saved} is not valid JSON ({exc})") from None
        base = {**base, "out": str(run_dir)}
    # keep args.resume out of flag_values' reach: it is handled here
    resume_flag, args.resume = args.resume, None
    config, _ = build_config(args, base=base)
    args.resume = resume_flag
    out = config.out or default_out("train")
    config = config.replace(out=out, resume=bool(resume_flag))
    Path(out).mkdir(parents=True, exist_ok=True)
    command = command_text(args)
    record, _ = run_cell(config, {"init": config.init, "seed": config.seed}, progress=not args.quiet,
                         reuse=False, command=command)
    if not is_main_process():  # other torchrun ranks: rank 0 reports and writes
        return 0 if record.status in ("completed", "interrupted") else 1
    if not (Path(out) / "command.txt").exists():  # the engine records it; keep one either way
        _append_command(out, command)
    from ..experiments.summary import primary_metric

    metric = primary_metric(config.task, [record])
    final = record.final_metric(metric.key)
    best = record.best_metric(metric.key, metric.higher_is_better)
    unit = "%" if metric.scale == 100 else ""
    print(f"{record.status}: final {metric.key} {final * metric.scale:.{metric.digits}f}{unit}, "
          f"best {best * metric.scale:.{metric.digits}f}{unit}, {record.epochs_done():.3g} epochs, "
          f"{record.wall_time_s:.1f}s; run dir {out}")
    return 0 if record.status in ("completed", "interrupted") else 1


def _append_command(out: str, command: str) -> None:
    with open(Path(out) / "command.txt", "a", encoding="utf-8") as f:
        f.write(command + "\n")
