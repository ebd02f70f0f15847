"""Mimetic initialization of self-attention (Trockman & Kolter, arXiv 2305.09828).

Per layer and head h:  W_q^h W_k^hᵀ ≈ α₁ Z_h + β₁ I   (best rank-head_dim approximation, via SVD)
Per layer:             W_v W_o     = α₂ Z  − β₂ I    (exact, full-rank SVD)

with Z entries i.i.d., mean 0, variance 1/d (uniform on ±sqrt(3/d) by default, or normal).
Matrices are canonical (d_in, d_out) acting on row vectors (see :mod:`initlab.roles.core`), so
the identities hold whatever the storage layout. Factorizations run in float64 (float32 on
devices without it) and are cast back to the parameters' dtype.

The factorization is a pure function of the target (:func:`qk_factors`, :func:`vo_factors`) and the
targets are drawn separately from an explicit generator (:func:`draw_targets`), so tests can
assert the paper's product identities exactly.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import InitError
from .roles import AttentionLayer, roles

VISION = dict(alpha_qk=0.7, beta_qk=0.7, alpha_vo=0.4, beta_vo=0.4)


def noise(shape: tuple[int, ...], d: int, *, dist: str = "uniform",
          generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
    """i.i.d. entries with mean 0 and variance 1/d (drawn on CPU so a CPU generator works anywhere)."""
    if dist == "uniform":
        bound = math.sqrt(3.0 / d)
        return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * bound
    if dist == "normal":
        return torch.randn(shape, generator=generator, dtype=dtype) / math.sqrt(d)
    raise InitError(f"noise must be 'uniform' or 'normal', got {dist!r}")


def qk_factors(target: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors of ``target`` (…, d, d): Wq Wkᵀ = truncated SVD of target.

    Returns (Wq, Wk), each (…, d, rank): Wq = U_r sqrt(S_r), Wk = V_r sqrt(S_r).
    """
    u, s, vh = torch.linalg.svd(target)
    root = s[..., :rank].sqrt().unsqueeze(-2)
    return u[..., :, :rank] * root, vh[..., :rank, :].transpose(-1, -2) * root


def vo_factors(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact factors of ``target`` (…, d, d): Wv Wo = target, Wv = U sqrt(S), Wo = sqrt(S) Vᵀ."""
    u, s, vh = torch.linalg.svd(target)
    root = s.sqrt()
    return u * root.unsqueeze(-2), root.unsqueeze(-1) * vh


def draw_targets(att: AttentionLayer, *, alpha_qk: float, beta_qk: float, alpha_vo: float,
                 beta_vo: float, dist: str = "uniform", generator: torch.Generator | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B): A is (n_heads, d, d) = α₁ Z_h + β₁ I, B is (d, d) = α₂ Z − β₂ I (float64, CPU)."""
    d = att.d_model
    eye = torch.eye(d, dtype=torch.float64)
    a = alpha_qk * noise((att.n_heads, d, d), d, dist=dist, generator=generator) + beta_qk * eye
    b = alpha_vo * noise((d, d), d, dist=dist, generator=generator) - beta_vo * eye
    return a, b


def _check_scalars(**kw: float) -> None:
    for k, v in kw.items():
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InitError(f"{k} must be a finite number, got {v!r}")
        if v < 0:
            raise InitError(f"{k} must be >= 0 (the signs of the targets are fixed by the method: "
                            f"+β₁I for QK, −β₂I for VO), got {v}")


def _check_materialized(model: nn.Module) -> None:
    for n, p in model.named_parameters():
        if p.is_meta:
            raise InitError(f"parameter {n} is on the meta device; materialize the model first "
                            f"(model.to_empty(device=...)), then initialize it")


@torch.no_grad()
def _write(view: torch.Tensor, value: torch.Tensor) -> None:
    view.copy_(value.to(device=view.device, dtype=view.dtype))


@torch.no_grad()
def mimetic_(model: nn.Module, *, alpha_qk: float = 0.7, beta_qk: float = 0.7,
             alpha_vo: float = 0.4, beta_vo: float = 0.4, noise_dist: str = "uniform",
             qk: bool = True, vo: bool = True, zero_bias: bool = True,
             generator: torch.Generator | None = None, role_map=None) -> nn.Module:
    """Mimetic initialization of every self-attention layer of ``model``, in place.

    Args:
        alpha_qk, beta_qk: QK target α₁ Z + β₁ I (paper's vision values 0.7, 0.7).
        alpha_vo, beta_vo: VO target α₂ Z − β₂ I (0.4, 0.4).
        noise_dist: ``"uniform"`` (public code's default) or ``"normal"``, both variance 1/d.
        qk, vo: initialize the QK and/or VO products (QK-only and VO-only variants).
        zero_bias: zero the q/k/v/o biases (they would shift the products' effect).
        generator: a CPU ``torch.Generator`` for reproducible draws.
        role_map: a precomputed :func:`initlab.roles` map (built when omitted).

    Touches only the Q, K, V, O weights (and their biases when ``zero_bias``). Returns ``model``.
    """
    _check_scalars(alpha_qk=alpha_qk, beta_qk=beta_qk, alpha_vo=alpha_vo, beta_vo=beta_vo)
    _check_materialized(model)
    rmap = role_map if role_map is not None else roles(model)
    if not rmap.attention:
        raise InitError(f"{rmap.model_class} has no attention layers in its role map; nothing to "
                        f"initialize mimetically")
    for att in rmap.attention:
        if att.n_kv_heads != att.n_heads:
            raise InitError(f"{att.module_name}: grouped key/value heads are not supported here")
        if att.d_model != att.o.d_out:
            raise InitError(f"{att.module_name}: mimetic VO needs d_out of O equal to d_model")
        a, b = draw_targets(att, alpha_qk=alpha_qk, beta_qk=beta_qk, alpha_vo=alpha_vo,
                            beta_vo=beta_vo, dist=noise_dist, generator=generator)
        if qk:
            wq, wk = qk_factors(a, att.head_dim)  # (H, d, hd) each, one batched SVD per layer
            for h in range(att.n_heads):
                _write(att.q_head(h), wq[h])
                _write(att.k_head(h), wk[h])
        if vo:
            wv, wo = vo_factors(b)
            _write(att.v.matrix(), wv)
            _write(att.o.matrix(), wo)
        if zero_bias:
            for role, proj in att.projections().items():
                if (role in ("q", "k") and not qk) or (role in ("v", "o") and not vo):
                    continue
                bias = proj.bias_view()
                if bias is not None:
                    bias.zero_()
    return model
