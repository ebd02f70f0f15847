"""Time of ``mimetic_`` over time of PyTorch's default init on the same model, in one run.

    python benchmarks/bench_mimetic.py --shape gpt2-small            # CPU, goal: ratio <= 3
    python benchmarks/bench_mimetic.py --shape llama7b --device cuda  # GPU, goal: mimetic < 30 s
    python benchmarks/bench_mimetic.py --shape llama-small            # CPU-sized GQA stack

Shapes:
* ``gpt2-small``: initlab's GPT at GPT-2-small shapes (n=768, L=12, H=12, vocab 50257, context
  1024); the default init is every module's ``reset_parameters()`` (the embedding's N(0, 1),
  Linear's Kaiming-uniform, ...), i.e. what ``nn.Module`` construction does.
* ``llama7b``: a LLaMA-7B-shaped attention stack (n=4096, L=32, H=32 query heads, 8 KV heads of
  128: q/o 4096x4096, k/v 1024x4096, no biases), mapped by an explicit mapping; default init is
  ``reset_parameters()`` of its Linears.
* ``llama-small``: the same construction at n=1024, L=8, H=16, 4 KV heads (runs on a CPU).

Reports wall times (best of ``--repeat`` for the default init, one warm run of mimetic_), their
ratio, and peak memory (CUDA: ``max_memory_allocated``; CPU: growth of the process's peak RSS
during ``mimetic_``).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import torch
from torch import nn

import initlab
from initlab.roles import roles_from_mapping

SHAPES = {
    "gpt2-small": dict(width=768, depth=12, heads=12, kv_heads=12),
    "llama7b": dict(width=4096, depth=32, heads=32, kv_heads=8),
    "llama-small": dict(width=1024, depth=8, heads=16, kv_heads=4),
}


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


def build(shape: str, device: str):
    s = SHAPES[shape]
    with torch.device(device):
        if shape == "gpt2-small":
            model = initlab.models.GPT(vocab_size=50257, block_size=1024, width=s["width"],
                                       depth=s["depth"], heads=s["heads"])
            rmap = initlab.role_map(model)
        else:
            model = AttentionStack(**s)
            rmap = roles_from_mapping(model, model.mapping)
    return model, rmap


def default_init_(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--svd", choices=("auto", "exact", "randomized"), default="auto")
    ap.add_argument("--repeat", type=int, default=3, help="default-init repetitions (best of)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave)")
    ap.add_argument("--breakdown", action="store_true", help="also time the phases of one layer")
    args = ap.parse_args(argv)
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

    model, rmap = build(args.shape, args.device)
    n_params = sum(p.numel() for p in model.parameters())
    t_default = min(timed(lambda: default_init_(model), args.device) for _ in range(args.repeat))

    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = peak_rss_mib()
    gen = torch.Generator().manual_seed(0)
    t_mimetic = timed(lambda: initlab.mimetic_(model, svd=args.svd, generator=gen, role_map=rmap),
                      args.device)
    if args.device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
        mem = f"peak extra CUDA memory during mimetic_: {peak:.0f} MiB"
    else:
        mem = (f"peak RSS: {rss_before:.0f} MiB before mimetic_, {peak_rss_mib():.0f} MiB after "
               f"(+{peak_rss_mib() - rss_before:.0f} MiB)")

    s = SHAPES[args.shape]
    att = rmap.attention[0]
    parts = breakdown(model, rmap, args) if args.breakdown else None
    print(f"shape={args.shape} (n={s['width']}, L={s['depth']}, H={s['heads']}, "
          f"kv={s['kv_heads']}, head_dim={att.head_dim}) params={n_params / 1e6:.1f}M "
          f"device={args.device} threads={torch.get_num_threads()} svd={args.svd} "
          f"torch={torch.__version__}")
    print(f"default init (reset_parameters, best of {args.repeat}): {t_default:.3f} s")
    print(f"mimetic_:                                  {t_mimetic:.3f} s")
    print(f"ratio mimetic_/default:                    {t_mimetic / t_default:.2f}x")
    print(mem)
    if parts:
        print(f"phases of a second mimetic_ run ({parts['total']:.3f} s, all {len(rmap.attention)} "
              f"layers), in units of the default init; the floor is 'draw' (drawing the targets):")
        for k in ("draw", "qk", "vo", "write", "other"):
            if k in parts:
                print(f"  {k:6s} {parts[k]:7.3f} s  {parts[k] / t_default:5.2f}x default"
                      + (f"  {parts[k] / parts['draw']:5.2f}x draw" if parts.get("draw") else ""))
    return 0


def breakdown(model, rmap, args) -> dict:
    """A second mimetic_ run with the phase timers on: seconds per phase, summed over layers."""
    from initlab import mimetic as mm
    mm._phase_times = {}
    try:
        t = timed(lambda: initlab.mimetic_(model, svd=args.svd, role_map=rmap,
                                           generator=torch.Generator().manual_seed(0)), args.device)
        out = dict(mm._phase_times)
    finally:
        mm._phase_times = None
    out["other"] = t - sum(out.values())
    out["total"] = t
    return out


if __name__ == "__main__":
    sys.exit(main())
