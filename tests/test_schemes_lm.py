"""The language-model inits (schemes/lm_zoo.py) against their sources' formulas.

Every formula below is written out again from the source, not imported from the library:

* modded-nanogpt ``train_gpt.py`` @91955ec6: l. 1287-1294 (attention uniform, std 0.5·d^-½, bound
  √3·std), l. 1303-1308 (c_fc the same, c_proj zero), l. 1226-1231 (lm_head N(0, 0.005²), embed
  copied from it); record #64's script as run
  (``records/track_1_short/2026-01-30_MimeticValueOutput/runs/0f262f64-….txt``) l. 1084-1105
  (Q/K uniform std d^-½; per-head V = √β·I, O = −√β·I, + N(0, 0.01²)), l. 1198-1199 (β = 0.05).
* OLMo-core ``src/olmo_core/nn/transformer/init.py`` @8be24cfb: l. 30-43 (trunc-N cut at ±3σ,
  biases 0), l. 88-105 (embeddings), l. 115-122 (lm_head), l. 153-180 (w1 σ; llama: w3 and w2
  σ/√(2L); llama_depth σ/√(2(l+1)); fan_in 1/√in_features), and ``nn/attention/__init__.py``
  ``Attention.init_weights`` (w_q,k,v σ, w_out scaled).
* conditioned init (OpenReview cKNOCYPo2W): V a rectangular identity, Q/K semi-orthogonal.
* mimetic MLP (arXiv 2602.07156): a nonzero mean in the first MLP layer.

Measured on initlab's Llama (grouped-query attention, SwiGLU), GPT (fused qkv, biases, learned
position table, ungated MLP) and Hugging Face's LlamaForCausalLM. Notation: d = width, L = depth,
l = block index, fi = the role slot's fan-in.
"""
import math

import pytest
import torch

import initlab
from initlab.errors import InitError
from initlab.models import GPT, Llama, create_model
from initlab.schemes import InitPlan, init_
from initlab.schemes.lm_zoo import semi_orthogonal

pytestmark = pytest.mark.usefixtures("one_thread")

SIGMA = 0.02


def trunc_factor(t):
    """std of N(0,1) cut at ±t."""
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1 - 2 * t * phi / math.erf(t / math.sqrt(2)))


def hf_llama():
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(vocab_size=300, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


MODELS = {
    # gated MLP, GQA (4 query heads, 2 value heads), untied head, RMSNorm
    "llama": lambda: Llama(vocab_size=300, block_size=32, width=128, depth=3, heads=4, kv_heads=2),
    # ungated MLP, fused qkv with biases, learned position table, LayerNorm, untied head
    "gpt": lambda: GPT(width=96, depth=3, heads=3, vocab_size=300, block_size=32, tie_head=False),
    "hf-llama": hf_llama,
}

ATTN = ("q", "k", "v", "o")
MATS = ATTN + ("mlp_in", "mlp_gate", "mlp_out", "router")


def _olmo_llama(depth):
    def f(r, fi, d, L, l, gated):
        scaled = SIGMA / math.sqrt(2 * ((l or 0) + 1)) if depth else SIGMA / math.sqrt(2 * L)
        if r in ("q", "k", "v", "mlp_gate") or (r == "mlp_in" and not gated):
            return ("trunc", SIGMA, 3.0)
        if r in ("o", "mlp_out", "router", "mlp_in"):  # mlp_in here: a gated MLP's w3
            return ("trunc", scaled, 3.0)
        return {"token_embed": ("normal", 1.0, None), "head": ("trunc", d ** -0.5, 3.0)}.get(r)
    return f


# formula(role, fan_in, d, L, l, gated) -> (dist, std, truncation in σ) | "vo" (checked apart) | None
FORMULAS = {
    "modded_nanogpt": lambda r, fi, d, L, l, gated: (
        ("uniform", 0.5 * d ** -0.5, None) if r in ATTN + ("mlp_in", "mlp_gate") else
        ("zero", 0.0, None) if r == "mlp_out" else
        ("normal", 0.005, None) if r in ("head", "token_embed") else None),
    "modded_nanogpt_vo": lambda r, fi, d, L, l, gated: (
        ("uniform", d ** -0.5, None) if r in ("q", "k") else "vo" if r in ("v", "o") else
        ("uniform", 0.5 * d ** -0.5, None) if r in ("mlp_in", "mlp_gate") else
        ("zero", 0.0, None) if r == "mlp_out" else
        ("normal", 0.005, None) if r in ("head", "token_embed") else None),
    "olmo_normal": lambda r, fi, d, L, l, gated: (
        ("trunc", SIGMA, 3.0) if r in MATS + ("head", "token_embed") else None),
    "olmo_llama": _olmo_llama(depth=False),
    "olmo_llama_depth": _olmo_llama(depth=True),
    "olmo_fan_in": lambda r, fi, d, L, l, gated: (
        ("trunc", fi ** -0.5, 3.0) if r in MATS else ("trunc", d ** -0.5, 3.0) if r == "head" else
        ("normal", 1.0, None) if r == "token_embed" else None),
}


def check_region(name, role, x, before, spec):
    if spec is None:
        assert torch.equal(x, before), f"{name} ({role}) was touched but the scheme does not own it"
        return
    dist, std, t = spec
    if dist == "zero":
        assert torch.count_nonzero(x) == 0, f"{name} ({role}) should be zero"
        return
    want = std * (trunc_factor(t) if dist == "trunc" else 1.0)
    got = x.double().std().item()
    tol = max(0.02, 5 / math.sqrt(2 * x.numel()))  # 5 sampling errors of a std estimate, at least 2%
    assert abs(got / want - 1) < tol, f"{name} ({role}): std {got:.4g}, formula {want:.4g}"
    assert abs(x.double().mean().item()) < 5 * want / math.sqrt(x.numel()) + 1e-7, f"{name}: mean != 0"
    if dist == "uniform":
        assert x.abs().max().item() <= math.sqrt(3) * std * (1 + 1e-5)
        assert x.abs().max().item() > 0.95 * math.sqrt(3) * std  # the bound is reached: not a normal
    if dist == "trunc":
        assert x.abs().max().item() <= t * std * (1 + 1e-5)
    if dist == "normal" and x.numel() > 10_000:
        assert x.abs().max().item() > 3.3 * std  # untruncated


def poison(model):
    """Make every tensor's old value recognizable: biases 0.5, norm gains 0.7."""
    with torch.no_grad():
        for info in initlab.role_map(model):
            if info.kind == "bias":
                info.param.fill_(0.5)
            elif "norm" in info.roles:
                info.param.fill_(0.7)


@pytest.mark.parametrize("scheme", sorted(FORMULAS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_per_role_std_matches_the_source(scheme, model_name, gen):
    model = MODELS[model_name]()
    poison(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = dict(model.named_parameters())
    init_(model, scheme, generator=gen)
    rmap = initlab.role_map(model)
    d, L = rmap.width, rmap.depth
    gated = bool(rmap.slots("mlp_gate"))
    if model_name != "hf-llama":  # the HF adapter maps gate_proj to mlp_in (no mlp_gate role yet)
        assert gated == (model_name == "llama")
    heads = rmap.by_role("head")
    for info in rmap:
        assert info.param is params[info.name]  # written in place, never replaced
        for slot in info.slots:
            role = slot.role.value
            x = info.region(slot)
            old = before[info.name][slot.index] if slot.index else before[info.name]
            if info.kind == "bias":
                spec = ("zero", 0.0, None) if role in MATS + ("head",) else None
            else:
                spec = FORMULAS[scheme](role, slot.fan_in, d, L, info.layer, gated)
            if spec == "vo":
                continue  # test_modded_vo_identity_structure
            check_region(info.name, role, x, old, spec)
    if scheme.startswith("modded") and heads:  # the embedding is the head at init (l. 1229-1231)
        assert torch.equal(rmap.by_role("token_embed")[0].param, heads[0].param)


def test_olmo_normal_is_trunc_normal_cut_at_3_sigma_bit_for_bit():
    """On a model without position tables OLMo-core's 'normal' is our trunc_normal(truncate=3)."""
    a = MODELS["llama"]()
    b = MODELS["llama"]()
    b.load_state_dict(a.state_dict())
    init_(a, "olmo_normal", generator=torch.Generator().manual_seed(3))
    init_(b, "trunc_normal(std=0.02; truncate=3)", generator=torch.Generator().manual_seed(3))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n


def test_olmo_llama_depth_scales_per_block_and_llama_globally(gen):
    m = Llama(vocab_size=64, block_size=16, width=128, depth=6, heads=4)
    init_(m, "olmo_llama_depth", generator=gen)
    f = trunc_factor(3.0)
    for l, b in enumerate(m.blocks):
        want = SIGMA / math.sqrt(2 * (l + 1)) * f
        for w in (b.attn.o_proj.weight, b.mlp.up_proj.weight, b.mlp.down_proj.weight):
            assert abs(w.std().item() / want - 1) < 0.05
        assert abs(b.mlp.gate_proj.weight.std().item() / (SIGMA * f) - 1) < 0.05
    init_(m, "olmo_llama", generator=gen)
    for b in m.blocks:
        assert abs(b.attn.o_proj.weight.std().item() / (SIGMA / math.sqrt(12) * f) - 1) < 0.05


@pytest.mark.parametrize("model_name,kv", [("llama", 4), ("llama", 2), ("llama", 1), ("gpt", None)])
def test_modded_vo_identity_structure(model_name, kv, gen):
    """Per head O^h V^g(h) = −β·I_hd exactly without noise; with the record's noise the residual of
    V and O around ±√β·E is N(0, 0.01²); Q and K keep their values from the uniform rule."""
    def build():
        if model_name == "gpt":
            return GPT(width=128, depth=2, heads=4, vocab_size=64, block_size=16)
        return Llama(vocab_size=64, block_size=16, width=128, depth=2, heads=4, kv_heads=kv)

    beta = 0.05
    m = build()
    init_(m, "modded_nanogpt_vo(noise=0)", generator=gen)
    rmap = initlab.role_map(m)
    for a in rmap.attention:
        hd, gs = a.head_dim, a.group_size
        for h in range(a.n_heads):
            g = a.kv_group(h)
            prod = a.o_head(h).double() @ a.v_head(g).double()  # (hd, hd)
            assert torch.allclose(prod, -beta * torch.eye(hd, dtype=torch.float64), atol=1e-7)
            e = torch.zeros(a.d_model, hd, dtype=torch.float64)
            e[g * hd:(g + 1) * hd] = torch.eye(hd, dtype=torch.float64)
            assert torch.allclose(a.v_head(g).double(), math.sqrt(beta) * e, atol=1e-7)
        # the layer's value-to-output map: −β·I (MHA), −β·group_size·P_{n_kv·hd} (GQA)
        span = a.n_kv_heads * hd
        proj = torch.zeros(a.d_model, a.d_model, dtype=torch.float64)
        proj[:span, :span] = torch.eye(span, dtype=torch.float64)
        assert torch.allclose(a.vo_product(), -beta * gs * proj, atol=1e-6)

    m = build()
    init_(m, "modded_nanogpt_vo", generator=gen)  # β = 0.05, noise = 0.01 (record l. 1198-1199)
    rmap = initlab.role_map(m)
    for a in rmap.attention:
        sb = math.sqrt(beta)
        rv = a.v.matrix().double() - sb * torch.eye(a.v.d_in, a.v.d_out, dtype=torch.float64)
        assert abs(rv.std().item() / 0.01 - 1) < 0.05 and abs(rv.mean().item()) < 1e-3
        ro = a.o.matrix().double().clone()
        for h in range(a.n_heads):
            g = a.kv_group(h)
            ro[h * a.head_dim:(h + 1) * a.head_dim, g * a.head_dim:(g + 1) * a.head_dim] += \
                sb * torch.eye(a.head_dim, dtype=torch.float64)
        assert abs(ro.std().item() / 0.01 - 1) < 0.05 and abs(ro.mean().item()) < 1e-3
        for h in range(a.n_heads):  # the identity dominates each head's product: −β·I + O(noise)
            prod = a.o_head(h).double() @ a.v_head(a.kv_group(h)).double()
            assert (torch.diagonal(prod) + beta).abs().max() < 0.02
        if a.q.bias is not None:
            assert torch.count_nonzero(a.v.bias_view()) == 0 and torch.count_nonzero(a.o.bias_view()) == 0


@pytest.mark.parametrize("model_name", ["llama", "gpt", "hf-llama"])
def test_conditioned_v_identity_and_semi_orthogonal_qk(model_name, gen):
    m = MODELS[model_name]()
    poison(m)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    init_(m, "conditioned", generator=gen)
    rmap = initlab.role_map(m)
    for a in rmap.attention:
        for proj in (a.q, a.k):  # d x n·hd with n·hd <= d: orthonormal columns
            w = proj.matrix().double()
            assert w.shape[0] >= w.shape[1]
            assert torch.allclose(w.t() @ w, torch.eye(w.shape[1], dtype=torch.float64), atol=1e-5)
            s = torch.linalg.svdvals(w)
            assert s.max() / s.min() < 1 + 1e-5  # condition number 1
        for h in range(a.n_heads):  # so is every head's slice
            qh = a.q_head(h).double()
            assert torch.allclose(qh.t() @ qh, torch.eye(a.head_dim, dtype=torch.float64), atol=1e-5)
        assert torch.equal(a.v.matrix(), torch.eye(a.v.d_in, a.v.d_out))  # rectangular identity
        kq = a.k.matrix().shape[1]
        assert not torch.allclose(a.q.matrix()[:, :kq], a.k.matrix())  # independent draws
        for p in (a.q, a.k, a.v):
            if p.bias is not None:
                assert torch.count_nonzero(p.bias_view()) == 0
    touched = {info.name for info in rmap for s in info.slots if s.role.value in ("q", "k", "v")}
    for n, p in m.named_parameters():  # o, MLP, norms, embeddings, head: bit-identical
        if n not in touched:
            assert torch.equal(p, before[n]), n
    init_(m, "conditioned(qk_scale=2; v_scale=0.5)", generator=gen)
    a = initlab.role_map(m).attention[0]
    w = a.q.matrix().double()
    assert torch.allclose(w.t() @ w, 4 * torch.eye(w.shape[1], dtype=torch.float64), atol=1e-5)
    assert torch.equal(a.v.matrix(), 0.5 * torch.eye(a.v.d_in, a.v.d_out))


def test_semi_orthogonal_wide_has_orthonormal_rows(gen):
    w = semi_orthogonal(5, 12, gen)
    assert torch.allclose(w @ w.t(), torch.eye(5, dtype=torch.float64), atol=1e-12)
    w = semi_orthogonal(12, 5, gen)
    assert torch.allclose(w.t() @ w, torch.eye(5, dtype=torch.float64), atol=1e-12)


def test_mimetic_mlp_shifts_the_first_layer_by_the_mean(gen):
    m = MODELS["llama"]()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    init_(m, "mimetic_mlp", generator=gen)
    for n, p in m.named_parameters():  # the default mean, 0.01 (initlab's, not the paper's)
        assert torch.equal(p, before[n] + 0.01 if "gate_proj" in n else before[n]), n
    m.load_state_dict(before)
    init_(m, "mimetic_mlp(0.03)", generator=gen)
    for n, p in m.named_parameters():
        if "gate_proj" in n:  # target='activation': the gate feeds SiLU
            assert torch.equal(p, before[n] + 0.03), n
        else:
            assert torch.equal(p, before[n]), n
    init_(m, "mimetic_mlp(mean=-0.01; target=up)", generator=gen)
    b = m.blocks[0].mlp
    assert torch.allclose(b.up_proj.weight, before["blocks.0.mlp.up_proj.weight"] - 0.01)
    init_(m, "olmo_llama+mimetic_mlp(mean=0.02; target=both)", generator=gen)
    for w in (b.gate_proj.weight, b.up_proj.weight):
        assert abs(w.mean().item() - 0.02) < 1e-3  # trunc-N draws of mean 0, shifted
    g = MODELS["gpt"]()
    fc1 = g.blocks[0].mlp.fc1.weight.detach().clone()
    init_(g, "mimetic_mlp(0.01)", generator=gen)  # ungated: fc1 is the first layer
    assert torch.equal(g.blocks[0].mlp.fc1.weight, fc1 + 0.01)
    snapshot = {n: p.detach().clone() for n, p in g.named_parameters()}
    with pytest.raises(InitError, match="no gate"):
        init_(g, "mimetic_mlp(mean=0.01; target=up)", generator=gen)
    assert all(torch.equal(p, snapshot[n]) for n, p in g.named_parameters())


@pytest.mark.parametrize("spec,match", [
    ("mimetic_mlp(mean=none)", "mean must be a number"),
    ("mimetic_mlp(mean=inf)", "mean must be finite"),
    ("mimetic_mlp(mean=0.1; target=down)", "target must be"),
    ("modded_nanogpt_vo(beta=-1)", "beta"),
    ("modded_nanogpt_vo(noise=nan)", "noise"),
    ("conditioned(qk_scale=0)", "qk_scale"),
    ("olmo_normal(embedding_std=-1)", "embedding_std"),
    ("olmo_llama(std=-0.02)", "std"),
    ("modded_nanogpt(attn_gain=-1)", "std"),
    ("modded_nanogpt_vo+gpt2", "overwrite v, o"),
    ("conditioned+olmo_llama", "overwrite q, k, v"),
    ("mimetic_mlp(0.1)+olmo_llama", "dead"),
])
def test_bad_options_and_chains_are_refused_before_any_write(spec, match):
    with pytest.raises(InitError, match=match):
        InitPlan.build(spec)


def test_schemes_are_registered_with_sources_and_aliases():
    infos = {s.name: s for s in initlab.list_schemes()}
    for name in FORMULAS | {"conditioned": 0, "mimetic_mlp": 0}:
        assert infos[name].citation and infos[name].formula
    assert "train_gpt.py" in infos["modded_nanogpt"].citation
    assert "MimeticValueOutput" in infos["modded_nanogpt_vo"].citation
    assert "init.py" in infos["olmo_llama_depth"].citation
    assert "cKNOCYPo2W" in infos["conditioned"].citation and "2602.07156" in infos["mimetic_mlp"].citation
    assert set(infos["conditioned"].roles) == {"q", "k", "v"}
    assert initlab.schemes.get_scheme("olmo-core-llama").name == "olmo_llama"


@pytest.mark.parametrize("spec", ["modded_nanogpt", "modded_nanogpt_vo", "olmo_normal", "olmo_llama",
                                  "olmo_llama_depth", "olmo_fan_in", "conditioned",
                                  "olmo_llama+mimetic_mlp(0.01)"])
def test_three_adamw_steps_on_llama_micro_stay_finite(spec):
    torch.manual_seed(0)
    m = create_model("llama-micro", kv_heads=1)
    init_(m, spec, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    data = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(3):
        _, loss = m(data[:, :-1], data[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0]  # it trains
