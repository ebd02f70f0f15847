"""Peak memory per rank of init_ / mimetic_ on a fully_shard-ed (FSDP2) LLaMA-shaped stack.

    torchrun --nproc_per_node 2 benchmarks/bench_sharded_init.py --shape llama-small

Each rank (gloo, CPU) builds the stack on the meta device, shards every layer and the root with
``fully_shard``, materializes its shards (``to_empty``) and runs, in order: ``init_(m, spec)`` for each
spec of ``SPECS`` and ``mimetic_(m)``, each under a sampler of the bytes glibc's malloc has handed out
(every 2 ms, above the level before the call). Rank 0 then does the same on the unsharded model for
comparison. Printed per rank, next to one layer's full Q, K, V, O weights and the whole model.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_mimetic import CPU_MEMORY, SHAPES, AttentionStack, PeakMemory, layer_bytes  # noqa: E402

import initlab  # noqa: E402
from initlab.roles import roles_from_mapping  # noqa: E402


# "default" leaves the stack as built (writes nothing), "xavier" draws every weight (rules),
# "nt+mimetic" a parametrization then mimetic
SPECS = ("default", "xavier", "mimetic", "nt+mimetic")


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so each call's peak is counted from the
    same state, not hidden by memory an earlier call left in the allocator."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def measure(model, label: str, rank: int, rows: list) -> None:
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    def init(spec):
        return lambda: initlab.init_(model, spec, generator=gen(),
                                     role_map=roles_from_mapping(model, model.mapping))
    steps = [(f"init_(m, {spec!r})", init(spec)) for spec in SPECS]
    steps.append(("mimetic_(m)", lambda: initlab.mimetic_(model, generator=gen(),
                                                          role_map=roles_from_mapping(model, model.mapping))))
    for name, fn in steps:
        _trim()
        with PeakMemory("cpu") as mem:
            fn()
        rows.append((rank, label, name, mem.peak))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama-small")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    s = SHAPES[args.shape]
    with torch.device("meta"):
        model = AttentionStack(**s)
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    rows: list = []
    measure(model, f"sharded over {world}", rank, rows)
    dist.barrier()
    if rank == 0:
        plain = AttentionStack(**s)
        measure(plain, "unsharded", rank, rows)
        total = sum(p.numel() * p.element_size() for p in plain.parameters()) / 2 ** 20
        one = layer_bytes(roles_from_mapping(plain, plain.mapping)) / 2 ** 20
    out = [None] * world
    dist.all_gather_object(out, rows)
    if rank == 0:
        print(f"shape={args.shape} (n={s['width']}, L={s['depth']}, H={s['heads']}, "
              f"kv={s['kv_heads']}) fp32, world={world} (gloo, CPU), torch={torch.__version__}")
        print(f"one layer's full Q,K,V,O weights: {one:.0f} MiB; whole model: {total:.0f} MiB")
        print(f"peak {CPU_MEMORY} above the level before the call (MiB):")
        for r in out:
            for rk, label, name, peak in r:
                print(f"  rank {rk}  {label:14s} {name:26s} +{peak:.0f}")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
