"""Writers of small datasets in the exact on-disk formats the loaders read.

For tests and demos without the real data (CIFAR is not available offline): they produce gzip IDX
files with the real magic numbers, and CIFAR python-version pickles (protocol 2, bytes keys, like
the Python 2 originals) in their directory or tarball layout. ``load_vision(name, root=DIR)`` reads
what they write.
"""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

from ..output import atomic_write_bytes
from .vision import CIFAR10_MEMBERS, IDX_FILES, IDX_MAGIC_IMAGES, IDX_MAGIC_LABELS


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file holding uint8 ``array`` (magic 0x0000080N, big-endian dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {1: IDX_MAGIC_LABELS, 3: IDX_MAGIC_IMAGES}.get(array.ndim, 0x0800 + array.ndim)
    return struct.pack(">I" + "I" * array.ndim, magic, *array.shape) + array.tobytes()


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as a gzip IDX file (plain IDX when the name does not end in .gz)."""
    path = Path(path)
    raw = idx_bytes(array)
    return atomic_write_bytes(path, gzip.compress(raw) if path.name.endswith(".gz") else raw)


def random_images(n: int, channels: int, size: int, num_classes: int, seed: int = 0):
    """(uint8 images (n, C, H, W), int64 labels) with every class present when n >= num_classes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, channels, size, size), dtype=np.uint8)
    labels = (np.arange(n) % num_classes)[rng.permutation(n)].astype(np.int64)
    return images, labels


def write_idx_dataset(directory: str | Path, split: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """Write one split (images (N, 28, 28) or (N, 1, 28, 28)) as MNIST-style gzip IDX files."""
    directory = Path(directory)
    images = np.asarray(images, dtype=np.uint8)
    if images.ndim == 4:
        images = images[:, 0]
    image_stem, label_stem = IDX_FILES[split]
    write_idx(directory / f"{image_stem}.gz", images)
    write_idx(directory / f"{label_stem}.gz", np.asarray(labels, dtype=np.uint8))
    return directory


def _pickle_py2(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def cifar_batch_bytes(images: np.ndarray, labels, *, label_key: bytes = b"labels", extra=None) -> bytes:
    """One CIFAR batch pickle: ``b'data'`` uint8 (N, 3072) planar RGB, labels as a list of ints."""
    images = np.asarray(images, dtype=np.uint8)
    d = {b"batch_label": b"synthetic batch", label_key: [int(v) for v in labels],
         b"data": images.reshape(len(images), -1), b"filenames": [b"img%d.png" % i for i in range(len(images))]}
    d.update(extra or {})
    return _pickle_py2(d)


def cifar10_members(train, test, classes=None) -> dict[str, bytes]:
    """Member name -> bytes of a CIFAR-10 python-version folder; ``train`` is split into 5 batches."""
    (tri, trl), (tei, tel) = train, test
    members = {}
    for name, part in zip(CIFAR10_MEMBERS["train"], np.array_split(np.arange(len(tri)), 5)):
        members[name] = cifar_batch_bytes(tri[part], trl[part])
    members["test_batch"] = cifar_batch_bytes(tei, tel)
    names = classes or ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    members["batches.meta"] = _pickle_py2({b"label_names": [n.encode() for n in names],
                                           b"num_cases_per_batch": len(tri) // 5, b"num_vis": 3072})
    return members


def cifar100_members(train, test, classes=None) -> dict[str, bytes]:
    """Member name -> bytes of a CIFAR-100 python-version folder (``fine_labels``, coarse = fine // 5)."""
    members = {}
    for name, (images, labels) in (("train", train), ("test", test)):
        members[name] = cifar_batch_bytes(images, labels, label_key=b"fine_labels",
                                          extra={b"coarse_labels": [int(v) // 5 for v in labels]})
    names = classes or [f"class{i}" for i in range(100)]
    members["meta"] = _pickle_py2({b"fine_label_names": [n.encode() for n in names],
                                   b"coarse_label_names": [b"super%d" % i for i in range(20)]})
    return members


def write_folder(directory: str | Path, members: dict[str, bytes]) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in members.items():
        atomic_write_bytes(directory / name, data)
    return directory


def write_tarball(path: str | Path, folder: str, members: dict[str, bytes]) -> Path:
    """A .tar.gz holding ``folder/<member>`` entries, like the official CIFAR archives."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(folder)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return atomic_write_bytes(path, buf.getvalue())
