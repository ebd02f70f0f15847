"""Where datasets are looked for, in order.

1. the explicit ``root`` argument (``--data-root``): authoritative, nothing else is searched when it
   is given (a typo must not silently load another copy);
2. the ``INITLAB_DATA`` environment variable: one or more directories (separated by ``os.pathsep``)
   holding datasets by name, e.g. ``$INITLAB_DATA/fashion-mnist/``,
   ``$INITLAB_DATA/cifar-10-batches-py`` or ``$INITLAB_DATA/cifar10/cifar-10-python.tar.gz``;
3. standard places: the OS package location (``/usr/share/datasets/fashion-mnist``), then
   ``~/.cache/initlab/<name>`` (where ``initlab download`` puts things by default), then
   ``./data/<name>`` (and ``./data/cifar-10-batches-py``, the torchvision layout).

A directory given as ``root`` may be the dataset directory itself or a directory holding it. For
IDX datasets a base directory from 2. or 3. is only searched by name (``<base>/mnist``), because
MNIST and Fashion-MNIST use the same file names.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .vision import CIFAR10_MEMBERS, CIFAR100_MEMBERS, IDX_FILES, DatasetSpec, idx_file

ENV_VAR = "INITLAB_DATA"


def cache_dir() -> Path:
    """``~/.cache/initlab``: the default target of ``initlab download``."""
    return Path.home() / ".cache" / "initlab"


def search_dirs(spec: DatasetSpec, root: str | Path | None = None) -> list[tuple[Path, str]]:
    """(directory, origin) pairs in search order; origin is "root", ENV_VAR, "system" (an OS
    package's dataset directory) or "standard" (a base holding datasets by name)."""
    if root is not None:
        return [(Path(root).expanduser(), "root")]
    dirs: list[tuple[Path, str]] = []
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if part.strip():
            dirs.append((Path(part.strip()).expanduser(), ENV_VAR))
    dirs += [(Path(d), "system") for d in spec.system_dirs]  # the dataset directory itself
    dirs += [(cache_dir(), "standard"), (Path.cwd() / "data", "standard")]
    return dirs


def _names(spec: DatasetSpec) -> tuple[str, ...]:
    return (spec.name,) + spec.aliases


def _is_cifar_dir(path: Path, spec: DatasetSpec) -> bool:
    members = CIFAR10_MEMBERS if spec.format == "cifar10" else CIFAR100_MEMBERS
    meta = "batches.meta" if spec.format == "cifar10" else "meta"
    markers = (meta,) + members["train"] + members["test"]
    return path.is_dir() and any((path / m).is_file() for m in markers)


def _probe(base: Path, spec: DatasetSpec, split: str, *, base_itself: bool) -> Path | None:
    """The dataset location inside ``base`` (a directory for IDX/CIFAR, or a CIFAR tarball)."""
    candidates = ([base] if base_itself else []) + [base / n for n in _names(spec)]
    if spec.format == "idx":
        for c in candidates:
            if c.is_dir() and any(idx_file(c, stem) for stem in IDX_FILES[split]):
                return c
        return None
    if base_itself and base.is_file():  # root=path/to/cifar-10-python.tar.gz
        return base
    for c in [base] + [base / n for n in _names(spec)]:
        # a search base is a batches dir only when the user named it (root=...batches-py)
        if (c != base or base_itself) and _is_cifar_dir(c, spec):
            return c
        if (c / spec.folder).is_dir():
            return c / spec.folder
        if (c / spec.tarball).is_file():
            return c / spec.tarball
    return None


def locate(spec: DatasetSpec, *, root: str | Path | None = None, split: str = "train") -> Path:
    """Find ``spec``'s files for ``split``; a :class:`DataError` listing where we looked if absent."""
    looked = []
    for base, origin in search_dirs(spec, root):
        found = _probe(base, spec, split, base_itself=origin in ("root", "system"))
        if found is not None:
            return found
        looked.append(f"{base} ({origin})")
    what = (f"{IDX_FILES[split][0]}.gz" if spec.format == "idx"
            else f"{spec.folder}/ or {spec.tarball}")
    if root is not None:
        raise DataError(f"no {spec.title} files ({what}) in {root}; {spec.how_to_get}")
    raise DataError(f"{spec.title} not found: looked for {what} in {', '.join(looked)}; "
                    f"{spec.how_to_get}")
