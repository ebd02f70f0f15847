"""A model initialized or parametrized by initlab computes the same function after every way of
saving and reloading it (docs/parametrizations.md, "Saving and reloading").

The function at stake is the tied head's multiplier N_rescale (mu: n^-1), which lives outside the
weights: for Hugging Face models in a forward hook plus ``config.initlab_head_multiplier``, for
initlab's GPT in the state dict's extra state. Each path is checked on GPT-2 (tied, fused Conv1D),
BART (tied, encoder-decoder), a LLaMA with tie_word_embeddings=True, and initlab's GPT.
"""
from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch

import initlab
from initlab.errors import RoleMapError
from initlab.models import GPT
from initlab.roles.persist import CONFIG_KEY, HeadMultiplierWarning

transformers = pytest.importorskip("transformers", reason="transformers not installed")
from transformers.utils import logging  # noqa: E402

logging.set_verbosity_error()

WIDTH, VOCAB = 64, 128
GPT_KW = dict(vocab_size=VOCAB, block_size=16, width=WIDTH, depth=1, heads=2, tie_head=True)


def _config(kind: str):
    if kind == "gpt2":
        return transformers.GPT2Config(n_embd=WIDTH, n_layer=1, n_head=2, vocab_size=VOCAB, n_positions=16)
    if kind == "bart":
        return transformers.BartConfig(d_model=WIDTH, encoder_layers=1, decoder_layers=1,
                                       encoder_attention_heads=2, decoder_attention_heads=2,
                                       encoder_ffn_dim=WIDTH, decoder_ffn_dim=WIDTH, vocab_size=VOCAB,
                                       max_position_embeddings=32)
    return transformers.LlamaConfig(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=1,
                                    num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
                                    tie_word_embeddings=True)


_CLASSES = {"gpt2": "GPT2LMHeadModel", "bart": "BartForConditionalGeneration", "llama": "LlamaForCausalLM"}
HF = list(_CLASSES)


def _build(kind: str, config=None):
    if kind == "gpt":
        return GPT(**GPT_KW).eval()
    cls = getattr(transformers, _CLASSES[kind])
    return cls(config if config is not None else _config(kind)).eval()


def _logits(model, ids):
    with torch.no_grad():
        out = model(ids)
    return out if torch.is_tensor(out) else out.logits


def _parametrized(kind: str, via: str = "parametrize_"):
    model = _build(kind)
    if via == "init_":
        initlab.init_(model, "mu", generator=torch.Generator().manual_seed(0))
    else:
        initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(0))
    return model


IDS = torch.randint(3, VOCAB - 1, (2, 8), generator=torch.Generator().manual_seed(1))


def _assert_same(model, ref):
    torch.testing.assert_close(_logits(model, IDS), ref, rtol=1e-5, atol=0)


def _multiplier(model) -> float:
    return initlab.role_map(model).controls.get_head_multiplier()


@pytest.mark.parametrize("kind", HF + ["gpt"])
def test_the_multiplier_is_real(kind):
    """The paths below are only meaningful if the multiplier changes the logits (mu: 1/n)."""
    model = _parametrized(kind)
    ref = _logits(model, IDS)
    assert _multiplier(model) == pytest.approx(WIDTH ** -1.0)
    initlab.role_map(model).controls.set_head_multiplier(1.0)
    torch.testing.assert_close(_logits(model, IDS), ref * WIDTH, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", HF)
def test_save_pretrained_from_pretrained_then_restore(kind, tmp_path):
    model = _parametrized(kind, via="init_" if kind == "bart" else "parametrize_")
    ref = _logits(model, IDS)
    model.save_pretrained(tmp_path)
    cls = type(model)
    lost = cls.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(lost, IDS), ref * WIDTH, rtol=1e-4, atol=1e-6)  # what it was
    assert getattr(lost.config, CONFIG_KEY) == pytest.approx(WIDTH ** -1.0)  # config.json kept it
    assert initlab.restore_(lost) is lost
    _assert_same(lost, ref)
    auto = transformers.AutoModelForSeq2SeqLM if kind == "bart" else transformers.AutoModelForCausalLM
    _assert_same(initlab.restore_(auto.from_pretrained(tmp_path).eval()), ref)


@pytest.mark.parametrize("kind", HF)
def test_every_initlab_verb_puts_it_back_and_warns(kind, tmp_path):
    model = _parametrized(kind)
    ref = _logits(model, IDS)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()
    with pytest.warns(HeadMultiplierWarning, match="reloaded without its tied-head multiplier"):
        groups = initlab.param_groups(reloaded, "mu", lr=1e-3)
    assert groups
    _assert_same(reloaded, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # restored once: no second warning
        initlab.role_map(reloaded)
        initlab.restore_(reloaded)


@pytest.mark.parametrize("kind", HF + ["gpt"])
def test_state_dict_into_a_fresh_model(kind, tmp_path):
    model = _parametrized(kind)
    ref = _logits(model, IDS)
    fresh = _build(kind, getattr(model, "config", None) if kind != "gpt" else None)
    fresh.load_state_dict(model.state_dict())
    _assert_same(initlab.restore_(fresh), ref)
    # through a file, read back with weights_only=True (tensors only)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    other = _build(kind, getattr(model, "config", None) if kind != "gpt" else None)
    other.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    _assert_same(initlab.restore_(other), ref)


@pytest.mark.parametrize("kind", HF + ["gpt"])
def test_whole_model_pickle_and_deepcopy(kind):
    model = _parametrized(kind)
    ref = _logits(model, IDS)
    _assert_same(copy.deepcopy(model), ref)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    _assert_same(torch.load(buf, weights_only=False), ref)  # a whole module: your own file only


def test_a_shared_config_is_left_alone_and_standard_clears_the_record(tmp_path):
    config = _config("gpt2")
    a, b = _build("gpt2", config), _build("gpt2", config)
    initlab.parametrize_(a, "mu", generator=torch.Generator().manual_seed(0))
    assert not hasattr(config, CONFIG_KEY) and not hasattr(b.config, CONFIG_KEY)
    assert a.transformer.config is a.config  # the model's own copy, shared inside the model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _multiplier(b) == 1.0  # b was never rescaled: nothing restored, nothing warned
    initlab.parametrize_(a, "standard", generator=torch.Generator().manual_seed(0))
    assert not hasattr(a.config, CONFIG_KEY) and _multiplier(a) == 1.0
    ref = _logits(a, IDS)
    a.save_pretrained(tmp_path)
    assert CONFIG_KEY not in (tmp_path / "config.json").read_text()
    _assert_same(type(a).from_pretrained(tmp_path).eval(), ref)


def test_an_untied_reload_cannot_apply_the_multiplier_and_says_so(tmp_path):
    model = _parametrized("llama")
    model.save_pretrained(tmp_path)
    untied = transformers.LlamaForCausalLM.from_pretrained(tmp_path, tie_word_embeddings=False)
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight
    with pytest.raises(RoleMapError, match="not tied .* tie_word_embeddings=True"):
        initlab.restore_(untied)
    with pytest.warns(HeadMultiplierWarning, match="cannot apply it"):
        initlab.role_map(untied)


def test_initlab_gpt_state_dict_keeps_the_multiplier_as_extra_state():
    model = _parametrized("gpt")
    state = model.state_dict()
    assert float(state["_extra_state"]) == pytest.approx(WIDTH ** -1.0)
    fresh = GPT(**GPT_KW)
    assert fresh.head_multiplier == 1.0
    fresh.load_state_dict(state)
    assert fresh.head_multiplier == model.head_multiplier


def test_initlab_vit_every_path(tmp_path):
    """initlab's ViT (untied head: mu leaves N = 1, so a multiplier is set by hand to make it count)."""
    from initlab.models import ViT
    kw = dict(width=32, depth=1, heads=2, image_size=28, patch_size=7)
    model = ViT(**kw).eval()
    initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(0))
    assert _multiplier(model) == 1.0  # untied: its n^-s is in the head's init variance
    initlab.role_map(model).controls.set_head_multiplier(0.5)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    fresh = ViT(**kw).eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    fresh.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    for other in (fresh, copy.deepcopy(model), torch.load(buf, weights_only=False)):
        with torch.no_grad():
            torch.testing.assert_close(other(x), ref, rtol=1e-5, atol=0)
