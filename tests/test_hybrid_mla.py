"""Hybrid models (softmax attention beside state-space / linear-attention mixers) and DeepSeek
multi-head latent attention (MLA): role map and mimetic init (docs/mimetic.md, docs/adapters.md)."""
import pytest
import torch

transformers = pytest.importorskip("transformers", reason="Hugging Face transformers is not installed")

import initlab  # noqa: E402
from initlab.errors import RoleMapError  # noqa: E402
from initlab.mimetic import PRESETS, draw_targets  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def quiet_transformers():
    transformers.logging.set_verbosity_error()


def deepseek(q_lora=24, kv_lora=20, nope=8, rope=4, v=6, d=32, heads=4, seed=0):
    cfg = transformers.DeepseekV3Config(
        vocab_size=64, hidden_size=d, intermediate_size=48, moe_intermediate_size=16,
        num_hidden_layers=2, num_attention_heads=heads, num_key_value_heads=heads,
        q_lora_rank=q_lora, kv_lora_rank=kv_lora, qk_nope_head_dim=nope, qk_rope_head_dim=rope,
        v_head_dim=v, n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1, n_group=1,
        topk_group=1)
    torch.manual_seed(seed)
    return transformers.DeepseekV3ForCausalLM(cfg)


def best_rank(m: torch.Tensor, k: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(m)
    return (u[:, :k] * s[:k]) @ vh[:k]


def projector(m: torch.Tensor) -> torch.Tensor:
    """Orthogonal projector onto the column space of m (d x r)."""
    return m @ torch.linalg.pinv(m)


def mimetic_and_targets(model, seed=7):
    rm = initlab.role_map(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    initlab.mimetic_(model, preset="language", svd="exact", generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    targets = [draw_targets(att, **PRESETS["language"], generator=g) for att in rm.attention]
    return rm, before, targets


@pytest.mark.parametrize("q_lora", [24, None], ids=["q_lora", "q_proj"])
def test_mla_composite_products_are_the_best_the_latents_allow(q_lora):
    """Latents narrower than d (rank 20 < 32) and heads narrower than the latents: each head's
    no-RoPE product W_q^h W_k^hᵀ is the best rank-nope approximation of Π_q A_h Π_kv, and the
    layer's W_v W_o the best rank-H·v approximation of Π_kv B (Π: projectors onto the ranges of the
    down-projections times their norm gains), measured on the composite products."""
    model = deepseek(q_lora=q_lora)
    rm, before, targets = mimetic_and_targets(model)
    assert [type(a).__name__ for a in rm.attention] == ["LatentAttentionLayer"] * 2
    for att, (a, b) in zip(rm.attention, targets):
        mod = model.get_submodule(att.module_name)
        dkv = mod.kv_a_proj_with_mqa.weight.detach().double()[:20].t() * mod.kv_a_layernorm.weight.double()
        dq = (mod.q_a_proj.weight.detach().double().t() * mod.q_a_layernorm.weight.double()
              if q_lora else torch.eye(32, dtype=torch.float64))
        pq, pkv = projector(dq), projector(dkv)
        for h in range(att.n_heads):
            want = best_rank(pq @ a[h] @ pkv, att.head_dim)
            torch.testing.assert_close(att.qk_product(h), want, atol=2e-6, rtol=0)
            # and it is a real fit: closer to the target than a random product of the same shape
            assert (att.qk_product(h) - a[h]).norm() < a[h].norm()
        torch.testing.assert_close(att.vo_product(), best_rank(pkv @ b, att.n_heads * att.v_head_dim),
                                   atol=2e-6, rtol=0)
    # the down-projections, the RoPE rows and everything outside attention are as drawn
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    up = {"q_b_proj" if q_lora else "q_proj", "kv_b_proj", "o_proj"}
    assert changed and all(n.split(".")[-2] in up for n in changed), changed
    for att in rm.attention:
        mod = model.get_submodule(att.module_name)
        q_w = (mod.q_b_proj if q_lora else mod.q_proj).weight.view(4, 12, -1)
        q_w0 = before[f"{att.module_name}.{'q_b_proj' if q_lora else 'q_proj'}.weight"].view(4, 12, -1)
        torch.testing.assert_close(q_w[:, 8:], q_w0[:, 8:], atol=0, rtol=0)  # RoPE part untouched


def test_mla_exact_when_the_latents_and_heads_are_wide():
    """Latents and heads at least d wide: the construction is the paper's, products = targets."""
    model = deepseek(q_lora=40, kv_lora=36, nope=32, v=8, d=32)
    rm, _, targets = mimetic_and_targets(model)
    for att, (a, b) in zip(rm.attention, targets):
        for h in range(att.n_heads):
            torch.testing.assert_close(att.qk_product(h), a[h], atol=2e-6, rtol=0)
        torch.testing.assert_close(att.vo_product(), b, atol=2e-6, rtol=0)
    ids = torch.randint(0, 64, (1, 6))
    assert torch.isfinite(model(ids).logits).all()


def test_mla_roles_cover_every_factor_for_parametrizations():
    model = deepseek()
    rm = initlab.role_map(model)
    att = rm.attention[0].module_name
    assert rm.role_of(f"{att}.q_a_proj.weight") == "q"
    assert rm.role_of(f"{att}.q_b_proj.weight") == "q+q"  # no-RoPE and RoPE rows
    assert rm.role_of(f"{att}.kv_a_proj_with_mqa.weight") == "k+k"  # latent and RoPE key
    assert rm.role_of(f"{att}.kv_b_proj.weight") == "k+v"
    assert rm.role_of(f"{att}.o_proj.weight") == "o"
    assert not [i.name for i in rm if i.role == "other"]
    initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(0))
    listed = {id(p) for g in initlab.param_groups(model, "mu", lr=1e-3) for p in g["params"]}
    assert all(id(p) in listed for p in model.parameters() if p.requires_grad)


def jamba():
    cfg = transformers.JambaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, attn_layer_period=2, attn_layer_offset=1,
        expert_layer_period=2, expert_layer_offset=1, num_experts=2, mamba_d_state=8,
        mamba_dt_rank=8, use_mamba_kernels=False)
    torch.manual_seed(0)
    return transformers.JambaForCausalLM(cfg)


def test_hybrid_maps_its_softmax_layers_and_gives_the_mixers_hidden_roles():
    model = jamba()
    rm = initlab.role_map(model)
    assert [a.module_name for a in rm.attention] == ["model.layers.1.self_attn"]
    assert rm.depth == 2  # the Mamba block counts as a block
    mixer = "model.layers.0.mamba"
    assert rm.role_of(f"{mixer}.in_proj.weight") == "mlp_in"
    assert rm.role_of(f"{mixer}.x_proj.weight") == "mlp_in"
    assert rm.role_of(f"{mixer}.dt_proj.weight") == "mlp_in"
    assert rm.role_of(f"{mixer}.out_proj.weight") == "mlp_out"
    assert rm.role_of(f"{mixer}.A_log") == "other"  # the SSM's spectrum: its own design
    # mimetic writes the softmax layer only, with the identities
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    initlab.mimetic_(model, preset="language", svd="exact", generator=torch.Generator().manual_seed(3))
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("model.layers.1.self_attn.") for n in changed), changed
    att = rm.attention[0]
    a, b = draw_targets(att, **PRESETS["language"], generator=torch.Generator().manual_seed(3))
    # GQA (2 kv heads of 8 over d = 32): Σ_h W_v W_o is the best rank-16 approximation of B
    torch.testing.assert_close(att.vo_product(), best_rank(b, 16), atol=2e-6, rtol=0)
    # mu scales the mixer's matrices like hidden matrices: its lr factor is the MLP's
    groups = initlab.param_groups(model, "mu", lr=1.0)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.get_parameter(f"{mixer}.in_proj.weight"))] == \
        lr_of[id(model.get_parameter("model.layers.0.feed_forward.up_proj.weight"))]


def test_state_space_model_without_attention_is_refused_with_the_reason():
    cfg = transformers.MambaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, state_size=8)
    model = transformers.MambaForCausalLM(cfg)
    with pytest.raises(RoleMapError, match="no softmax attention layer"):
        initlab.role_map(model)


def test_linear_attention_layers_are_mixers_not_attention():
    """MiniMax: full softmax layers beside lightning (linear) attention with q/k/v-like weights."""
    cfg = transformers.MiniMaxConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=2,
        num_experts_per_tok=1, layer_types=["full_attention", "linear_attention"], block_size=4)
    model = transformers.MiniMaxForCausalLM(cfg)
    rm = initlab.role_map(model)
    assert [a.module_name for a in rm.attention] == ["model.layers.0.self_attn"]
    lin = "model.layers.1.self_attn"
    assert rm.role_of(f"{lin}.qkv_proj.weight") == "mlp_in"
    assert rm.role_of(f"{lin}.out_proj.weight") == "mlp_out"
    assert rm.role_of(f"{lin}.output_gate.weight") == "mlp_gate"
