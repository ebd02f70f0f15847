"""Input-pipeline throughput: VisionBatches (whole split on the device, batched augmentation)
against a per-sample reference measured in the same run (the DataLoader-style pattern: index one
example at a time, pad + crop + maybe flip it, stack).

    .venv/bin/python benchmarks/bench_data.py [--data fashion-mnist] [--batch-size 128] [--batches 200] [--threads 1]

Prints images/s for both and their ratio; with the real Fashion-MNIST when installed, else with
random images of the same shape.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from initlab.data import Augment, VisionBatches, VisionData, load_vision
from initlab.errors import DataError


def per_sample_reference(data: VisionData, batch_size: int, n_batches: int, aug: Augment, seed: int = 0):
    """What a per-sample Dataset + DataLoader(num_workers=0) pipeline does, in plain torch."""
    g = torch.Generator().manual_seed(seed)
    mean, std = data.channel_stats()
    perm = torch.randperm(len(data), generator=g)
    h, w = data.images.shape[-2:]
    p = aug.padding
    for b in range(n_batches):
        xs, ys = [], []
        for i in perm[b * batch_size:(b + 1) * batch_size].tolist():
            x = (data.images[i].float() / 255 - mean[:, None, None]) / std[:, None, None]
            if p:
                x = F.pad(x, (p, p, p, p), value=0.0)
                dy, dx = torch.randint(0, 2 * p + 1, (2,), generator=g).tolist()
                x = x[:, dy:dy + h, dx:dx + w]
            if aug.flip and torch.rand(1, generator=g).item() < 0.5:
                x = x.flip(-1)
            xs.append(x)
            ys.append(data.labels[i])
        yield torch.stack(xs), torch.stack(ys)


def rate(iterator, n_images: int) -> float:
    t0 = time.perf_counter()
    for x, _ in iterator:
        x.sum().item()  # make sure the work is done
    return n_images / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a data "
                    "pipeline should not compete with the training step for cores)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        data = load_vision(args.data)
        what = f"{args.data} ({data.source})"
    except DataError:
        shape = (1, 28, 28) if "mnist" in args.data else (3, 32, 32)
        n = args.batch_size * args.batches
        data = VisionData(torch.randint(0, 256, (n, *shape), dtype=torch.uint8), torch.arange(n) % 10,
                          [str(i) for i in range(10)], args.data, "train")
        what = f"random images shaped like {args.data}"
    n_batches = min(args.batches, len(data) // args.batch_size)
    t0 = time.perf_counter()
    batches = VisionBatches(data, batch_size=args.batch_size, augment=True, seed=0)
    setup = time.perf_counter() - t0
    aug = batches.augment
    n_images = n_batches * args.batch_size
    ours = rate((batches.batch(0, k) for k in range(n_batches)), n_images)
    ref = rate(per_sample_reference(data, args.batch_size, n_batches, aug), n_images)
    print(f"data: {what}, {len(data)} images, batch {args.batch_size}, {n_batches} batches, {aug}")
    print(f"setup (normalize whole split onto the device): {setup:.2f} s")
    print(f"VisionBatches:       {ours:12,.0f} img/s")
    print(f"per-sample reference:{ref:12,.0f} img/s")
    print(f"ratio: {ours / ref:.1f}x")


if __name__ == "__main__":
    main()
