"""mimetic_ options, fast path and robustness: presets, VO sign, noise laws, QK/VO-only, bias
policy, sin-cos tables, the randomized factorization's accuracy, dtypes, meta/frozen parameters,
bad arguments, and property-based identities over random widths, heads and layouts."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from torch import nn

import initlab
from initlab.errors import InitError, RoleMapError
from initlab.mimetic import (LANGUAGE, PRESETS, VISION, grouped_qk_factors, grouped_vo_factors,
                             noise, qk_factors, top_singular)
from initlab.models import GPT, ViT
from initlab.roles import roles, roles_from_mapping


def vit(width=64, heads=2, depth=2, **kw):
    torch.manual_seed(0)  # identical default init for the tensors mimetic_ does not touch
    return ViT(width=width, heads=heads, depth=depth, patch_size=7, **kw)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- presets, sign
def test_presets_and_explicit_overrides():
    assert VISION == dict(alpha_qk=0.7, beta_qk=0.7, alpha_vo=0.4, beta_vo=0.4, vo_sign=-1)
    assert PRESETS["language"] is LANGUAGE and LANGUAGE["vo_sign"] == -1
    a, b, c = vit(), vit(), vit()
    initlab.mimetic_(a, generator=gen(1))
    initlab.mimetic_(b, preset="vision", generator=gen(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    initlab.mimetic_(c, preset="language", beta_vo=0.4, generator=gen(1))  # override = vision
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    with pytest.raises(InitError, match="preset"):
        initlab.mimetic_(vit(), preset="audio")
    with pytest.raises(InitError, match="unknown keys"):
        initlab.mimetic_(vit(), preset={"alpha": 0.5})


@pytest.mark.parametrize("preset,sign,beta", [("vision", -1, 0.4), ("language", -1, 0.2),
                                              ({"vo_sign": 1}, 1, 0.4)])
def test_vo_diagonal_follows_preset_and_sign(preset, sign, beta):
    d = 128
    m = vit(d, 2, 1)
    rm = roles(m)
    initlab.mimetic_(m, preset=preset, generator=gen(2), role_map=rm)
    diag = rm.attention[0].vo_product().diagonal().mean().item()
    assert diag == pytest.approx(sign * beta, abs=4 * 0.4 / d)


def test_vo_sign_validation():
    with pytest.raises(InitError, match="vo_sign"):
        initlab.mimetic_(vit(), vo_sign=0)
    with pytest.raises(InitError, match="vo_sign"):
        initlab.mimetic_(vit(), vo_sign=True)


def test_normal_and_uniform_noise_have_variance_one_over_d():
    d = 128
    for dist in ("uniform", "normal"):
        z = noise((30, d, d), d, dist=dist, generator=gen(3))
        assert z.var().item() == pytest.approx(1 / d, rel=0.01)
        assert abs(z.mean().item()) < 5 / math.sqrt(z.numel() * d)  # 5 standard errors
    u = noise((d, d), d, dist="uniform", generator=gen(3))
    assert u.abs().max().item() <= math.sqrt(3 / d)
    m1, m2 = vit(), vit()
    initlab.mimetic_(m1, noise_dist="normal", generator=gen(4))
    initlab.mimetic_(m2, noise_dist="uniform", generator=gen(4))
    assert not torch.equal(m1.blocks[0].attn.qkv.weight, m2.blocks[0].attn.qkv.weight)


# ----------------------------------------------------------------------------- variants, biases
def test_qk_only_leaves_vo_biases_and_vo_only_leaves_qk_biases():
    m = vit(bias=True)
    for p in m.parameters():
        nn.init.normal_(p)
    qkv_b = m.blocks[0].attn.qkv.bias.detach().clone()
    proj_b = m.blocks[0].attn.proj.bias.detach().clone()
    initlab.mimetic_(m, vo=False, generator=gen(0))
    b = m.blocks[0].attn.qkv.bias
    assert torch.count_nonzero(b[:128]) == 0 and torch.equal(b[128:], qkv_b[128:])
    assert torch.equal(m.blocks[0].attn.proj.bias, proj_b)
    initlab.mimetic_(m, qk=False, zero_bias=False, generator=gen(0))  # biases kept as they were
    assert torch.equal(m.blocks[0].attn.proj.bias, proj_b)


def test_compat_vo_is_similar_to_the_target_but_not_equal():
    d = 96
    m1, m2 = vit(d, 2, 1), vit(d, 2, 1)
    r1, r2 = roles(m1), roles(m2)
    initlab.mimetic_(m1, generator=gen(5), role_map=r1)
    initlab.mimetic_(m2, generator=gen(5), role_map=r2, vo_layout="compat")
    p1, p2 = r1.attention[0].vo_product(), r2.attention[0].vo_product()
    assert p1.trace().item() == pytest.approx(p2.trace().item(), abs=1e-3)  # similar: same trace
    assert (p1 - p2).abs().max().item() > 0.1
    assert p2.diagonal().std().item() > 3 * p1.diagonal().std().item()  # digest: 0.24 vs 0.03


# ----------------------------------------------------------------------------- positions
def test_sincos_positions_1d_for_sequences_and_errors():
    from initlab.models.layers import sincos_1d
    g = GPT(vocab_size=20, block_size=8, width=32, depth=1, heads=2)
    initlab.mimetic_(g, pos_embed="sincos", generator=gen(0))
    assert torch.allclose(g.pos_embed[0], sincos_1d(8, 32))
    fixed = GPT(vocab_size=20, block_size=8, width=32, depth=1, heads=2, pos="sincos")
    with pytest.raises(InitError, match="position table"):
        initlab.mimetic_(fixed, pos_embed="sincos")
    before = g.blocks[0].attn.qkv.weight.detach().clone()
    with pytest.raises(InitError, match="pos_embed must"):
        initlab.mimetic_(g, pos_embed="rope")
    assert torch.equal(g.blocks[0].attn.qkv.weight, before)  # checked before anything is written


def test_sincos_positions_2d_on_our_vit_with_cls_token():
    from initlab.models.layers import sincos_2d
    m = ViT(width=32, heads=2, depth=1, image_size=28, patch_size=7)  # 4x4 grid + cls
    initlab.mimetic_(m, pos_embed="sincos", generator=gen(0))
    assert torch.equal(m.pos_embed[0, 0], torch.zeros(32))
    assert torch.allclose(m.pos_embed[0, 1:], sincos_2d(4, 4, 32))
    with pytest.raises(InitError, match="pos_grid"):
        initlab.mimetic_(m, pos_embed="sincos-2d", pos_grid=(5, 5))


# ----------------------------------------------------------------------------- fast path
@pytest.mark.parametrize("d,k", [(256, 32)])
def test_randomized_topk_captures_99_percent_of_the_exact_energy(d, k):
    a = 0.7 * noise((2, d, d), d, generator=gen(6), dtype=torch.float32) + 0.7 * torch.eye(d)
    u, s, vh = top_singular(a, k, method="randomized", generator=gen(7))
    approx = (u * s.unsqueeze(-2)) @ vh
    a64 = a.double()
    exact = torch.linalg.svdvals(a64)[:, :k].pow(2).sum(-1)
    captured = a64.pow(2).sum((-1, -2)) - (a64 - approx.double()).pow(2).sum((-1, -2))
    assert (captured / exact).min().item() >= 0.99
    # and through mimetic_: Wq_h Wk_hᵀ is rank k and close to the truncation in energy terms
    wq, wk = qk_factors(a, k, method="randomized", generator=gen(7))
    prod = wq @ wk.transpose(-1, -2)
    assert torch.allclose(prod, approx, atol=1e-4)


def test_randomized_path_through_mimetic_keeps_vo_exact():
    d = 128
    m = vit(d, 4, 1)
    rm = roles(m)
    initlab.mimetic_(m, svd="randomized", generator=gen(8), role_map=rm)
    att = rm.attention[0]
    g = gen(8)
    bound = math.sqrt(3.0 / d)
    zq = (torch.rand((4, d, d), generator=g) * 2 - 1) * bound  # float32 draws on the fast path
    zv = (torch.rand((d, d), generator=g) * 2 - 1) * bound
    b = 0.4 * zv - 0.4 * torch.eye(d)
    assert torch.allclose(att.vo_product(), b.double(), atol=1e-5)
    a = 0.7 * zq + 0.7 * torch.eye(d)
    for h in range(4):
        exact = torch.linalg.svdvals(a[h].double())[:32].pow(2).sum()
        resid = (a[h].double() - att.qk_product(h)).pow(2).sum()
        assert (a[h].double().pow(2).sum() - resid) / exact >= 0.99
    with pytest.raises(InitError, match="svd"):
        initlab.mimetic_(m, svd="lanczos")


def test_grouped_factors_reduce_to_the_paper_and_vo_rank_cases():
    d, k = 24, 4
    a = 0.7 * noise((6, d, d), d, generator=gen(9)) + 0.7 * torch.eye(d)
    q1, k1 = grouped_qk_factors(a, k, 6)
    q2, k2 = qk_factors(a, k)
    assert torch.equal(q1, q2) and torch.equal(k1, k2)
    b = 0.4 * noise((d, d), d, generator=gen(9)) - 0.4 * torch.eye(d)
    for heads, groups, hd in [(6, 6, 4), (6, 2, 4), (8, 8, 4)]:  # G·k = d, < d, > d
        wv, wo = grouped_vo_factors(b, hd, heads, groups, generator=gen(1))
        r = heads // groups
        vo = sum(wv[:, (h // r) * hd:(h // r + 1) * hd] @ wo[h * hd:(h + 1) * hd] for h in range(heads))
        m = groups * hd
        u, s, vh = torch.linalg.svd(b)
        expect = b if m >= d else (u[:, :m] * s[:m]) @ vh[:m]
        assert torch.allclose(vo, expect, atol=1e-10)
        assert torch.linalg.matrix_rank(wv).item() == min(m, d)  # no dead value dimension


# ----------------------------------------------------------------------------- robustness
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_parameters(dtype):
    m = vit(64, 2, 1).to(dtype)
    rm = roles(m)
    initlab.mimetic_(m, generator=gen(0), role_map=rm)
    assert all(p.dtype == dtype for p in m.parameters())
    assert torch.isfinite(rm.attention[0].qk_product(0)).all()
    assert rm.attention[0].vo_product().diagonal().mean().item() == pytest.approx(-0.4, abs=0.03)


def test_meta_parameters_error_then_work_after_to_empty():
    with torch.device("meta"):
        m = vit(32, 2, 1)
    with pytest.raises(InitError, match="to_empty"):
        initlab.mimetic_(m)
    m.to_empty(device="cpu")
    rm = roles(m)
    initlab.mimetic_(m, generator=gen(0), role_map=rm)
    assert rm.attention[0].vo_product().diagonal().mean().item() == pytest.approx(-0.4, abs=0.05)


def test_frozen_parameters_keep_requires_grad_and_identity():
    m = vit(32, 2, 2)
    m.blocks[1].attn.proj.weight.requires_grad_(False)
    ids = [id(p) for p in m.parameters()]
    initlab.mimetic_(m, generator=gen(0))
    assert not m.blocks[1].attn.proj.weight.requires_grad
    assert m.blocks[0].attn.proj.weight.requires_grad
    assert ids == [id(p) for p in m.parameters()]


@pytest.mark.parametrize("kw", [dict(alpha_qk=float("nan")), dict(beta_qk=float("inf")),
                                dict(alpha_vo=-0.1), dict(beta_vo=-0.4), dict(alpha_qk="0.7"),
                                dict(power_iters=-1), dict(vo_layout="transposed"),
                                dict(generator="seed")])
def test_bad_arguments_are_clear_errors(kw):
    with pytest.raises(InitError):
        initlab.mimetic_(vit(32, 2, 1), **kw)


def test_width_not_divisible_by_heads_is_a_role_map_error():
    lin = nn.Module()
    lin.attn = nn.Module()
    lin.attn.q, lin.attn.k, lin.attn.v, lin.attn.o = (nn.Linear(30, 30) for _ in range(4))
    with pytest.raises(RoleMapError, match="not divisible by 4 heads"):
        roles_from_mapping(lin, {"attention": {"attn": dict(q="q", k="k", v="v", o="o", heads=4)}})


def test_no_attention_is_an_error():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
    rm = roles(Net())
    rm.attention.clear()
    with pytest.raises(RoleMapError, match="no attention"):
        initlab.mimetic_(Net(), role_map=rm)


# ----------------------------------------------------------------------------- properties
class _Attn(nn.Module):
    def __init__(self, d, heads, kv, hd, fused, conv1d):
        super().__init__()
        widths = (heads * hd, kv * hd, kv * hd)

        def lin(nin, nout):
            if conv1d:
                m = nn.Module()
                m.weight = nn.Parameter(torch.randn(nin, nout))
                m.bias = nn.Parameter(torch.randn(nout))
                return m
            return nn.Linear(nin, nout)
        if fused:
            self.qkv = lin(d, sum(widths))
        else:
            self.q, self.k, self.v = (lin(d, w) for w in widths)
        self.o = lin(heads * hd, d)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(d=st.integers(4, 40), heads=st.sampled_from([1, 2, 3, 4, 6]), group=st.sampled_from([1, 2, 3]),
       hd=st.integers(1, 12), fused=st.booleans(), conv1d=st.booleans(), seed=st.integers(0, 99))
def test_property_identities_over_widths_heads_and_layouts(d, heads, group, hd, fused, conv1d, seed):
    if heads % group:
        group = 1
    kv = heads // group
    net = nn.Module()
    net.attn = _Attn(d, heads, kv, hd, fused, conv1d)
    names = dict(qkv="qkv") if fused else dict(q="q", k="k", v="v")
    spec = dict(names, o="o", heads=heads, kv_heads=kv, head_dim=hd,
                layout="in_out" if conv1d else "out_in")
    rm = roles_from_mapping(net, {"attention": {"attn": spec}})
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    initlab.mimetic_(net, generator=gen(seed), role_map=rm)
    att = rm.attention[0]
    g = gen(seed)
    bound = math.sqrt(3.0 / d)
    a = 0.7 * (torch.rand((heads, d, d), generator=g, dtype=torch.float64) * 2 - 1) * bound + 0.7 * torch.eye(d, dtype=torch.float64)
    b = 0.4 * (torch.rand((d, d), generator=g, dtype=torch.float64) * 2 - 1) * bound - 0.4 * torch.eye(d, dtype=torch.float64)
    k = min(hd, d)
    for h in range(heads):
        grp = h // group
        stacked = a[grp * group:(grp + 1) * group].reshape(-1, d)
        vk = torch.linalg.svd(stacked)[2][:k].T
        assert torch.allclose(att.qk_product(h), a[h] @ vk @ vk.T, atol=2e-5)
    m = kv * hd
    u, s, vh = torch.linalg.svd(b)
    expect = b if m >= d else (u[:, :m] * s[:m]) @ vh[:m]
    assert torch.allclose(att.vo_product(), expect, atol=2e-5)
    for n, p in net.named_parameters():  # every tensor here is attention: biases zeroed
        if n.endswith("bias"):
            assert torch.count_nonzero(p) == 0
        assert p.shape == before[n].shape


# ----------------------------------------------------------------------------- fast path internals
def _energy_ratio(a64, u, s, vh, k):
    """Energy of the rank-k product captured, over the exact truncation's (per matrix)."""
    approx = (u.double() * s.double().unsqueeze(-2)) @ vh.double()
    captured = a64.pow(2).sum((-1, -2)) - (a64 - approx).pow(2).sum((-1, -2))
    return captured / torch.linalg.svdvals(a64)[..., :k].pow(2).sum(-1)


@pytest.mark.parametrize("iter_dtype", [torch.float32, torch.bfloat16])
def test_randomized_topk_accuracy_with_bf16_or_float32_products(iter_dtype):
    d, k = 512, 64
    a = 0.7 * noise((2, d, d), d, generator=gen(11), dtype=torch.float32) + 0.7 * torch.eye(d)
    u, s, vh = top_singular(a, k, method="randomized", generator=gen(12), iter_dtype=iter_dtype)
    assert _energy_ratio(a.double(), u, s, vh, k).min().item() >= 0.99
    # U S Vh is the exact projection of the target onto span(V): V orthonormal, U S = A V
    eye = torch.eye(k, dtype=torch.float64)
    assert torch.allclose(vh.double() @ vh.double().mT, eye.expand(2, k, k), atol=1e-5)
    assert torch.allclose((u * s.unsqueeze(-2)).double(), a.double() @ vh.double().mT, atol=1e-4)


def test_randomized_grouped_qk_captures_the_joint_truncation():
    """GQA: 4 query heads share a key head; stacked targets are flatter (one more pass)."""
    d, k, heads, groups = 256, 16, 8, 2
    a = 0.7 * noise((heads, d, d), d, generator=gen(13), dtype=torch.float32) + 0.7 * torch.eye(d)
    wq, wk = grouped_qk_factors(a, k, groups, method="randomized", generator=gen(14))
    r = heads // groups
    for g in range(groups):
        stacked = a[g * r:(g + 1) * r].reshape(-1, d).double()
        prod = torch.cat([wq[h].double() @ wk[g].double().T for h in range(g * r, (g + 1) * r)])
        captured = stacked.pow(2).sum() - (stacked - prod).pow(2).sum()
        assert captured / torch.linalg.svdvals(stacked)[:k].pow(2).sum() >= 0.99


def test_randomized_topk_of_degenerate_targets_is_finite():
    for a in (torch.zeros(2, 64, 64), torch.eye(64).expand(2, 64, 64).contiguous()):
        u, s, vh = top_singular(a, 8, method="randomized", generator=gen(0))
        assert all(torch.isfinite(t).all() for t in (u, s, vh))
        approx = (u * s.unsqueeze(-2)) @ vh
        assert (a - approx).pow(2).sum((-1, -2)).max() <= a.pow(2).sum((-1, -2)).max()


def test_square_factors_are_the_svd_factors_from_one_eigh():
    from initlab.mimetic import square_factors
    d = 96
    b = 0.4 * noise((d, d), d, generator=gen(15), dtype=torch.float32) - 0.4 * torch.eye(d)
    wv, wo = square_factors(b)
    assert torch.allclose(wv @ wo, b, atol=1e-5)
    s = torch.linalg.svdvals(b.double())
    # balanced like U√S, √S Vᵀ: each factor has singular values √s, columns/rows in order
    assert torch.allclose(torch.linalg.svdvals(wv.double()), s.sqrt(), rtol=1e-4, atol=1e-6)
    assert torch.allclose(wo.double().norm(dim=1), s.sqrt(), rtol=1e-4, atol=1e-6)
    assert torch.allclose(wv.double().mT @ wv.double(), torch.diag(s), atol=1e-4)


@pytest.mark.parametrize("d,dist", [(24, "uniform"), (30, "uniform"), (24, "normal"), (30, "normal")])
def test_chunked_drawing_gives_the_same_weights(monkeypatch, d, dist):
    """Targets drawn chunk by chunk (a few KV groups at a time) equal one draw of the layer."""
    import initlab.mimetic as mm

    def build():
        net = nn.Module()
        net.attn = _Attn(d, 6, 3, 4, False, False)
        rm = roles_from_mapping(net, {"attention": {"attn": dict(q="q", k="k", v="v", o="o",
                                                                 heads=6, kv_heads=3, head_dim=4)}})
        return net, rm
    (n1, r1), (n2, r2) = build(), build()
    initlab.mimetic_(n1, generator=gen(16), role_map=r1, noise_dist=dist)
    monkeypatch.setitem(mm.CHUNK_BYTES, "cpu", 1)  # one KV group per chunk
    initlab.mimetic_(n2, generator=gen(16), role_map=r2, noise_dist=dist)
    for p, q in zip(n1.parameters(), n2.parameters()):
        assert torch.equal(p, q)


def test_randomized_path_targets_follow_the_documented_stream():
    """The randomized start matrices come from their own stream: layer 2's targets are drawn
    right after layer 1's, as draw_targets documents (checked through the exact VO product)."""
    from initlab.mimetic import draw_targets
    d = 64
    m = vit(d, 2, 2)
    rm = roles(m)
    initlab.mimetic_(m, svd="randomized", generator=gen(17), role_map=rm)
    g = gen(17)
    for att in rm.attention:
        _, b = draw_targets(att, **VISION, generator=g, dtype=torch.float32)
        assert torch.allclose(att.vo_product(), b.double(), atol=1e-5)


def test_benchmark_script_runs_the_gqa_path_on_cpu(capsys):
    """benchmarks/bench_mimetic.py: the code path of --shape llama7b --device cuda, at a tiny
    GQA shape on the CPU, with both weight dtypes and the phase breakdown."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mimetic.py"
    spec = importlib.util.spec_from_file_location("bench_mimetic", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--shape", "llama-tiny", "--dtype", "bf16,fp32", "--repeat", "1",
                           "--svd", "randomized", "--breakdown", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "weights=bf16" in out and "weights=fp32" in out
    assert out.count("ratio mimetic_/default") == 2 and out.count("peak ") == 2
    assert all(f"  {k} " in out for k in ("draw", "qk", "vo"))
    import initlab.mimetic as mm
    assert mm._phase_times is None  # the timers are off again
    assert bench.main(["--shape", "llama-tiny", "--dtype", "fp16"]) == 2


@pytest.mark.parametrize("svd", ["randomized", "exact"])
def test_weights_are_bitwise_the_same_for_any_thread_count(monkeypatch, svd):
    """The factorizations run as single-threaded tasks on worker threads (one per torch thread)
    and are written back in order: 1, 2 or 3 threads, with several chunks in flight, give the
    same bits. GQA with a narrow value map (G·k < d) also draws the VO factorization's start."""
    import initlab.mimetic as mm
    monkeypatch.setitem(mm.CHUNK_BYTES, "cpu", 1)  # one KV group per task: many tasks per layer

    def run(threads):
        net = nn.Module()
        net.blocks = nn.ModuleList(_Attn(48, 6, 3, 4, False, False) for _ in range(3))
        mapping = {"attention": {"blocks.*": dict(q="q", k="k", v="v", o="o", heads=6, kv_heads=3,
                                                  head_dim=4)}}
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            initlab.mimetic_(net, generator=gen(21), svd=svd, role_map=roles_from_mapping(net, mapping))
            assert torch.get_num_threads() == threads  # restored
        finally:
            torch.set_num_threads(before)
        return [p.detach().clone() for p in net.parameters()]
    one, two, three = run(1), run(2), run(3)
    assert all(torch.equal(a, b) and torch.equal(a, c) for a, b, c in zip(one, two, three))
