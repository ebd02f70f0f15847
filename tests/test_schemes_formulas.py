"""Per-role standard deviations of every rule-based scheme against its published formula.

The formulas below are written out again from shared/papers/baselines.md (not imported from the
library), and every tensor region of the role map is measured, at two widths/depths and both
q/k/v layouts. Notation: d = width, L = depth, l = block index, fi/fo = the role slot's fans.
"""
import math

import pytest
import torch

import initlab
from initlab.models import GPT, ViT
from initlab.schemes import init_

SIGMA = 0.02


pytestmark = pytest.mark.usefixtures("one_thread")



def trunc_factor(t):
    """std of N(0,1) cut at ±t."""
    phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    return math.sqrt(1 - 2 * t * phi / math.erf(t / math.sqrt(2)))


def xav(fi, fo, gain=1.0):
    return gain * math.sqrt(2.0 / (fi + fo))


IN = ("q", "k", "v", "mlp_in")
OUT = ("o", "mlp_out")
TABLES = ("token_embed", "pos_embed", "cls_token")

# formula(role, fi, fo, d, L, l) -> ("normal"|"uniform"|"trunc"|"zero", std, truncation in σ) or None
FORMULAS = {
    "gpt2": lambda r, fi, fo, d, L, l: (
        ("normal", SIGMA / math.sqrt(2 * L), None) if r in OUT else
        ("normal", SIGMA, None) if r in IN + ("head", "patch_embed") + TABLES else None),
    "trunc_normal": lambda r, fi, fo, d, L, l: (
        ("trunc", SIGMA, 2.0) if r in IN + OUT + ("head", "token_embed", "pos_embed") else
        ("normal", 1e-6, None) if r == "cls_token" else None),
    "torchtitan": lambda r, fi, fo, d, L, l: (
        ("normal", SIGMA, None) if r in IN else
        ("normal", SIGMA / math.sqrt(2 * (l + 1)), None) if r in OUT else
        ("normal", 1.0, None) if r == "token_embed" else
        ("trunc", d ** -0.5, 3.0) if r == "head" else None),
    "mitchell": lambda r, fi, fo, d, L, l: (
        ("trunc", fi ** -0.5, 3.0) if r in IN + ("head", "patch_embed") else
        ("trunc", 1 / math.sqrt(2 * fi * (l + 1)), 3.0) if r in OUT else
        ("trunc", d ** -0.5, 3.0) if r in TABLES else None),
    "full_megatron": lambda r, fi, fo, d, L, l: (
        ("trunc", SIGMA, 3.0) if r in IN + ("patch_embed",) + TABLES else
        ("trunc", SIGMA / math.sqrt(2 * L), 3.0) if r in OUT else
        ("trunc", d ** -0.5, 3.0) if r == "head" else None),
    "small_init": lambda r, fi, fo, d, L, l: (
        ("normal", math.sqrt(2 / (5 * d)), None) if r in IN + OUT + ("head", "patch_embed") + TABLES else None),
    "wang_init": lambda r, fi, fo, d, L, l: (("normal", 2 / (L * math.sqrt(d)), None) if r in OUT else None),
    "xavier": lambda r, fi, fo, d, L, l: (
        ("uniform", xav(fi, fo), None) if r in IN + OUT + ("head", "patch_embed") else None),
    "xavier_normal": lambda r, fi, fo, d, L, l: (
        ("normal", xav(fi, fo), None) if r in IN + OUT + ("head", "patch_embed") else None),
    "t_fixup": lambda r, fi, fo, d, L, l: (
        ("uniform", xav(fi, fo, 0.67 * L ** -0.25), None) if r in ("v", "o", "mlp_in", "mlp_out") else
        ("uniform", xav(fi, fo), None) if r in ("q", "k", "head", "patch_embed") else
        ("normal", d ** -0.5, None) if r == "token_embed" else None),
    "deepnorm_init": lambda r, fi, fo, d, L, l: (
        ("normal", xav(fi, fo, (8 * L) ** -0.25), None) if r in ("v", "o", "mlp_in", "mlp_out") else
        ("normal", xav(fi, fo), None) if r in ("q", "k") else None),
    "zero_out": lambda r, fi, fo, d, L, l: (("zero", 0.0, None) if r in OUT else None),
}
# biases each scheme zeroes (None: none)
ZERO_BIAS = {
    "gpt2": IN + OUT + ("head", "patch_embed"), "trunc_normal": IN + OUT + ("head",),
    "torchtitan": IN + OUT + ("head", "norm"), "mitchell": IN + OUT + ("head", "patch_embed"),
    "full_megatron": IN + OUT + ("head", "patch_embed"), "small_init": IN + OUT + ("head", "patch_embed"),
    "wang_init": OUT, "xavier": IN + OUT + ("head", "patch_embed"),
    "xavier_normal": IN + OUT + ("head", "patch_embed"), "t_fixup": IN + OUT + ("head", "patch_embed"),
    "deepnorm_init": IN + OUT, "zero_out": OUT,
}

MODELS = {
    # two widths and depths, fused and separate q/k/v, a class token, learned tables
    "vit-w64-L2-fused": lambda: ViT(width=64, depth=2, heads=2, patch_size=7),
    "vit-w128-L5-separate": lambda: ViT(width=128, depth=5, heads=4, patch_size=7, fused_qkv=False),
    # token embeddings and an untied head
    "gpt-w96-L3": lambda: GPT(width=96, depth=3, heads=3, vocab_size=300, block_size=32, tie_head=False),
}


def check_region(name, role, x, before, spec):
    n = x.numel()
    if spec is None:
        assert torch.equal(x, before), f"{name} ({role}) was touched but the scheme does not own it"
        return
    dist, std, t = spec
    if dist == "zero":
        assert torch.count_nonzero(x) == 0, f"{name} ({role}) should be zero"
        return
    want = std * (trunc_factor(t) if dist == "trunc" else 1.0)
    got = x.double().std().item() if n > 1 else abs(x.item())
    if n > 1:  # sampling error of a std estimate ≈ std/√(2n); 5 of those, at least 2%
        tol = max(0.02, 5 / math.sqrt(2 * n))
        assert abs(got / want - 1) < tol, f"{name} ({role}): std {got:.4g}, formula {want:.4g}"
    assert x.abs().mean().item() < 10 * want  # sanity for one-element tensors too
    if dist == "uniform":
        assert x.abs().max().item() <= math.sqrt(3) * std * (1 + 1e-5)
    if dist == "trunc":
        assert x.abs().max().item() <= t * std * (1 + 1e-5)


@pytest.mark.parametrize("scheme", sorted(FORMULAS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_per_role_std_matches_formula(scheme, model_name, gen):
    model = MODELS[model_name]()
    with torch.no_grad():  # make every bias nonzero so that zeroing is observable
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.fill_(0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = {n: p for n, p in model.named_parameters()}
    init_(model, scheme, generator=gen)
    rmap = initlab.role_map(model)
    d, L = rmap.width, rmap.depth
    for info in rmap:
        assert info.param is params[info.name]  # written in place, never replaced
        for slot in info.slots:
            role = slot.role.value
            x = info.region(slot)
            old = before[info.name][slot.index] if slot.index else before[info.name]
            if info.kind == "bias":
                spec = ("zero", 0.0, None) if role in ZERO_BIAS[scheme] else None
            else:
                spec = FORMULAS[scheme](role, slot.fan_in, slot.fan_out, d, L, info.layer)
            if scheme == "torchtitan" and role == "norm" and info.kind == "weight":
                assert torch.all(x == 1)
                continue
            check_region(info.name, role, x, old, spec)


def test_depth_dependence_is_per_layer_for_depth_init_and_global_for_gpt2(gen):
    """torchtitan's out-proj std falls as 1/√(l+1) inside one model; gpt2's is the same in all blocks."""
    model = ViT(width=128, depth=6, heads=2, patch_size=7)
    init_(model, "torchtitan", generator=gen)
    stds = [b.attn.proj.weight.std().item() for b in model.blocks]
    ratio = [s * math.sqrt(2 * (i + 1)) / SIGMA for i, s in enumerate(stds)]
    assert max(abs(r - 1) for r in ratio) < 0.05
    init_(model, "torchtitan(depth_init=false)", generator=gen)
    for b in model.blocks:
        assert abs(b.mlp.fc2.weight.std().item() / (SIGMA / math.sqrt(12)) - 1) < 0.05


def test_layerscale_schedule_and_rezero_values():
    for depth, lam in ((2, 0.1), (20, 1e-5), (26, 1e-6)):
        m = ViT(width=16, depth=depth, heads=2, patch_size=7, branch_gain="layerscale")
        init_(m, "layerscale")
        gains = [info.param for info in initlab.role_map(m).by_role("gain")]
        assert len(gains) == 2 * depth and all(torch.all(g == lam) for g in gains)
    m = ViT(width=16, depth=2, heads=2, patch_size=7, branch_gain="skipinit", branch_gain_init=0.3)
    init_(m, "skipinit(0.05)")
    assert all(torch.all(i.param == 0.05) for i in initlab.role_map(m).by_role("gain"))
    m = ViT(width=16, depth=2, heads=2, patch_size=7, branch_gain="rezero")
    with torch.no_grad():
        for i in initlab.role_map(m).by_role("gain"):
            i.param.fill_(1.0)
    init_(m, "rezero")
    assert all(torch.all(i.param == 0) for i in initlab.role_map(m).by_role("gain"))
    x = torch.randn(2, 1, 28, 28)
    z = m.tokens(x)
    for b in m.blocks:  # ReZero: every block is the identity at init
        assert torch.allclose(b(z), z)


@pytest.mark.parametrize("depth", [2, 6])
def test_deepnorm_sets_alpha_and_beta(depth, gen):
    m = ViT(width=64, depth=depth, heads=2, patch_size=7, norm_position="post")
    init_(m, "deepnorm", generator=gen)
    alpha = (2 * depth) ** 0.25
    assert all(b.skip_scale == pytest.approx(alpha) for b in m.blocks)
    assert m.config["skip_scale"] == pytest.approx(alpha)
    beta = (8 * depth) ** -0.25
    w = m.blocks[0].mlp.fc1.weight  # (4d, d): xavier-normal std beta·√(2/(5d))
    assert abs(w.std().item() / (beta * math.sqrt(2 / (5 * 64))) - 1) < 0.05
    # the forward pass is LN(α·x + G(x)): with G's output zeroed, the block is LN(α·x)
    b = m.blocks[0]
    with torch.no_grad():
        b.attn.proj.weight.zero_(); b.attn.proj.bias.zero_()
        b.mlp.fc2.weight.zero_(); b.mlp.fc2.bias.zero_()
    z = torch.randn(2, 5, 64)
    ln = torch.nn.functional.layer_norm
    expect = ln(alpha * ln(alpha * z, (64,), eps=1e-6), (64,), eps=1e-6)
    assert torch.allclose(b(z), expect, atol=1e-5)


def test_small_init_plus_wang_init_is_gpt_neox(gen):
    m = GPT(width=128, depth=4, heads=4, vocab_size=100, block_size=16)
    init_(m, "small_init+wang_init", generator=gen)
    qkv = m.blocks[0].attn.qkv.weight
    assert abs(qkv.std().item() / math.sqrt(2 / (5 * 128)) - 1) < 0.03
    o = torch.cat([b.attn.proj.weight.flatten() for b in m.blocks])
    assert abs(o.std().item() / (2 / (4 * math.sqrt(128))) - 1) < 0.03


def test_tfixup_decoder_stack_scales_embeddings(gen):
    m = GPT(width=128, depth=4, heads=4, vocab_size=500, block_size=16)
    init_(m, "t_fixup(stack=decoder)", generator=gen)
    s = (9 * 4) ** -0.25
    assert abs(m.tok_embed.weight.std().item() / (128 ** -0.5 * s) - 1) < 0.03
    fc2 = m.blocks[1].mlp.fc2.weight
    assert abs(fc2.std().item() / (s * math.sqrt(2 / (5 * 128))) - 1) < 0.03


def test_options_change_the_formula(gen):
    m = ViT(width=128, depth=2, heads=2, patch_size=7)
    init_(m, "gpt2(0.05)", generator=gen)
    assert abs(m.blocks[0].mlp.fc1.weight.std().item() / 0.05 - 1) < 0.03
    init_(m, "trunc_normal", std=0.01, truncate=1.0, generator=gen)
    w = m.blocks[0].mlp.fc1.weight
    assert w.abs().max().item() <= 0.01 * (1 + 1e-6)
    assert abs(w.std().item() / (0.01 * trunc_factor(1.0)) - 1) < 0.03


def test_dtype_device_grad_and_determinism():
    m1 = ViT(width=64, depth=2, heads=2, patch_size=7).double()
    m1.blocks[0].mlp.fc1.weight.requires_grad_(False)
    init_(m1, "gpt2", generator=torch.Generator().manual_seed(3), include_frozen=True)
    assert all(p.dtype == torch.float64 for p in m1.parameters())
    assert not m1.blocks[0].mlp.fc1.weight.requires_grad
    m2 = ViT(width=64, depth=2, heads=2, patch_size=7).double()
    init_(m2, "gpt2", generator=torch.Generator().manual_seed(3))
    for (n, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(a, b), n
