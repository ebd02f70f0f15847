"""Distributed data parallel plumbing: process group from torchrun's environment, rank helpers.

``torchrun --nproc_per_node N -m initlab train ...`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and joins the group (gloo on CPU,
nccl on CUDA). With ``WORLD_SIZE`` unset or 1 everything here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError, TrainingError


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError as exc:
        raise ConfigError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from exc


def env_rank() -> int:
    """This process's rank as torchrun announces it (0 outside torchrun)."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError as exc:
        raise ConfigError(f"RANK must be an integer, got {os.environ['RANK']!r}") from exc


def setup(device: torch.device) -> DistInfo:
    """Join the process group described by the environment (or use an existing one)."""
    world = env_world_size()
    if world <= 1:
        return DistInfo()
    for var in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise ConfigError(f"WORLD_SIZE={world} but {var} is not set; launch with torchrun "
                              f"(see docs/training.md)")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
        owns = True
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, owns_group=owns)


def teardown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_(t: torch.Tensor, info: DistInfo, op=None) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def parameter_checksum(model: torch.nn.Module) -> torch.Tensor:
    """A float64 fingerprint of every parameter and buffer: sum of (index-weighted) values."""
    total = torch.zeros((), dtype=torch.float64)
    for i, t in enumerate(list(model.parameters()) + list(model.buffers())):
        v = t.detach().to("cpu", torch.float64).flatten()
        w = torch.arange(1, v.numel() + 1, dtype=torch.float64).remainder_(97).add_(1)
        total += (i + 1) * (v * w).sum()
    return total


def check_same_init(model: torch.nn.Module, info: DistInfo, device: torch.device) -> float:
    """Verify every rank built bit-identical weights (all-reduce MIN and MAX of the checksum)."""
    c = parameter_checksum(model)
    if not info.enabled:
        return float(c)
    t = torch.stack([c, -c]).to(device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    hi, lo = float(t[0]), -float(t[1])
    if hi != lo:
        raise TrainingError(f"ranks initialized different weights (checksum {lo!r} .. {hi!r}); "
                            f"initialization must draw only from the seeded generator")
    return float(c)


def fully_shard_model(model: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """FSDP2: shard every block, then the root, over all ranks (parameters become DTensors).

    Call after initialization (every rank holds the same full weights; each keeps its shard) and
    before building the optimizer, which must hold the sharded parameters.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    if not info.enabled:
        raise ConfigError("--fsdp shards over processes: launch with torchrun --nproc_per_node N "
                          "(N >= 2), or drop --fsdp")
    mesh = init_device_mesh(device.type, (info.world_size,))
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ConfigError(f"--fsdp knows initlab's ViT/GPT blocks; {type(model).__name__} has none")
    for block in blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def full_state_dict(model: torch.nn.Module) -> dict:
    """The model's state dict with every DTensor gathered (a collective: call on every rank)."""
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v)
            for k, v in model.state_dict().items()}


def gather_tree(obj):
    """A copy of a nested dict/list state with every DTensor gathered (collective, every rank)."""
    if hasattr(obj, "full_tensor"):
        return obj.full_tensor()
    if isinstance(obj, dict):
        return {k: gather_tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(gather_tree(v) for v in obj)
    return obj
