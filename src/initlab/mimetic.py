"""Mimetic initialization of self-attention (Trockman & Kolter, arXiv 2305.09828).

Per layer and head h:  W_q^h W_k^hᵀ ≈ α₁ Z_h + β₁ I   (best rank-head_dim approximation, via SVD)
Per layer:             W_v W_o     = α₂ Z  + σ β₂ I  (exact, full-rank SVD; σ = −1 in the paper)

with Z entries i.i.d., mean 0, variance 1/d (uniform on ±sqrt(3/d) by default, or normal).
Matrices are canonical (d_in, d_out) acting on row vectors (see :mod:`initlab.roles.core`), so
the identities hold whatever the storage layout. Layout knowledge lives only in the role-map
adapters; nothing here knows about fused tensors, Conv1D or packed in_proj weights.

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

import math

import torch
from torch import nn

from .errors import InitError
from .roles import AttentionLayer, Role, roles
from .roles.core import require_materialized
from .threads import single_threaded

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
        z = torch.rand(shape, generator=generator, dtype=dtype, device=device)
        return z.mul_(2 * bound).sub_(bound)
    if dist == "normal":
        return torch.randn(shape, generator=generator, dtype=dtype, device=device).div_(math.sqrt(d))
    raise InitError(f"noise must be 'uniform' or 'normal' (same variance 1/d), got {dist!r}")


# ---------------------------------------------------------------------------------------------
# factorizations: pure functions of the targets
# ---------------------------------------------------------------------------------------------
def top_singular(m: torch.Tensor, rank: int, *, method: str = "exact", oversample: int | None = None,
                 power_iters: int | None = None, generator: torch.Generator | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``rank`` singular triplets of a batch of matrices ``m`` (…, p, q).

    Returns (U (…, p, r), S (…, r), Vh (…, r, q)). ``method="randomized"`` is a subspace
    iteration (Halko, Martinsson & Tropp 2011, Alg. 4.3) with ``oversample`` extra columns (default
    ``rank``) and ``power_iters`` passes (default: 6 when min(p, q)/rank <= 16, else 10);
    targets of mimetic init have flat spectra (σ₁/σ_k ≈ 1.5), so intermediate
    re-orthonormalization is not needed in float32. Measured energy captured relative to the
    exact truncation (float32, uniform targets 0.7Z + 0.7I): d=768,k=64: 0.996; d=2048,k=128
    (8 passes): 0.997; d=2048,k=64 (10 passes): 0.994.
    """
    if method == "exact":
        with _lapack_threads(m):
            u, s, vh = torch.linalg.svd(m, full_matrices=False)
        return u[..., :rank], s[..., :rank], vh[..., :rank, :]
    if method != "randomized":
        raise InitError(f"svd must be one of {SVD_METHODS}, got {method!r}")
    q = m.shape[-1]
    if power_iters is None:
        power_iters = 6 if min(m.shape[-2:]) <= 16 * rank else 10
    width = min(rank + (rank if oversample is None else oversample), min(m.shape[-2:]))
    omega = torch.randn(m.shape[:-2] + (q, width), generator=generator, dtype=m.dtype,
                        device="cpu" if generator is None else generator.device)
    y = m @ omega.to(m.device)
    mt = m.transpose(-1, -2)
    for _ in range(power_iters):
        y = m @ (mt @ y)
        y = y / y.norm(dim=-2, keepdim=True).amax(dim=-1, keepdim=True)  # keep float32 in range
    # Only small (width x width) decompositions from here on, in float64: large LAPACK calls
    # (QR/SVD of tall matrices) cost more than all the matmuls above on CPUs.
    with _lapack_threads(m):
        basis = _orthonormal_columns(y)  # float64
    c = basis.to(m.dtype).transpose(-1, -2) @ m  # (…, width, q)
    c64 = c.double()
    with _lapack_threads(m):
        evals, evecs = torch.linalg.eigh(c64 @ c64.transpose(-1, -2))  # ascending
    evals, evecs = evals.flip(-1)[..., :rank], evecs.flip(-1)[..., :rank]
    s = evals.clamp_min(0).sqrt()
    vh = (evecs.transpose(-1, -2) @ c64) / s.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(-1)
    u = basis.double() @ evecs
    return u.to(m.dtype), s.to(m.dtype), vh.to(m.dtype)


def _orthonormal_columns(y: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis of the columns of ``y`` by Cholesky-QR run twice (CholeskyQR2)."""
    y = y.double()
    eye = torch.eye(y.shape[-1], dtype=y.dtype, device=y.device)
    for _ in range(2):
        gram = y.transpose(-1, -2) @ y
        gram = gram + eye * (1e-14 * gram.diagonal(dim1=-2, dim2=-1).sum(-1))[..., None, None]
        chol = torch.linalg.cholesky(gram)  # gram = L Lᵀ, y = Q Lᵀ
        y = torch.linalg.solve_triangular(chol, y.transpose(-1, -2), upper=False).transpose(-1, -2)
    return y


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


def grouped_vo_factors(target: torch.Tensor, head_dim: int, n_heads: int, n_groups: int, *,
                       generator: torch.Generator | None = None, **svd,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """VO factors for H query heads sharing G value heads of width ``head_dim``.

    Returns (Wv (d, G·k), Wo (H·k, d)) with Σ_h Wv^{g(h)} Wo^h equal to the best
    rank-min(d, G·k) approximation of ``target`` (exactly ``target`` when G·k ≥ d). G·k = d is
    the paper's U sqrt(S), sqrt(S) Vᵀ; G·k > d uses a random semi-orthogonal R (RᵀR = I) so no
    value dimension is dead: Wv = U sqrt(S) Rᵀ, Ō = R sqrt(S) Vᵀ.
    """
    d = target.shape[-1]
    m = n_groups * head_dim
    r = n_heads // n_groups
    if m == d:
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
    """(A, B): A is (n_heads, d, d) = α₁ Z_h + β₁ I, B is (d, d) = α₂ Z + σ β₂ I.

    Draw order (fixed, so results are reproducible): the H QK noises of the layer, then its VO
    noise. Float64 on CPU by default.
    """
    d = att.d_model
    a = noise((att.n_heads, d, d), d, dist=dist, generator=generator, dtype=dtype, device=device)
    a.mul_(alpha_qk).diagonal(dim1=-2, dim2=-1).add_(beta_qk)
    b = noise((d, d), d, dist=dist, generator=generator, dtype=dtype, device=device)
    b.mul_(alpha_vo).diagonal().add_(vo_sign * beta_vo)
    return a, b


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


def _check_layer(att: AttentionLayer) -> None:
    d = att.d_model
    dims = {"q": att.q.d_in, "k": att.k.d_in, "v": att.v.d_in}
    if len(set(dims.values())) > 1:
        raise InitError(f"{att.module_name}: queries, keys and values read inputs of different "
                        f"widths {dims} (cross-attention with kdim/vdim); the QK and VO targets "
                        f"are square d x d, so mimetic init needs kdim = vdim = embed_dim")
    if att.o.d_out != d:
        raise InitError(f"{att.module_name}: the output projection writes {att.o.d_out} features, "
                        f"not d_model = {d}; the VO target is square, so mimetic init needs them equal")


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
            ``"randomized"`` (top-k subspace iteration in float32; captures >= 99% of the exact
            truncation's energy) or ``"auto"`` (exact below width 512, randomized from there).
            The VO factorization is always exact when it can be (G·k ≥ d).
        oversample, power_iters: randomized-SVD settings (default: ``rank`` extra columns; 6
            passes when d <= 16·rank, else 10; see :func:`top_singular`).
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
    layers = [a for a in rmap.require_attention("mimetic init") if not a.cross]
    if not layers:  # cross-attention is left as it is
        raise InitError(f"{rmap.model_class} has no self-attention layers in its role map (only "
                        f"cross-attention); nothing to initialize mimetically")
    for att in layers:
        if not getattr(att, "latent", False):  # MLA layers: mimetic_latent (docs/mimetic.md)
            _check_layer(att)
    if vo_layout == "compat" and any(getattr(a, "latent", False) or a.n_kv_heads * a.head_dim != a.d_model
                                     for a in layers):
        raise InitError("vo_layout='compat' reproduces code for square V/O weights only (no GQA)")

    # position tables are computed (and checked) before anything is written
    positions = _sincos_plan(rmap, pos_embed, pos_grid) if pos_embed is not None else []

    from .roles.dtensor import full_tensors  # FSDP2: write full tensors, then reshard
    with full_tensors(rmap) as rmap:
        layers = [a for a in rmap.attention if not a.cross]
        positions = _sincos_plan(rmap, pos_embed, pos_grid) if pos_embed is not None else []
        device_gens: dict[str, torch.Generator] = {}
        for att in layers:
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
            a, b = draw_targets(att, **cfg, vo_sign=sign, dist=noise_dist, generator=gen,
                                dtype=dtype, device=dev)
            opts = dict(method=method, oversample=oversample, power_iters=power_iters, generator=gen)
            if getattr(att, "latent", False):  # multi-head latent attention: solve the up-projections
                from .mimetic_latent import latent_mimetic_
                latent_mimetic_(att, a, b, qk=qk, vo=vo)
                if zero_bias:
                    _zero_biases(rmap, att, qk=qk, vo=vo)
                continue
            if qk:
                wq, wk = grouped_qk_factors(a, att.head_dim, att.n_kv_heads, **opts)
                del a
                att.q.write(wq.transpose(0, 1).reshape(att.d_model, -1))
                att.k.write(wk.transpose(0, 1).reshape(att.d_model, -1))
            else:
                del a
            if vo:
                if vo_layout == "compat":
                    wv, wo = vo_factors(b)
                    wv, wo = wv.t(), wo.t()
                else:
                    wv, wo = grouped_vo_factors(b, att.head_dim, att.n_heads, att.n_kv_heads, **opts)
                att.v.write(wv)
                att.o.write(wo)
            if zero_bias:
                _zero_biases(rmap, att, qk=qk, vo=vo)
        for param, table in positions:
            _write(param.detach(), table)
    return model


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
    n_cls = sum(info.param.numel() // info.param.shape[-1] for info in rmap.by_role(Role.CLS_TOKEN))
    plan = []
    for info in tables:
        p = info.param
        rows = p.numel() // p.shape[-1]
        extra = None if grid is not None else (n_cls if kind == "sincos-2d" and n_cls else None)
        table = sincos_table(rows, p.shape[-1], kind, grid=grid, extra_rows=extra)
        plan.append((p, table.reshape(p.shape)))
    return plan
