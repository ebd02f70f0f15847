"""Image classification datasets read from their original file formats.

* MNIST and Fashion-MNIST: the gzip-compressed IDX files (``train-images-idx3-ubyte.gz`` ...),
  a big-endian header (magic 0x00000803 for images, 0x00000801 for labels, then one uint32 per
  dimension) followed by uint8 data.
* CIFAR-10 / CIFAR-100: the "python version", a directory ``cifar-10-batches-py`` (``data_batch_1``
  .. ``data_batch_5``, ``test_batch``, ``batches.meta``) or ``cifar-100-python`` (``train``,
  ``test``, ``meta``) of dicts pickled under Python 2, or the ``.tar.gz`` tarball holding it.
  ``b'data'`` is uint8 (N, 3072) in planar order (1024 red, 1024 green, 1024 blue values, each a
  row-major 32x32 plane), which is exactly (N, 3, 32, 32) after a reshape.

:func:`load_vision` finds the files (see :mod:`initlab.data.locate` for the order of places it
looks), checks them, and returns a :class:`VisionData` with uint8 images (N, C, H, W) and int64
labels. Everything that is wrong with the files becomes a :class:`~initlab.errors.DataError` naming
the file and saying how to get a good copy.
"""
from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError

SPLITS = ("train", "test")

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")


@dataclass(frozen=True)
class DatasetSpec:
    """What initlab knows about one dataset: format, shape, where it usually lives, how to get it,
    and which augmentations preserve its labels."""

    name: str
    title: str
    format: str  # "idx" | "cifar10" | "cifar100"
    channels: int
    size: int  # height = width
    num_classes: int
    classes: tuple[str, ...]
    train_count: int
    test_count: int
    # random-crop padding and whether horizontal flips keep the label (see docs/data.md)
    padding: int
    flip: bool
    system_dirs: tuple[str, ...] = ()  # OS package locations, searched after INITLAB_DATA
    folder: str | None = None  # directory inside a tarball / root (CIFAR)
    tarball: str | None = None
    how_to_get: str = ""
    aliases: tuple[str, ...] = field(default=())


DATASETS: dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", title="Fashion-MNIST", format="idx", channels=1, size=28,
        num_classes=10, classes=FASHION_CLASSES, train_count=60000, test_count=10000,
        padding=2, flip=True, system_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_get=("install it with `apt-get install dataset-fashion-mnist` (files land in "
                    "/usr/share/datasets/fashion-mnist), or online run "
                    "`initlab download fashion-mnist --root DIR` and pass that DIR as root / "
                    "--data-root or in INITLAB_DATA"),
        aliases=("fashion_mnist", "fashionmnist", "fmnist")),
    "mnist": DatasetSpec(
        name="mnist", title="MNIST", format="idx", channels=1, size=28, num_classes=10,
        classes=tuple(str(i) for i in range(10)), train_count=60000, test_count=10000,
        padding=2, flip=False, system_dirs=("/usr/share/datasets/mnist",),
        how_to_get=("online run `initlab download mnist --root DIR` and pass that DIR as root / "
                    "--data-root or in INITLAB_DATA, or copy the four *-ubyte.gz files there")),
    "cifar10": DatasetSpec(
        name="cifar10", title="CIFAR-10", format="cifar10", channels=3, size=32, num_classes=10,
        classes=CIFAR10_CLASSES, train_count=50000, test_count=10000, padding=4, flip=True,
        folder="cifar-10-batches-py", tarball="cifar-10-python.tar.gz",
        how_to_get=("online run `initlab download cifar10 --root DIR` (or fetch "
                    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz yourself) and pass "
                    "DIR as root / --data-root or in INITLAB_DATA"),
        aliases=("cifar-10", "cifar_10")),
    "cifar100": DatasetSpec(
        name="cifar100", title="CIFAR-100", format="cifar100", channels=3, size=32,
        num_classes=100, classes=(), train_count=50000, test_count=10000, padding=4, flip=True,
        folder="cifar-100-python", tarball="cifar-100-python.tar.gz",
        how_to_get=("online run `initlab download cifar100 --root DIR` (or fetch "
                    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz yourself) and pass "
                    "DIR as root / --data-root or in INITLAB_DATA"),
        aliases=("cifar-100", "cifar_100")),
}

IDX_FILES = {  # split -> (images, labels), without the .gz suffix
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_MAGIC_IMAGES = 0x00000803  # uint8, 3 dims
IDX_MAGIC_LABELS = 0x00000801  # uint8, 1 dim
CIFAR10_MEMBERS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR100_MEMBERS = {"train": ("train",), "test": ("test",)}


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (aliases such as "fmnist" or "cifar-10" accepted)."""
    key = name.strip().lower()
    for spec in DATASETS.values():
        if key == spec.name or key in spec.aliases:
            return spec
    raise ConfigError(f"unknown vision dataset {name!r}; choose one of {', '.join(DATASETS)}")


@dataclass
class VisionData:
    """One split of an image classification dataset, whole, in memory.

    ``images`` is uint8 (N, C, H, W); ``labels`` int64 (N,); ``classes`` the class names.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = ""
    split: str = ""
    source: str = ""  # where the files were read from

    def __post_init__(self):
        if self.images.dim() != 4 or self.images.dtype != torch.uint8:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} "
                            f"{tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(f"{self.images.shape[0]} images but labels of shape "
                            f"{tuple(self.labels.shape)}")
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    @property
    def spec(self) -> DatasetSpec | None:
        try:
            return dataset_spec(self.name)
        except ConfigError:
            return None

    def subset(self, indices) -> "VisionData":
        """The examples at ``indices`` (e.g. from :func:`balanced_subset`)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return VisionData(self.images[idx], self.labels[idx], list(self.classes), self.name,
                          self.split, self.source)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.num_classes)

    def channel_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and standard deviation of the pixels in [0, 1] units (float32, (C,))."""
        return channel_stats(self.images)


def channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 (N, C, H, W) images, in [0, 1] units, float32 (C,).

    Exact: computed from each channel's 256-bin histogram in float64 (no float copy of the data).
    """
    if images.numel() == 0:
        raise DataError("cannot compute channel statistics of an empty image set")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1).cpu(), minlength=256).to(torch.float64)
        p = hist / hist.sum()
        mean = (p * values).sum()
        means.append(mean)
        stds.append((p * (values - mean) ** 2).sum().sqrt())
    return torch.stack(means).float(), torch.stack(stds).float()


# ---------------------------------------------------------------------------------------------
# IDX (MNIST family)

def _read_bytes(path: Path, hint: str) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; {hint}") from None
    except (EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path} is truncated or not a valid gzip file ({exc}); replace it: {hint}") from None


_IDX_KIND = {1: "labels", 3: "images"}


def read_idx(path: str | Path, *, hint: str = "get a fresh copy of the file",
             ndim: int | None = None) -> np.ndarray:
    """Parse one IDX file (gzip-compressed when the name ends in .gz) into a uint8 array.

    Only the unsigned-byte type (0x08) is accepted: that is what every MNIST-family file uses.
    ``ndim`` (3 for images, 1 for labels) is checked against the header's magic number before its
    dimensions are trusted.
    """
    path = Path(path)
    raw = _read_bytes(path, hint)
    if len(raw) < 4:
        raise DataError(f"{path} is truncated ({len(raw)} bytes, not even an IDX header); {hint}")
    zero, dtype_code, found = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= found <= 4:
        magic = struct.unpack(">I", raw[:4])[0]
        raise DataError(f"{path} is not a uint8 IDX file (magic 0x{magic:08x}, expected 0x00000801 "
                        f"for labels or 0x00000803 for images); {hint}")
    if ndim is not None and found != ndim:
        want = _IDX_KIND.get(ndim, f"{ndim}-dimensional data")
        have = _IDX_KIND.get(found, f"{found}-dimensional data")
        raise DataError(f"{path} has the IDX magic number of {have} (0x{0x800 + found:08x}) where "
                        f"{want} (0x{0x800 + ndim:08x}) are expected: it is not the {want} file, or "
                        f"its header is damaged; {hint}")
    header = 4 + 4 * found
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header; {hint}")
    dims = struct.unpack(">" + "I" * found, raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got < expected:
        raise DataError(f"{path} is truncated: header promises {expected} bytes of data for shape "
                        f"{dims}, file has {got}; {hint}")
    if got > expected:
        raise DataError(f"{path} has {got - expected} bytes of trailing garbage after shape {dims}; {hint}")
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()


def idx_file(directory: Path, stem: str) -> Path | None:
    """``stem.gz`` or plain ``stem`` inside ``directory``, whichever exists (gz preferred)."""
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    return None


def load_idx_split(directory: Path, spec: DatasetSpec, split: str) -> VisionData:
    image_stem, label_stem = IDX_FILES[split]
    paths = []
    for stem in (image_stem, label_stem):
        path = idx_file(directory, stem)
        if path is None:
            raise DataError(f"{spec.title} {split} split: {directory / (stem + '.gz')} is missing; "
                            f"{spec.how_to_get}")
        paths.append(path)
    images = read_idx(paths[0], hint=spec.how_to_get, ndim=3)
    labels = read_idx(paths[1], hint=spec.how_to_get, ndim=1)
    if images.ndim != 3 or images.shape[1:] != (spec.size, spec.size):
        raise DataError(f"{paths[0]} holds images of shape {images.shape}, expected (N, {spec.size}, "
                        f"{spec.size}); is it the right file?")
    if labels.ndim != 1:
        raise DataError(f"{paths[1]} holds an array of shape {labels.shape}, expected labels (N,)")
    if len(images) != len(labels):
        raise DataError(f"{paths[0]} has {len(images)} images but {paths[1]} has {len(labels)} labels; "
                        f"the files do not belong together. {spec.how_to_get}")
    _check_labels(labels, spec.num_classes, paths[1])
    return VisionData(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                      list(spec.classes), spec.name, split, str(directory))


def _check_labels(labels: np.ndarray, num_classes: int, where) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: labels outside 0..{num_classes - 1} "
                        f"(min {labels.min()}, max {labels.max()})")


# ---------------------------------------------------------------------------------------------
# CIFAR (python version)

class CifarSource:
    """Reads members of a CIFAR python-version dataset from its directory or from the tarball."""

    def __init__(self, path: Path, spec: DatasetSpec):
        self.path, self.spec = path, spec
        self.is_tarball = path.is_file()

    def __str__(self) -> str:
        return str(self.path)

    def describe(self, member: str) -> str:
        if self.is_tarball:
            return f"{self.path}:{self.spec.folder}/{member}"
        return str(self.path / member)

    def has(self, member: str) -> bool:
        if self.is_tarball:
            return f"{self.spec.folder}/{member}" in self._tar_names()
        return (self.path / member).is_file()

    def _tar_names(self) -> set[str]:
        if not hasattr(self, "_names"):
            try:
                with tarfile.open(self.path, "r:*") as tar:
                    self._names = {m.name.lstrip("./") for m in tar.getmembers()}
            except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
                raise DataError(f"{self.path} is truncated or not a tar.gz archive ({exc}); "
                                f"{self.spec.how_to_get}") from None
        return self._names

    def read(self, member: str) -> bytes:
        where = self.describe(member)
        if not self.has(member):
            raise DataError(f"{self.spec.title}: {where} is missing; {self.spec.how_to_get}")
        try:
            if self.is_tarball:
                with tarfile.open(self.path, "r:*") as tar:
                    return tar.extractfile(f"{self.spec.folder}/{member}").read()
            return (self.path / member).read_bytes()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{where} is truncated or unreadable ({exc}); {self.spec.how_to_get}") from None

    def unpickle(self, member: str) -> dict:
        where = self.describe(member)
        raw = self.read(member)
        try:
            # pickled by Python 2: keys and strings come back as bytes
            obj = pickle.loads(raw, encoding="bytes")
        except Exception as exc:  # truncated pickles raise EOFError, UnpicklingError, ValueError...
            raise DataError(f"{where} is truncated or not a CIFAR pickle ({type(exc).__name__}: {exc}); "
                            f"{self.spec.how_to_get}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where} does not hold a dict but {type(obj).__name__}; is it a CIFAR batch?")
        return obj


def _cifar_batch(source: CifarSource, member: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = source.unpickle(member)
    where = source.describe(member)
    for key in (b"data", label_key):
        if key not in d:
            raise DataError(f"{where} has no {key!r} entry (keys: {sorted(d)}); is it the right dataset?")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{where}: b'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{where}: {data.shape[0]} images but {labels.size} labels")
    # planar RGB rows -> (N, 3, 32, 32) is a pure reshape
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_classes(source: CifarSource, spec: DatasetSpec) -> list[str]:
    meta, key = ("batches.meta", b"label_names") if spec.format == "cifar10" else ("meta", b"fine_label_names")
    if source.has(meta):
        names = source.unpickle(meta).get(key)
        if names is not None and len(names) == spec.num_classes:
            return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    return list(spec.classes) if spec.classes else [str(i) for i in range(spec.num_classes)]


def load_cifar_split(source: CifarSource, spec: DatasetSpec, split: str) -> VisionData:
    members = (CIFAR10_MEMBERS if spec.format == "cifar10" else CIFAR100_MEMBERS)[split]
    label_key = b"labels" if spec.format == "cifar10" else b"fine_labels"
    parts = [_cifar_batch(source, m, label_key) for m in members]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    _check_labels(labels, spec.num_classes, source)
    return VisionData(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels),
                      _cifar_classes(source, spec), spec.name, split, str(source))


# ---------------------------------------------------------------------------------------------

def load_vision(name: str, *, root: str | Path | None = None, split: str = "train") -> VisionData:
    """Load one split ("train" or "test") of ``name`` (fashion-mnist, mnist, cifar10, cifar100).

    ``root`` is a dataset directory, a directory holding one (``root/<name>/``,
    ``root/cifar-10-batches-py``), or a CIFAR tarball. Without it: ``$INITLAB_DATA``, then the
    standard places (see :func:`initlab.data.locate.search_dirs`).
    """
    from .locate import locate

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    spec = dataset_spec(name)
    found = locate(spec, root=root, split=split)
    if spec.format == "idx":
        return load_idx_split(found, spec, split)
    return load_cifar_split(CifarSource(found, spec), spec, split)
