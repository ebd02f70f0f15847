"""Learning-rate schedule: linear warmup, then cosine decay to ``lr * min_lr_ratio``.

The schedule is a pure function of the step, wrapped in a picklable callable so that
``torch.optim.lr_scheduler.LambdaLR`` can save and restore it with the optimizer. Every
parameter group keeps its own base learning rate (parametrizations scale lr per group);
the schedule multiplies all of them by the same factor.
"""
from __future__ import annotations

import math

from ..errors import ConfigError


def warmup_steps(warmup: float, total_steps: int) -> int:
    """``warmup < 1`` is a fraction of the run; ``warmup >= 1`` is a number of steps."""
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    n = round(warmup * total_steps) if warmup < 1 else int(warmup)
    return min(n, total_steps)


class WarmupCosine:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    ``factor(step) = (step + 1) / warmup`` during warmup (never 0, so step 0 already moves),
    then ``min_ratio + (1 - min_ratio) * (1 + cos(pi * t)) / 2`` with ``t`` going 0 -> 1 over
    the remaining steps, so the last step runs at ``lr * min_ratio`` (plus one step of cosine).
    """

    def __init__(self, total_steps: int, warmup: int, min_ratio: float = 0.0):
        if total_steps <= 0:
            raise ConfigError(f"the run needs at least one step, got {total_steps}")
        if not 0.0 <= min_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {min_ratio}")
        self.total_steps, self.warmup, self.min_ratio = int(total_steps), int(warmup), float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        decay_steps = max(1, self.total_steps - self.warmup)
        t = min(1.0, (step - self.warmup) / decay_steps)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
