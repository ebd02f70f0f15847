"""Structured (impulse) attention init: attention maps at init, computed from the position table
through LayerNorm, q and k of each head, put their mass on the head's intended grid offset."""
import math

import pytest
import torch

import initlab
from initlab.errors import InitError
from initlab.models import GPT, ViT
from initlab.schemes import init_
from initlab.schemes.structured import draw_offsets, fit_bilinear, kernel_offsets


pytestmark = pytest.mark.usefixtures("one_thread")



def position_attention(model, rmap, layer, head):
    """softmax(scale · (LN(P) Wq_h + b_q)(LN(P) Wk_h + b_k)ᵀ) over the model's own modules."""
    block = model.blocks[layer]
    att = rmap.attention[layer]
    table = model.pos_embed.detach()[0]
    x = block.norm1(table)
    sl = slice(head * att.head_dim, (head + 1) * att.head_dim)
    bq = att.q.bias_view()[sl] if att.q.bias is not None else 0
    bk = att.k.bias_view()[sl] if att.k.bias is not None else 0
    q, k = x @ att.q_head(head) + bq, x @ att.k_head(head) + bk
    return torch.softmax(block.attn.scale * q @ k.t(), dim=-1)


def target_masses(model, attn, offset):
    """Mass each query puts on key = query + offset (queries whose target is on the grid)."""
    g = model.grid
    prefix = attn.shape[0] - g * g
    dy, dx = offset
    out = []
    for r in range(g):
        for c in range(g):
            if 0 <= r + dy < g and 0 <= c + dx < g:
                out.append(attn[prefix + r * g + c, prefix + (r + dy) * g + c + dx].item())
    return torch.tensor(out)


@pytest.mark.parametrize("kw", [
    dict(width=64, heads=2, depth=2, patch_size=7, pool="cls"),  # 17 positions, head_dim 32
    dict(width=128, heads=2, depth=3, patch_size=4, pool="mean", fused_qkv=False),  # 49, head_dim 64
    dict(width=96, heads=3, depth=2, patch_size=7, pool="mean", pos="sincos"),  # fixed table
])
@pytest.mark.parametrize("focus", [0.6, 0.9])
def test_attention_maps_are_the_drawn_impulse_filters(kw, focus):
    model = ViT(**kw)
    init_(model, "structured", focus=focus, generator=torch.Generator().manual_seed(7))
    plan = draw_offsets(kw["depth"], kw["heads"], 3, "random", torch.Generator().manual_seed(7))
    rmap = initlab.role_map(model)
    for layer in range(kw["depth"]):
        for h in range(kw["heads"]):
            a = position_attention(model, rmap, layer, h)
            m = target_masses(model, a, plan[layer][h])
            assert plan[layer][h] in kernel_offsets(3)
            if kw.get("pos") == "sincos":
                # the 2-D sin-cos rows are row code + column code, so a row-and-column shift is
                # only fitted in least squares: the mean mass is calibrated to `focus`, and the
                # target is still every query's favourite key
                assert abs(m.mean().item() - focus) < 2e-3
                dy, dx = plan[layer][h]
                assert m.min() > 1.5 / 16
                continue
            # learned table, positions <= head_dim: the fit is exact, every on-grid query has `focus`
            assert torch.allclose(m, torch.full_like(m, focus), atol=2e-3), (layer, h, m)


def test_more_positions_than_head_dim_is_a_best_fit_that_still_peaks_on_target():
    """49 positions, head_dim 32: the rank-32 fit cannot be exact; the mass still concentrates."""
    model = ViT(width=64, heads=2, depth=2, patch_size=4, pool="mean")
    init_(model, "structured", generator=torch.Generator().manual_seed(0))
    plan = draw_offsets(2, 2, 3, "random", torch.Generator().manual_seed(0))
    rmap = initlab.role_map(model)
    for layer in range(2):
        for h in range(2):
            m = target_masses(model, position_attention(model, rmap, layer, h), plan[layer][h])
            assert m.mean() > 10 / 49  # far above uniform attention (1/49)


def test_fit_is_the_exact_rank_constrained_least_squares():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(10, 24, generator=g, dtype=torch.float64)
    target = torch.randn(10, 10, generator=g, dtype=torch.float64)
    wq, wk = fit_bilinear(feats, target, 4)
    got = feats @ wq @ wk.t() @ feats.t()
    u, s, vh = torch.linalg.svd(target)  # feats has full row rank: best rank-4 = truncated SVD
    assert torch.allclose(got, (u[:, :4] * s[:4]) @ vh[:4], atol=1e-9)
    wq, wk = fit_bilinear(feats, target, 16)  # rank >= positions: exact
    assert torch.allclose(feats @ wq @ wk.t() @ feats.t(), target, atol=1e-9)


def test_ordered_offsets_centre_first_and_vo_is_mimetic():
    model = ViT(width=64, heads=4, depth=1, patch_size=7, pool="mean")
    params = dict(model.named_parameters())
    init_(model, "structured(offsets=ordered)", generator=torch.Generator().manual_seed(1))
    assert dict(model.named_parameters()) == params  # same objects, written in place
    assert draw_offsets(1, 4, 3, "ordered", None)[0][0] == (0, 0)
    vo = initlab.role_map(model).attention[0].vo_product()
    assert abs(vo.diagonal().mean().item() + 0.4) < 0.05  # W_v W_o = 0.4 Z − 0.4 I


def test_learned_table_scaled_fixed_table_left():
    model = ViT(width=64, heads=2, depth=1, patch_size=7)
    before = model.pos_embed.detach().clone()
    init_(model, "structured", vo="keep", generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model.pos_embed, 18 * before)
    model = ViT(width=64, heads=2, depth=1, patch_size=7, pos="sincos")
    before = model.pos_embed.clone()
    init_(model, "structured", generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.pos_embed, before)


def test_refused_without_a_patch_grid():
    gpt = GPT(width=32, heads=2, depth=1, vocab_size=50, block_size=16)
    with pytest.raises(InitError, match="patch grid"):
        init_(gpt, "structured")
    with pytest.raises(InitError, match="kernel_size"):
        init_(ViT(width=32, heads=2, depth=1, patch_size=7), "structured(kernel_size=2)")
    with pytest.raises(InitError, match="focus"):
        init_(ViT(width=32, heads=2, depth=1, patch_size=7), "structured(focus=1.5)")


def test_structured_runs_forward_and_is_finite():
    model = ViT(width=64, heads=2, depth=2, patch_size=7, pool="mean")
    init_(model, "structured", generator=torch.Generator().manual_seed(0))
    y = model(torch.randn(4, 1, 28, 28))
    assert torch.isfinite(y).all()
    assert math.isfinite(float(y.detach().std()))


def test_gaussian_target_is_fitted_exactly_beyond_head_dim():
    """Quadratic logits τ − ‖r_j − r_i − Δ‖² have rank <= 6: a learned table with more positions
    (50) than head_dim (32) but fewer than width (64) fits them exactly; the impulse target cannot."""
    import torch.nn.functional as F
    from initlab.schemes.structured import gaussian_logits, impulse_logits
    model = ViT(width=64, heads=2, depth=1, patch_size=4)
    table = model.pos_embed.detach()[0].double()
    feats = F.layer_norm(table, (64,), eps=1e-6)
    for make, exact in ((gaussian_logits, True), (impulse_logits, False)):
        target = make((7, 7), 1, (1, -1), 3.0)
        wq, wk = fit_bilinear(feats, target, 32)
        residual = ((feats @ wq @ wk.t() @ feats.t() - target).norm() / target.norm()).item()
        assert (residual < 1e-9) == exact, (make.__name__, residual)


@pytest.mark.parametrize("kw", [dict(width=64, heads=2, patch_size=4),
                                dict(width=64, heads=2, patch_size=4, pos="sincos", pool="mean")])
def test_gaussian_target_peaks_on_the_offset(kw):
    model = ViT(depth=2, **kw)
    init_(model, "structured(target=gaussian)", generator=torch.Generator().manual_seed(3))
    plan = draw_offsets(2, 2, 3, "random", torch.Generator().manual_seed(3))
    rmap = initlab.role_map(model)
    g, n = model.grid, model.pos_embed.shape[1]
    for layer in range(2):
        for h in range(2):
            a = position_attention(model, rmap, layer, h)
            dy, dx = plan[layer][h]
            m = target_masses(model, a, (dy, dx))
            assert abs(m.mean().item() - 0.9) < 2e-3
            for r in range(g):  # every on-grid query's favourite key is its target
                for c in range(g):
                    if 0 <= r + dy < g and 0 <= c + dx < g:
                        q = n - g * g + r * g + c
                        assert int(a[q, n - g * g:].argmax()) == (r + dy) * g + c + dx
