"""The initializations language-model trainers use, as per-role rules over the role map.

* ``modded_nanogpt``: KellerJordan/modded-nanogpt's init (uniform attention and MLP-in, zero MLP-out,
  a small normal head that the token embedding copies at init).
* ``modded_nanogpt_vo``: its record #64 (``records/track_1_short/2026-01-30_MimeticValueOutput``):
  per-head V = √β·I, O = −√β·I plus noise, Q/K uniform with std d^-½.
* ``olmo_normal``, ``olmo_llama``, ``olmo_llama_depth``, ``olmo_fan_in``: allenai/OLMo-core's
  ``InitMethod`` (``normalized`` is not here: docs/schemes.md says why).
* ``conditioned``: conditioned initialization (OpenReview cKNOCYPo2W): V a rectangular identity,
  Q and K semi-orthogonal.
* ``mimetic_mlp``: a nonzero mean in the first MLP layer (arXiv 2602.07156).

Notation as in :mod:`initlab.schemes.zoo`: d = width, L = depth, l = block index from 0. Sources are
cited at the commit read: modded-nanogpt ``train_gpt.py`` at 91955ec6 (2026-08-01) and the record's
log ``runs/0f262f64-….txt`` (the script as run); OLMo-core ``init.py`` at 8be24cfb (2026-02-19).
The closed forms (identity and orthogonal blocks) are written through the role map's per-head views,
in the canonical convention y = x @ M (see :mod:`initlab.roles.core`), so fused/separate q/k/v,
nn.Linear/Conv1D and grouped-query attention are all the same code.
"""
from __future__ import annotations

import math

import torch

from ..errors import InitError
from ..roles import BIAS, WEIGHT
from .spec import MATRIX_ROLES, Context, Rule, Scheme, context, draw

MODDED = "KellerJordan/modded-nanogpt train_gpt.py @91955ec6"
RECORD = ("KellerJordan/modded-nanogpt records/track_1_short/2026-01-30_MimeticValueOutput/runs/"
          "0f262f64-20c4-4268-9ae7-d7440c810abd.txt (the script as run; PR #214)")
OLMO = "allenai/OLMo-core src/olmo_core/nn/transformer/init.py @8be24cfb"
BIASES_ZERO = Rule(MATRIX_ROLES, "zeros", kind=BIAS, note="biases 0")  # a router's too (alias of mlp_in)


def _opt(key: str):
    return lambda c: c.opt[key]


def _layer(c: Context) -> int:
    if c.layer is None:
        raise InitError(f"{c.name}: role {c.role} has no block index in the role map, but this "
                        f"scheme's std depends on the layer")
    return c.layer


def _finite(name: str, o: dict, *keys: str, positive: bool = False) -> None:
    for k in keys:
        v = o[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
                or (positive and v == 0):
            raise InitError(f"{name}: option {k} must be a finite number {'> 0' if positive else '>= 0'}, "
                            f"got {v!r}")


def _writes(rules: tuple[Rule, ...], *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    out = list(Scheme("_", "", "", rules=rules).written())
    return tuple(out + [e for e in extra if e not in out])


@torch.no_grad()
def _draw_role(rmap, role: str, rule: Rule, options: dict, generator) -> None:
    """Draw ``rule`` into every weight slot of exactly ``role`` (no alias: an ``mlp_in`` rule here
    never reaches ``mlp_gate``), as :func:`~initlab.schemes.spec.apply_rules` draws."""
    for info, slot in rmap.slots(role):
        region = info.region(slot)
        if region.numel() == 0:
            continue
        x = draw(rule, context(rmap, info, slot, options), region.shape, generator)
        region.copy_(x.to(region.device, region.dtype))


def _gated(rmap) -> bool:
    return bool(rmap.slots("mlp_gate"))


# -- modded-nanogpt ---------------------------------------------------------------------------------
def _modded_std(key: str):
    return lambda c: c.opt[key] * c.width ** -0.5  # std = gain·d^-½ (uniform: bound √3·std)


def _tie_check(name: str):
    def check(model, rmap, o) -> None:
        heads, embeds = rmap.by_role("head"), rmap.by_role("token_embed")
        if o["tie_embed"] and heads and embeds and heads[0].param.shape != embeds[0].param.shape:
            raise InitError(f"{name}: tie_embed copies the head {tuple(heads[0].param.shape)} into the "
                            f"token embedding {tuple(embeds[0].param.shape)}, which has another shape; "
                            f"pass tie_embed=false")
    return check


@torch.no_grad()
def _modded_tie(rmap, o) -> None:
    """modded-nanogpt draws lm_head ~ N(0, 0.005²) and copies it into the token embedding at init
    (train_gpt.py l. 1226-1231): the embedding of token t equals the head's output row t."""
    heads, embeds = rmap.by_role("head"), rmap.by_role("token_embed")
    if o["tie_embed"] and heads and embeds:
        embeds[0].param.detach().copy_(heads[0].param.detach())


def _modded_rules(qk: str, vo: bool) -> tuple[Rule, ...]:
    return (
        Rule(("q", "k"), "uniform", _modded_std(qk)),
        *((Rule(("v", "o"), "uniform", _modded_std("attn_gain")),) if vo else ()),
        Rule(("mlp_in",), "uniform", _modded_std("mlp_gain")),  # a gated MLP's gate too
        Rule(("mlp_out",), "zeros"),
        Rule(("head", "token_embed"), "normal", _opt("head_std")),
        BIASES_ZERO,
    )


_MODDED_RULES = _modded_rules("attn_gain", vo=True)

MODDED_NANOGPT = Scheme(
    "modded_nanogpt", "modded-nanogpt: q,k,v,o and mlp_in uniform with std 0.5·d^-½, mlp_out 0, "
    "head N(0, 0.005²) copied into the token embedding",
    f"{MODDED} l. 1226-1231 (lm_head N(0, 0.005²), embed = lm_head at init), l. 1287-1294 "
    f"(attention banks uniform, std 0.5·d^-½), l. 1303-1308 (c_fc uniform, c_proj zero)",
    rules=_MODDED_RULES, apply=lambda model, rmap, o, g: _modded_tie(rmap, o), check=_tie_check("modded_nanogpt"),
    options=dict(attn_gain=0.5, mlp_gain=0.5, head_std=0.005, tie_embed=True),
    formula="q,k,v,o ~ U(±√3·0.5·d^-½); mlp_in (and gate) ~ U(±√3·0.5·d^-½); mlp_out = 0; head and "
            "token_embed N(0, 0.005²), token_embed := head (tie_embed); biases 0; norms untouched")


def _vo_validate(o: dict) -> None:
    _finite("modded_nanogpt_vo", o, "beta", "noise")


def _vo_check(model, rmap, o) -> None:
    _tie_check("modded_nanogpt_vo")(model, rmap, o)
    for a in rmap.require_attention("modded_nanogpt_vo"):
        span = a.n_kv_heads * a.v_head_dim
        if span > min(a.v.d_in, a.d_model):
            raise InitError(
                f"modded_nanogpt_vo: {a.module_name} has {a.n_kv_heads} value heads of {a.v_head_dim} "
                f"= {span} features, more than its width {a.d_model}; the per-head identity blocks "
                f"need n_kv_heads·head_dim <= d_model")


@torch.no_grad()
def vo_identity_(rmap, beta: float, noise: float, generator: torch.Generator | None = None) -> None:
    """Per head: V^g = √β·E_g, O^h = −√β·E_{g(h)}ᵀ, plus N(0, noise²) on every entry of V and O.

    E_g = I_d[:, g·hd:(g+1)·hd] selects head group g's coordinates of the residual stream, g(h) the
    key/value group of query head h. With one value head per query head (the record's case) this is
    the record's ``W_V[h-block, h-block] = √β·I``, ``W_O[h-block, h-block] = −√β·I`` (its log,
    l. 1091-1105), so Σ_h V^h O^h = −β·I_d up to the noise. With grouped-query attention V has
    n_kv·hd < d columns: each head keeps O^h V^{g(h)} = −β·I_hd and the layer's value-to-output map
    is −β·group_size times the projector onto the first n_kv·hd coordinates.
    """
    sb = math.sqrt(beta)
    for a in rmap.attention:
        hd = a.v_head_dim  # value heads may be wider than the query/key heads (MiMo-V2)
        mv = torch.eye(a.v.d_in, a.v.d_out) * sb  # rectangular identity: column g·hd+i reads row g·hd+i
        mo = torch.zeros(a.o.d_in, a.o.d_out)
        for h in range(a.n_heads):
            g = a.kv_group(h)
            mo[h * hd:(h + 1) * hd, g * hd:(g + 1) * hd] = -sb * torch.eye(hd)
        mv += noise * torch.randn(mv.shape, generator=generator)
        mo += noise * torch.randn(mo.shape, generator=generator)
        a.v.write(mv)
        a.o.write(mo)


_VO_RULES = _modded_rules("qk_gain", vo=False)

MODDED_NANOGPT_VO = Scheme(
    "modded_nanogpt_vo", "modded-nanogpt record #64: per-head V = √β·I, O = −√β·I (β = 0.05) plus "
    "N(0, 0.01²), q,k uniform std d^-½, rest as modded_nanogpt",
    f"{RECORD} l. 1062-1105 (mimetic_vo_init: Q,K uniform std d^-½, per-head ±√β·I, noise), "
    f"l. 1188-1204 (β = 0.05, noise_std = 0.01; c_fc uniform 0.5·d^-½, c_proj 0), l. 1222-1228 "
    f"(lm_head N(0, 0.005²) copied into the embedding)",
    rules=_VO_RULES,
    apply=lambda model, rmap, o, g: (vo_identity_(rmap, o["beta"], o["noise"], g), _modded_tie(rmap, o)),
    validate=_vo_validate, check=_vo_check,
    options=dict(beta=0.05, noise=0.01, qk_gain=1.0, mlp_gain=0.5, head_std=0.005, tie_embed=True),
    writes=_writes(_VO_RULES, ("v", WEIGHT), ("o", WEIGHT)), fixes=("v", "o"), requires=("attention",),
    formula="per head V^g = √β·E_g, O^h = −√β·E_g(h)ᵀ (O^h V^g(h) = −β·I_hd), + N(0, noise²) on all of "
            "V and O (β=0.05, noise=0.01); q,k ~ U(±√3·qk_gain·d^-½), qk_gain=1; mlp_in "
            "U(±√3·0.5·d^-½); mlp_out 0; head, token_embed N(0, 0.005²), token_embed := head; biases 0")


# -- OLMo-core InitMethod -----------------------------------------------------------------------------
def _olmo_emb_std(c: Context) -> float:
    return c.opt["embedding_std"] if c.opt["embedding_std"] is not None else c.opt["std"]


OLMO_NORMAL_RULES = (
    Rule(("q", "k", "v", "o", "mlp_in", "mlp_gate", "mlp_out", "router", "head"), "trunc_normal",
         _opt("std"), 3.0),
    Rule(("token_embed",), "trunc_normal", _olmo_emb_std, 3.0),
    BIASES_ZERO,
)

def _olmo_normal_validate(o: dict) -> None:
    if o["embedding_std"] is not None:
        _finite("olmo_normal", o, "embedding_std")


OLMO_NORMAL = Scheme(
    "olmo_normal", "OLMo-core InitMethod.normal: every Linear and the token embedding trunc-N(0, 0.02²) "
    "cut at ±3σ, biases 0",
    f"{OLMO} l. 30-43 (init_linear: trunc ±3σ, bias 0), l. 96-105 (embeddings), l. 122 (lm_head); "
    f"nn/attention/__init__.py Attention.init_weights",
    rules=OLMO_NORMAL_RULES, validate=_olmo_normal_validate,
    options=dict(std=0.02, embedding_std=None), primary="std",
    formula="q,k,v,o,mlp_gate,mlp_in,mlp_out,router,head trunc-N(σ²) cut ±3σ (σ=0.02); token_embed "
            "trunc-N(embedding_std or σ) ±3σ; biases 0 (= trunc_normal(truncate=3) on a model "
            "without position tables)")


def _olmo_scaled(depth: bool):
    """The "output" std of llama (σ/√(2L)) or llama_depth (σ/√(2(l+1)))."""
    if depth:
        return lambda c: c.opt["std"] / math.sqrt(2.0 * (_layer(c) + 1))
    return lambda c: c.opt["std"] / math.sqrt(2.0 * c.depth)


def _olmo_llama_up(depth: bool):
    def apply(model, rmap, o, generator) -> None:
        """OLMo-core's FeedForward is always gated, w2(act(w1 x) · w3 x): w1 (gate) keeps σ, w3 (up)
        and w2 (down) get the scaled std (init.py l. 160-180: w2 reuses the std w3 set). On a model
        with a gate, mlp_in is w3 and is scaled; on an ungated MLP, mlp_in feeds the activation like
        w1 and keeps σ, so only o and mlp_out are scaled there (the GPT-2 pattern)."""
        std = _olmo_scaled(depth) if _gated(rmap) else _opt("std")
        _draw_role(rmap, "mlp_in", Rule(("mlp_in",), "trunc_normal", std, 3.0), o, generator)
    return apply


def _olmo_llama_rules(depth: bool) -> tuple[Rule, ...]:
    return (
        Rule(("q", "k", "v", "mlp_gate"), "trunc_normal", _opt("std"), 3.0),
        Rule(("o", "mlp_out", "router"), "trunc_normal", _olmo_scaled(depth), 3.0),
        Rule(("token_embed",), "normal", 1.0),
        Rule(("head",), "trunc_normal", lambda c: c.width ** -0.5, 3.0),
        BIASES_ZERO,
    )


def _olmo_llama(name: str, depth: bool) -> Scheme:
    what = "σ/√(2(l+1))" if depth else "σ/√(2L)"
    rules = _olmo_llama_rules(depth)
    return Scheme(
        name, f"OLMo-core InitMethod.{name[5:]}: q,k,v,gate trunc-N(0.02²), o, up and down {what}, "
              f"embedding N(0,1), head d^-½, all cut at ±3σ",
        f"{OLMO} l. 88-89 (embeddings N(0,1)), l. 115-122 (lm_head d^-½), l. 153-180 (w1 σ; w3 and w2 "
        f"{what}), l. 194-197 (MoE router); nn/attention/__init__.py Attention.init_weights (w_q,k,v σ, "
        f"w_out {what})",
        rules=rules, apply=_olmo_llama_up(depth), options=dict(std=0.02), primary="std",
        writes=_writes(rules, ("mlp_in", WEIGHT)),
        formula=f"q,k,v,mlp_gate trunc-N(σ²) (σ=0.02); o, mlp_out, router and a gated MLP's mlp_in "
                f"(OLMo's w3) {what}; ungated mlp_in σ; token_embed N(0,1) untruncated; head "
                f"trunc-N(1/d); cuts ±3σ; biases 0")


OLMO_LLAMA = _olmo_llama("olmo_llama", depth=False)
OLMO_LLAMA_DEPTH = _olmo_llama("olmo_llama_depth", depth=True)


@torch.no_grad()
def _olmo_fan_in_embed(model, rmap, o, generator) -> None:
    """Embeddings N(0, 1/embed_scale²) (init.py l. 92-95), embed_scale from the role map's facts."""
    std = 1.0 / rmap.facts.embed_scale
    _draw_role(rmap, "token_embed", Rule(("token_embed",), "normal", std), o, generator)


OLMO_FAN_IN_RULES = (
    Rule(("q", "k", "v", "o", "mlp_in", "mlp_gate", "mlp_out", "router"), "trunc_normal",
         lambda c: c.fan_in ** -0.5, 3.0),
    Rule(("head",), "trunc_normal", lambda c: c.width ** -0.5, 3.0),
    BIASES_ZERO,
)

OLMO_FAN_IN = Scheme(
    "olmo_fan_in", "OLMo-core InitMethod.fan_in: every matrix trunc-N(1/fan_in) ±3σ, embedding "
    "N(0, 1/embed_scale²), head d^-½, no depth scaling",
    f"{OLMO} l. 70-77, 92-95 (embeddings), 115-122 (lm_head), 154-176 (w1,w3 1/√d, w2 1/√hidden), "
    f"198-200 (router); nn/attention/__init__.py Attention.init_weights (1/√in_features)",
    rules=OLMO_FAN_IN_RULES, apply=_olmo_fan_in_embed,
    writes=_writes(OLMO_FAN_IN_RULES, ("token_embed", WEIGHT)),
    formula="q,k,v,o,mlp_gate,mlp_in,mlp_out,router trunc-N(1/fan_in) ±3σ; head trunc-N(1/d) ±3σ; "
            "token_embed N(0, 1/embed_scale²) (1 without embed scale); biases 0")


# -- conditioned initialization ----------------------------------------------------------------------
def semi_orthogonal(rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Haar-random rows × cols matrix with orthonormal columns (rows >= cols) or rows, float64."""
    n, k = max(rows, cols), min(rows, cols)
    q, r = torch.linalg.qr(torch.randn(n, k, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(k, dtype=q.dtype))
    return q if rows >= cols else q.t()


def _conditioned_validate(o: dict) -> None:
    _finite("conditioned", o, "qk_scale", "v_scale", positive=True)


@torch.no_grad()
def _conditioned_apply(model, rmap, o, generator) -> None:
    for a in rmap.attention:
        a.q.write(o["qk_scale"] * semi_orthogonal(a.q.d_in, a.q.d_out, generator).float())
        a.k.write(o["qk_scale"] * semi_orthogonal(a.k.d_in, a.k.d_out, generator).float())
        a.v.write(o["v_scale"] * torch.eye(a.v.d_in, a.v.d_out))


_CONDITIONED_BIAS = (Rule(("q", "k", "v"), "zeros", kind=BIAS),)

CONDITIONED = Scheme(
    "conditioned", "conditioned init: V a rectangular identity, Q and K semi-orthogonal (condition "
    "number 1), O untouched",
    "OpenReview cKNOCYPo2W (ICLR 2026, 'Conditioned Initialization for Attention'), method as "
    "summarized in its abstract and the papernotes.org digest; the paper's scale and per-head "
    "handling were not recovered (docs/schemes.md)",
    rules=_CONDITIONED_BIAS, apply=_conditioned_apply, validate=_conditioned_validate,
    options=dict(qk_scale=1.0, v_scale=1.0),
    writes=_writes(_CONDITIONED_BIAS, ("q", WEIGHT), ("k", WEIGHT), ("v", WEIGHT)),
    fixes=("q", "k", "v"), requires=("attention",),
    formula="Wq, Wk (d × n·hd, the whole projection) Haar semi-orthogonal × qk_scale: WᵀW = I when "
            "d >= n·hd, else WWᵀ = I; Wv = v_scale·[δ_ij] (rectangular identity, d × n_kv·hd); "
            "q,k,v biases 0; o untouched")


# -- mimetic MLP --------------------------------------------------------------------------------------
TARGETS = ("activation", "up", "both")


#: initlab's placeholder, not the paper's value (which was not recovered): about half the 0.02 std
#: LM inits draw with, so the mean is visible next to the noise without dominating a layer
DEFAULT_MEAN = 0.01


def _mlp_validate(o: dict) -> None:
    if isinstance(o["mean"], bool) or not isinstance(o["mean"], (int, float)) or not math.isfinite(o["mean"]):
        raise InitError(f"mimetic_mlp: mean must be a finite number (the constant added to the first "
                        f"MLP layer, e.g. mimetic_mlp(0.01)), got {o['mean']!r}")
    if o["target"] not in TARGETS:
        raise InitError(f"mimetic_mlp: target must be one of {', '.join(TARGETS)}, got {o['target']!r}")


def _mlp_roles(rmap, target: str) -> tuple[str, ...]:
    if not _gated(rmap):
        return ("mlp_in",)  # an ungated MLP has one first layer, feeding the activation
    return {"activation": ("mlp_gate",), "up": ("mlp_in",), "both": ("mlp_gate", "mlp_in")}[target]


def _mlp_check(model, rmap, o) -> None:
    if not rmap.slots("mlp_in"):
        raise InitError(f"mimetic_mlp shifts the first MLP layer, but {rmap.model_class} has no mlp_in "
                        f"role in its role map")
    if o["target"] == "up" and not _gated(rmap):
        raise InitError(f"mimetic_mlp: target='up' names a gated MLP's up projection, but "
                        f"{rmap.model_class}'s MLP has no gate; use target='activation'")


@torch.no_grad()
def _mlp_apply(model, rmap, o, generator) -> None:
    for role in _mlp_roles(rmap, o["target"]):
        for info, slot in rmap.slots(role):
            info.region(slot).add_(float(o["mean"]))


MIMETIC_MLP = Scheme(
    "mimetic_mlp", "mimetic MLP init: add a constant mean to the first MLP layer's weights (on top of "
    "whatever the chain drew)",
    "arXiv 2602.07156 (Trockman & Kolter, 'Mimetic Initialization of MLPs'), abstract: 'give the "
    "first layer a nonzero mean'; the paper's value of the mean was not recovered, the default is "
    "initlab's (docs/schemes.md)",
    apply=_mlp_apply, validate=_mlp_validate, check=_mlp_check,
    options=dict(mean=DEFAULT_MEAN, target="activation"), primary="mean",
    writes=(("mlp_in", WEIGHT), ("mlp_gate", WEIGHT)),
    formula="W₁ ← W₁ + mean (every entry); W₁ = mlp_in, or for a gated MLP the gate (target="
            "'activation'), the up projection ('up') or both; mean=0.01 is initlab's placeholder, not "
            "the paper's; rest untouched")


LM_ZOO = (MODDED_NANOGPT, MODDED_NANOGPT_VO, OLMO_NORMAL, OLMO_LLAMA, OLMO_LLAMA_DEPTH, OLMO_FAN_IN,
          CONDITIONED, MIMETIC_MLP)
