"""Fetch datasets for users who are online: ``initlab download NAME --root DIR``.

Files come from the official URLs (or a mirror / ``base_url`` override), are streamed into a
temporary file next to their destination, checked against the known MD5 and only then renamed into
place, so an interrupted download never leaves a file that looks complete. Tarballs are extracted
into a temporary directory and the dataset folder is renamed into place the same way. Files that are
already there with the right checksum are not fetched again.

Nothing in initlab downloads at training time: loaders only read local files.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, DataError
from ..output import atomic_stream
from .locate import cache_dir
from .vision import dataset_spec


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from: base URLs tried in order, files with their MD5, extraction."""

    urls: tuple[str, ...]
    files: dict  # file name -> md5
    extract: bool = False  # tarballs: unpack next to the archive


SOURCES: dict[str, Source] = {
    "cifar10": Source(("https://www.cs.toronto.edu/~kriz/",),
                      {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"}, extract=True),
    "cifar100": Source(("https://www.cs.toronto.edu/~kriz/",),
                       {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"}, extract=True),
    "fashion-mnist": Source(
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"}),
    "mnist": Source(
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"}),
}

_CHUNK = 1 << 20


def md5_file(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, dest: Path, expected_md5: str, *, timeout: float, log: Callable[[str], None]) -> None:
    """Stream ``url`` into a temp file beside ``dest``, check the MD5, rename into place
    (:func:`initlab.output.atomic_stream`: on any error nothing is left behind)."""
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": "initlab-download"})
    with atomic_stream(dest) as out, urllib.request.urlopen(request, timeout=timeout) as resp:
        total = int(resp.headers.get("Content-Length") or 0)
        next_report = 0.25
        for chunk in iter(lambda: resp.read(_CHUNK), b""):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            if total and size / total >= next_report and total > 8 * _CHUNK:
                log(f"  {dest.name}: {size / 2**20:.0f}/{total / 2**20:.0f} MiB")
                next_report += 0.25
        # still inside the block: an error here removes the temporary file, dest is untouched
        if total and size != total:
            raise DataError(f"download of {url} stopped after {size} of {total} bytes; run again")
        got = digest.hexdigest()
        if got != expected_md5:
            raise DataError(f"{url}: MD5 {got} does not match the expected {expected_md5}; the file "
                            f"is corrupt or not the official one (nothing was saved)")


def _extract(archive: Path, dest_dir: Path, log: Callable[[str], None]) -> list[Path]:
    """Unpack ``archive`` into a temp dir in ``dest_dir``, then rename each top-level entry into place."""
    tmp = Path(tempfile.mkdtemp(dir=dest_dir, prefix=".extract-"))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")  # refuses absolute paths, .., devices
                else:  # Python < 3.11.4
                    for m in tar.getmembers():
                        if m.name.startswith("/") or ".." in Path(m.name).parts:
                            raise DataError(f"{archive} holds an unsafe path {m.name!r}")
                    tar.extractall(tmp)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"cannot extract {archive} ({exc}); delete it and download again") from None
        placed = []
        for entry in sorted(tmp.iterdir()):
            target = dest_dir / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(entry, target)
            placed.append(target)
            log(f"  extracted {target}")
        return placed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(name: str, root: str | Path | None = None, *, base_url: str | None = None,
             md5: dict | None = None, force: bool = False, timeout: float = 60.0,
             log: Callable[[str], None] | None = None) -> Path:
    """Download dataset ``name`` into ``root/<name>/`` (default root: ``~/.cache/initlab``).

    ``base_url`` replaces the official locations (a mirror; file names are appended to it).
    ``md5`` maps file names to checksums that override the known ones (for a mirror whose files
    differ). Returns the dataset directory; ``load_vision(name, root=root)`` then finds it.
    """
    spec = dataset_spec(name)
    if spec.name not in SOURCES:
        raise ConfigError(f"no download source for {name!r}; choose one of {', '.join(SOURCES)}")
    source = SOURCES[spec.name]
    log = log or (lambda msg: print(msg, file=sys.stderr))
    checksums = dict(source.files)
    for fname, value in (md5 or {}).items():
        if fname not in checksums:
            raise ConfigError(f"--md5 names {fname!r}, which is not a file of {spec.name} "
                              f"({', '.join(checksums)})")
        checksums[fname] = value.lower()
    urls = (base_url,) if base_url else source.urls
    dest_dir = Path(root).expanduser() if root is not None else cache_dir()
    dest_dir = dest_dir / spec.name
    dest_dir.mkdir(parents=True, exist_ok=True)

    for fname, expected in checksums.items():
        dest = dest_dir / fname
        if dest.is_file() and not force:
            if md5_file(dest) == expected:
                log(f"  {dest} already there (MD5 ok)")
                continue
            log(f"  {dest} has a wrong MD5; fetching it again")
        errors = []
        for base in urls:
            url = base.rstrip("/") + "/" + fname
            log(f"downloading {url}")
            try:
                _fetch(url, dest, expected, timeout=timeout, log=log)
                break
            except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError is a URLError
                errors.append(f"{url}: {exc}")
        else:
            raise DataError(f"could not download {fname} ({'; '.join(errors)}). Are you online? "
                            f"Otherwise copy the file to {dest} yourself" +
                            (f" or {spec.how_to_get}" if spec.format == "idx" else ""))
        if source.extract:
            _extract(dest, dest_dir, log)
    if source.extract:
        for fname in checksums:  # files present with a good MD5 but never extracted (or deleted)
            if spec.folder and not (dest_dir / spec.folder).is_dir():
                _extract(dest_dir / fname, dest_dir, log)
    return dest_dir
