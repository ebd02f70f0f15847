"""Seeded, class-balanced training subsets: the small-data regime mimetic init is about.

``balanced_subset(labels, size, seed=s)`` takes the same number of examples from every class. When
``size`` is not a multiple of the number of classes, the remainder goes one extra example each to
classes picked in a seeded order; when a class has fewer examples than its share (MNIST's class 5
has 5421 training digits), it gives all it has and the deficit is spread over the other classes the
same way ("water filling"). Within a class the examples are a seeded random permutation's prefix,
so for a fixed seed a larger subset contains every smaller one.
"""
from __future__ import annotations

import torch

from ..errors import ConfigError


def _allocate(counts: list[int], size: int, class_order: list[int]) -> list[int]:
    """Per-class quotas: as equal as capacities allow, remainders to classes in ``class_order``."""
    alloc = [0] * len(counts)
    remaining = size
    while remaining > 0:
        open_classes = [c for c in class_order if alloc[c] < counts[c]]
        share = remaining // len(open_classes)
        if share == 0:  # fewer left than open classes: one more each, in the seeded order
            for c in open_classes[:remaining]:
                alloc[c] += 1
            break
        for c in open_classes:
            add = min(share, counts[c] - alloc[c])
            alloc[c] += add
            remaining -= add
    return alloc


def balanced_subset(labels, size: int, *, seed: int) -> torch.Tensor:
    """Indices (sorted int64) of a seeded class-balanced subset of ``size`` examples.

    ``labels``: 1-D integer labels (tensor, array or list). Raises :class:`ConfigError` when
    ``size`` exceeds the number of examples or is smaller than the number of classes present.
    """
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    n = labels.numel()
    if isinstance(size, bool) or int(size) != size:
        raise ConfigError(f"train_size must be an integer, got {size!r}")
    size = int(size)
    classes = torch.unique(labels)
    if size > n:
        raise ConfigError(f"train_size={size} is larger than the {n} available examples; "
                          f"use at most {n} (or leave train_size unset for the whole split)")
    if size < len(classes):
        raise ConfigError(f"train_size={size} is smaller than the number of classes ({len(classes)}); "
                          f"a class-balanced subset needs at least one example per class")
    g = torch.Generator().manual_seed(int(seed))
    # all random draws come first and do not depend on size: that is what makes subsets nested
    class_order = torch.randperm(len(classes), generator=g).tolist()
    members = [torch.nonzero(labels == c).flatten() for c in classes]
    perms = [m[torch.randperm(len(m), generator=g)] for m in members]
    quotas = _allocate([len(m) for m in members], size, class_order)
    chosen = torch.cat([p[:q] for p, q in zip(perms, quotas)])
    return torch.sort(chosen).values
