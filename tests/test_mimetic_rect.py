"""Mimetic init of attention layers whose value input and output differ in width
(docs/mimetic.md, "Value input and output of different widths").

The VO target is B = α₂Z + σβ₂J, p x q (p the width v reads, q the width o writes), Z of variance
1/p, J the identity on the value-input features the residual stream carries onto the output
(the role map's ``residual_in``; I when p = q; none otherwise). Targets are re-drawn here from the
documented sampling with torch.rand and factorized with numpy, independently of the library.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

import initlab
from initlab.errors import InitError, RoleMapError
from mimetic_reference import truncation

pytestmark = pytest.mark.usefixtures("one_thread")

VISION = dict(a1=0.7, b1=0.7, a2=0.4, b2=0.4)


def reference(seed, layers, *, a1, b1, a2, b2, sign=-1, dtype=torch.float64):
    """Per layer (dq, heads, p, q, span): (A (heads, dq, dq), B (p, q)) as numpy float64, drawn
    in ``dtype`` (mimetic_ draws in float64 for svd="exact" on CPU, else float32)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for dq, heads, p, q, span in layers:
        zq = ((torch.rand((heads, dq, dq), generator=g, dtype=dtype).double() * 2 - 1)
              * math.sqrt(3.0 / dq)).numpy()
        zv = ((torch.rand((p, q), generator=g, dtype=dtype).double() * 2 - 1) * math.sqrt(3.0 / p)).numpy()
        j = np.zeros((p, q))
        if span is not None:
            off, width = span
            j[off:off + width, :width] = np.eye(width)
        out.append((a1 * zq + b1 * np.eye(dq), a2 * zv + sign * b2 * j))
    return out


class Attn(nn.Module):
    """Hand-written attention whose q/k read ``d_qk``, v reads ``d_v`` and o writes ``d_out``."""

    def __init__(self, d_qk, d_v, d_out, heads, kv_heads, head_dim):
        super().__init__()
        self.q_proj = nn.Linear(d_qk, heads * head_dim)
        self.k_proj = nn.Linear(d_qk, kv_heads * head_dim)
        self.v_proj = nn.Linear(d_v, kv_heads * head_dim)
        self.o_proj = nn.Linear(heads * head_dim, d_out)


class Net(nn.Module):
    def __init__(self, *shapes):
        super().__init__()
        self.layers = nn.ModuleList(Attn(*s) for s in shapes)


def mapped(net, heads, kv_heads, **extra):
    spec = dict(q="q_proj", k="k_proj", v="v_proj", o="o_proj", heads=heads, kv_heads=kv_heads, **extra)
    return initlab.role_map(net, mapping={"attention": {"layers.*": spec}})


def np64(t):
    return t.detach().double().numpy()


def check_layer(att_mod, a, b, heads, kv_heads, head_dim):
    wq, wk = np64(att_mod.q_proj.weight), np64(att_mod.k_proj.weight)
    wv, wo = np64(att_mod.v_proj.weight), np64(att_mod.o_proj.weight)
    r = heads // kv_heads
    for h in range(heads):
        g = h // r
        prod = wq[h * head_dim:(h + 1) * head_dim].T @ wk[g * head_dim:(g + 1) * head_dim]
        if r == 1:
            np.testing.assert_allclose(prod, truncation(a[h], min(head_dim, a.shape[-1])), atol=1e-5)
    # the layer's value-to-output map x -> x Wvᵀ ... Woᵀ, summed over heads: Σ_h Wv_gᵀ Wo_hᵀ
    vo = sum(wv[(h // r) * head_dim:(h // r + 1) * head_dim].T @ wo[:, h * head_dim:(h + 1) * head_dim].T
             for h in range(heads))
    np.testing.assert_allclose(vo, b, atol=1e-5)
    return vo


@pytest.mark.parametrize("shape", [
    (24, 24, 12, 4, 4, 6),   # value input wider than the output (p > q), G·k = p
    (12, 12, 24, 4, 4, 6),   # value input narrower (p < q): Bᵀ factored
    (12, 12, 24, 4, 2, 6),   # p < q with grouped K/V heads (G·k = 12 = p)
    (16, 8, 32, 4, 4, 8),    # MobileBERT-like: q/k read 16, v reads 8, o writes 32
    (20, 20, 8, 2, 2, 4),    # Fun-ASR-like first layer: 20 -> 8, G·k = q
], ids=["p>q", "p<q", "p<q-gqa", "qk!=v", "no-residual"])
@pytest.mark.parametrize("svd", ["exact", "randomized"])
def test_rectangular_vo_is_alpha_z_without_identity(shape, svd):
    """No input feature is the output's residual stream: B = α₂Z (p x q), exactly (G·k ≥ min(p, q))."""
    d_qk, d_v, d_out, heads, kv, hd = shape
    net = Net(shape, shape)
    rm = mapped(net, heads, kv)
    assert rm.attention[0].vo_product().shape == (d_v, d_out)
    initlab.mimetic_(net, preset="vision", svd=svd, role_map=rm, generator=torch.Generator().manual_seed(3))
    dtype = torch.float64 if svd == "exact" else torch.float32
    refs = reference(3, [(d_qk, heads, d_v, d_out, None)] * 2, **VISION, dtype=dtype)
    for mod, att, (a, b) in zip(net.layers, rm.attention, refs):
        if svd == "exact":
            check_layer(mod, a, b, heads, kv, hd)
        else:  # randomized: the VO product is still exact (to float32); QK is a top-k estimate
            np.testing.assert_allclose(att.vo_product().numpy(), b, atol=1e-5)
    # the biases of the written products are zeroed, as for square layers
    assert all(float(m.o_proj.bias.detach().abs().max()) == 0 for m in net.layers)


def test_residual_in_puts_the_identity_on_the_stream_features():
    """A Zamba-like block reading [hidden, embeddings] (2d) and writing d: with residual_in=(0, d)
    the VO target is α₂Z − β₂[I; 0]: the output is anti-correlated with the hidden half only."""
    d, heads = 32, 4
    shape = (2 * d, 2 * d, d, heads, heads, 2 * d // heads)
    net = Net(shape)
    rm = mapped(net, heads, heads, residual_in=(0, d))
    assert rm.attention[0].residual_in == (0, d)
    initlab.mimetic_(net, preset="vision", svd="exact", role_map=rm, generator=torch.Generator().manual_seed(5))
    (a, b), = reference(5, [(2 * d, heads, 2 * d, d, (0, d))], **VISION)
    vo = check_layer(net.layers[0], a, b, heads, heads, 2 * d // heads)
    # T4-like statistics on the two halves: -β₂ on the hidden half, 0 on the embedding half
    assert abs(np.diag(vo[:d]).mean() + 0.4) < 0.05
    assert abs(np.diag(vo[d:]).mean()) < 0.05
    # the attention forward: values then output map a token's features x to x B
    x = torch.randn(3, 2 * d, dtype=torch.float64)
    m = net.layers[0].double()
    y = sum(m.v_proj(x)[:, (h * 16):(h + 1) * 16] @ m.o_proj.weight[:, h * 16:(h + 1) * 16].T
            for h in range(heads))
    np.testing.assert_allclose(y.detach().numpy(), x.numpy() @ b, atol=1e-5)  # float32 weights


def test_residual_in_is_validated():
    net = Net((16, 16, 8, 2, 2, 8))
    with pytest.raises(RoleMapError, match="residual_in"):
        mapped(net, 2, 2, residual_in=(12, 8))  # features 12..20 of a 16-wide input
    with pytest.raises(RoleMapError, match="residual_in must be"):
        mapped(net, 2, 2, residual_in=8)


def test_queries_and_keys_of_different_widths_are_refused_unless_qk_false():
    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj = nn.Linear(16, 16), nn.Linear(8, 16)
            self.v_proj, self.o_proj = nn.Linear(8, 16), nn.Linear(16, 16)

    net = nn.ModuleDict({"layers": nn.ModuleList([Cross()])})
    rm = mapped(net, 2, 2)
    before = net.layers[0].q_proj.weight.detach().clone()
    with pytest.raises(InitError, match=r"queries read 16 features and keys 8.*kdim = embed_dim.*qk=False"):
        initlab.mimetic_(net, role_map=rm)
    assert torch.equal(net.layers[0].q_proj.weight, before)  # refused before anything is written
    initlab.mimetic_(net, role_map=rm, qk=False, preset="vision", svd="exact",
                     generator=torch.Generator().manual_seed(1))
    assert torch.equal(net.layers[0].q_proj.weight, before)
    (_, b), = reference(1, [(16, 2, 8, 16, None)], **VISION)
    np.testing.assert_allclose(rm.attention[0].vo_product().numpy(), b, atol=1e-5)


def test_compat_layout_refuses_rectangular_vo():
    net = Net((16, 16, 8, 2, 2, 8))
    with pytest.raises(InitError, match="compat"):
        initlab.mimetic_(net, role_map=mapped(net, 2, 2), vo_layout="compat")


# ---------------------------------------------------------------------------------------------
# Hugging Face types at tiny size (the coverage sweep's builds)
# ---------------------------------------------------------------------------------------------
def sweep(model_type):
    """tools/hf_coverage (the sweep's tiny builds), or a skip when transformers lacks the type."""
    pytest.importorskip("transformers", reason="Hugging Face transformers is not installed")
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import hf_coverage
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"this transformers has no {model_type}")
    return hf_coverage


def hf_build(head, model_type):
    return sweep(model_type).build(head, model_type, vocab=512)[0]


def draw(att, seed_gen, preset="vision"):
    from initlab.mimetic import PRESETS, draw_targets
    return draw_targets(att, **PRESETS[preset], generator=seed_gen)


@pytest.mark.parametrize("model_type", ["zamba", "zamba2"])
def test_zamba_shared_block_identity_on_the_hidden_half(model_type):
    """Zamba's shared attention reads [hidden, embeddings] (transformers concatenates the current
    hidden state first) and writes d: the adapter says residual_in = (0, d); the block is tied
    across depths and written once."""
    from initlab.mimetic import mimetic_layers
    model = hf_build("causal-lm", model_type)
    rm = initlab.role_map(model)
    layers = mimetic_layers(rm)
    att = layers[0]
    d = att.o.d_out
    assert (att.v.d_in, att.residual_in) == (2 * d, (0, d))
    assert len(rm.attention) == 2 and len(layers) == 1  # one shared block, listed at two depths
    initlab.mimetic_(model, preset="vision", svd="exact", generator=torch.Generator().manual_seed(0))
    a, b = draw(att, torch.Generator().manual_seed(0))
    assert (att.vo_product() - b).abs().max() < 1e-5
    for h in range(att.n_heads):
        assert (att.qk_product(h) - torch.from_numpy(truncation(a[h].numpy(), att.head_dim))).abs().max() < 1e-5
    vo = att.vo_product()
    assert abs(float(vo[:d].diagonal().mean()) + 0.4) < 0.05 and abs(float(vo[d:].diagonal().mean())) < 0.05


@pytest.mark.parametrize("head,model_type,layer", [
    ("image", "hiera", "hiera.encoder.stages.1.layers.0.attn"),  # stage change: 32 -> 64
    ("masked-lm", "mobilebert", "mobilebert.encoder.layer.0.attention"),  # q/k bottleneck, v block input
    ("speech-seq2seq", "fun_asr_nano", "model.audio_tower.layers.0.self_attn"),  # 560 LFR features -> d
])
def test_rectangular_hf_layers_get_alpha_z(head, model_type, layer):
    """Layers whose residual is a learned projection (Hiera, MobileBERT) or absent (Fun-ASR's first
    audio layer): B = α₂Z, no identity term; every other layer keeps α₂Z − β₂I."""
    from initlab.mimetic import mimetic_layers
    model = hf_build(head, model_type)
    rm = initlab.role_map(model)
    initlab.mimetic_(model, preset="vision", svd="exact", generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    seen = False
    for att in mimetic_layers(rm.trainable()):
        a, b = draw(att, g)
        p, q = att.v.d_in, att.o.d_out
        m = att.n_kv_heads * att.head_dim  # GQA narrower than the width: the best rank-m product
        want = b if m >= min(p, q) else torch.from_numpy(truncation(b.numpy(), m))
        assert (att.vo_product() - want).abs().max() < 1e-5, att.module_name
        if att.module_name == layer:
            seen = True
            assert p != q and att.residual_in is None
            zb = b / 0.4  # no identity: Z alone, variance 1/p
            assert abs(float(zb.var()) * p - 1) < 0.2
        elif p == q:
            assert abs(float(att.vo_product().diagonal().mean()) + 0.4) < 0.1
    assert seen


def test_blt_cross_attention_and_frozen_patcher_are_left_alone():
    """BLT's cross_attn_layers.N (patches attend to bytes) are cross-attention; its entropy patcher
    is frozen: mimetic writes neither."""
    hf_coverage = sweep("blt")
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    cfg = CONFIG_MAPPING["blt"](encoder_hash_byte_group_vocab=64)  # the default 500002 rows: 190M
    hf_coverage.shrink(cfg)
    model = transformers.BltForCausalLM(cfg)
    rm = initlab.role_map(model)
    cross = [a.module_name for a in rm.attention if a.cross]
    assert cross and all("cross_attn_layers" in n for n in cross)
    untouched = {n: p.detach().clone() for n, p in model.named_parameters()
                 if "cross_attn_layers" in n or n.startswith("model.patcher.")}
    assert any(n.startswith("model.patcher.") for n in untouched)
    initlab.mimetic_(model, svd="exact", generator=torch.Generator().manual_seed(0))
    for n, p in model.named_parameters():
        if n in untouched:
            assert torch.equal(p.detach(), untouched[n]), n


def test_zamba_residual_fact_matches_the_forward():
    """The fact the adapter declares for Zamba, checked on the model's own forward: the shared
    block's attention input is [hidden state, original embeddings], the embeddings second."""
    model = hf_build("causal-lm", "zamba")
    att = initlab.role_map(model).attention[0]
    d = att.o.d_out
    block = model.get_submodule(att.module_name.rsplit(".", 1)[0])
    seen = []
    hook = block.input_layernorm.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    ids = torch.randint(0, 100, (1, 6))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        hook.remove()
    emb = model.get_input_embeddings()(ids)
    assert seen and seen[0].shape[-1] == 2 * d == att.v.d_in
    assert torch.equal(seen[0][..., d:], emb)            # the second half: the embeddings
    assert not torch.allclose(seen[0][..., :d], emb)     # the first: the hidden state after Mamba
    assert att.residual_in == (0, d)
