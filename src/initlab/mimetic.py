"""Mimetic initialization of self-attention (Trockman & Kolter, arXiv 2305.09828).

Per layer and head h:  W_q^h W_k^hᵀ ≈ α₁ Z_h + β₁ I   (best rank-head_dim approximation, via SVD)
Per layer:             W_v W_o     = α₂ Z  + σ β₂ I  (exact, full-rank SVD; σ = −1 in the paper)

with Z entries i.i.d., mean 0, variance 1/d (uniform on ±sqrt(3/d) by default, or normal).
A layer whose values read p features and whose output writes q ≠ p (Zamba's shared block, Hiera's
stage change) gets B = α₂ Z + σ β₂ J (p x q, variance 1/p), J the identity on the input features
the residual stream carries onto the output (:func:`residual_span`; docs/mimetic.md).
Matrices are canonical (d_in, d_out) acting on row vectors (see :mod:`initlab.roles.core`), so
the identities hold whatever the storage layout. Layout knowledge lives only in the role-map
adapters; nothing here knows about fused tensors, Conv1D or packed in_proj weights.

Speed (docs/mimetic.md, "Speed"): with ``svd="randomized"`` (default from width 512) the QK
top-k is a Chebyshev-filtered subspace iteration with bf16 products and an exact float32
Rayleigh–Ritz step, the square VO factorization one symmetric eigendecomposition, and the targets
are drawn and factorized a few KV groups at a time (the same numbers as :func:`draw_targets`).

The factorization is a pure function of the target (:func:`qk_factors`, :func:`vo_factors`,
:func:`grouped_qk_factors`, :func:`grouped_vo_factors`) and the targets are drawn separately from an
explicit generator (:func:`draw_targets`), so tests can assert the product identities exactly.

Grouped-query attention (fewer K/V heads than Q heads) is not covered by the paper. Our own
construction (docs/mimetic.md):

* QK: the r = H/G query heads of a group share one K. We minimise Σ_{h∈g} ‖W_q^h W_kᵀ − A_h‖²_F
  jointly: W_k spans the top-k right singular subspace of the stacked targets [A_h; …] (r·d × d)
  and W_q^h = A_h V_k (rescaled), so W_q^h W_kᵀ = A_h P_g with P_g the projector onto that
  subspace. With r = 1 this is exactly the paper's per-head truncation.
* VO: the layer's map Σ_h W_v^{g(h)} W_o^h = [W_v^1 … W_v^G]·[Ō_1; …; Ō_G] has rank ≤ G·k. We set
  it to the best rank-min(d, G·k) approximation of B (exactly B when G·k ≥ d, as in the paper), and
  split each group's Ō_g equally over its r heads (W_o^h = Ō_g / r, the minimum-norm split).
"""
from __future__ import annotations

import contextlib
import math
import threading
import time

import torch
from torch import nn

from .errors import InitError
from .roles import AttentionLayer, Role, roles
from .roles.core import require_materialized
from .threads import Tasks, single_threaded, worker_pool

VISION = dict(alpha_qk=0.7, beta_qk=0.7, alpha_vo=0.4, beta_vo=0.4, vo_sign=-1)
# Language models: see docs/mimetic.md ("language preset") for why these values.
LANGUAGE = dict(alpha_qk=0.7, beta_qk=0.7, alpha_vo=0.4, beta_vo=0.2, vo_sign=-1)
PRESETS = {"vision": VISION, "language": LANGUAGE}

SVD_METHODS = ("auto", "exact", "randomized")
POS_KINDS = ("sincos", "sincos-1d", "sincos-2d")
# "auto" switches to the randomized top-k factorization from this width on (the exact batched SVD
# is cubic in d per head; the randomized one is ~d²·k).
AUTO_RANDOMIZED_WIDTH = 512


def _lapack_threads(t: torch.Tensor):
    """CPU decompositions run single-threaded (see :mod:`initlab.threads`); accelerators unaffected."""
    return single_threaded(t.device)


def noise(shape: tuple[int, ...], d: int, *, dist: str = "uniform",
          generator: torch.Generator | None = None, dtype=torch.float64,
          device: torch.device | str | None = None) -> torch.Tensor:
    """i.i.d. entries with mean 0 and variance 1/d.

    Drawn on ``device`` (CPU by default, so a CPU generator works anywhere); a generator passed
    with a non-CPU device must live on that device.
    """
    if dist == "uniform":
        bound = math.sqrt(3.0 / d)
        # one pass; on CPU bitwise equal to rand(...) * 2·bound − bound (same draws, same rounding)
        return torch.empty(shape, dtype=dtype, device=device).uniform_(-bound, bound,
                                                                       generator=generator)
    if dist == "normal":
        return torch.randn(shape, generator=generator, dtype=dtype, device=device).div_(math.sqrt(d))
    raise InitError(f"noise must be 'uniform' or 'normal' (same variance 1/d), got {dist!r}")


# ---------------------------------------------------------------------------------------------
# factorizations: pure functions of the targets
# ---------------------------------------------------------------------------------------------
def top_singular(m: torch.Tensor, rank: int, *, method: str = "exact", oversample: int | None = None,
                 power_iters: int | None = None, generator: torch.Generator | None = None,
                 iter_dtype: torch.dtype | None = None, start: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``rank`` singular triplets of a batch of matrices ``m`` (…, p, q).

    Returns (U (…, p, r), S (…, r), Vh (…, r, q)). ``method="randomized"`` is a subspace
    iteration on the row space (Halko, Martinsson & Tropp 2011) with ``oversample`` extra columns
    (default ``rank``), started from Y₀ = mᵀΩ (Ω Gaussian from ``generator``) and filtered by a
    Chebyshev polynomial of mᵀm of degree ``power_iters`` (default :func:`filter_degree`: 3 to 7;
    Zhou & Saad's filtered subspace iteration), then an exact Rayleigh–Ritz step:

    * the products with m run in ``iter_dtype`` (default :func:`fast_matmul_dtype`: bfloat16 where
      the device multiplies it fast, else ``m``'s dtype). They only choose the subspace; measured
      energy identical to float32 products to 3 decimals (d=768, k=64: 0.9963 vs 0.9965);
    * the projection is exact: Y is orthonormalized, one product Z = m·Y in ``m``'s dtype, and
      small (width × width) problems (Cholesky in float64, eigh in float32; all float64 when Y
      is ill-conditioned), so U S Vh = m P with P the orthogonal projector onto the chosen
      subspace (V orthonormal to ~1e-6 in float32).

    ``start``: Ω itself (from :func:`sketch_start`, the same numbers drawn ahead, e.g. on another
    thread than the one factorizing); then ``generator`` is not used.

    Targets of mimetic init have flat spectra (σ₁/σ_k ≈ 1.5). Energy captured relative to the exact
    truncation (float32 uniform targets 0.7Z + 0.7I, defaults; the earlier monomial subspace
    iteration's in brackets): d=768,k=64: 0.9963 (0.9961); d=512,k=64: 0.9988 (0.9991);
    d=1024,k=64: 0.9972 (0.9929); d=2048,k=64: 0.9950 (0.9945); d=2048,k=128: 0.9974 (0.9930);
    4 stacked 1024² targets (GQA), k=64: 0.9939 (0.9805); VO-like 0.4Z − 0.4I, d=1024, k=256:
    0.9997 (1.0000). Flatter targets converge slower (0.2Z + 0.7I, d=768: 0.985 (0.982)).
    """
    if method == "exact":
        with _lapack_threads(m):
            u, s, vh = torch.linalg.svd(m, full_matrices=False)
        return u[..., :rank], s[..., :rank], vh[..., :rank, :]
    if method != "randomized":
        raise InitError(f"svd must be one of {SVD_METHODS}, got {method!r}")
    p, q = m.shape[-2:]
    if power_iters is None:
        power_iters = filter_degree(p, q, rank)
    fast = iter_dtype if iter_dtype is not None else fast_matmul_dtype(m)
    omega = start if start is not None else sketch_start(m.shape, rank, oversample=oversample,
                                                         generator=generator, dtype=m.dtype)
    mi = m.to(fast)
    # the sketch Y₀ = mᵀΩ (a half pass), columns normalized
    y = _t_times(mi, omega.to(device=m.device, dtype=fast)).to(m.dtype)
    del omega
    y = y / y.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
    if power_iters > 0:
        y = _chebyshev_filter(mi, y, rank, power_iters)
    del mi
    return _project(m, y, rank)


def sketch_start(shape: tuple[int, ...], rank: int, *, oversample: int | None = None,
                 generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """Ω, the Gaussian start of :func:`top_singular`'s randomized method for matrices of ``shape``
    (…, p, q): (…, p, width), width = rank + oversample (default rank), at most min(p, q); drawn
    from ``generator`` on its device (CPU without one)."""
    p, q = shape[-2:]
    width = min(rank + (rank if oversample is None else oversample), min(p, q))
    return torch.randn(tuple(shape[:-2]) + (p, width), generator=generator, dtype=dtype,
                       device="cpu" if generator is None else generator.device)


def _project(m: torch.Tensor, y: torch.Tensor, rank: int):
    """Rayleigh–Ritz on span(y): the top-``rank`` triplets of m P, P the projector onto span(y)."""
    tiny64 = torch.finfo(torch.float64).tiny
    # fast: orthonormalize y in m's dtype (one Cholesky-QR; y is well conditioned after the
    # filter, cond ~1e2 at mimetic shapes), check it, and finish in m's dtype
    with _lapack_threads(m):
        chol, ok = _cholesky((y.mT @ y).double())
    if ok:
        with _lapack_threads(m):
            rinv = torch.linalg.solve_triangular(chol, _eye_like(chol), upper=False)
        q = y @ rinv.mT.to(m.dtype)
        g0 = (q.mT @ q).double()
        if float((g0 - _eye_like(g0)).abs().amax()) < 0.25:
            z = m @ q  # exact: the only full-size product in m's dtype
            x, s = _rayleigh_ritz(g0, (z.mT @ z).double(), rank, m, eig_dtype=torch.float32)
            xm = x.to(m.dtype)
            u = (z @ xm) / s.clamp_min(tiny64).to(m.dtype).unsqueeze(-2)
            return u, s.to(m.dtype), (q @ xm).mT
    # robust: everything small in float64 (an ill-conditioned or rank-deficient y)
    z = m @ y
    y64, z64 = y.double(), z.double()
    x, s = _rayleigh_ritz(y64.mT @ y64, z64.mT @ z64, rank, m)
    v = (y64 @ x).to(m.dtype)                              # (…, q, r), orthonormal columns
    u = ((z64 @ x) / s.clamp_min(tiny64).unsqueeze(-2)).to(m.dtype)
    return u, s.to(m.dtype), v.mT


def _eye_like(g: torch.Tensor) -> torch.Tensor:
    return torch.eye(g.shape[-1], dtype=g.dtype, device=g.device).expand_as(g)


def _cholesky(g: torch.Tensor, rel: float = 1e-13) -> tuple[torch.Tensor, bool]:
    """(L, ok): Cholesky factor of g + rel·mean(diag g)·I; ok is False when any matrix of the
    batch is not positive definite or is (numerically) zero."""
    scale = g.diagonal(dim1=-2, dim2=-1).mean(-1)
    chol, info = torch.linalg.cholesky_ex(g + _eye_like(g) * (rel * scale)[..., None, None])
    ok = not bool(info.any()) and bool((scale > torch.finfo(torch.float32).tiny).all())
    return chol, ok


def _t_times(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mᵀx computed as (xᵀm)ᵀ: oneDNN's bf16 mᵀx on a tall m (4096x1024) took 5x longer."""
    return (x.mT @ m).mT


def _chebyshev_filter(mi: torch.Tensor, y: torch.Tensor, rank: int, degree: int) -> torch.Tensor:
    """T_degree(2·mᵀm/a − 1)·y: a Chebyshev filter that keeps [0, a] of mᵀm's spectrum within ±1
    and amplifies what lies above (Zhou & Saad's filtered subspace iteration).

    ``a`` is a Ritz value of mᵀm on span(y): the rank-th, or the (3/4·rank)-th when rank is under
    1/8 of the size; a Ritz value is never above the eigenvalue of the same index, so everything
    above that eigenvalue is amplified more than anything below the cut (the directions near
    σ_rank, interchangeable for the energy, may not be). ``degree`` products with
    mᵀm; on flat spectra degree 3 captures what 6 monomial passes (mᵀm)⁶ do. Products in
    ``mi``'s dtype (bf16 on the fast path), the three-term recurrence in ``y``'s dtype.
    """
    fast, work = mi.dtype, y.dtype
    my = mi @ y.to(fast)
    # the cut a: rank-th generalized eigenvalue of (YᵀmᵀmY, YᵀY) (Y₀ is well conditioned)
    myw = my.to(work)
    g0, g1 = (y.mT @ y).double(), (myw.mT @ myw).double()
    del myw
    with _lapack_threads(y):
        chol, ok = _cholesky(g0, 1e-12)
        if not ok:
            return y  # a rank-deficient sketch: no filter, the Rayleigh–Ritz step copes
        linv = torch.linalg.solve_triangular(chol, _eye_like(chol), upper=False)
        theta = torch.linalg.eigvalsh((linv @ g1 @ linv.mT).float()).double()  # ascending
    top = theta[..., -1:].clamp_min(torch.finfo(torch.float32).tiny)
    # a = the rank-th Ritz value, or the (3/4·rank)-th when rank is under 1/8 of the size:
    # measured better there (wanted directions near σ_rank are interchangeable with those just
    # below for the energy) and worse for larger ranks
    ratio = min(mi.shape[-2:]) / max(rank, 1)
    cut = theta[..., -min(max(1, (3 * rank) // 4 if ratio > 8 else rank), theta.shape[-1])]
    cut = cut.unsqueeze(-1).clamp_min(1e-6 * top)
    two_over_a = (2.0 / cut).to(work).unsqueeze(-1)  # (…, 1, 1)

    # T₁ = t·y, T_{j+1} = 2 t·T_j − T_{j−1}, with t = 2·mᵀm/a − 1
    prev = y
    cur = _t_times(mi, my) * two_over_a  # bf16 product × float32 scale -> float32
    cur.sub_(y)
    for _ in range(degree - 1):
        nxt = _t_times(mi, mi @ cur.to(fast)) * (2 * two_over_a)
        nxt.sub_(cur, alpha=2).sub_(prev)
        norm = nxt.norm(dim=-2, keepdim=True).clamp_min(torch.finfo(work).tiny)
        prev, cur = cur.div_(norm), nxt.div_(norm)  # same per-column scale: the recurrence is linear
    return cur


def _rayleigh_ritz(g0: torch.Tensor, g1: torch.Tensor, rank: int, like: torch.Tensor, *,
                   eig_dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``rank`` Ritz pairs of mᵀm on span(Y), from G0 = YᵀY and G1 = (mY)ᵀ(mY) (float64).

    Returns (X (…, w, r), s (…, r)) with XᵀG0X = I (so Y X has orthonormal columns) and s the Ritz
    singular values, descending. Cholesky of G0 when it is positive definite; otherwise (a rank-
    deficient subspace, e.g. a zero target) its eigenbasis without the null directions.
    """
    w = g0.shape[-1]
    with _lapack_threads(like):
        chol, ok = _cholesky(g0)
        if ok:
            basis = torch.linalg.solve_triangular(chol, _eye_like(g0), upper=False).mT  # L⁻ᵀ
        else:
            ev0, vec0 = torch.linalg.eigh(g0)
            keep = ev0 > ev0[..., -1:].clamp_min(0) * (w * torch.finfo(g0.dtype).eps)
            basis = vec0 * torch.where(keep, ev0.clamp_min(torch.finfo(g0.dtype).tiny).rsqrt(),
                                       torch.zeros_like(ev0)).unsqueeze(-2)
        # float32 when G0 ≈ I (the fast path): half the cost, eigenvectors orthonormal to ~1e-6
        ev, vec = torch.linalg.eigh((basis.mT @ g1 @ basis).to(eig_dtype))  # ascending
        ev, vec = ev.double(), vec.double()
    x = basis @ vec.flip(-1)[..., :rank]
    return x, ev.flip(-1)[..., :rank].clamp_min(0).sqrt()


_CPU_BF16: list[bool] = []


def filter_degree(p: int, q: int, rank: int) -> int:
    """Default number of products with mᵀm (the Chebyshev degree) for a top-``rank`` of p x q.

    3 up to min(p, q) = 12·rank, 4 up to 16·rank, 6 beyond; one more for stacked (GQA) targets,
    whose spectra are flatter. Chosen so the energy captured is at least what the earlier
    subspace iteration (6 or 10 monomial passes) captured at every measured shape (docs/mimetic.md).
    """
    ratio = min(p, q) / max(rank, 1)
    return 3 + (ratio > 12) + 2 * (ratio > 16) + (p != q)


def fast_matmul_dtype(t: torch.Tensor) -> torch.dtype:
    """bfloat16 when ``t`` is a float32 (or narrower) tensor on a device that multiplies bf16
    fast (CUDA with bf16; a CPU where oneDNN reports bf16 support), else ``t``'s dtype."""
    if t.dtype not in (torch.float32, torch.bfloat16):
        return t.dtype
    if t.device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else t.dtype
    if t.device.type == "cpu":
        if not _CPU_BF16:
            try:
                _CPU_BF16.append(bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
            except (AttributeError, RuntimeError):
                _CPU_BF16.append(False)
        return torch.bfloat16 if _CPU_BF16[0] else t.dtype
    return t.dtype


def qk_factors(target: torch.Tensor, rank: int, **svd) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors of ``target`` (…, d, d): Wq Wkᵀ = truncated SVD of target.

    Returns (Wq, Wk), each (…, d, rank): Wq = U_r sqrt(S_r), Wk = V_r sqrt(S_r). When ``rank`` > d
    the extra columns are zero (a head wider than the model cannot have rank above d).
    """
    d = target.shape[-1]
    r = min(rank, d)
    u, s, vh = top_singular(target, r, **svd)
    root = s.sqrt().unsqueeze(-2)
    wq, wk = u * root, vh.transpose(-1, -2) * root
    return _pad_cols(wq, rank), _pad_cols(wk, rank)


def grouped_qk_factors(targets: torch.Tensor, rank: int, n_groups: int, **svd,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """QK factors when ``n_groups`` key heads are shared by H/n_groups query heads each.

    ``targets``: (H, d, d). Returns (Wq (H, d, rank), Wk (G, d, rank)) with
    Wq[h] Wk[g(h)]ᵀ = A_h P_g, P_g the projector onto the top-``rank`` right singular subspace
    of the group's stacked targets (the joint least-squares optimum). G = H gives
    :func:`qk_factors` exactly.
    """
    n_heads, d, _ = targets.shape
    if n_groups == n_heads:
        return qk_factors(targets, rank, **svd)
    r = n_heads // n_groups
    k = min(rank, d)
    stacked = targets.reshape(n_groups, r * d, d)
    u, s, vh = top_singular(stacked, k, **svd)
    # balance: per head, ‖Wq^h‖ ≈ ‖Wk‖ (reduces to sqrt(S) on both sides when r = 1)
    wq = (u * (s * math.sqrt(r)).sqrt().unsqueeze(-2)).reshape(n_heads, d, k)
    wk = vh.transpose(-1, -2) * (s / math.sqrt(r)).sqrt().unsqueeze(-2)
    return _pad_cols(wq, rank), _pad_cols(wk, rank)


def vo_factors(target: torch.Tensor, **svd) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact factors of ``target`` (…, d, d): Wv Wo = target, Wv = U sqrt(S), Wo = sqrt(S) Vᵀ."""
    svd = {**svd, "method": "exact"}
    u, s, vh = top_singular(target, target.shape[-1], **svd)
    root = s.sqrt()
    return u * root.unsqueeze(-2), root.unsqueeze(-1) * vh


def square_factors(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Factors of ``target`` (…, d, d) with Wv Wo = target, from one symmetric eigendecomposition.

    targetᵀtarget = V S² Vᵀ (eigh, in ``target``'s dtype), Wv = target V S^-½ and Wo = S^½ Vᵀ,
    columns ordered by decreasing singular value: the SVD's U√S, √S Vᵀ up to signs, at about a
    third of an SVD's cost. The product is target·V Vᵀ, i.e. ``target`` to V's orthogonality
    (rounding of the dtype), whatever the conditioning: S comes from the column norms of target·V.
    """
    with _lapack_threads(target):
        _, vec = torch.linalg.eigh(target.mT @ target)  # ascending
    vec = vec.flip(-1)
    tv = target @ vec
    root = tv.norm(dim=-2).sqrt()  # √S
    wv = tv / root.clamp_min(torch.finfo(root.dtype).tiny).unsqueeze(-2)
    return wv, root.unsqueeze(-1) * vec.mT


def grouped_vo_factors(target: torch.Tensor, head_dim: int, n_heads: int, n_groups: int, *,
                       generator: torch.Generator | None = None, **svd,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """VO factors for H query heads sharing G value heads of width ``head_dim``.

    Returns (Wv (d, G·k), Wo (H·k, d)) with Σ_h Wv^{g(h)} Wo^h equal to the best
    rank-min(d, G·k) approximation of ``target`` (exactly ``target`` when G·k ≥ d). G·k = d is
    the paper's U sqrt(S), sqrt(S) Vᵀ (``method="randomized"``: the same from one eigh,
    :func:`square_factors`); G·k > d uses a random semi-orthogonal R (RᵀR = I) so no
    value dimension is dead: Wv = U sqrt(S) Rᵀ, Ō = R sqrt(S) Vᵀ.
    """
    d = target.shape[-1]
    m = n_groups * head_dim
    r = n_heads // n_groups
    if m == d and svd.get("method", "exact") == "randomized":
        wv, obar = square_factors(target)
    elif m == d:
        wv, obar = vo_factors(target)
    elif m < d:
        u, s, vh = top_singular(target, m, generator=generator, **svd)
        root = s.sqrt()
        wv, obar = u * root.unsqueeze(-2), root.unsqueeze(-1) * vh
    else:
        u, s, vh = top_singular(target, d, method="exact")
        g = torch.randn(m, d, generator=generator, dtype=target.dtype,
                        device="cpu" if generator is None else generator.device)
        with _lapack_threads(target):
            rot, _ = torch.linalg.qr(g.to(target.device))  # (m, d), orthonormal columns
        root = s.sqrt()
        wv, obar = (u * root.unsqueeze(-2)) @ rot.t(), rot @ (root.unsqueeze(-1) * vh)
    if r == 1:
        return wv, obar
    # Ō_g (k, d) per group, repeated over its r heads and divided by r: Σ_{h∈g} Wo^h = Ō_g
    wo = (obar.reshape(n_groups, 1, head_dim, d) / r).expand(n_groups, r, head_dim, d)
    return wv, wo.reshape(n_heads * head_dim, d)


def _pad_cols(w: torch.Tensor, cols: int) -> torch.Tensor:
    if w.shape[-1] == cols:
        return w
    return torch.nn.functional.pad(w, (0, cols - w.shape[-1]))


# ---------------------------------------------------------------------------------------------
# targets
# ---------------------------------------------------------------------------------------------
def draw_targets(att: AttentionLayer, *, alpha_qk: float, beta_qk: float, alpha_vo: float,
                 beta_vo: float, vo_sign: int = -1, dist: str = "uniform",
                 generator: torch.Generator | None = None, dtype=torch.float64,
                 device: torch.device | str | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B): A is (n_heads, d, d) = α₁ Z_h + β₁ I, B is (p, q) = α₂ Z + σ β₂ J.

    d is the width q and k read; (p, q) = :func:`vo_shape` (the value input and output widths,
    d x d in a plain layer), Z's variance 1/p, and J = :func:`residual_span`'s identity (I when
    p = q; docs/mimetic.md, "Value input and output of different widths").
    Draw order (fixed, so results are reproducible): the H QK noises of the layer, then its VO
    noise. Float64 on CPU by default.
    """
    d = att.d_model
    a = noise((att.n_heads, d, d), d, dist=dist, generator=generator, dtype=dtype, device=device)
    a.mul_(alpha_qk).diagonal(dim1=-2, dim2=-1).add_(beta_qk)
    p, q = vo_shape(att)
    b = noise((p, q), p, dist=dist, generator=generator, dtype=dtype, device=device)
    add_vo_identity_(b.mul_(alpha_vo), att, vo_sign * beta_vo)
    return a, b


def vo_shape(att: AttentionLayer) -> tuple[int, int]:
    """(p, q): the widths the layer's value path reads and its output projection writes, the
    shape of its VO target. (d, d) for a latent (MLA) layer, whose composite maps read d."""
    if getattr(att, "latent", False):
        return att.d_model, att.d_model
    return att.v.d_in, att.o.d_out


def residual_span(att: AttentionLayer) -> tuple[int, int] | None:
    """(offset, width) of the value-input features the block's residual path carries onto output
    features [0, width): the role map's ``residual_in`` fact (Zamba's shared block: the current
    hidden state, the first d of [hidden, embeddings]), else all of them when the value input and
    the output have one width. None: no input feature is the output's residual stream (Hiera's
    stage change, MobileBERT's bottleneck, a first layer without a residual), so the VO target
    has no identity term there."""
    if getattr(att, "residual_in", None) is not None:
        return tuple(att.residual_in)
    p, q = vo_shape(att)
    return (0, p) if p == q else None


def add_vo_identity_(b: torch.Tensor, att: AttentionLayer, value: float) -> torch.Tensor:
    """b += value·J in place, J (p x q) the 0/1 map of :func:`residual_span` (I when square)."""
    span = residual_span(att)
    if span is not None:
        off, width = span
        b[off:off + width, :width].diagonal().add_(value)
    return b


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def _check_scalars(**kw: float) -> None:
    for k, v in kw.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InitError(f"{k} must be a finite number, got {v!r}")
        if v < 0:
            raise InitError(f"{k} must be >= 0 (the signs of the targets are fixed: +β₁I for QK, "
                            f"and vo_sign=-1/+1 chooses the VO sign), got {v}")


def _check_layer(att: AttentionLayer, *, qk: bool = True) -> None:
    """Refuse what the targets cannot express. The VO target may be rectangular (value input p
    wide, output q wide: B is p x q); the QK target pairs query feature i with key feature i, so q
    and k must read one input (docs/mimetic.md, "Value input and output of different widths")."""
    if qk and att.q.d_in != att.k.d_in:
        raise InitError(f"{att.module_name}: queries read {att.q.d_in} features and keys "
                        f"{att.k.d_in} (cross-attention with kdim != embed_dim?); the QK target "
                        f"α₁Z + β₁I pairs each query feature with the same key feature, so mimetic "
                        f"init needs kdim = embed_dim (for self-attention, kdim = vdim = embed_dim); "
                        f"map a cross-attention as cross=True (left alone) or pass qk=False")


def mimetic_layers(rmap) -> list[AttentionLayer]:
    """The layers :func:`mimetic_` writes, in its draw order: the self-attention layers of ``rmap``
    (cross-attention is left alone; ``mimetic_`` passes ``rmap.trainable()`` unless
    ``include_frozen``), a layer whose Q, K, V and O are the tensors of an earlier one (Zamba's
    shared block, applied at several depths) once: it is one set of weights, drawn for and written
    once."""
    seen, out = set(), []
    for att in rmap.attention:
        key = tuple((id(p.weight), repr(p.index)) for p in att.projections().values())
        if att.cross or key in seen:
            continue
        seen.add(key)
        out.append(att)
    return out


def default_preset(rmap) -> str:
    """``"language"`` when the model's self-attention is causal (a causal LM), else ``"vision"``."""
    return "language" if any(a.causal and not a.cross for a in rmap.attention) else "vision"


def _resolve(preset, **given):
    if preset is None:
        preset = "vision"
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise InitError(f"unknown mimetic preset {preset!r}; choose one of {sorted(PRESETS)}")
        base = dict(PRESETS[preset])
    elif isinstance(preset, dict):
        unknown = set(preset) - set(VISION)
        if unknown:
            raise InitError(f"preset dict has unknown keys {sorted(unknown)}; allowed: {sorted(VISION)}")
        base = {**VISION, **preset}
    else:
        raise InitError(f"preset must be a name {sorted(PRESETS)} or a dict, got {preset!r}")
    for k, v in given.items():
        if v is not None:
            base[k] = v
    return base


def flag(name: str, value) -> bool:
    """A yes/no option as a bool: True/False, or text in the value grammar (``"no"`` is False)."""
    if isinstance(value, str):
        from .values import parse_value
        value = parse_value(value)
    if not isinstance(value, bool):
        raise InitError(f"{name} must be True or False (or yes/no), got {value!r}")
    return value


def check_options(*, preset=None, alpha_qk=None, beta_qk=None, alpha_vo=None, beta_vo=None,
                  vo_sign=None, noise_dist="uniform", svd="auto", vo_layout="exact", power_iters=None,
                  pos_embed=None, oversample=None, pos_grid=None, qk=True, vo=True, zero_bias=True,
                  **_ignored) -> dict:
    """Validate :func:`mimetic_`'s options without a model; returns the resolved targets
    (alpha_qk, beta_qk, alpha_vo, beta_vo, vo_sign). Raises :class:`InitError` naming the option."""
    cfg = _resolve(preset, alpha_qk=alpha_qk, beta_qk=beta_qk, alpha_vo=alpha_vo, beta_vo=beta_vo,
                   vo_sign=vo_sign)
    sign = cfg["vo_sign"]
    if sign not in (-1, 1) or isinstance(sign, bool):
        raise InitError(f"vo_sign must be -1 (the paper's W_v W_o ≈ α₂Z − β₂I) or +1, got {sign!r}")
    _check_scalars(**{k: v for k, v in cfg.items() if k != "vo_sign"})
    if svd not in SVD_METHODS:
        raise InitError(f"svd must be one of {SVD_METHODS}, got {svd!r}")
    if vo_layout not in ("exact", "compat"):
        raise InitError(f"vo_layout must be 'exact' or 'compat', got {vo_layout!r}")
    if power_iters is not None and (isinstance(power_iters, bool) or not isinstance(power_iters, int)
                                    or power_iters < 0):
        raise InitError(f"power_iters must be a non-negative int, got {power_iters!r}")
    if oversample is not None and (isinstance(oversample, bool) or not isinstance(oversample, int)
                                   or oversample < 0):
        raise InitError(f"oversample must be a non-negative int (extra columns of the randomized "
                        f"SVD; default: the rank), got {oversample!r}")
    if pos_grid is not None and not (
            isinstance(pos_grid, (tuple, list)) and len(pos_grid) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in pos_grid)):
        raise InitError(f"pos_grid must be (rows, cols), two positive ints, got {pos_grid!r}")
    for name, value in (("qk", qk), ("vo", vo), ("zero_bias", zero_bias)):
        flag(name, value)
    if noise_dist not in ("uniform", "normal"):
        raise InitError(f"noise must be 'uniform' or 'normal' (same variance 1/d), got {noise_dist!r}")
    if pos_embed is not None and pos_embed not in POS_KINDS:
        raise InitError(f"pos_embed must be one of {', '.join(POS_KINDS)} (or None), got {pos_embed!r}")
    return cfg


# ---------------------------------------------------------------------------------------------
# the initializer
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def _write(view: torch.Tensor, value: torch.Tensor) -> None:
    view.copy_(value.to(device=view.device, dtype=view.dtype))


def _layer_device(att: AttentionLayer, device) -> torch.device:
    return torch.device(device) if device is not None else att.q.weight.device


# The randomized factorization's random start matrices come from a generator of their own, seeded
# with this constant: the caller's generator then draws the targets only, in the documented order
# (per layer its H QK noises, then its VO noise), and the start is independent of the targets.
SKETCH_SEED = 0x5EED
# Targets are drawn and factorized in chunks of whole KV groups of at most this many bytes (at
# least one group), so a layer's H·d² targets are never all in memory at once.
CHUNK_BYTES = {"cpu": 6 * 2 ** 20}
CHUNK_BYTES_OTHER = 512 * 2 ** 20
# On a CPU the chunks are factorized on worker threads (one per intra-op thread) while the next
# chunk is drawn: at most this many chunks' bytes of targets are drawn and not yet factorized
# (but always enough for every worker to have one, however large a KV group is).
INFLIGHT_CHUNKS = 3

# benchmarks/bench_mimetic.py --breakdown sets this to a dict; phases add their seconds to it
# (CPU: the CPU time of the thread running the phase, so overlapping phases on worker threads add
# up to work, not wall time; CUDA: synchronized wall time)
_phase_times: dict | None = None
_phase_lock = threading.Lock()


@contextlib.contextmanager
def _phase(name: str, device: torch.device):
    if _phase_times is None:
        yield
        return
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    clock = time.perf_counter if cuda else time.thread_time
    t = clock()
    yield
    if cuda:
        torch.cuda.synchronize(device)
    with _phase_lock:
        _phase_times[name] = _phase_times.get(name, 0.0) + clock() - t


def _qk_task(a: torch.Tensor, k: int, n_groups: int, start, opts: dict, device: torch.device):
    with _phase("qk", device):
        wq, wk = grouped_qk_factors(a, k, n_groups, start=start, **opts)
        # (d, heads·k) column blocks, ready to copy into the layer's Wq / Wk
        return wq.transpose(0, 1).reshape(a.shape[-1], -1), wk.transpose(0, 1).reshape(a.shape[-1], -1)


def _vo_task(b: torch.Tensor, k: int, n_heads: int, n_groups: int, vo_layout: str, opts: dict,
             device: torch.device):
    with _phase("vo", device):
        if vo_layout == "compat":
            wv, wo = vo_factors(b)
            return wv.t(), wo.t()
        if b.shape[-2] < b.shape[-1]:  # value input narrower than the output (p < q)
            return _wide_vo_factors(b, k, n_heads, n_groups, **opts)
        return grouped_vo_factors(b, k, n_heads, n_groups, **opts)


def _init_layer(att: AttentionLayer, cfg: dict, sign: int, *, dist: str, gen, sketch, dtype,
                device: torch.device, method: str, oversample, power_iters, qk: bool, vo: bool,
                vo_layout: str, tasks: Tasks) -> None:
    """Draw one layer's targets chunk by chunk (same numbers as :func:`draw_targets`), factorize
    them and write Q, K, V, O.

    The draws (the user's generator) and the random starts (``sketch``) happen here, in order;
    the factorizations are ``tasks`` (worker threads on a CPU, see :func:`initlab.threads.worker_pool`)
    and the writes happen when ``tasks`` delivers their results, in order, so the weights do not
    depend on timing. A later layer's draws and factorizations may run before this layer is
    written: call ``tasks.drain()`` where the layer must be complete."""
    d, k, n_heads, n_groups = att.d_model, att.head_dim, att.n_heads, att.n_kv_heads
    r = n_heads // n_groups
    # the user's generator draws the targets and nothing else (the documented stream, whatever the
    # method); sketches and the rotation of a wide GQA value map come from the library's own stream
    opts = dict(method=method, oversample=oversample, power_iters=power_iters)
    inline = device.type != "cpu"  # accelerator work is queued there already
    group_bytes = r * d * d * torch.empty((), dtype=dtype).element_size()
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES_OTHER)
    step = max(1, budget // group_bytes)
    if dist == "normal" and (d * d) % 16:
        step = n_groups  # CPU randn fills blocks of 16: only then are chunked draws the same numbers
    if qk:
        wq_all = torch.empty(d, n_heads * k, dtype=dtype, device=device)
        wk_all = torch.empty(d, n_groups * k, dtype=dtype, device=device)

        def store(g0: int, g1: int, result) -> None:
            wq_all[:, g0 * r * k:g1 * r * k], wk_all[:, g0 * k:g1 * k] = result
    for g0 in range(0, n_groups, step):
        g1 = min(n_groups, g0 + step)
        if qk:
            tasks.reserve((g1 - g0) * group_bytes)  # waits while enough targets are in flight
        with _phase("draw", device):
            a = noise(((g1 - g0) * r, d, d), d, dist=dist, generator=gen, dtype=dtype, device=device)
            if qk:
                a.mul_(cfg["alpha_qk"]).diagonal(dim1=-2, dim2=-1).add_(cfg["beta_qk"])
        if not qk:  # drawn anyway: the VO noise comes after the QK noises
            del a
            continue
        start = None
        if method == "randomized":
            start = sketch_start((g1 - g0, r * d, d), min(k, d), oversample=oversample,
                                 generator=sketch, dtype=dtype).to(device)
        tasks.submit(_qk_task, a, k, g1 - g0, start, opts, device,
                     then=lambda res, g0=g0, g1=g1: store(g0, g1, res), inline=inline)
        del a, start
    if qk:
        def write_qk() -> None:
            with _phase("write", device):
                att.q.write(wq_all)
                att.k.write(wk_all)
        tasks.after(write_qk)
    if vo:
        tasks.reserve(group_bytes // r)
    with _phase("draw", device):
        p, q = vo_shape(att)  # (d, d) unless the value input and the output differ in width
        b = noise((p, q), p, dist=dist, generator=gen, dtype=dtype, device=device)
        add_vo_identity_(b.mul_(cfg["alpha_vo"]), att, sign * cfg["beta_vo"])
    if vo:
        vo_opts = dict(opts)
        # the matrix the factorization sees is (p, q), or its transpose when p < q (value input
        # narrower than the output): it draws (a random start, a rotation) unless G·k is its width
        width = q if p >= q else p
        kv = att.v_head_dim or k  # value heads of their own width (MiMo-V2)
        if vo_layout != "compat" and n_groups * kv != width:  # the factorization draws: its own generator
            seed = int(torch.randint(0, 2 ** 62, (1,), generator=sketch))
            vo_opts["generator"] = torch.Generator(sketch.device).manual_seed(seed)

        def write_vo(res) -> None:
            with _phase("write", device):
                att.v.write(res[0])
                att.o.write(res[1])
        tasks.submit(_vo_task, b, kv, n_heads, n_groups, vo_layout, vo_opts, device,
                     then=write_vo, inline=inline)


@torch.no_grad()
def mimetic_(model: nn.Module, *, preset: str | dict | None = None,
             alpha_qk: float | None = None, beta_qk: float | None = None,
             alpha_vo: float | None = None, beta_vo: float | None = None,
             vo_sign: int | None = None, noise_dist: str = "uniform",
             qk: bool = True, vo: bool = True, zero_bias: bool = True,
             pos_embed: str | None = None, pos_grid: tuple[int, int] | None = None,
             svd: str = "auto", oversample: int | None = None, power_iters: int | None = None,
             vo_layout: str = "exact", device: torch.device | str | None = None,
             generator: torch.Generator | None = None, role_map=None,
             include_frozen: bool = False) -> nn.Module:
    """Mimetic initialization of every self-attention layer of ``model``, in place.

    Args:
        preset: ``"vision"`` (the paper's α₁=β₁=0.7, α₂=β₂=0.4, VO sign −) or
            ``"language"`` (β₂=0.2, see docs/mimetic.md), or a dict of the values below.
            Default (``None``): ``"language"`` when the role map says the self-attention is causal
            (a causal LM: initlab's GPT, Hugging Face ``*ForCausalLM``), else ``"vision"`` (image
            models, encoders). Explicit arguments override the preset.
        alpha_qk, beta_qk: QK target α₁ Z + β₁ I.
        alpha_vo, beta_vo, vo_sign: VO target α₂ Z + vo_sign·β₂ I; ``vo_sign`` is −1 (paper) or +1.
        noise_dist: ``"uniform"`` (public code's default) or ``"normal"``, both variance 1/d.
        qk, vo: initialize the QK and/or VO products (QK-only and VO-only variants).
        zero_bias: zero the q/k/v/o biases of the initialized products (default; the paper's
            identities are about the weights, and a bias would add a token-independent term).
            ``False`` leaves the biases as they were.
        pos_embed: ``None`` (leave position tables alone), ``"sincos"`` (2-D when the model has a
            patch embedding, else 1-D), ``"sincos-2d"`` or ``"sincos-1d"``: write fixed sin-cos
            values into the learned position table(s); extra rows before the grid (class/register
            tokens) get zeros. ``pos_grid=(rows, cols)`` overrides the grid guess.
        svd: ``"exact"`` (batched full SVD in float64: the paper's construction to rounding),
            ``"randomized"`` (top-k Chebyshev-filtered subspace iteration, bf16 products where
            the device is fast at them, exact float32 projection; captures >= 99% of the exact
            truncation's energy) or ``"auto"`` (exact below width 512, randomized from there).
            The VO product is always exact when it can be (G·k ≥ d).
        oversample, power_iters: randomized-SVD settings (default: ``rank`` extra columns;
            3 to 7 products with AᵀA by shape, :func:`filter_degree`; see :func:`top_singular`).
        vo_layout: ``"exact"`` (W_v W_o = B, default) or ``"compat"`` (the public Zheng/KAT code,
            which stores U sqrt(S) and sqrt(S) Vᵀ untransposed in nn.Linear weights, so the map is
            sqrt(S) Uᵀ V sqrt(S): similar to B, not equal). Only for reproducing that code.
        device: where to draw and factorize (default: each layer's own device). Noise is drawn
            from ``generator`` on CPU when the work runs on CPU; on an accelerator it is drawn there
            from a generator seeded by one draw of ``generator`` (reproducible per device type).
        generator: a CPU ``torch.Generator`` for reproducible draws.
        role_map: a precomputed :func:`initlab.roles` map (built when omitted).
        include_frozen: also write layers with a frozen q/k/v/o weight (``requires_grad=False``)
            and frozen position tables; by default they are left as they are.

    Touches only the Q, K, V, O weights of self-attention layers (their biases when ``zero_bias``,
    and the position tables when ``pos_embed``); cross-attention layers (``att.cross``) are left
    as they are. Keeps parameter identity, dtype, device and ``requires_grad``.
    Returns ``model``.
    """
    if not isinstance(model, nn.Module):
        raise InitError(f"mimetic_() initializes a torch.nn.Module in place, got "
                        f"{type(model).__name__}; pass the model itself, e.g. mimetic_(model)")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InitError(f"generator must be a torch.Generator, got {type(generator).__name__}; "
                        f"use torch.Generator().manual_seed(seed)")
    if generator is not None and generator.device.type != "cpu":
        raise InitError("pass a CPU torch.Generator (noise for accelerators is seeded from it)")
    require_materialized(model)
    rmap = role_map if role_map is not None else roles(model)
    if preset is None:
        preset = default_preset(rmap)
    cfg = check_options(preset=preset, alpha_qk=alpha_qk, beta_qk=beta_qk, alpha_vo=alpha_vo,
                        beta_vo=beta_vo, vo_sign=vo_sign, noise_dist=noise_dist, svd=svd,
                        vo_layout=vo_layout, power_iters=power_iters, pos_embed=pos_embed,
                        oversample=oversample, pos_grid=pos_grid, qk=qk, vo=vo, zero_bias=zero_bias)
    qk, vo, zero_bias = flag("qk", qk), flag("vo", vo), flag("zero_bias", zero_bias)
    if not flag("include_frozen", include_frozen):
        rmap = rmap.trainable()
    sign = cfg.pop("vo_sign")
    rmap.require_attention("mimetic init")
    layers = mimetic_layers(rmap)
    if not layers:  # cross-attention is left as it is
        raise InitError(f"{rmap.model_class} has no self-attention layers in its role map (only "
                        f"cross-attention); nothing to initialize mimetically")
    for att in layers:
        if not getattr(att, "latent", False):  # MLA layers: mimetic_latent (docs/mimetic.md)
            _check_layer(att, qk=qk)
    if vo_layout == "compat" and any(getattr(a, "latent", False) or a.n_kv_heads * a.head_dim != a.d_model
                                     or (a.v_head_dim or a.head_dim) != a.head_dim
                                     or vo_shape(a) != (a.d_model, a.d_model) for a in layers):
        raise InitError("vo_layout='compat' reproduces code for square V/O weights only (no GQA)")

    # position tables are computed (and checked) before anything is written
    positions = _sincos_plan(rmap, pos_embed, pos_grid) if pos_embed is not None else []

    # FSDP2 (DTensor parameters): each layer's tensors are gathered to full copies, written and
    # resharded before the next layer's are gathered, so a rank holds one layer's full tensors
    device_gens: dict[str, torch.Generator] = {}
    sketch_gens: dict[str, torch.Generator] = {}
    # the factorizations run as tasks on worker threads (CPU), written back in order as they finish
    with worker_pool(max_cost=INFLIGHT_CHUNKS * CHUNK_BYTES["cpu"]) as tasks:
        for att in layers:
            with _gathered(rmap, att) as (sub, att):
                dev = _layer_device(att, device)
                method = svd
                if method == "auto":
                    method = "exact" if att.d_model < AUTO_RANDOMIZED_WIDTH else "randomized"
                # exact on CPU: float64 (the paper's construction to rounding); otherwise float32
                dtype = torch.float64 if method == "exact" and dev.type == "cpu" else torch.float32
                if dev.type == "cpu":
                    gen = generator
                else:
                    if str(dev) not in device_gens:  # one generator per device (cuda:0, cuda:1, ...)
                        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
                        device_gens[str(dev)] = torch.Generator(dev).manual_seed(seed)
                    gen = device_gens[str(dev)]
                if getattr(att, "latent", False):  # multi-head latent attention: solve the up-projections
                    from .mimetic_latent import latent_mimetic_
                    a, b = draw_targets(att, **cfg, vo_sign=sign, dist=noise_dist, generator=gen,
                                        dtype=dtype, device=dev)
                    latent_mimetic_(att, a, b, qk=qk, vo=vo)
                    if zero_bias:
                        _zero_biases(sub, att, qk=qk, vo=vo)
                    continue
                if str(dev) not in sketch_gens:  # randomized SVD starts: a stream of their own
                    sketch_gens[str(dev)] = torch.Generator(dev).manual_seed(SKETCH_SEED)
                _init_layer(att, cfg, sign, dist=noise_dist, gen=gen, sketch=sketch_gens[str(dev)],
                            dtype=dtype, device=dev, method=method, oversample=oversample,
                            power_iters=power_iters, qk=qk, vo=vo, vo_layout=vo_layout,
                            tasks=tasks)
                if zero_bias:
                    _zero_biases(sub, att, qk=qk, vo=vo)
                if sub is not rmap:  # gathered full copies: written before they are resharded
                    tasks.drain()
    if positions:
        tables = {id(info.param) for info in rmap.by_role(Role.POS_EMBED)}
        with _gathered(rmap, None, tables) as (sub, _):
            for param, table in _sincos_plan(sub, pos_embed, pos_grid):
                _write(param.detach(), table)
    return model


@contextlib.contextmanager
def _gathered(rmap, att: AttentionLayer | None, ids: set | None = None):
    """(role map, layer) restricted to one attention layer's tensors (its projections and the
    bias slots listed for it) or to the tensors in ``ids``, with DTensor parameters (FSDP2)
    replaced by full copies that are written back, shard by shard, on exit. Without DTensors
    nothing is copied."""
    from dataclasses import replace

    from .roles.dtensor import full_tensors, has_dtensors
    if not has_dtensors(rmap):
        yield rmap, att
        return
    if ids is None:
        ids = {id(t) for pr in att.projections().values() for t in (pr.weight, pr.bias)
               if t is not None}
        ids |= {id(info.param) for info in rmap if info.layer == att.index
                and any(s.role in (Role.Q, Role.K, Role.V, Role.O) for s in info.slots)}
    sub = replace(rmap, params={n: i for n, i in rmap.params.items() if id(i.param) in ids},
                  attention=[att] if att is not None else [])
    with full_tensors(sub) as full:
        yield full, (full.attention[0] if att is not None else None)


def _wide_vo_factors(target: torch.Tensor, head_dim: int, n_heads: int, n_groups: int, **opts,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`grouped_vo_factors` for a value input narrower than the output (p < q): factor Bᵀ
    (q x p, whose shape the factorizations expect) with one head per group, transpose back
    (Wv = Cᵀ, Ō = Aᵀ for Bᵀ ≈ A C), and split each group's Ō_g over its r heads as there."""
    a, c = grouped_vo_factors(target.mT, head_dim, n_groups, n_groups, **opts)
    wv, obar = c.mT, a.mT  # (p, G·k), (G·k, q)
    r = n_heads // n_groups
    if r == 1:
        return wv, obar
    q = target.shape[-1]
    wo = (obar.reshape(n_groups, 1, head_dim, q) / r).expand(n_groups, r, head_dim, q)
    return wv, wo.reshape(n_heads * head_dim, q)


def _zero_biases(rmap, att: AttentionLayer, *, qk: bool, vo: bool) -> None:
    """Zero the q/k (when ``qk``) and v/o (when ``vo``) biases of this layer.

    A projection's own bias slice when the adapter attached one; otherwise the bias slots the role
    map lists for this layer (e.g. the packed ``in_proj_bias`` beside separate q/k/v weights).
    """
    wanted = ([Role.Q, Role.K] if qk else []) + ([Role.V, Role.O] if vo else [])
    projections = att.projections()
    for role in wanted:
        proj = projections[role]
        if proj.bias is not None:
            proj.zero_bias()
            continue
        for info, slot in rmap.slots(role, "bias"):
            if info.layer == att.index:
                info.region(slot).zero_()


# ---------------------------------------------------------------------------------------------
# position tables
# ---------------------------------------------------------------------------------------------
def sincos_table(n_rows: int, width: int, kind: str, *, grid: tuple[int, int] | None = None,
                 extra_rows: int | None = None) -> torch.Tensor:
    """A fixed sin-cos table of ``n_rows`` x ``width``: 1-D (Vaswani) or 2-D (MAE) over a grid.

    For 2-D, rows before the grid (class/register tokens) are zero; the grid is ``grid`` or the
    largest square that fits after ``extra_rows`` (default: 0 or 1).
    """
    from .models.layers import sincos_1d, sincos_2d
    from .errors import ConfigError
    try:
        if kind == "sincos-1d":
            return sincos_1d(n_rows, width)
        if kind != "sincos-2d":
            raise InitError(f"pos_embed must be 'sincos', 'sincos-1d' or 'sincos-2d', got {kind!r}")
        if grid is None:
            options = [extra_rows] if extra_rows is not None else [0, 1]
            for extra in options:
                side = math.isqrt(max(n_rows - extra, 0))
                if side > 0 and side * side == n_rows - extra:
                    grid = (side, side)
                    break
            else:
                raise InitError(f"a position table of {n_rows} rows is not a square grid (plus a "
                                f"class token); pass pos_grid=(rows, cols)")
        rows, cols = grid
        extra = n_rows - rows * cols
        if extra < 0:
            raise InitError(f"pos_grid {grid} needs {rows * cols} rows; the table has {n_rows}")
        table = sincos_2d(rows, cols, width)
        return torch.cat([torch.zeros(extra, width), table]) if extra else table
    except ConfigError as exc:
        raise InitError(str(exc)) from None


def _sincos_plan(rmap, kind: str, grid) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, table shaped like it) for every learned position table of the role map."""
    if kind not in ("sincos", "sincos-1d", "sincos-2d"):
        raise InitError(f"pos_embed must be 'sincos', 'sincos-1d' or 'sincos-2d', got {kind!r}")
    tables = rmap.by_role(Role.POS_EMBED)
    if not tables:
        raise InitError(f"{rmap.model_class} has no learned position table in its role map (it may "
                        f"use a fixed table or rotary positions); drop pos_embed=")
    if kind == "sincos":
        kind = "sincos-2d" if rmap.by_role(Role.PATCH_EMBED) else "sincos-1d"
    facts = rmap.facts.positions
    n_cls = sum(info.param.numel() // info.param.shape[-1] for info in rmap.by_role(Role.CLS_TOKEN))
    plan = []
    for info in tables:
        p = info.param
        rows = p.numel() // p.shape[-1]
        g = grid
        if g is None and kind == "sincos-2d" and facts.grid and info.name == facts.table:
            g = facts.grid  # the adapter knows the grid (and so the rows before it: DINOv2's registers
            #                 are prefix tokens without table rows, so counting tokens would be wrong)
        extra = None if g is not None else (n_cls if kind == "sincos-2d" and n_cls else None)
        table = sincos_table(rows, p.shape[-1], kind, grid=g, extra_rows=extra)
        plan.append((p, table.reshape(p.shape)))
    return plan
