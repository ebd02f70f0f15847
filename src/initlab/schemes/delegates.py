"""Schemes that delegate to one implementation elsewhere in initlab (never a second copy).

* ``mimetic`` and its presets call :func:`initlab.mimetic.mimetic_` on the shared role map; their
  options are checked by :func:`initlab.mimetic.check_options` before anything is written.
* ``standard``, ``nt``, ``hybrid``, ``mu`` (and ``s=<float>``) are the effective-theory
  parametrizations (arXiv 2304.02034). They carry no code of their own: the init plan
  (:class:`initlab.schemes.InitPlan`) builds the one :class:`~initlab.parametrization.Parametrization`
  of a spec and runs :func:`initlab.parametrization.parametrize_` with it, and the training engine
  builds its optimizer groups from the same object.
"""
from __future__ import annotations

from ..mimetic import PRESETS, check_options, mimetic_
from ..parametrization import DEPTH_NAMED, NAMED
from .spec import MATRIX_ROLES, Scheme

ATTN = ("q", "k", "v", "o")
# Forwarded to initlab.mimetic.mimetic_ when not None (None = mimetic_'s own default / preset value)
_MIMETIC_OPTIONS = dict(preset="vision", alpha_qk=None, beta_qk=None, alpha_vo=None, beta_vo=None,
                        vo_sign=None, noise_dist=None, qk=True, vo=True, zero_bias=None,
                        pos_embed=None, svd=None, vo_layout=None)
MIMETIC_CITE = "arXiv 2305.09828 (Trockman & Kolter, ICML 2023)"


def _mimetic_apply(model, rmap, o, generator) -> None:
    mimetic_(model, generator=generator, role_map=rmap, **{k: v for k, v in o.items() if v is not None})


def _writes(roles) -> tuple:
    return tuple((r, k) for r in roles for k in ("weight", "bias"))


def _mimetic_validate(o: dict) -> None:
    check_options(**{k: v for k, v in o.items() if v is not None})


def mimetic_scheme(name: str, description: str, *, preset: str = "vision", qk: bool = True,
                   vo: bool = True) -> Scheme:
    options = {**_MIMETIC_OPTIONS, "preset": preset, "qk": qk, "vo": vo}
    touched = (("q", "k") if qk else ()) + (("v", "o") if vo else ())
    v = PRESETS[preset]
    parts = []
    if qk:
        parts.append(f"per head Wq Wkᵀ ≈ {v.get('alpha_qk', 'α₁')}·Z + {v.get('beta_qk', 'β₁')}·I "
                     f"(rank head_dim)")
    if vo:
        sign = "+" if v.get("vo_sign", -1) > 0 else "−"
        parts.append(f"Wv Wo = {v.get('alpha_vo', 'α₂')}·Z {sign} {v.get('beta_vo', 'β₂')}·I")
    # (mimetic_'s optional pos_embed="sincos" also writes the position table; not listed, since
    # it is off by default)
    return Scheme(name, description, MIMETIC_CITE, apply=_mimetic_apply, validate=_mimetic_validate,
                  options=options, layerwise=True,  # mimetic_ gathers one layer at a time
                  writes=_writes(touched), fixes=touched,
                  requires=("attention",),
                  formula="; ".join(parts) + f" (preset {preset!r}); Z_ij iid var 1/d; attention "
                          f"biases 0; rest untouched")


MIMETIC = (
    mimetic_scheme("mimetic", "mimetic attention init, the paper's vision values (= mimetic-vision)"),
    mimetic_scheme("mimetic-vision", "mimetic attention init, α₁=β₁=0.7, α₂=β₂=0.4 (vision)"),
    mimetic_scheme("mimetic-language", "mimetic attention init, the 'language' preset "
                   "(docs/mimetic.md; the paper's LM values were not recovered)", preset="language"),
    mimetic_scheme("mimetic-qk", "mimetic QK products only (identity-like attention), V/O untouched",
                   vo=False),
    mimetic_scheme("mimetic-vo", "mimetic V·O product only (−β₂I), Q/K untouched", qk=False),
)

PARAM_CITE = "arXiv 2304.02034 (effective theory of Transformers at init); arXiv 2203.03466 (μP)"
# what parametrize_ rewrites: every weight and bias, norms reset to 1/0; branch gains are kept
PARAM_WRITES = _writes(("patch_embed", "token_embed", "pos_embed", "cls_token") + MATRIX_ROLES + ("norm",))


# options of the plan's Parametrization when given (None = the parametrization's own default)
PARAM_OPTIONS = dict(base_width=None, init_style=None, mlp_factors=None, attn_scale=None, base_depth=None,
                     eps_scaling=None)


def parametrization_scheme(label: str, description: str | None = None) -> Scheme:
    return Scheme(label, description or f"effective-theory parametrization {label}", PARAM_CITE,
                  options=dict(PARAM_OPTIONS),
                  writes=PARAM_WRITES, parametrization=label,
                  formula="initlab.parametrization.parametrize_ (see docs/parametrizations.md); the "
                          "engine also builds its optimizer groups from it")


# one scheme per named member of the family (initlab.parametrization.NAMED: names, s, descriptions)
PARAMS = tuple(parametrization_scheme(name, description) for name, (_, description) in NAMED.items()) + \
    tuple(parametrization_scheme(name, description) for name, (_, _, description) in DEPTH_NAMED.items())
