"""Whole-dataset-on-device batching for vision: :class:`VisionBatches`.

The split is converted once to normalized floats on the training device (Fashion-MNIST's 60k
images are 188 MB in float32), so an epoch is a permutation plus one gather per batch: no worker
processes, no per-sample Python. Randomness is a pure function of (seed, epoch, batch index):

* the shuffling order of epoch ``e`` comes from a generator seeded with (seed, e);
* the augmentation of batch ``k`` of epoch ``e`` from a generator seeded with (seed, e, k).

So ``batches.epoch(e, start=k)`` yields exactly the batches a full pass over epoch ``e`` would have
yielded from index ``k`` on: an interrupted run resumes mid-epoch with identical data.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..errors import ConfigError
from .augment import Augment
from .vision import VisionData, load_vision

_MASK64 = (1 << 64) - 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (SplitMix64 finalizer): nearby inputs give unrelated seeds."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x & ((1 << 63) - 1)


def _generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*parts))


_SHUFFLE, _AUGMENT = 0, 1  # streams of derive_seed


class VisionBatches:
    """(x, y) batches of one :class:`VisionData` split, held normalized on ``device``.

    Args:
        data: the split (uint8 images).
        batch_size: global batch size (all ranks together).
        device: where the data lives and batches come out.
        shuffle: a seeded permutation per epoch (False: dataset order, for evaluation).
        augment: ``False``, ``True`` (the dataset's own policy: crop padding 2 for 28x28, 4 for
            32x32; flips for Fashion-MNIST and CIFAR, not MNIST digits) or an :class:`Augment`.
        seed: root of all randomness (order and augmentation).
        mean, std: per-channel statistics in [0, 1] pixel units used to normalize; default: those
            of ``data`` itself. Pass the training split's statistics when batching the test split.
        drop_last: drop a final partial batch (default: only when ``world_size > 1``).
        dtype: floating dtype of the held images.
        rank, world_size: data-parallel sharding; rank r gets elements r, r+ws, ... of every global
            batch, with the augmentation the global batch would have had, so results do not
            depend on the number of processes.
    """

    def __init__(self, data: VisionData, *, batch_size: int, device: str | torch.device = "cpu",
                 shuffle: bool = True, augment: bool | Augment = False, seed: int = 0,
                 mean: Sequence[float] | torch.Tensor | None = None,
                 std: Sequence[float] | torch.Tensor | None = None, drop_last: bool | None = None,
                 dtype: torch.dtype = torch.float32, rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {batch_size}")
        if not (0 <= rank < world_size):
            raise ConfigError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if world_size > 1 and batch_size % world_size:
            raise ConfigError(f"batch_size={batch_size} must be divisible by world_size={world_size}")
        self.data = data
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = rank, world_size
        self.drop_last = (world_size > 1) if drop_last is None else bool(drop_last)
        self.augment = self._augment_policy(augment)

        if mean is None or std is None:
            m, s = data.channel_stats()
            mean = m if mean is None else mean
            std = s if std is None else std
        c = data.images.shape[1]
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1).expand(c).clone()
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(-1).expand(c).clone()
        if (self.std <= 0).any():
            raise ConfigError(f"std must be positive, got {self.std.tolist()}")

        # convert on the device: moving uint8 is 4x less traffic than moving floats
        m = self.mean.to(self.device, dtype)[:, None, None]
        s = self.std.to(self.device, dtype)[:, None, None]
        self.images = data.images.to(self.device).to(dtype).div_(255.0).sub_(m).div_(s)
        self.labels = data.labels.to(self.device)
        # zero padding in pixel space (black): for MNIST-family images that is the background
        self.fill = (-m / s).reshape(-1)

        n = len(data)
        self.num_batches = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        if self.num_batches == 0:
            raise ConfigError(f"{n} examples make no full batch of {self.batch_size} with drop_last")
        self._epoch = 0
        self._perm_cache: tuple[int, torch.Tensor] | None = None

    def _augment_policy(self, augment) -> Augment:
        if isinstance(augment, Augment):
            return augment
        if not augment:
            return Augment()
        spec = self.data.spec
        if spec is None:
            raise ConfigError(f"no default augmentation for dataset {self.data.name!r}; pass "
                              f"augment=Augment(padding=..., flip=...)")
        return Augment(padding=spec.padding, flip=spec.flip)

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.num_batches

    @property
    def num_examples(self) -> int:
        return len(self.data)

    def order(self, epoch: int) -> torch.Tensor:
        """The example order of ``epoch`` (CPU int64): a pure function of (seed, epoch)."""
        n = len(self.data)
        if not self.shuffle:
            return torch.arange(n)
        return torch.randperm(n, generator=_generator(self.seed, _SHUFFLE, epoch))

    def _order_on_device(self, epoch: int) -> torch.Tensor:
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, self.order(epoch).to(self.device))
        return self._perm_cache[1]

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``index`` of ``epoch`` (random access; the same whenever it is asked for)."""
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch index {index} out of range for {self.num_batches} batches")
        lo = index * self.batch_size
        hi = min(lo + self.batch_size, len(self.data))
        if self.shuffle:
            idx = self._order_on_device(epoch)[lo:hi]
        else:
            idx = torch.arange(lo, hi, device=self.device)
        params = self.augment.sample(hi - lo, _generator(self.seed, _AUGMENT, epoch, index)) \
            if self.augment.active else {}
        if self.world_size > 1:
            idx = idx[self.rank::self.world_size]
            params = {k: v[self.rank::self.world_size] for k, v in params.items()}
        if not self.shuffle and self.world_size == 1:
            x, y = self.images[lo:hi], self.labels[lo:hi]  # views, no copy
        else:
            x, y = self.images[idx], self.labels[idx]
        if params:
            x = self.augment.apply(x, params, self.fill)
        return x, y

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Iterate the batches of ``epoch`` from batch index ``start`` (to resume mid-epoch)."""
        if not 0 <= start <= self.num_batches:
            raise ConfigError(f"start batch {start} out of range for {self.num_batches} batches")
        for index in range(start, self.num_batches):
            yield self.batch(epoch, index)

    def set_epoch(self, epoch: int) -> None:
        """Which epoch the next ``iter(batches)`` runs."""
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        return self.epoch(epoch)


def vision_batches(name: str, *, root=None, train_size: int | None = None, batch_size: int = 128,
                   eval_batch_size: int | None = None, augment: bool | Augment = True, seed: int = 0,
                   subset_seed: int | None = None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, rank: int = 0,
                   world_size: int = 1) -> tuple[VisionBatches, VisionBatches]:
    """Training and test batches of dataset ``name`` in one call.

    The training split is cut to a class-balanced ``train_size`` subset (seeded by ``subset_seed``,
    default ``seed``). Both splits are normalized with the mean/std of the *full* training split, so
    the normalization does not change across a train-size sweep. The test batches are in dataset
    order, without augmentation, and not sharded (every rank evaluates the whole test set).
    """
    from .subset import balanced_subset

    train = load_vision(name, root=root, split="train")
    test = load_vision(name, root=root, split="test")
    mean, std = train.channel_stats()
    if train_size is not None:
        train = train.subset(balanced_subset(train.labels, train_size,
                                             seed=seed if subset_seed is None else subset_seed))
    train_batches = VisionBatches(train, batch_size=batch_size, device=device, shuffle=True,
                                  augment=augment, seed=seed, mean=mean, std=std, dtype=dtype,
                                  rank=rank, world_size=world_size)
    test_batches = VisionBatches(test, batch_size=eval_batch_size or max(batch_size, 256),
                                 device=device, shuffle=False, augment=False, mean=mean, std=std,
                                 dtype=dtype)
    return train_batches, test_batches
