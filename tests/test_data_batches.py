"""Tensor augmentation and VisionBatches: normalization, coverage, determinism, resume, sharding."""
from __future__ import annotations

import pytest
import torch

from initlab.data import Augment, VisionBatches, VisionData, random_crop, random_hflip
from initlab.data.augment import crop_with_offsets
from initlab.errors import ConfigError


def toy_data(n=50, c=1, size=8, name="fashion-mnist", seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return VisionData(images, labels, [str(i) for i in range(10)], name, "train")


def shift_with_zeros(img, dy, dx):
    """Reference: translate img (C, H, W) by (dy, dx) with zero fill, one pixel at a time."""
    c, h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            si, sj = i + dy, j + dx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = img[:, si, sj]
    return out


def test_crop_equals_a_zero_filled_translation():
    x = torch.randn(6, 2, 7, 7)
    pad = 2
    offsets = torch.tensor([[0, 0], [4, 4], [2, 2], [0, 3], [1, 4], [3, 1]])
    out = crop_with_offsets(x, offsets, pad)
    for b, (oy, ox) in enumerate(offsets.tolist()):
        assert torch.equal(out[b], shift_with_zeros(x[b], oy - pad, ox - pad))
    assert torch.equal(out[2], x[2])  # offset (pad, pad) is the identity


def test_crop_fill_per_channel_and_padding_zero_is_identity():
    x = torch.zeros(1, 3, 4, 4)
    fill = torch.tensor([1.0, 2.0, 3.0])
    out = crop_with_offsets(x, torch.tensor([[0, 0]]), 1, fill)
    assert out[0, :, 0, 0].tolist() == [1.0, 2.0, 3.0] and out[0, :, 1:, 1:].abs().sum() == 0
    assert random_crop(x, 0) is x


def test_random_ops_are_deterministic_given_a_generator():
    x = torch.randn(64, 1, 8, 8)
    a = random_crop(x, 2, generator=torch.Generator().manual_seed(1))
    b = random_crop(x, 2, generator=torch.Generator().manual_seed(1))
    c = random_crop(x, 2, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    f = random_hflip(x, generator=torch.Generator().manual_seed(0))
    flipped = [(not torch.equal(f[i], x[i])) for i in range(64)]
    for i in range(64):
        assert torch.equal(f[i], x[i].flip(-1) if flipped[i] else x[i])
    assert 16 < sum(flipped) < 48


def test_normalized_data_held_on_device_with_given_stats():
    data = toy_data(200)
    batches = VisionBatches(data, batch_size=64, shuffle=False)
    assert batches.images.dtype == torch.float32 and batches.images.shape == (200, 1, 8, 8)
    assert abs(batches.images.mean().item()) < 1e-4 and abs(batches.images.std().item() - 1) < 1e-2
    other = VisionBatches(data, batch_size=64, shuffle=False, mean=[0.5], std=[0.25])
    assert torch.allclose(other.images, (data.images.float() / 255 - 0.5) / 0.25)


def test_epoch_covers_every_example_once_and_orders_differ_by_epoch():
    data = toy_data(50)
    batches = VisionBatches(data, batch_size=16, seed=3)
    assert len(batches) == 4
    seen = torch.cat([y for _, y in batches.epoch(0)])
    assert len(seen) == 50
    o0, o1 = batches.order(0), batches.order(1)
    assert sorted(o0.tolist()) == list(range(50)) and not torch.equal(o0, o1)
    assert torch.equal(torch.cat([y for _, y in batches.epoch(0)]), data.labels[o0])
    assert len(VisionBatches(data, batch_size=16, drop_last=True)) == 3


def test_iter_advances_epochs():
    batches = VisionBatches(toy_data(20), batch_size=8, seed=0)
    first = torch.cat([y for _, y in batches])
    second = torch.cat([y for _, y in batches])
    assert torch.equal(first, torch.cat([y for _, y in batches.epoch(0)]))
    assert torch.equal(second, torch.cat([y for _, y in batches.epoch(1)]))
    batches.set_epoch(0)
    assert torch.equal(torch.cat([y for _, y in batches]), first)


def test_resume_mid_epoch_gives_identical_batches_with_augmentation():
    data = toy_data(100)
    full = list(VisionBatches(data, batch_size=16, augment=True, seed=11).epoch(2))
    resumed = list(VisionBatches(data, batch_size=16, augment=True, seed=11).epoch(2, start=4))
    assert len(resumed) == len(full) - 4
    for (x, y), (xr, yr) in zip(full[4:], resumed):
        assert torch.equal(x, xr) and torch.equal(y, yr)
    other_seed = list(VisionBatches(data, batch_size=16, augment=True, seed=12).epoch(2))
    assert not torch.equal(full[0][0], other_seed[0][0])


def test_augmentation_policy_follows_the_dataset():
    assert VisionBatches(toy_data(name="mnist"), batch_size=8, augment=True).augment == Augment(2, False)
    assert VisionBatches(toy_data(name="fashion-mnist"), batch_size=8, augment=True).augment == Augment(2, True)
    assert VisionBatches(toy_data(c=3, name="cifar10"), batch_size=8, augment=True).augment == Augment(4, True)
    assert not VisionBatches(toy_data(), batch_size=8).augment.active
    with pytest.raises(ConfigError, match="no default augmentation"):
        VisionBatches(toy_data(name="mystery"), batch_size=8, augment=True)


def test_augmented_batch_is_a_translation_or_mirror_of_the_clean_one():
    data = toy_data(32, size=6)
    clean = VisionBatches(data, batch_size=32, seed=5)
    aug = VisionBatches(data, batch_size=32, seed=5, augment=Augment(padding=1, flip=True))
    (x, y), (xa, ya) = clean.batch(0, 0), aug.batch(0, 0)
    assert torch.equal(y, ya)
    fill = aug.fill  # black in pixel space: (0 - mean) / std
    for i in range(32):
        candidates = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = shift_with_zeros(x[i] - fill[:, None, None], dy, dx) + fill[:, None, None]
                candidates += [shifted, shifted.flip(-1)]
        assert any(torch.allclose(xa[i], c, atol=1e-6) for c in candidates)


def test_ranks_partition_the_global_batch_with_its_augmentation():
    data = toy_data(64)
    kw = dict(batch_size=16, augment=True, seed=9)
    whole = VisionBatches(data, **kw, drop_last=True)
    shards = [VisionBatches(data, **kw, rank=r, world_size=2) for r in range(2)]
    for k in range(len(whole)):
        x, y = whole.batch(1, k)
        for r, shard in enumerate(shards):
            xs, ys = shard.batch(1, k)
            assert torch.equal(xs, x[r::2]) and torch.equal(ys, y[r::2])
    with pytest.raises(ConfigError, match="divisible"):
        VisionBatches(data, batch_size=15, rank=0, world_size=2)


def test_eval_batches_are_in_order_and_views():
    data = toy_data(40)
    batches = VisionBatches(data, batch_size=16, shuffle=False)
    ys = [y for _, y in batches.epoch(0)]
    assert [len(y) for y in ys] == [16, 16, 8] and torch.equal(torch.cat(ys), data.labels)
    with pytest.raises(IndexError):
        batches.batch(0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_batches_equal_cpu_batches():
    data = toy_data(64, c=3, size=8, name="cifar10")
    kw = dict(batch_size=16, augment=True, seed=4)
    cpu = VisionBatches(data, **kw)
    gpu = VisionBatches(data, device="cuda", **kw)
    for k in range(len(cpu)):
        (x, y), (xg, yg) = cpu.batch(2, k), gpu.batch(2, k)
        assert xg.device.type == "cuda"
        assert torch.allclose(x, xg.cpu(), atol=1e-6) and torch.equal(y, yg.cpu())
