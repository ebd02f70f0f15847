"""Structured ("convolutional", "impulse") attention initialization for ViTs.

Zheng, Li & Lucey, "Convolutional Initialization for Data-Efficient Vision Transformers"
(arXiv 2401.12511) and "Structured Initialization for Attention in Vision Transformers"
(arXiv 2404.01139; NeurIPS 2025 version arXiv 2505.19985). Their code: osiriszjq/impulse_init
(``vit.py``), osiriszjq/structured_init and osiriszjq/structured_initialization (timm
``vision_transformer.py``, ``impulse_init``). What we follow, and where we differ:

* **Target (as the papers).** Head h of every layer gets a random impulse filter of a k×k
  convolution: an offset Δ_h = (dy, dx), |dy|, |dx| ≤ k//2. Over the patch grid its attention
  logits from positions alone are T_h[i, j] = τ when patch j = patch i + Δ_h, else 0 (queries whose
  target falls off the grid attend uniformly, like zero padding). Class-token rows and columns
  target 0. τ is chosen so that an interior query puts mass ``focus`` on its target:
  e^τ / (e^τ + n − 1) = focus, n = number of keys.
* **Positions (as the code).** The logits are computed from F = LN(P) (P = position table, the
  LayerNorm without affine), since at init P is what carries location. Learned tables are
  multiplied by ``pos_scale`` (the code's ``norm_p`` = 18, applied to timm's 0.02 tables) so
  that position is not drowned by content; fixed sin-cos tables are left as they are.
* **Fit (ours).** We solve min ‖s·F Wq Wkᵀ Fᵀ − T_h‖_F over rank-head_dim products exactly:
  with F = U S Vᵀ (thin SVD), C = Uᵀ T_h U / s, C_k its best rank-head_dim approximation,
  Wq = V S⁻¹ U_c √S_c and Wk = V S⁻¹ V_c √S_c, so s·F Wq Wkᵀ Fᵀ = U C_k Uᵀ. When the
  number of positions is at most head_dim this reproduces T_h exactly (the tests check it); with
  more positions it is the best rank-head_dim fit (the code instead truncates a pseudo-inverse
  and a second SVD, then rescales Wq, Wk to Frobenius norm 7). Inexact fits peak on the target
  less sharply, so the logits are then rescaled (:func:`calibrate`) until the mean mass of the
  on-grid queries on their targets is ``focus`` again.
* **V/O (as the code).** The value/output product gets the mimetic target α₂Z − β₂I (0.4, 0.4)
  through :func:`initlab.mimetic.mimetic_`; ``vo="keep"`` leaves V and O alone.
* **Pooling.** The authors state the method needs mean pooling (no class token). We allow a class
  token (its rows are not structured) so the scheme runs on any initlab ViT, and say so here.

Needs the patch grid, the position table and the rows before the grid: all read from the role
map's facts (``rmap.facts.positions``: ``grid``, ``table``, ``table_prefix``), so it runs on
initlab's ViT and on Hugging Face ViT, DeiT (class and distillation tokens) and DINOv2 alike.
A fixed table (a buffer or a frozen parameter) is never rescaled. Models without a patch grid
(language models) are refused with a message.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import InitError
from ..roles import unwrap
from .spec import Scheme

CITE = ("Zheng, Li & Lucey, arXiv 2401.12511 and 2404.01139 (NeurIPS 2025: 2505.19985); "
        "code osiriszjq/impulse_init, osiriszjq/structured_initialization")


def grid_of(rmap) -> tuple[int, int]:
    """(rows, cols) of the patch grid, from the role map's facts; InitError for models without one."""
    g = rmap.facts.positions.grid
    if isinstance(g, (tuple, list)) and len(g) == 2 and all(isinstance(x, int) and x > 0 for x in g):
        return int(g[0]), int(g[1])
    raise InitError(
        f"structured init builds convolution-like attention over the patch grid of a vision "
        f"Transformer, but the role map of {rmap.model_class} has no patch grid "
        f"(facts.positions.grid is None): it supports vision Transformers with a position table "
        f"(initlab's ViT, Hugging Face ViT/DeiT/DINOv2), not language models")


def position_table(model, rmap, include_frozen: bool = False) -> tuple[torch.Tensor, bool]:
    """(table (n_pos, d), writable?) — the table the facts name: a parameter of the role map
    (writable when trained, or frozen with ``include_frozen``) or a fixed buffer (never written)."""
    pos = rmap.facts.positions
    if pos.table is None:
        raise InitError(f"structured init acts through the position embeddings, and {rmap.model_class} "
                        f"has no position table (facts.positions.kind={pos.kind!r}); build the ViT "
                        f"with pos='learned' or pos='sincos'")
    if pos.table in rmap.params:
        info = rmap.params[pos.table]
        t = info.param.detach()
        return t.reshape(-1, t.shape[-1]), pos.kind == "learned" and (include_frozen or not info.frozen)
    try:
        t = unwrap(model).get_buffer(pos.table).detach()
    except AttributeError:
        try:  # a frozen table left out of a trainable() view of the role map
            t = unwrap(model).get_parameter(pos.table).detach()
        except AttributeError:
            raise InitError(f"structured init: the position table {pos.table!r} named by the role "
                            f"map is not in {rmap.model_class}") from None
    return t.reshape(-1, t.shape[-1]), False


def kernel_offsets(kernel_size: int) -> list[tuple[int, int]]:
    """The k×k offsets, centre first, then by distance (ties in raster order)."""
    r = kernel_size // 2
    offs = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
    return sorted(offs, key=lambda o: (o[0] ** 2 + o[1] ** 2, o))


def draw_offsets(n_layers: int, n_heads: int, kernel_size: int, mode: str,
                 generator: torch.Generator | None) -> list[list[tuple[int, int]]]:
    """Per layer and head an offset: ``random`` iid uniform over the kernel (2401.12511), or
    ``ordered``: head h takes the h-th offset centre-out, the same in every layer (2025 code)."""
    offs = kernel_offsets(kernel_size)
    if mode == "ordered":
        return [[offs[h % len(offs)] for h in range(n_heads)] for _ in range(n_layers)]
    if mode == "random":
        idx = torch.randint(len(offs), (n_layers, n_heads), generator=generator)
        return [[offs[int(i)] for i in row] for row in idx]
    raise InitError(f"offsets must be 'random' or 'ordered', got {mode!r}")


def impulse_logits(grid: tuple[int, int], n_prefix: int, offset: tuple[int, int],
                   tau: float) -> torch.Tensor:
    """Target logits (n_pos, n_pos): τ where key = query + offset on the grid, 0 elsewhere."""
    gh, gw = grid
    n = n_prefix + gh * gw
    t = torch.zeros(n, n, dtype=torch.float64)
    dy, dx = offset
    for r in range(gh):
        for c in range(gw):
            rr, cc = r + dy, c + dx
            if 0 <= rr < gh and 0 <= cc < gw:
                t[n_prefix + r * gw + c, n_prefix + rr * gw + cc] = tau
    return t


def gaussian_logits(grid: tuple[int, int], n_prefix: int, offset: tuple[int, int],
                    tau: float) -> torch.Tensor:
    """Target logits τ − ‖r_j − r_i − Δ‖² between patches (grid units), 0 for class tokens.

    The quadratic ("Gaussian") relative-position logits of Cordonnier, Loukas & Jaggi (ICLR 2020,
    arXiv 1911.03584) that make a head a shifted convolution tap: peaked at key = query + Δ, they
    are a sum of a row term and a column term of rank <= 6, so any position table whose rows span
    {1, y, y², x, x²} (learned tables with enough width, 2-D sin-cos tables) fits them exactly.
    """
    gh, gw = grid
    ys = torch.arange(gh, dtype=torch.float64).repeat_interleave(gw)
    xs = torch.arange(gw, dtype=torch.float64).repeat(gh)
    dy = ys[None, :] - ys[:, None] - offset[0]
    dx = xs[None, :] - xs[:, None] - offset[1]
    n = n_prefix + gh * gw
    t = torch.zeros(n, n, dtype=torch.float64)
    t[n_prefix:, n_prefix:] = tau - (dy ** 2 + dx ** 2)
    return t


TARGETS = {"impulse": impulse_logits, "gaussian": gaussian_logits}


def feature_basis(features: torch.Tensor, rcond: float = 1e-6):
    """Thin SVD (U, S, V) of F, dropping directions below rcond·S_max."""
    u, s, vh = torch.linalg.svd(features, full_matrices=False)
    keep = s > rcond * s[0]
    return u[:, keep], s[keep], vh[keep].t()


def fit_bilinear(features: torch.Tensor, target: torch.Tensor, rank: int,
                 rcond: float = 1e-6, basis=None, ridge: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(Wq, Wk), each (d, rank): a rank-``rank`` product M = Wq Wkᵀ fitting F M Fᵀ ≈ ``target``.

    ``ridge`` = 0: the exact minimizer of ‖F M Fᵀ − target‖_F. ``ridge`` = λ > 0: the minimizer of
    E‖(F + E) M (F + E)ᵀ − target‖², E i.i.d. noise of variance λ/n per entry (n = rows of F), that
    is the fit that stays right when the inputs also carry token content. In F's singular basis
    (F = U S Vᵀ) that is M = V D C D Vᵀ with C = Uᵀ target U and D = S/(S² + λ), a two-sided ridge
    that never divides by a small singular value; the rank truncation is taken on R C R,
    R = S²/(S² + λ) (the fitted logits), so the weights stay bounded by 1/(2√λ) per direction.
    """
    u, s, v = basis if basis is not None else feature_basis(features, rcond)
    c = u.t() @ target @ u
    if ridge > 0:
        r = s * s / (s * s + ridge)
        c = r[:, None] * c * r[None, :]
    uc, sc, vch = torch.linalg.svd(c)
    k = min(rank, sc.numel())
    root = sc[:k].sqrt()
    wq = v @ ((uc[:, :k] * root) / s[:, None])
    wk = v @ ((vch[:k].t() * root) / s[:, None])
    d = features.shape[1]
    if k < rank:  # fewer positions than head_dim: the remaining columns stay zero
        pad = torch.zeros(d, rank - k, dtype=wq.dtype)
        wq, wk = torch.cat([wq, pad], 1), torch.cat([wk, pad], 1)
    return wq, wk


def _targets(grid: tuple[int, int], n_prefix: int, offset: tuple[int, int]):
    gh, gw = grid
    rows, cols = [], []
    for r in range(gh):
        for c in range(gw):
            rr, cc = r + offset[0], c + offset[1]
            if 0 <= rr < gh and 0 <= cc < gw:
                rows.append(n_prefix + r * gw + c)
                cols.append(n_prefix + rr * gw + cc)
    return torch.tensor(rows), torch.tensor(cols)


def target_mass(logits: torch.Tensor, grid: tuple[int, int], n_prefix: int,
                offset: tuple[int, int]) -> torch.Tensor:
    """Mean softmax mass that queries with an on-grid target put on key = query + offset.

    ``logits`` is (n, n) or a batch (b, n, n); returns a scalar or (b,)."""
    rows, cols = _targets(grid, n_prefix, offset)
    p = torch.softmax(logits[..., rows, :], dim=-1)
    return p[..., torch.arange(len(rows)), cols].mean(-1)


def target_log_mass(logits: torch.Tensor, grid: tuple[int, int], n_prefix: int,
                    offset: tuple[int, int]) -> torch.Tensor:
    """Mean log softmax probability of key = query + offset (on-grid queries); (..., n, n) -> (...)."""
    rows, cols = _targets(grid, n_prefix, offset)
    p = torch.log_softmax(logits[..., rows, :], dim=-1)
    return p[..., torch.arange(len(rows)), cols].mean(-1)


def calibrate(q: torch.Tensor, k: torch.Tensor, scale: float, grid, n_prefix: int, offset,
              focus: float, max_gain: float = 1e3, likelihood_cap: bool = False) -> float:
    """Gain c on the logits (c·s·q kᵀ) at which the mean target mass reaches ``focus``; with
    ``likelihood_cap``, never above the gain that maximizes the mean log mass on the target.

    When the fit is exact and the inputs are the positions alone, the first is 1. When it is not
    (more positions than head_dim, or tables such as the 2-D sin-cos one, whose rows are sums of a
    row code and a column code and cannot express a product of row and column shifts), the
    least-squares logits still peak on the target but less sharply; the gain restores the intended
    sharpness. ``q``/``k`` may carry a leading batch dimension (noisy copies of the inputs, i.e.
    positions plus token content): masses are then averaged over it. With noise, ``focus`` may be
    out of reach, and past some gain a sharper softmax only follows the noise: the mean log mass
    (the likelihood of the target under the attention map) has a finite maximizer, and with
    ``likelihood_cap`` the gain never exceeds it, so attention is never saturated on noise
    (without it, an unreachable ``focus`` takes the gain of the largest mass). Gains are searched over
    [1e-2, ``max_gain``] (log-spaced rounds of 61 values).
    """
    base = scale * (q @ k.transpose(-1, -2))
    if abs(float(target_mass(base, grid, n_prefix, offset).mean()) - focus) < 1e-6:
        return 1.0

    def scan(lo: float, hi: float):
        cs = torch.logspace(lo, hi, 61, dtype=torch.float64)
        logits = cs.reshape(-1, *([1] * base.dim())) * base
        mass = target_mass(logits, grid, n_prefix, offset).reshape(len(cs), -1).mean(-1)
        logm = target_log_mass(logits, grid, n_prefix, offset).reshape(len(cs), -1).mean(-1)
        return cs, mass, logm

    cs, mass, logm = scan(-2.0, math.log10(max_gain))
    cap = math.inf
    if likelihood_cap:
        i = int(logm.argmax())
        cap = float(cs[i])
        if 0 < i < len(cs) - 1:  # refine the likelihood maximum between its neighbours
            c2, _, l2 = scan(math.log10(float(cs[i - 1])), math.log10(float(cs[i + 1])))
            cap = float(c2[int(l2.argmax())])
    for round_ in range(3):  # bracket the first gain whose mass reaches focus, three rounds
        above = (mass >= focus).nonzero()
        if len(above) == 0:
            return cap if likelihood_cap else float(cs[int(mass.argmax())])
        i = int(above[0])
        if i == 0:
            return min(float(cs[0]), cap)
        lo, hi = math.log10(float(cs[i - 1])), math.log10(float(cs[i]))
        if round_ < 2:
            cs, mass, _ = scan(lo, hi)
    return min(10 ** hi, cap)


AUTO_POS_SCALE = 18.0  # the authors' norm_p for small learned tables (timm's std 0.02)
CALIBRATION_DRAWS = 16  # noisy copies of the position inputs the logit gain is calibrated on


def content_share(rmap, table: torch.Tensor) -> float:
    """φ = c / (c + p): the share of the token variance at init that is content, not position.

    c is the patch embedding's output variance per entry for unit-variance pixels (its squared
    weights summed over the fan-in, averaged over channels, plus the mean squared bias: the same
    in expectation for correlated pixels); p is the position table's mean square (after any
    ``pos_scale``). A ViT with a learned table of std 0.02 × 18 next to PyTorch's default conv
    stem has φ ≈ 0.7, one with a fixed 2-D sin-cos table φ ≈ 0.4.
    """
    ws = rmap.by_role("patch_embed")
    if len(ws) != 1:
        raise InitError("structured(content='auto') estimates the token content from the patch "
                        "embedding, and this model has none in its role map; pass content=<share "
                        "in [0, 1)>")
    w = ws[0].param.detach().double()
    c = float(w.reshape(w.shape[0], -1).pow(2).sum(1).mean())
    for b in rmap.by_role("patch_embed", kind="bias"):
        c += float(b.param.detach().double().pow(2).mean())
    p = float(table.double().pow(2).mean())
    if not (math.isfinite(c) and math.isfinite(p)) or c + p <= 0:
        raise InitError("structured(content='auto'): the patch embedding or position table is not "
                        "finite; pass content=<share in [0, 1)>")
    return min(c / (c + p), 0.99)


def logit_gap(focus: float, n_keys: int) -> float:
    """τ with e^τ / (e^τ + n − 1) = focus."""
    if not 0.0 < focus < 1.0:
        raise InitError(f"focus must be in (0, 1) (the attention mass on the target offset), got {focus}")
    return math.log(focus * (n_keys - 1) / (1.0 - focus))


def logit_scale(model, att) -> float:
    """The attention-logit multiplier of one layer (from the role map; else 1/√head_dim)."""
    return att.logit_scale()


def _check(model, rmap, o) -> None:
    _validate(o)
    gh, gw = grid_of(rmap)
    table, _ = position_table(model, rmap)
    prefix = rmap.facts.positions.table_prefix
    if table.shape[0] != prefix + gh * gw:
        raise InitError(f"the position table has {table.shape[0]} rows, not the {prefix} prefix rows "
                        f"plus a {gh}x{gw} patch grid the role map reports")
    for att in rmap.attention:
        if att.n_kv_heads != att.n_heads:
            raise InitError(f"{att.module_name}: grouped key/value heads are not supported by "
                            f"structured init")


def _validate(o) -> None:
    """The options alone (checked when a plan is built, before any model is seen)."""
    k = o["kernel_size"]
    if not (isinstance(k, int) and k >= 1 and k % 2 == 1):
        raise InitError(f"kernel_size must be a positive odd integer, got {k!r}")
    if o.get("target", "impulse") not in TARGETS:
        raise InitError(f"target must be one of {', '.join(TARGETS)}, got {o['target']!r}")
    c = o.get("content", "auto")
    if c != "auto" and not (isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c < 1):
        raise InitError(f"content must be 'auto' or a share in [0, 1) (the part of the attention "
                        f"input's variance that is token content at init), got {c!r}")
    ps = o.get("pos_scale", "auto")
    if ps not in ("auto", None) and not (isinstance(ps, (int, float)) and not isinstance(ps, bool)
                                         and math.isfinite(ps) and ps > 0):
        raise InitError(f"pos_scale must be a positive number, 'auto' or None, got {ps!r}")
    if o["vo"] not in ("mimetic", "keep"):
        raise InitError(f"vo must be 'mimetic' or 'keep', got {o['vo']!r}")
    if o.get("offsets", "random") not in ("random", "ordered"):
        raise InitError(f"offsets must be 'random' or 'ordered', got {o['offsets']!r}")
    f = o.get("focus", 0.9)
    if not (isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1):
        raise InitError(f"focus must be in (0, 1) (the attention mass on the target offset), got {f!r}")


@torch.no_grad()
def structured_(model, *, kernel_size: int = 3, offsets: str = "random", focus: float = 0.9,
                target: str = "impulse",
                pos_scale: float | str | None = "auto", content: float | str = "auto", vo: str = "mimetic",
                alpha_vo: float = 0.4, beta_vo: float = 0.4, rcond: float = 1e-6,
                generator: torch.Generator | None = None, role_map=None,
                include_frozen: bool = False):
    """Structured (impulse/convolutional) attention init of a ViT, in place. See module doc.

    Args:
        kernel_size: offsets are drawn from a k×k neighbourhood (3 in the papers).
        offsets: ``"random"`` (iid per layer and head) or ``"ordered"`` (centre-out by head).
        focus: attention mass an interior query puts on its target, from positions alone.
        target: ``"impulse"`` (the papers' one-hot logits) or ``"gaussian"`` (quadratic logits
            τ − ‖r_j − r_i − Δ‖², Cordonnier et al. 2020: a peaked filter that 2-D sin-cos tables
            and tables with fewer positions than width fit exactly).
        pos_scale: multiply a learned position table by this (None or 1: leave it). ``"auto"``:
            18 (the authors' ``norm_p``, meant for timm's std-0.02 tables) when the table's RMS is
            below 0.1, else 1 (a learned table that starts as sin-cos already carries position).
        content: the share φ of the attention input's variance that is token content at init,
            in [0, 1), or ``"auto"`` (estimated from the patch embedding's weights for
            unit-variance pixels against the position table's mean square). The logits are fitted
            to √(1−φ)·LN(P) with the content treated as noise of variance φ (a ridge fit, see
            :func:`fit_bilinear`) and calibrated on such noisy inputs, so the maps survive the
            content that every real token carries. 0 fits positions alone (the papers' code); with
            a fixed 2-D sin-cos table that divides by its tiny singular values and the content
            then drives the logits (q/k weights of norm ~10³: training collapses).
        vo: ``"mimetic"`` (Wv Wo = α₂Z − β₂I, as the authors' code) or ``"keep"``.
        generator: CPU generator for the offsets and the V/O draws.
        include_frozen: also write frozen layers and a frozen (fixed) table; by default a layer
            with a frozen q/k weight is skipped and a fixed table is used as it is.
    Returns ``model``; writes q, k (weights, biases zeroed), the learned position table and, with
    ``vo="mimetic"``, v and o.
    """
    from ..roles import roles
    rmap = role_map if role_map is not None else roles(model)
    o = dict(kernel_size=kernel_size, vo=vo, target=target, content=content, pos_scale=pos_scale,
             offsets=offsets, focus=focus)
    _check(model, rmap, o)
    table, learned = position_table(model, rmap, include_frozen)
    # (checked here, not in _check: an earlier scheme of the chain may draw the table)
    rms = float(table.double().pow(2).mean().sqrt())
    if not (math.isfinite(rms) and rms > 0):
        raise InitError(f"structured init fits the attention maps to the position table, and "
                        f"{rmap.facts.positions.table} is {'all zeros' if rms == 0 else 'not finite'} "
                        f"(Hugging Face DeiT builds it so); draw it first, e.g. "
                        f"init_(model, 'trunc_normal+structured')")
    if not include_frozen:
        rmap = rmap.trainable()
    rmap.require_attention("structured init")
    grid = grid_of(rmap)
    if learned and pos_scale == "auto":
        pos_scale = AUTO_POS_SCALE if float(table.double().pow(2).mean().sqrt()) < 0.1 else None
    if learned and pos_scale is not None:
        if isinstance(pos_scale, str) or not (math.isfinite(pos_scale) and pos_scale > 0):
            raise InitError(f"pos_scale must be a positive number, 'auto' or None, got {pos_scale!r}")
        table.mul_(pos_scale)
    n_pos = table.shape[0]
    n_prefix = rmap.facts.positions.table_prefix
    phi = content_share(rmap, table) if content == "auto" else float(content)
    # the attention input LN(x + P) at init: √(1−φ)·LN(P) from the positions plus content of
    # variance φ per entry, which the fit treats as noise (ridge n·φ) and the calibration samples
    feats = F.layer_norm(table.double().cpu(), (table.shape[-1],), eps=1e-6) * math.sqrt(1.0 - phi)
    noisy = feats
    if phi > 0:
        draw = torch.Generator().manual_seed(0)  # fixed: calibration must not consume the user's stream
        noisy = feats + math.sqrt(phi) * torch.randn(CALIBRATION_DRAWS, *feats.shape, generator=draw,
                                                     dtype=torch.float64)
    tau = logit_gap(focus, n_pos)
    basis = feature_basis(feats, rcond)
    plan = draw_offsets(len(rmap.attention), rmap.attention[0].n_heads, kernel_size, offsets, generator)
    for att, layer_offsets in zip(rmap.attention, plan):
        scale = logit_scale(model, att)
        for h in range(att.n_heads):
            offset = layer_offsets[h % len(layer_offsets)]
            logits = TARGETS[target](grid, n_prefix, offset, tau) / scale
            wq, wk = fit_bilinear(feats, logits, att.head_dim, rcond, basis, ridge=n_pos * phi)
            gain = calibrate(noisy @ wq, noisy @ wk, scale, grid, n_prefix, offset, focus,
                             likelihood_cap=phi > 0)
            wq, wk = wq * math.sqrt(gain), wk * math.sqrt(gain)
            for view, w in ((att.q_head(h), wq), (att.k_head(h), wk)):
                view.copy_(w.to(view.device, view.dtype))
        for proj in (att.q, att.k):
            b = proj.bias_view()
            if b is not None:
                b.zero_()
    if vo == "mimetic":
        from ..mimetic import mimetic_
        mimetic_(model, qk=False, vo=True, alpha_vo=alpha_vo, beta_vo=beta_vo, generator=generator,
                 role_map=rmap, include_frozen=include_frozen)
    return model


def _apply(model, rmap, o, generator) -> None:
    structured_(model, generator=generator, role_map=rmap, **o)


STRUCTURED = Scheme(
    "structured", "Zheng et al. convolutional/impulse attention init for ViTs: each head's attention "
    "map at init is a random k×k impulse filter over the patch grid",
    CITE, apply=_apply, check=_check, validate=_validate,
    options=dict(kernel_size=3, offsets="random", focus=0.9, target="impulse", pos_scale="auto",
                 content="auto", vo="mimetic",
                 alpha_vo=0.4, beta_vo=0.4, rcond=1e-6),
    writes=tuple((r, k) for r in ("q", "k", "v", "o") for k in ("weight", "bias")) + (("pos_embed", "weight"),),
    fixes=("q", "k", "v", "o", "pos_embed"), requires=("attention", "grid"),
    models="ViTs with a patch grid and a position table in the role map's facts (initlab ViT, HF "
           "ViT/DeiT/DINOv2; mean pooling recommended)",
    formula="per head logits s·LN(P)WqWkᵀLN(P)ᵀ = τ·[key = query + Δ_h], Δ_h random in k×k, "
            "e^τ/(e^τ+n−1) = focus; learned P × 18; Wv Wo = 0.4Z − 0.4I")
