"""Training batches as a pure function of the step: exact resumption and exact DDP sharding.

Every random choice of the input pipeline -- the order of examples in an epoch, crop offsets and
flips, language-model window positions -- comes from a generator seeded by ``(seed, epoch)`` or
``(seed, step)`` (:func:`initlab.data.batches.derive_seed`), never from a generator that carries
state from step to step. Hence:

* the data position of a run *is* its step counter: a resumed run sees exactly the batches an
  uninterrupted run would have seen;
* the random choices are drawn for the whole *global* batch and every rank takes its own
  disjoint slice, so N processes with ``batch_size/N`` examples each see the same examples,
  augmented the same way, as one process with ``batch_size`` examples.

Vision uses :class:`initlab.data.VisionBatches` (which works this way); the language-model stream
below adds rank slicing to the random-window batches of :mod:`initlab.data.text`.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def local_slice(global_batch: int, rank: int, world_size: int) -> slice:
    if global_batch % world_size:
        raise ConfigError(f"batch_size {global_batch} is not divisible by the number of processes "
                          f"{world_size}; pick a multiple")
    return slice(rank, None, world_size)


class VisionStream:
    """Step-indexed view of a :class:`~initlab.data.VisionBatches`: ``batch(step)``."""

    def __init__(self, batches):
        self.batches = batches
        self.steps_per_epoch = len(batches)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(step, self.steps_per_epoch)
        return self.batches.batch(epoch, index)


class TextStream:
    """Random windows x = tokens[s:s+T], y = tokens[s+1:s+T+1]; batch ``step`` depends on (seed, step).

    The ``batch_size`` window starts of a step are drawn on the CPU (the same on every device) for
    the global batch; rank r keeps starts r, r+N, ...
    """

    STREAM = 3

    def __init__(self, tokens: torch.Tensor, *, batch_size: int, block_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        if tokens.numel() < block_size + 2:
            raise ConfigError(f"the training text has {tokens.numel()} tokens, fewer than "
                              f"block_size+2 = {block_size + 2}; use a longer text or a smaller block_size")
        self.tokens = tokens.to(self.device, torch.int64)
        self.batch_size, self.block_size, self.seed = batch_size, block_size, seed
        self.slice = local_slice(batch_size, rank, world_size)
        self.n_starts = self.tokens.numel() - block_size  # s in [0, n - T - 1]
        self._ar = torch.arange(block_size + 1, device=self.device)
        # one epoch = as many tokens as the training text has
        self.steps_per_epoch = max(1, math.ceil(self.tokens.numel() / (batch_size * block_size)))

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from ..data.batches import derive_seed
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.STREAM, step))
        starts = torch.randint(0, self.n_starts, (self.batch_size,), generator=g)[self.slice]
        # non_blocking: a blocking host-to-device copy would wait for the queued GPU work
        w = self.tokens[starts.to(self.device, non_blocking=True).view(-1, 1) + self._ar]
        return w[:, :-1], w[:, 1:]
