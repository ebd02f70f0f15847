"""``initlab train``: one run, written to a run directory that ``--resume`` can continue.

    initlab train --data fashion-mnist --model vit-mini --init mimetic --epochs 10 --out runs/m1
    initlab train --resume runs/m1 --epochs 20      # continue (and extend) that run
"""
from __future__ import annotations

import math

from ..experiments.invoke import add_train_flags


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train", allow_abbrev=False,  # --width must never be read as --widths
        help="train one model (vision or character LM) into a run directory",
        description="Train one model. The run directory gets config.json (the effective config), "
                    "command.txt, checkpoints, metrics.csv, summary.json and result.json. --resume DIR continues a run "
                    "from its last checkpoint with its saved config (flags given now override it).")
    add_train_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..experiments.invoke import train

    record, config, out, main = train(args)
    return _report(record, config, out, main)


def _report(record, config, out: str, main: bool) -> int:
    """Print the outcome (rank 0) and return the exit code: 0 completed, 1 diverged, 128+signal
    when interrupted (130 SIGINT, 143 SIGTERM; the checkpoint is kept for --resume)."""
    import signal
    import sys

    if record.status == "interrupted":
        code = record.exit_code()
        if main:
            print(f"interrupted by {signal.Signals(code - 128).name} at step {_last_step(record)}; the "
                  f"checkpoint is kept: continue with initlab train --resume {out}", file=sys.stderr)
        return code
    if not main:  # other torchrun ranks: rank 0 reports and writes
        return 0 if record.status == "completed" else 1
    from ..experiments.summary import primary_metric

    metric = primary_metric(config.task, [record])
    final = record.final_metric(metric.key)
    best = record.best_metric(metric.key, metric.higher_is_better)
    unit = "%" if metric.scale == 100 else ""

    def show(v):
        return f"{v * metric.scale:.{metric.digits}f}{unit}"
    if record.status == "diverged":
        where = _last_step(record)
        last = (f"best {metric.key} before that {show(best)}" if math.isfinite(best)
                else f"no finite {metric.key} was measured")
        print(f"diverged: the loss became NaN or inf by step {where}; {last}; metrics.csv and "
              f"summary.json in {out} have the evaluations up to there. Lower --lr, raise --warmup "
              f"or set --clip")
        return record.exit_code()
    print(f"{record.status}: final {metric.key} {show(final)}, best {show(best)}, "
          f"{record.epochs_done():.3g} epochs, {record.wall_time_s:.1f}s; run dir {out}")
    return 0


def _last_step(record) -> str:
    step, total = record.extra.get("step"), record.extra.get("total_steps")
    if step is None:
        step = record.history[-1]["step"] if record.history else "?"
    return f"{step} of {total}" if total else str(step)
