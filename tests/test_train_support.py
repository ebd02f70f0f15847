"""Shared helpers of the training-engine tests (no tests here): tiny synthetic datasets and configs.

The synthetic vision set is a 10-class Fashion-MNIST look-alike in the real IDX format: class k
is a fixed random +-1 7x7 pattern tiled over the 28x28 image, plus noise, so a tiny ViT learns it in
a few dozen steps and a test can assert that it did.
"""
from __future__ import annotations

import contextlib
import datetime
import gzip
import json
import socket
import struct
import sys
import traceback
from pathlib import Path

import numpy as np

from initlab.train import TrainConfig


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    templates = np.random.default_rng(0).choice([-1.0, 1.0], size=(10, 7, 7))  # same for both splits
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    tiled = np.tile(templates[labels], (1, 4, 4))  # class template in every 7x7 cell
    images = 120 + 70 * tiled + rng.normal(0, 30, size=(n, 28, 28))
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_fake_fashion(root: Path, n_train: int = 512, n_test: int = 200) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        images, labels = synthetic_images(n, seed)
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def write_text(path: Path, n_chars: int = 20000, seed: int = 0) -> Path:
    """A text with learnable structure: words drawn from a small vocabulary."""
    rng = np.random.default_rng(seed)
    words = ["the", "king", "queen", "shall", "speak", "and", "thou", "art", "lord", "night"]
    out, size = [], 0
    while size < n_chars:
        w = words[rng.integers(len(words))]
        out.append(w)
        size += len(w) + 1
    path.write_text(" ".join(out)[:n_chars] + "\n", encoding="utf-8")
    return path


def vision_config(root: Path, out: Path | None, **changes) -> TrainConfig:
    base = dict(task="vision", data="fashion-mnist", data_root=str(root), model="vit-micro",
                width=32, depth=1, heads=2, batch_size=32, steps=24, eval_every=8, lr=3e-3,
                warmup=0.1, device="cpu", out=None if out is None else str(out))
    return TrainConfig(**{**base, **changes})


def lm_config(text: Path, out: Path | None, **changes) -> TrainConfig:
    base = dict(task="lm", data=str(text), model="gpt-micro", width=32, depth=1, heads=2,
                block_size=32, batch_size=16, steps=24, eval_every=8, eval_batches=4, lr=3e-3,
                warmup=0.1, device="cpu", out=None if out is None else str(out))
    return TrainConfig(**{**base, **changes})


# ---------------------------------------------------------------------------------------------
# two-process gloo runs (DDP, FSDP2): one harness for every distributed test

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_rank(rank: int, world: int, port: int, out: str, body, args: tuple) -> None:
    """One spawned rank: torchrun's environment, a gloo process group, ``body(rank, world, report,
    *args)``; the report (or the traceback) is written to ``{out}.rank{rank}.json``."""
    import os

    import torch
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    report: dict = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        body(rank, world, report, *args)
    except Exception:
        report["error"] = traceback.format_exc()
    finally:
        with open(f"{out}.rank{rank}.json", "w") as f:
            json.dump(report, f)
        if dist.is_initialized():
            # no rank tears the group (and rank 0 the store) down while the other still talks to it;
            # bounded, so a rank that failed early cannot hang the other
            with contextlib.suppress(Exception):
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
            dist.destroy_process_group()
    # the report is on disk: leave without the interpreter's finalization, where gloo's C++ worker
    # threads meeting Python objects being torn down abort the process now and then under load
    # ("terminate called without an active exception"; pytorch/pytorch PR 179291)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def spawn_gloo(body, out, *args, world: int = 2) -> list[dict]:
    """Run ``body`` (a module-level function, so it can be pickled) on ``world`` gloo processes;
    returns each rank's report, asserting that none raised."""
    import torch.multiprocessing as mp
    mp.spawn(_gloo_rank, args=(world, free_port(), str(out), body, args), nprocs=world, join=True)
    reports = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(world)]
    for r in reports:
        assert "error" not in r, r["error"]
    return reports
