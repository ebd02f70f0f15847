"""Role maps over sharded (FSDP2 / DTensor) parameters.

``fully_shard`` turns every parameter into a ``DTensor`` holding one shard per rank. The role
map's views (a fused qkv slice, one head's columns, a fused gate/up half) cannot be taken on a
sharded tensor, so writers work on full copies instead:

    with full_tensors(rmap) as full:   # each DTensor gathered once (full_tensor())
        ...write through full's views...
    # on exit each full tensor is written back into its DTensor, shard by shard

Every rank computes the same full tensors (same generator, same draws), so the write back is local:
``distribute_tensor(full, mesh, placements, src_data_rank=None)`` keeps this rank's shard, no
communication. The result equals initializing the unsharded model with the same generator.
On a model without DTensors, :func:`full_tensors` yields the map itself and costs nothing.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from typing import Iterator

import torch

from .core import RoleMap


def is_dtensor(t) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (checked without importing it eagerly)."""
    return any(c.__name__ == "DTensor" for c in type(t).__mro__)


def has_dtensors(rmap: RoleMap) -> bool:
    return any(is_dtensor(info.param) for info in rmap)


def full_view(t: torch.Tensor) -> torch.Tensor:
    """A full (unsharded) plain tensor of ``t``: gathered for a DTensor, ``t`` itself otherwise."""
    return t.detach().full_tensor() if is_dtensor(t) else t


@contextmanager
def full_tensors(rmap: RoleMap, *, write_back: bool = True) -> Iterator[RoleMap]:
    """Yield a copy of ``rmap`` whose tensors are full local copies of its DTensor parameters.

    On normal exit (and ``write_back``) every full copy is written into its DTensor, keeping the
    parameter object, dtype, device, placements and ``requires_grad``. Plain parameters are shared,
    not copied. Controls and logit-scale setters act on the model as before.
    """
    swaps: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for info in rmap:
        p = info.param
        if id(p) not in swaps and is_dtensor(p):
            # the copy says whether the parameter trains, so frozen tensors stay frozen to writers
            swaps[id(p)] = (p, p.detach().full_tensor().requires_grad_(p.requires_grad))
    if not swaps:
        yield rmap
        return

    def sub(t):
        return swaps[id(t)][1] if t is not None and id(t) in swaps else t

    def proj(pr):
        return replace(pr, weight=sub(pr.weight), bias=sub(pr.bias))

    params = {n: replace(info, param=sub(info.param)) for n, info in rmap.params.items()}
    attention = [replace(a, q=proj(a.q), k=proj(a.k), v=proj(a.v), o=proj(a.o)) for a in rmap.attention]
    yield replace(rmap, params=params, attention=attention)
    if write_back:
        from torch.distributed.tensor import distribute_tensor
        with torch.no_grad():
            for p, full in swaps.values():
                shard = distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None)
                p.copy_(shard)
