"""Mimetic initialization of multi-head latent attention (MLA: DeepSeek-V2/V3), docs/mimetic.md.

Head h's no-RoPE logit between tokens x and y is (x P Uq_h)(y Q Uk_h)ᵀ / (rms_q(x) rms_kv(y)), with
P = Dq diag(g_q) the query down-projection times its norm's gain (d x r_q; P = I when the model
projects queries directly) and Q = Dkv diag(g_kv) the shared key/value down-projection (d x r_kv).
So the per-head product W_q^h W_k^hᵀ is P Uq_h Uk_hᵀ Qᵀ: it can only live in range(P) x range(Q),
with rank <= head_dim.

Construction (the down-projections stay as drawn: they are shared by every head and, for K, by the
values and the RoPE key, so no per-head target can choose them):

* QK: with P = U_p S_p V_pᵀ and Q = U_q S_q V_qᵀ (thin SVDs, numerical rank), the product that best
  approximates A_h = α₁Z_h + β₁I in Frobenius norm is U_p T_h U_qᵀ, T_h the best rank-head_dim
  approximation of U_pᵀ A_h U_q (Eckart-Young in the allowed subspace). Writing T_h = U S Vᵀ:
  Uq_h = V_p S_p⁻¹ U sqrt(S), Uk_h = V_q S_q⁻¹ V sqrt(S). When the down-projections are
  full-rank with r >= d (and head_dim >= d) the identity is exact, as in the paper.
* VO: the layer's map is Q Σ_h Uv_h Wo_h = Q [Uv_1 … Uv_H][Wo_1; …; Wo_H]; set it to
  U_q N, N the best rank-min(H·v_head_dim, ·) approximation of U_qᵀ B (exactly B when Q has rank d
  and H·v_head_dim >= d). Extra value dimensions get a random semi-orthogonal rotation (as in
  grouped_vo_factors) so none is dead.
* RoPE parts (q_b_proj's per-head rope rows, kv_a_proj_with_mqa's shared rope key) are left as
  drawn: they carry position, rotate with it, and the key's part is shared by all heads; the
  identity is about the content (no-RoPE) part. Their logit term adds to the target's.
"""
from __future__ import annotations

import torch

from .roles.adapters_hybrid import LatentAttentionLayer


def is_latent(att) -> bool:
    return isinstance(att, LatentAttentionLayer)


def _range(m: torch.Tensor, tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of ``m`` (d x r) truncated to its numerical rank: U (d, k), S (k,), V (r, k)."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    k = int((s > tol * s[0]).sum()) if s.numel() and s[0] > 0 else 0
    return u[:, :k], s[:k], vh[:k].t()


def _top(m: torch.Tensor, k: int):
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    k = min(k, s.numel())
    return u[:, :k], s[:k], vh[:k].t()


def _pad(w: torch.Tensor, cols: int) -> torch.Tensor:
    return w if w.shape[1] == cols else torch.nn.functional.pad(w, (0, cols - w.shape[1]))


def expected_products(att: LatentAttentionLayer, a: torch.Tensor, b: torch.Tensor):
    """What the construction gives for targets (A, B): ([W_q^h W_k^hᵀ for each h], W_v W_o), float64.

    The best products the factor shapes allow: best rank-head_dim approximation of Π_p A_h Π_q
    (Π the projectors onto range(P), range(Q)), and of Π_q B at rank H·v_head_dim.
    """
    up, _, _ = _range(att.q_factor())
    uq, _, _ = _range(att.kv_factor())
    qk = []
    for h in range(att.n_heads):
        u, s, v = _top(up.t() @ a[h].double() @ uq, att.head_dim)
        qk.append(up @ (u * s) @ v.t() @ uq.t())
    u, s, v = _top(uq.t() @ b.double(), att.n_heads * att.v_head_dim)
    return qk, uq @ (u * s) @ v.t()


@torch.no_grad()
def latent_mimetic_(att: LatentAttentionLayer, a: torch.Tensor, b: torch.Tensor, *, qk: bool = True,
                    vo: bool = True) -> None:
    """Write the up-projections (and o_proj) of one MLA layer so that the composite per-head
    products are the best the down-projections allow (see the module docstring). ``a``: (H, d, d)
    QK targets, ``b``: (d, d) VO target, as drawn by :func:`initlab.mimetic.draw_targets`."""
    n, heads, vd = att.head_dim, att.n_heads, att.v_head_dim
    up_, sp, vp = _range(att.q_factor())
    uq, sq, vq = _range(att.kv_factor())
    if qk:
        wq, wk = [], []
        for h in range(heads):
            u, s, v = _top(up_.t() @ a[h].double().to(up_.device) @ uq, n)
            root = s.sqrt()
            wq.append(_pad((vp / sp) @ (u * root), n))
            wk.append(_pad((vq / sq) @ (v * root), n))
        att.q.write(torch.cat(wq, 1))
        att.k.write(torch.cat(wk, 1))
    if vo:
        m = heads * vd
        u, s, v = _top(uq.t() @ b.double().to(uq.device), m)
        root = s.sqrt()
        left, right = (vq / sq) @ (u * root), root.unsqueeze(1) * v.t()  # (r_kv, k), (k, d)
        k = s.numel()
        if k < m:  # spread the k directions over all m value dimensions: R (m, k), RᵀR = I
            # a fixed rotation: the layer's generator stream (and so later layers' targets) is the
            # same as for ordinary attention, whatever the value widths
            g = torch.randn(m, k, generator=torch.Generator().manual_seed(m * 7919 + k), dtype=torch.float64)
            rot, _ = torch.linalg.qr(g.to(left.device))
            left, right = left @ rot.t(), rot @ right
        att.v.write(left)
        att.o.write(right)
