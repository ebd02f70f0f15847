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

Needs the patch grid, which only the model knows: it is read from ``model.grid`` (initlab's ViT;
an int or an (h, w) pair). Other models are refused with a message.
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


def grid_of(model) -> tuple[int, int]:
    """(rows, cols) of the patch grid, from ``model.grid``; InitError for models without one."""
    g = getattr(unwrap(model), "grid", None)
    if isinstance(g, int) and g > 0:
        return g, g
    if isinstance(g, (tuple, list)) and len(g) == 2 and all(isinstance(x, int) and x > 0 for x in g):
        return int(g[0]), int(g[1])
    raise InitError(
        f"structured init builds convolution-like attention over the patch grid of a vision "
        f"Transformer, but {type(unwrap(model)).__name__} exposes no patch grid (attribute .grid); "
        f"it supports initlab's ViT (create_model('vit-...')), not language models")


def position_table(model, rmap) -> tuple[torch.Tensor, bool]:
    """(table (n_pos, d), learned?) — the role map's pos_embed parameter, else a fixed buffer."""
    infos = rmap.by_role("pos_embed")
    if len(infos) == 1:
        t = infos[0].param.detach()
        return t.reshape(-1, t.shape[-1]), True
    buf = getattr(unwrap(model), "pos_embed", None)
    if isinstance(buf, torch.Tensor) and buf.dim() >= 2:
        return buf.detach().reshape(-1, buf.shape[-1]), False
    raise InitError("structured init acts through the position embeddings, and this model has none "
                    "(build the ViT with pos='learned' or pos='sincos')")


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
                 rcond: float = 1e-6, basis=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Wq, Wk), each (d, rank), minimizing ‖F Wq Wkᵀ Fᵀ − target‖_F over rank-``rank`` products."""
    u, s, v = basis if basis is not None else feature_basis(features, rcond)
    c = u.t() @ target @ u
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


def calibrate(q: torch.Tensor, k: torch.Tensor, scale: float, grid, n_prefix: int, offset,
              focus: float) -> float:
    """Gain c on the logits (c·s·q kᵀ) at which the mean target mass equals ``focus``.

    1 when the fit is exact. When it is not (more positions than head_dim, or tables such as the
    2-D sin-cos one, whose rows are sums of a row code and a column code and cannot express a
    product of row and column shifts), the least-squares logits still peak on the target but
    less sharply; this restores the intended sharpness. The gain is searched over [1e-2, 1e3]
    (two rounds of 61 log-spaced values); if ``focus`` is out of reach, the gain with the largest
    mass is used.
    """
    base = scale * (q @ k.t())
    if abs(float(target_mass(base, grid, n_prefix, offset)) - focus) < 1e-6:
        return 1.0
    lo, hi = -2.0, 3.0
    for _ in range(3):
        cs = torch.logspace(lo, hi, 61, dtype=torch.float64)
        masses = target_mass(cs[:, None, None] * base, grid, n_prefix, offset)
        above = (masses >= focus).nonzero()
        if len(above) == 0:
            return float(cs[int(masses.argmax())])
        i = int(above[0])
        if i == 0:
            return float(cs[0])
        lo, hi = math.log10(float(cs[i - 1])), math.log10(float(cs[i]))
    return 10 ** hi


def logit_gap(focus: float, n_keys: int) -> float:
    """τ with e^τ / (e^τ + n − 1) = focus."""
    if not 0.0 < focus < 1.0:
        raise InitError(f"focus must be in (0, 1) (the attention mass on the target offset), got {focus}")
    return math.log(focus * (n_keys - 1) / (1.0 - focus))


def logit_scale(model, att) -> float:
    """The attention-logit multiplier of one layer (``.scale`` of the module, else 1/√head_dim)."""
    mod = unwrap(model).get_submodule(att.module_name) if att.module_name else None
    s = getattr(mod, "scale", None)
    return float(s) if isinstance(s, (int, float)) else 1.0 / math.sqrt(att.head_dim)


def _check(model, rmap, o) -> None:
    _validate(o)
    grid_of(model)
    table, _ = position_table(model, rmap)
    gh, gw = grid_of(model)
    if table.shape[0] < gh * gw:
        raise InitError(f"the position table has {table.shape[0]} rows for a {gh}x{gw} patch grid")
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
    if o["vo"] not in ("mimetic", "keep"):
        raise InitError(f"vo must be 'mimetic' or 'keep', got {o['vo']!r}")


@torch.no_grad()
def structured_(model, *, kernel_size: int = 3, offsets: str = "random", focus: float = 0.9,
                target: str = "impulse",
                pos_scale: float | None = 18.0, vo: str = "mimetic", alpha_vo: float = 0.4,
                beta_vo: float = 0.4, rcond: float = 1e-6, generator: torch.Generator | None = None,
                role_map=None):
    """Structured (impulse/convolutional) attention init of a ViT, in place. See module doc.

    Args:
        kernel_size: offsets are drawn from a k×k neighbourhood (3 in the papers).
        offsets: ``"random"`` (iid per layer and head) or ``"ordered"`` (centre-out by head).
        focus: attention mass an interior query puts on its target, from positions alone.
        target: ``"impulse"`` (the papers' one-hot logits) or ``"gaussian"`` (quadratic logits
            τ − ‖r_j − r_i − Δ‖², Cordonnier et al. 2020: a peaked filter that 2-D sin-cos tables
            and tables with fewer positions than width fit exactly).
        pos_scale: multiply a learned position table by this (None or 1: leave it).
        vo: ``"mimetic"`` (Wv Wo = α₂Z − β₂I, as the authors' code) or ``"keep"``.
        generator: CPU generator for the offsets and the V/O draws.
    Returns ``model``; writes q, k (weights, biases zeroed), the learned position table and, with
    ``vo="mimetic"``, v and o.
    """
    from ..roles import roles
    rmap = role_map if role_map is not None else roles(model)
    o = dict(kernel_size=kernel_size, vo=vo, target=target)
    _check(model, rmap, o)
    rmap.require_attention("structured init")
    grid = grid_of(model)
    table, learned = position_table(model, rmap)
    if learned and pos_scale is not None:
        if not (math.isfinite(pos_scale) and pos_scale > 0):
            raise InitError(f"pos_scale must be a positive number or None, got {pos_scale}")
        table.mul_(pos_scale)
    n_pos = table.shape[0]
    n_prefix = n_pos - grid[0] * grid[1]
    feats = F.layer_norm(table.double().cpu(), (table.shape[-1],), eps=1e-6)
    tau = logit_gap(focus, n_pos)
    basis = feature_basis(feats, rcond)
    plan = draw_offsets(len(rmap.attention), rmap.attention[0].n_heads, kernel_size, offsets, generator)
    for att, layer_offsets in zip(rmap.attention, plan):
        scale = logit_scale(model, att)
        for h in range(att.n_heads):
            offset = layer_offsets[h % len(layer_offsets)]
            logits = TARGETS[target](grid, n_prefix, offset, tau) / scale
            wq, wk = fit_bilinear(feats, logits, att.head_dim, rcond, basis)
            gain = calibrate(feats @ wq, feats @ wk, scale, grid, n_prefix, offset, focus)
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
                 role_map=rmap)
    return model


def _apply(model, rmap, o, generator) -> None:
    structured_(model, generator=generator, role_map=rmap, **o)


STRUCTURED = Scheme(
    "structured", "Zheng et al. convolutional/impulse attention init for ViTs: each head's attention "
    "map at init is a random k×k impulse filter over the patch grid",
    CITE, apply=_apply, check=_check, validate=_validate,
    options=dict(kernel_size=3, offsets="random", focus=0.9, target="impulse", pos_scale=18.0, vo="mimetic",
                 alpha_vo=0.4, beta_vo=0.4, rcond=1e-6),
    writes=tuple((r, k) for r in ("q", "k", "v", "o") for k in ("weight", "bias")) + (("pos_embed", "weight"),),
    fixes=("q", "k", "v", "o", "pos_embed"), requires=("attention", "grid"),
    models="ViTs with a known patch grid (initlab ViT; mean pooling recommended)",
    formula="per head logits s·LN(P)WqWkᵀLN(P)ᵀ = τ·[key = query + Δ_h], Δ_h random in k×k, "
            "e^τ/(e^τ+n−1) = focus; learned P × 18; Wv Wo = 0.4Z − 0.4I")
