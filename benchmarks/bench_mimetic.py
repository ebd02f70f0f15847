"""Time of ``mimetic_`` over time of PyTorch's default init on the same model, in one run.

    python benchmarks/bench_mimetic.py --shape gpt2-small            # CPU, goal: ratio <= 6
    python benchmarks/bench_mimetic.py --shape llama7b --device cuda  # GPU: bf16 and fp32 weights
    python benchmarks/bench_mimetic.py --shape llama-small            # CPU-sized GQA stack

Shapes:
* ``gpt2-small``: initlab's GPT at GPT-2-small shapes (n=768, L=12, H=12, vocab 50257, context
  1024); the default init is every module's ``reset_parameters()`` (the embedding's N(0, 1),
  Linear's Kaiming-uniform, ...), i.e. what ``nn.Module`` construction does.
* ``llama7b``: a LLaMA-7B-shaped attention stack (n=4096, L=32, H=32 query heads, 8 KV heads of
  128: q/o 4096x4096, k/v 1024x4096, no biases), mapped by an explicit mapping; default init is
  ``reset_parameters()`` of its Linears.
* ``llama-small``: the same construction at n=1024, L=8, H=16, 4 KV heads (runs on a CPU).
* ``llama-tiny``: n=256, L=2, H=8, 2 KV heads: the llama7b code path in seconds (tests use it).

``--dtype``: the weights' dtype (the targets are drawn and factorized in float32 and cast);
default ``fp32`` on a CPU and ``bf16,fp32`` (both, one after the other) on CUDA.

Reports wall times (best of ``--repeat`` for the default init, one warm run of mimetic_), their
ratio, the process CPU time of each (robust on a loaded machine with ``--threads 1``), and peak
memory (CUDA: ``max_memory_allocated`` above what was allocated before; CPU: the bytes glibc's
malloc has handed out, sampled every 2 ms, above the level before the call). ``--breakdown`` times a
second run by phase (drawing the targets = the floor, QK and VO factorizations, writes): on a CPU
the CPU time of the thread running each phase, summed (the factorizations run on worker threads
while the next targets are drawn, so phases overlap and their sum is work, not wall time).
"""
from __future__ import annotations

import argparse
import ctypes
import sys
import threading
import time

import torch
from torch import nn

import initlab
from initlab.roles import roles_from_mapping

SHAPES = {
    "gpt2-small": dict(width=768, depth=12, heads=12, kv_heads=12),
    "llama7b": dict(width=4096, depth=32, heads=32, kv_heads=8),
    "llama-small": dict(width=1024, depth=8, heads=16, kv_heads=4),
    "llama-tiny": dict(width=256, depth=2, heads=8, kv_heads=2),
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class AttentionStack(nn.Module):
    def __init__(self, width, depth, heads, kv_heads):
        super().__init__()
        hd = width // heads
        self.layers = nn.ModuleList()
        for _ in range(depth):
            a = nn.Module()
            a.q_proj = nn.Linear(width, heads * hd, bias=False)
            a.k_proj = nn.Linear(width, kv_heads * hd, bias=False)
            a.v_proj = nn.Linear(width, kv_heads * hd, bias=False)
            a.o_proj = nn.Linear(heads * hd, width, bias=False)
            self.layers.append(a)
        self.mapping = {"attention": {"layers.*": dict(q="q_proj", k="k_proj", v="v_proj",
                                                       o="o_proj", heads=heads, kv_heads=kv_heads)}}


def build(shape: str, device: str, dtype: torch.dtype = torch.float32):
    s = SHAPES[shape]
    with torch.device(device):
        if shape == "gpt2-small":
            model = initlab.models.GPT(vocab_size=50257, block_size=1024, width=s["width"],
                                       depth=s["depth"], heads=s["heads"]).to(dtype)
            rmap = initlab.role_map(model)
        else:
            model = AttentionStack(**s).to(dtype)
            rmap = roles_from_mapping(model, model.mapping)
    return model, rmap


def default_init_(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    sync(device)
    t, c = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - t, time.process_time() - c


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks",
                                                "keepcost")]


def _malloc_in_use():
    """glibc's bytes in use (heap + mmapped blocks), or None where mallinfo2 is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2

    def in_use() -> float:
        m = fn()
        return (m.uordblks + m.hblkhd) / 2 ** 20
    return in_use


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


_IN_USE = _malloc_in_use()
CPU_MEMORY = "allocated memory (glibc mallinfo2)" if _IN_USE else "resident memory"


class PeakMemory:
    """Peak memory during a block above the level at its start, in MiB: CUDA's allocator
    statistics on a GPU; on a CPU the bytes glibc's malloc has handed out (live tensors, not
    pages the allocator keeps), else the resident set size, sampled every 2 ms (Linux)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak = 0.0

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        self.read = _IN_USE or _rss_mib
        self.base = self.top = self.read()
        self.stop = threading.Event()

        def poll():
            while not self.stop.wait(0.002):
                self.top = max(self.top, self.read())
        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
            self.peak = (torch.cuda.max_memory_allocated() - self.base) / 2 ** 20
        else:
            self.stop.set()
            self.thread.join()
            self.peak = max(self.top, self.read()) - self.base
        return False


def layer_bytes(rmap) -> int:
    """Bytes of one attention layer's full Q, K, V, O weights."""
    att = rmap.attention[0]
    return sum(p.weight.numel() * p.weight.element_size() for p in (att.q, att.k, att.v, att.o))


def run_one(args, dtype_name: str) -> dict:
    dtype = DTYPES[dtype_name]
    model, rmap = build(args.shape, args.device, dtype)
    n_params = sum(p.numel() for p in model.parameters())
    t_default = min((timed(lambda: default_init_(model), args.device) for _ in range(args.repeat)),
                    key=lambda t: t[0])
    gen = torch.Generator().manual_seed(0)
    with PeakMemory(args.device) as mem:
        t_mimetic = timed(lambda: initlab.mimetic_(model, svd=args.svd, generator=gen,
                                                   role_map=rmap), args.device)
    att = rmap.attention[0]
    s = SHAPES[args.shape]
    print(f"shape={args.shape} (n={s['width']}, L={s['depth']}, H={s['heads']}, "
          f"kv={s['kv_heads']}, head_dim={att.head_dim}) params={n_params / 1e6:.1f}M "
          f"weights={dtype_name} device={args.device} threads={torch.get_num_threads()} "
          f"svd={args.svd} torch={torch.__version__}")
    print(f"default init (reset_parameters, best of {args.repeat}): {t_default[0]:.3f} s "
          f"(CPU {t_default[1]:.3f} s)")
    print(f"mimetic_:                                  {t_mimetic[0]:.3f} s "
          f"(CPU {t_mimetic[1]:.3f} s)")
    print(f"ratio mimetic_/default:                    {t_mimetic[0] / t_default[0]:.2f}x "
          f"(CPU time: {t_mimetic[1] / max(t_default[1], 1e-9):.2f}x)")
    kind = "CUDA memory allocated" if args.device.startswith("cuda") else CPU_MEMORY
    print(f"peak {kind} during mimetic_: +{mem.peak:.0f} MiB (one layer's Q,K,V,O weights: "
          f"{layer_bytes(rmap) / 2 ** 20:.0f} MiB)")
    parts = breakdown(model, rmap, args) if args.breakdown else None
    if parts:
        cpu = args.device == "cpu"
        print(f"phases of a second mimetic_ run ({parts['total']:.3f} s wall, CPU "
              f"{parts['cpu']:.3f} s, all {len(rmap.attention)} layers); the floor is 'draw' "
              f"(drawing the targets)" + ("; CPU time per phase, summed over threads (the "
                                          "factorizations run on worker threads, overlapping)"
                                          if cpu else "; synchronized wall time per phase") + ":")
        ref = t_default[1] if cpu else t_default[0]  # like for like: CPU time on a CPU
        for k in ("draw", "qk", "vo", "write"):
            if k in parts:
                print(f"  {k:6s} {parts[k]:7.3f} s  {parts[k] / ref:5.2f}x default init"
                      + (" (CPU)" if cpu else "")
                      + (f"  {parts[k] / parts['draw']:5.2f}x draw" if parts.get("draw") else ""))
    return dict(default=t_default, mimetic=t_mimetic, peak_mib=mem.peak, phases=parts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None,
                    help="weights' dtype(s), comma-separated from fp32,bf16 (default: fp32 on "
                         "CPU, bf16,fp32 on CUDA)")
    ap.add_argument("--svd", choices=("auto", "exact", "randomized"), default="auto")
    ap.add_argument("--repeat", type=int, default=3, help="default-init repetitions (best of)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    ap.add_argument("--breakdown", action="store_true", help="also time a second run by phase")
    args = ap.parse_args(argv)
    dtypes = (args.dtype or ("bf16,fp32" if args.device.startswith("cuda") else "fp32")).split(",")
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        print(f"--dtype: unknown {bad}; choose from {sorted(DTYPES)}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("CUDA is not available here; run with --device cpu or on a GPU machine", file=sys.stderr)
        return 2

    # warm up LAPACK/cuSOLVER/cuBLAS on a tiny model so one-time library setup is not timed
    tiny = AttentionStack(64, 1, 4, 2).to(args.device)
    initlab.mimetic_(tiny, svd=args.svd, role_map=roles_from_mapping(tiny, tiny.mapping),
                     generator=torch.Generator().manual_seed(0))
    initlab.mimetic_(tiny, svd="randomized", role_map=roles_from_mapping(tiny, tiny.mapping))
    for i, name in enumerate(dtypes):
        if i:
            print()
        run_one(args, name)
    return 0


def breakdown(model, rmap, args) -> dict:
    """A second mimetic_ run with the phase timers on: seconds per phase, summed over layers."""
    from initlab import mimetic as mm
    mm._phase_times = {}
    try:
        t = timed(lambda: initlab.mimetic_(model, svd=args.svd, role_map=rmap,
                                           generator=torch.Generator().manual_seed(0)),
                  args.device)
        out = dict(mm._phase_times)
    finally:
        mm._phase_times = None
    out["total"], out["cpu"] = t
    return out


if __name__ == "__main__":
    sys.exit(main())
