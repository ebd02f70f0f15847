"""Mimetic init checked against the paper's product identities (digest §3, T1–T5).

Targets are re-drawn here from the documented sampling (uniform noise of variance 1/d, per head
then per layer, from one CPU generator) and factorized with numpy, so the library is checked
against an independent computation, not against itself.
"""
import math

import numpy as np
import pytest
import torch

import initlab
from initlab.errors import InitError
from initlab.models import GPT, ViT
from mimetic_reference import reference_targets, truncation


def vit(width=64, heads=2, depth=2, **kw):
    return ViT(width=width, heads=heads, depth=depth, patch_size=7, **kw)


@pytest.mark.parametrize("fused", [True, False])
def test_products_equal_the_paper_targets(fused):
    d, heads, depth, k = 64, 2, 2, 32
    m = vit(d, heads, depth, fused_qkv=fused)
    initlab.mimetic_(m, generator=torch.Generator().manual_seed(7))
    targets = reference_targets(7, d, heads, depth)
    for i, blk in enumerate(m.blocks):
        a, b = targets[i]
        att = blk.attn
        wq = (att.qkv.weight[:d] if fused else att.q.weight).detach().double().numpy()
        wk = (att.qkv.weight[d:2 * d] if fused else att.k.weight).detach().double().numpy()
        wv = (att.qkv.weight[2 * d:] if fused else att.v.weight).detach().double().numpy()
        wo = att.proj.weight.detach().double().numpy()
        for h in range(heads):
            rows = slice(h * k, (h + 1) * k)
            prod = wq[rows].T @ wk[rows]  # T1, nn.Linear layout: Wq_hᵀ Wk_h
            np.testing.assert_allclose(prod, truncation(a[h], k), atol=1e-5)
            assert np.linalg.matrix_rank(prod, tol=1e-4) == k  # T3
        np.testing.assert_allclose(wo @ wv, b.T, atol=1e-5)  # T2: W_proj W_v = Bᵀ


def test_attention_logits_through_the_real_forward():
    """q_t·k_s computed by the module equals x_t A_k x_sᵀ (A_k the rank-k truncation)."""
    d, heads, k = 64, 2, 32
    m = vit(d, heads, 1)
    initlab.mimetic_(m, generator=torch.Generator().manual_seed(3))
    a, _ = reference_targets(3, d, heads, 1)[0]
    x = torch.randn(5, d, dtype=torch.float64)
    q, kk, _ = m.blocks[0].attn.qkv.double()(x).split(d, -1)
    for h in range(heads):
        sl = slice(h * k, (h + 1) * k)
        logits = (q[:, sl] @ kk[:, sl].T).detach().numpy()
        np.testing.assert_allclose(logits, x.numpy() @ truncation(a[h], k) @ x.numpy().T, atol=1e-6)


@pytest.mark.parametrize("d,heads,expected", [(64, 2, 0.53), (192, 3, 0.39)])
def test_qk_mean_diagonal_matches_digest_table(d, heads, expected):
    """T5: rank-k truncation shrinks the QK diagonal (digest table)."""
    m = vit(d, heads, 2)
    rm = initlab.role_map(m)
    initlab.mimetic_(m, generator=torch.Generator().manual_seed(0), role_map=rm)
    diag = np.mean([att.qk_product(h).diagonal().mean().item()
                    for att in rm.attention for h in range(heads)])
    assert diag == pytest.approx(expected, abs=0.02)


def test_vo_statistics():
    """T4 at d=192, α₂=β₂=0.4: diagonal mean −β₂, entry std α₂/√d, ‖·‖_F/√d = √(α₂²+β₂²)."""
    d = 192
    m = vit(d, 3, 1)
    rm = initlab.role_map(m)
    initlab.mimetic_(m, generator=torch.Generator().manual_seed(1), role_map=rm)
    p = rm.attention[0].vo_product()
    off = p[~torch.eye(d, dtype=torch.bool)]
    assert p.diagonal().mean().item() == pytest.approx(-0.4, abs=3 * 0.4 / d)
    assert off.std().item() == pytest.approx(0.4 / math.sqrt(d), rel=0.05)
    assert p.diagonal().std().item() == pytest.approx(0.4 / math.sqrt(d), rel=0.25)
    assert (p.norm() / math.sqrt(d)).item() == pytest.approx(math.sqrt(0.32), rel=0.02)


def test_touches_only_attention_and_keeps_parameters():
    m = vit()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    ids = {n: id(p) for n, p in m.named_parameters()}
    initlab.mimetic_(m, generator=torch.Generator().manual_seed(0))
    for n, p in m.named_parameters():
        assert id(p) == ids[n]
        changed = not torch.equal(p, before[n])
        assert changed == (".attn." in n), n
    # biases of q/k/v/o are zeroed by default
    assert torch.count_nonzero(m.blocks[0].attn.qkv.bias) == 0
    assert torch.count_nonzero(m.blocks[0].attn.proj.bias) == 0


def test_qk_only_and_vo_only():
    m = vit()
    w_before = m.blocks[0].attn.qkv.weight.detach().clone()
    o_before = m.blocks[0].attn.proj.weight.detach().clone()
    initlab.mimetic_(m, vo=False, generator=torch.Generator().manual_seed(0))
    w = m.blocks[0].attn.qkv.weight.detach()
    assert torch.equal(w[128:], w_before[128:]) and not torch.equal(w[:128], w_before[:128])
    assert torch.equal(m.blocks[0].attn.proj.weight, o_before)
    m2 = vit()
    q_before = m2.blocks[0].attn.qkv.weight.detach().clone()
    initlab.mimetic_(m2, qk=False)
    assert torch.equal(m2.blocks[0].attn.qkv.weight[:128], q_before[:128])


def test_deterministic_under_generator():
    m1, m2, m3 = vit(), vit(), vit()
    for m, s in ((m1, 5), (m2, 5), (m3, 6)):
        initlab.mimetic_(m, generator=torch.Generator().manual_seed(s))
    w = lambda m: m.blocks[1].attn.qkv.weight
    assert torch.equal(w(m1), w(m2)) and not torch.equal(w(m1), w(m3))


def test_keeps_dtype_and_requires_grad():
    m = vit().to(torch.bfloat16)
    m.blocks[0].attn.qkv.weight.requires_grad_(False)
    frozen = m.blocks[0].attn.qkv.weight.detach().clone()
    initlab.mimetic_(m, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m.blocks[0].attn.qkv.weight.detach(), frozen)  # frozen: left as it was
    initlab.mimetic_(m, generator=torch.Generator().manual_seed(0), include_frozen=True)
    assert m.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert not m.blocks[0].attn.qkv.weight.requires_grad
    assert m.blocks[1].attn.qkv.weight.requires_grad
    prod = initlab.role_map(m).attention[0].vo_product()
    assert prod.diagonal().mean().item() == pytest.approx(-0.4, abs=0.03)  # bf16 rounding only


def test_works_on_gpt_and_rejects_bad_scales():
    g = GPT(vocab_size=20, block_size=8, width=32, depth=1, heads=2)
    initlab.mimetic_(g, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InitError, match="finite"):
        initlab.mimetic_(g, alpha_qk=float("nan"))
    with pytest.raises(InitError, match=">= 0"):
        initlab.mimetic_(g, beta_vo=-0.4)
    with pytest.raises(InitError, match="noise"):
        initlab.mimetic_(g, noise_dist="cauchy")
