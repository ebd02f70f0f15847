"""Adapters: each layout gets mimetic init with the product identities checked per head and per
layer, read back from the raw storage in that layout's own convention (not through the role map),
and every other parameter checked bit-for-bit unchanged.

Targets are re-drawn independently in the documented order (per layer: the H QK noises, then the
VO noise; uniform, variance 1/d, float64, one CPU generator) and factorized with numpy.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import initlab
from initlab.errors import InitError, RoleMapError
from initlab.roles import roles, roles_from_mapping
from mimetic_reference import reference_targets as targets, truncation

warnings.filterwarnings("ignore", message=".*enable_nested_tensor.*")


def _transformers():
    return pytest.importorskip("transformers", reason="Hugging Face transformers is not installed")


# ----------------------------------------------------------------------------- references
def grouped_qk_reference(a, k, n_kv):
    """A_h P_g: P_g projects on the top-k right singular subspace of the group's stacked targets."""
    h_total, d, _ = a.shape
    r = h_total // n_kv
    out = []
    for h in range(h_total):
        g = h // r
        stacked = a[g * r:(g + 1) * r].reshape(r * d, d)
        vk = np.linalg.svd(stacked)[2][:k].T
        out.append(a[h] @ vk @ vk.T)
    return out


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_others_unchanged(model, before, attention_names):
    for n, p in model.named_parameters():
        if n in attention_names:
            continue
        assert torch.equal(p.detach(), before[n]), f"{n} changed"


def assert_identities(per_layer, ref, k, n_kv=None, tol=1e-5):
    """per_layer: list of (list of Wq_h Wk_hᵀ per head, layer VO map) in the x ↦ x·M convention."""
    for (qk, vo), (a, b) in zip(per_layer, ref):
        heads = len(qk)
        n_kv = n_kv or heads
        expect = ([truncation(a[h], k) for h in range(heads)] if n_kv == heads
                  else grouped_qk_reference(a, k, n_kv))
        for h in range(heads):
            np.testing.assert_allclose(qk[h], expect[h], atol=tol)
            assert np.linalg.matrix_rank(qk[h], tol=1e-4) == k
        np.testing.assert_allclose(vo, b if n_kv * k >= b.shape[0] else truncation(b, n_kv * k),
                                   atol=tol)


def np64(t):
    return t.detach().double().numpy()


# ----------------------------------------------------------------------------- torch.nn
def test_multihead_attention_packed_and_real_attention_weights():
    d, heads, k = 32, 4, 8
    mha = nn.MultiheadAttention(d, heads, batch_first=True)
    before = snapshot(mha)
    initlab.mimetic_(mha, generator=torch.Generator().manual_seed(1))
    w = np64(mha.in_proj_weight)
    wq, wk, wv = w[:d], w[d:2 * d], w[2 * d:]
    qk = [wq[h * k:(h + 1) * k].T @ wk[h * k:(h + 1) * k] for h in range(heads)]
    vo = wv.T @ np64(mha.out_proj.weight).T  # x ↦ x Wvᵀ Woᵀ
    ref = targets(1, d, heads, 1)
    assert_identities([(qk, vo)], ref, k)
    assert torch.count_nonzero(mha.in_proj_bias) == 0 and torch.count_nonzero(mha.out_proj.bias) == 0
    assert set(before) == {n for n, _ in mha.named_parameters()}
    # the module's own attention probabilities are softmax(x A_h,k xᵀ / sqrt(k))
    x = torch.randn(1, 6, d, dtype=torch.float64)
    _, probs = mha.double()(x, x, x, need_weights=True, average_attn_weights=False)
    for h in range(heads):
        logits = x[0].numpy() @ truncation(ref[0][0][h], k) @ x[0].numpy().T / math.sqrt(k)
        expect = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(probs[0, h].detach().numpy(), expect / expect.sum(1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("layer_cls", [nn.TransformerEncoderLayer, nn.TransformerDecoderLayer])
def test_transformer_layers(layer_cls):
    d, heads, k = 32, 2, 16
    model = nn.Sequential(layer_cls(d, heads, 64))
    rm = roles(model)
    n_att = 2 if layer_cls is nn.TransformerDecoderLayer else 1
    assert len(rm.attention) == n_att and rm.adapter == "torch.nn"
    before = snapshot(model)
    # a decoder layer's multihead_attn reads the encoder memory: cross-attention, left alone
    assert [a.cross for a in rm.attention] == [False, True][:n_att]
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(2), role_map=rm)
    per_layer = []
    for name in ["self_attn"]:
        mha = model[0].get_submodule(name)
        w = np64(mha.in_proj_weight)
        qk = [w[h * k:(h + 1) * k].T @ w[d + h * k:d + (h + 1) * k] for h in range(heads)]
        per_layer.append((qk, w[2 * d:].T @ np64(mha.out_proj.weight).T))
    assert_identities(per_layer, targets(2, d, heads, 1), k)
    attn = {n for n, _ in model.named_parameters() if "self_attn" in n}
    assert_others_unchanged(model, before, attn)
    assert rm["0.linear1.weight"].role == "mlp_in" and rm["0.linear2.weight"].role == "mlp_out"


def test_multihead_attention_separate_weights_map_and_reject_cross_widths():
    mha = nn.MultiheadAttention(16, 2, kdim=8, vdim=12)
    rm = roles(mha)
    att = rm.attention[0]
    assert (att.k.d_in, att.v.d_in) == (8, 12)
    # the packed bias is still split into q, k and v slots
    assert rm["in_proj_bias"].role == "q+k+v"
    assert att.q_head(1).shape == (16, 8) and att.k_head(1).shape == (8, 8)
    with pytest.raises(InitError, match="kdim = vdim = embed_dim"):
        initlab.mimetic_(mha)


def test_multihead_attention_separate_weights_same_width_via_mapping():
    """Separate q/k/v Linears of equal width (the common hand-written layout) via a mapping."""

    class Attn(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    class Net(nn.Module):
        def __init__(self, d=24, depth=2):
            super().__init__()
            self.emb = nn.Embedding(10, d)
            self.blocks = nn.ModuleList(nn.ModuleDict(dict(attn=Attn(d), ln=nn.LayerNorm(d),
                                                           fc1=nn.Linear(d, 2 * d))) for _ in range(depth))

    net = Net()
    mapping = {"attention": {"blocks.*.attn": dict(q="q_proj", k="k_proj", v="v_proj", o="out_proj",
                                                   heads=3)},
               "token_embed": ["emb"], "mlp_in": ["**.fc1"]}
    rm = roles(net, mapping=mapping)
    assert rm.adapter == "mapping" and rm.depth == 2
    before = snapshot(net)
    initlab.mimetic_(net, generator=torch.Generator().manual_seed(3), role_map=rm)
    per_layer = []
    for blk in net.blocks:
        a = blk["attn"]
        wq, wk = np64(a.q_proj.weight), np64(a.k_proj.weight)
        qk = [wq[h * 8:(h + 1) * 8].T @ wk[h * 8:(h + 1) * 8] for h in range(3)]
        per_layer.append((qk, np64(a.v_proj.weight).T @ np64(a.out_proj.weight).T))
    assert_identities(per_layer, targets(3, 24, 3, 2), 8)
    assert_others_unchanged(net, before, {n for n in before if ".attn." in n})


# ----------------------------------------------------------------------------- transformers
def _quiet(fn):
    _transformers()
    from transformers.utils import logging
    logging.set_verbosity_error()
    return fn()


def test_gpt2_conv1d_layout():
    transformers = _transformers()
    d, heads, depth, k = 32, 4, 2, 8
    model = _quiet(lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=d, n_layer=depth, n_head=heads, vocab_size=40, n_positions=16)))
    rm = roles(model)
    assert rm.adapter == "transformers.gpt2" and rm["transformer.wte.weight"].role == "token_embed"
    before = snapshot(model)
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(4), role_map=rm,
                     preset="vision")  # the reference targets use the vision values
    per_layer = []
    for blk in model.transformer.h:
        w = np64(blk.attn.c_attn.weight)  # (in, out): y = x W, columns [q | k | v]
        qk = [w[:, h * k:(h + 1) * k] @ w[:, d + h * k:d + (h + 1) * k].T for h in range(heads)]
        per_layer.append((qk, w[:, 2 * d:] @ np64(blk.attn.c_proj.weight)))
    assert_identities(per_layer, targets(4, d, heads, depth), k)
    assert_others_unchanged(model, before, {n for n in before if ".attn." in n})
    assert model.lm_head.weight is model.transformer.wte.weight  # tying survives


def test_bert_separate_linears():
    transformers = _transformers()
    d, heads, k = 32, 2, 16
    model = _quiet(lambda: transformers.BertModel(transformers.BertConfig(
        hidden_size=d, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=64,
        vocab_size=40, max_position_embeddings=16)))
    before = snapshot(model)
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(5))
    per_layer = []
    for layer in model.encoder.layer:
        s = layer.attention.self
        wq, wk = np64(s.query.weight), np64(s.key.weight)
        qk = [wq[h * k:(h + 1) * k].T @ wk[h * k:(h + 1) * k] for h in range(heads)]
        per_layer.append((qk, np64(s.value.weight).T @ np64(layer.attention.output.dense.weight).T))
    assert_identities(per_layer, targets(5, d, heads, 2), k)
    attn = {n for n in before if any(s in n for s in (".self.", ".attention.output.dense."))}
    assert_others_unchanged(model, before, attn)


def test_vit_and_sincos_2d_positions():
    transformers = _transformers()
    d, heads, k = 32, 4, 8
    model = _quiet(lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=16, patch_size=4, hidden_size=d, num_hidden_layers=1, num_attention_heads=heads,
        intermediate_size=64, num_labels=3)))
    rm = roles(model)
    assert rm.adapter == "transformers.vit" and rm.by_role("patch_embed")
    before = snapshot(model)
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(6), pos_embed="sincos", role_map=rm)
    att = rm.attention[0]
    proj = {r: model.get_submodule(p.name.rsplit(".", 1)[0]) for r, p in att.projections().items()}
    wq, wk = np64(proj["q"].weight), np64(proj["k"].weight)
    qk = [wq[h * k:(h + 1) * k].T @ wk[h * k:(h + 1) * k] for h in range(heads)]
    assert_identities([(qk, np64(proj["v"].weight).T @ np64(proj["o"].weight).T)],
                      targets(6, d, heads, 1), k)
    pos = model.vit.embeddings.position_embeddings[0]
    from initlab.models.layers import sincos_2d
    assert torch.equal(pos[0], torch.zeros(d)) and torch.allclose(pos[1:], sincos_2d(4, 4, d))
    changed = {p.name for p in att.projections().values()} | {p.bias_name for p in att.projections().values()}
    changed.add("vit.embeddings.position_embeddings")
    assert_others_unchanged(model, before, changed)


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_llama_grouped_query_attention(n_kv):
    transformers = _transformers()
    d, heads, k = 32, 4, 8
    model = _quiet(lambda: transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=d, num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=n_kv,
        intermediate_size=64, vocab_size=40)))
    rm = roles(model)
    assert rm.attention[0].n_kv_heads == n_kv
    before = snapshot(model)
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(7), role_map=rm, preset="vision")
    per_layer = []
    r = heads // n_kv
    for layer in model.model.layers:
        a = layer.self_attn
        wq, wk, wv, wo = (np64(getattr(a, f"{p}_proj").weight) for p in "qkvo")
        qk = [wq[h * k:(h + 1) * k].T @ wk[(h // r) * k:(h // r + 1) * k] for h in range(heads)]
        vo = sum(wv[(h // r) * k:(h // r + 1) * k].T @ wo[:, h * k:(h + 1) * k].T for h in range(heads))
        per_layer.append((qk, vo))
        if r > 1:  # min-norm split: heads of one group share their output block equally
            np.testing.assert_allclose(wo[:, :k], wo[:, k:2 * k], atol=1e-7)
    assert_identities(per_layer, targets(7, d, heads, 2), k, n_kv=n_kv)
    assert_others_unchanged(model, before, {n for n in before if ".self_attn." in n})


def test_hf_detection_never_imports_optional_packages():
    import subprocess
    import sys
    code = ("import sys, torch, initlab; initlab.role_map(torch.nn.MultiheadAttention(8, 2)); "
            "print('transformers' in sys.modules, 'timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- timm
def _timm_like_vit():
    """A stand-in with timm's VisionTransformer names and layout (class/module names included)."""

    class Attention(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.num_heads = h
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    class Mlp(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    class LayerScale(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.gamma = nn.Parameter(torch.full((d,), 1e-5))

    class Block(nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.norm1, self.attn, self.ls1 = nn.LayerNorm(d), Attention(d, h), LayerScale(d)
            self.norm2, self.mlp, self.ls2 = nn.LayerNorm(d), Mlp(d), LayerScale(d)

    class PatchEmbed(nn.Module):
        def __init__(self, d):
            super().__init__()
            self.proj = nn.Conv2d(3, d, 4, 4)

    class VisionTransformer(nn.Module):
        def __init__(self, d=32, h=4, depth=2):
            super().__init__()
            self.patch_embed = PatchEmbed(d)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.pos_embed = nn.Parameter(torch.randn(1, 17, d) * .02)
            self.blocks = nn.Sequential(*[Block(d, h) for _ in range(depth)])
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

    VisionTransformer.__module__ = "timm.models.vision_transformer"
    return VisionTransformer()


def _check_timm(model, d, heads, depth):
    k = d // heads
    rm = roles(model)
    assert rm.adapter == "timm.VisionTransformer"
    before = snapshot(model)
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(8), role_map=rm)
    per_layer = []
    for blk in model.blocks:
        w = np64(blk.attn.qkv.weight)
        qk = [w[h * k:(h + 1) * k].T @ w[d + h * k:d + (h + 1) * k] for h in range(heads)]
        per_layer.append((qk, w[2 * d:].T @ np64(blk.attn.proj.weight).T))
    assert_identities(per_layer, targets(8, d, heads, depth), k)
    assert_others_unchanged(model, before, {n for n in before if ".attn." in n})
    return rm


def test_timm_layout_stand_in():
    rm = _check_timm(_timm_like_vit(), 32, 4, 2)
    assert rm["blocks.0.ls1.gamma"].role == "gain" and rm["cls_token"].role == "cls_token"


def test_timm_vision_transformer():
    try:
        import timm  # noqa: F401
    except Exception as exc:  # timm needs a working torchvision
        pytest.skip(f"timm does not import here ({type(exc).__name__}: {exc})")
    model = timm.models.vision_transformer.VisionTransformer(
        img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=3)
    _check_timm(model, 32, 4, 2)


# ----------------------------------------------------------------------------- mapping
def test_mapping_fused_conv1d_gqa_and_errors():
    class Conv1D(nn.Module):  # the Hugging Face layout: weight (in, out), y = x W + b
        def __init__(self, nin, nout):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(nin, nout) * 0.02)
            self.bias = nn.Parameter(torch.zeros(nout))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Module()
            self.attn.c_attn = Conv1D(32, 32 + 2 * 16)  # 4 q heads, 2 kv heads of 8
            self.attn.c_proj = Conv1D(32, 32)
            self.extra = nn.Linear(3, 3)

    net = Net()
    spec = {"attention": {"attn": dict(qkv="c_attn", o="c_proj", heads=4, kv_heads=2)},
            "other": ["extra"]}
    rm = roles_from_mapping(net, spec)
    att = rm.attention[0]
    assert (att.q.layout, att.n_kv_heads, att.head_dim) == ("in_out", 2, 8)
    initlab.mimetic_(net, generator=torch.Generator().manual_seed(9), role_map=rm)
    w = np64(net.attn.c_attn.weight)
    qk = [w[:, h * 8:(h + 1) * 8] @ w[:, 32 + (h // 2) * 8:32 + (h // 2 + 1) * 8].T for h in range(4)]
    wv = w[:, 48:]
    vo = sum(wv[:, (h // 2) * 8:(h // 2 + 1) * 8] @ np64(net.attn.c_proj.weight)[h * 8:(h + 1) * 8]
             for h in range(4))
    assert_identities([(qk, vo)], targets(9, 32, 4, 1), 8, n_kv=2)

    with pytest.raises(RoleMapError, match="without a role"):
        roles_from_mapping(net, {"attention": spec["attention"]})  # strict: 'extra' unmapped
    assert roles_from_mapping(net, {"attention": spec["attention"], "strict": False})["extra.weight"].role == "other"
    with pytest.raises(RoleMapError, match="matches no module"):
        roles_from_mapping(net, {**spec, "mlp_in": ["**.fc1"]})
    with pytest.raises(RoleMapError, match="not divisible|equal size"):
        roles_from_mapping(net, {**spec, "attention": {"attn": dict(qkv="c_attn", o="c_proj", heads=5)}})
    with pytest.raises(RoleMapError, match="unknown keys"):
        roles_from_mapping(net, {**spec, "mlp": []})
    with pytest.raises(RoleMapError, match="heads"):
        roles_from_mapping(net, {"attention": {"attn": dict(qkv="c_attn", o="c_proj")}})


def test_unknown_model_error_mentions_mapping():
    with pytest.raises(RoleMapError, match="mapping"):
        roles(nn.Linear(3, 3))


def test_pattern_segments():
    from initlab.roles.mapping import pattern_regex
    match = lambda p, n: bool(pattern_regex(p).match(n))
    assert match("blocks.*.attn", "blocks.3.attn") and not match("blocks.*.attn", "blocks.3.attn.qkv")
    assert match("**.fc1", "fc1") and match("**.fc1", "blocks.3.mlp.fc1") and not match("**.fc1", "xfc1")
    assert match("layers.?", "layers.7") and not match("layers.?", "layers.12")
    assert match("cls.**", "cls.predictions.decoder") and not match("*.fc1", "a.b.fc1")
