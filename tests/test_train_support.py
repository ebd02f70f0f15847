"""Shared helpers of the training-engine tests (no tests here): tiny synthetic datasets and configs.

The synthetic vision set is a 10-class Fashion-MNIST look-alike in the real IDX format: class k
is a fixed random +-1 7x7 pattern tiled over the 28x28 image, plus noise, so a tiny ViT learns it in
a few dozen steps and a test can assert that it did.
"""
from __future__ import annotations

import gzip
import struct
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
