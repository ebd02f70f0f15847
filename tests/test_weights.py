"""``initlab weights``: statistics of W_q W_kᵀ and W_v W_o from fresh models and local checkpoints."""
import json
import math

import pytest
import torch

import initlab
from initlab.cli import main
from initlab.errors import CheckpointError
from initlab.models import ViT
from initlab.weights import (attention_stats, format_table, load_for_weights, product_stats,
                             roles_from_state_dict)


def test_product_stats_definitions():
    p = torch.full((4, 4), 0.5)
    p.fill_diagonal_(-2.0)
    s = product_stats(p)
    assert s.diag == -2.0 and s.ratio == pytest.approx(-4.0) and s.sign == "-"


def test_fresh_mimetic_model_shows_the_papers_signs_and_default_does_not():
    _, rm, _ = load_for_weights("vit-micro", init="mimetic", seed=1)
    stats = attention_stats(rm)
    assert len(stats) == len(rm.attention)
    for s in stats:
        assert s.qk_positive == len(s.qk) and s.qk_ratio > 3
        assert s.vo.sign == "-" and s.vo.diag == pytest.approx(-0.4, abs=0.05) and s.vo.ratio < -3
    _, rm0, _ = load_for_weights("vit-micro", init="default", seed=1)
    for s in attention_stats(rm0):
        assert abs(s.qk_ratio) < 1.5 and abs(s.vo.ratio) < 1.5  # no structure in a random init
    assert "QK diag/off" in format_table(stats)


def _vit():
    torch.manual_seed(0)
    m = ViT(width=32, heads=2, depth=2, image_size=28, patch_size=7)
    initlab.mimetic_(m, generator=torch.Generator().manual_seed(0))
    return m


def _same_stats(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert [q.diag for q in x.qk] == pytest.approx([q.diag for q in y.qk], abs=1e-6)
        assert x.vo.diag == pytest.approx(y.vo.diag, abs=1e-6)


def test_safetensors_and_torch_save_checkpoints(tmp_path):
    from safetensors.torch import save_file
    m = _vit()
    live = attention_stats(initlab.role_map(m))
    st = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(st))
    _, rm, _ = load_for_weights(str(st), heads=2)
    _same_stats(attention_stats(rm), live)
    pt = tmp_path / "ckpt.pt"
    torch.save({"model": m.state_dict(), "step": 3}, pt)  # a training checkpoint
    _, rm, _ = load_for_weights(str(pt), heads=2)
    _same_stats(attention_stats(rm), live)
    with pytest.raises(CheckpointError, match="--heads"):
        load_for_weights(str(st))
    with pytest.raises(CheckpointError, match="no known attention layout"):
        roles_from_state_dict({"foo.weight": torch.zeros(3, 3)}, heads=1)


def test_hugging_face_folder_and_gpt2_state_dict(tmp_path):
    transformers = pytest.importorskip("transformers")
    from transformers.utils import logging
    logging.set_verbosity_error()
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=40, n_positions=16))
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(0))
    live = attention_stats(initlab.role_map(model))
    model.save_pretrained(tmp_path / "gpt2")
    _, rm, what = load_for_weights(str(tmp_path / "gpt2"))
    assert "GPT2LMHeadModel" in what
    _same_stats(attention_stats(rm), live)
    # the bare Conv1D state dict: layout (in, out) must be recognised without the module classes
    _, rm, _ = load_for_weights(str(tmp_path / "gpt2" / "model.safetensors"))  # heads from config.json
    _same_stats(attention_stats(rm), live)


def test_gqa_state_dict_infers_kv_heads():
    transformers = pytest.importorskip("transformers")
    from transformers.utils import logging
    logging.set_verbosity_error()
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=40))
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(0))
    rm = roles_from_state_dict(model.state_dict(), heads=4)
    assert rm.attention[0].n_kv_heads == 2
    _same_stats(attention_stats(rm), attention_stats(initlab.role_map(model)))


def test_cli_table_png_json_and_errors(tmp_path, capsys):
    png, js = tmp_path / "w.png", tmp_path / "w.json"
    assert main(["weights", "vit-micro", "--init", "mimetic", "--png", str(png), "--json", str(js),
                 "--layers", "0,1", "--max-heads", "2"]) == 0
    out = capsys.readouterr().out
    assert "VO sign" in out and "blocks.0.attn" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(js.read_text())["layers"]
    assert rows[0]["vo"]["diag"] < 0 and all(h["diag"] > 0 for h in rows[0]["qk"])
    assert main(["weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["weights", "vit-micro", "--layers", "a"]) == 2


def test_a_checkpoint_written_by_initlab_train_end_to_end(tmp_path, capsys):
    """The README's `initlab weights runs/m1/checkpoint.pt`: a tiny `initlab train` run, then its
    checkpoint (and its run directory) read with weights_only=True, the numbers those of its weights."""
    text = tmp_path / "tiny.txt"
    text.write_text("to be or not to be, that is the question. " * 40)
    run_dir = tmp_path / "m1"
    assert main(["train", "--task", "lm", "--data", str(text), "--model", "gpt-micro", "--width", "16",
                 "--depth", "1", "--heads", "2", "--block-size", "16", "--batch-size", "4", "--steps", "2",
                 "--eval-batches", "1", "--init", "mimetic", "--out", str(run_dir), "--quiet"]) == 0
    capsys.readouterr()
    js = tmp_path / "w.json"
    assert main(["weights", str(run_dir / "checkpoint.pt"), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "gpt-micro checkpoint, step 2" in printed and "blocks.0.attn" in printed
    # head 0's W_q W_kᵀ by hand from the checkpoint's fused qkv weight (rows q | k | v, y = x Wᵀ)
    w = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]["blocks.0.attn.qkv.weight"]
    q, k = w[0:8].double(), w[16:24].double()  # width 16, 2 heads of 8
    by_hand = product_stats(q.T @ k)
    head0 = json.loads(js.read_text())["layers"][0]["qk"][0]
    assert head0["diag"] == pytest.approx(by_hand.diag, rel=1e-9)
    assert head0["ratio"] == pytest.approx(by_hand.ratio, rel=1e-9)
    assert by_hand.diag > 0  # mimetic init, two steps later: still the paper's positive diagonal
    assert main(["weights", str(run_dir)]) == 0  # the run directory: its newest checkpoint
    assert "step 2" in capsys.readouterr().out


def test_a_file_that_pickles_code_is_refused_in_one_line(tmp_path, capsys):
    import numpy as np
    path = tmp_path / "old.pt"  # what initlab's format-1 checkpoints held: numpy's RNG state
    torch.save({"format_version": 1, "model": {"w": torch.zeros(2)},
                "rng": {"numpy": np.random.RandomState(0).get_state()}}, path)
    assert main(["weights", str(path), "--heads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could run code" in err and "initlab.train.upgrade" in err
