"""The effective-theory family of parametrizations (Dinan, Yaida, Zhang, arXiv 2304.02034).

One :class:`Parametrization` describes three things, all read from the role map
(:func:`initlab.roles`), never from attributes stored on parameters:

* **initialization** (eqs 1.25-1.34): per-role variance C_G/fan_in (or C_G for the tables), the head
  variance C_head/n^(1+s) and the tied-head rescale N_rescale = n^(-(1+s)/2); see
  :func:`parametrize_`;
* **per-group learning-rate factors** (eqs 1.99-1.116) for SGD (λ_G) and AdamW (λ̃_G), with every
  non-head group multiplied by n^s (SGD) or n^(s/2) (AdamW); see :func:`param_groups`;
* **weight decay** as the paper's AdamW applies it, θ ← (1 − η·wd)·θ − λ̃·η·update: the decay is
  *not* multiplied by λ̃, so each PyTorch group gets ``weight_decay = wd / λ̃_G`` (PyTorch decays by
  group lr × group weight_decay = η·λ̃·wd/λ̃ = η·wd).

Members: ``standard`` (no lr factors, head std n^-1/2, N_rescale 1), ``nt`` (s=0), ``hybrid``
(s=1/2), ``mu`` (s=1) and any ``s=<float>`` in [0, 1]; each composes with a depth exponent α
(``"nt,depth=0.5"``; named: ``depth-mup`` = MU with α = 1/2, ``completep`` = MU with α = 1): every
residual branch × (L/L_base)^-α through the role map's control, the tensors inside the blocks get
AdamW lr × (L/L_base)^(α-1), and AdamW ε is scaled per group (EleutherAI/nanoGPT-mup, branch
``completep``, model.py; see docs/parametrizations.md, "Depth"). With ``base_width`` every width power n^e of a
learning-rate factor becomes (n/n_base)^e (all factors are 1 at the base width, tune there and
transfer); see ``docs/parametrizations.md`` for the row-by-row map to the paper's tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping

import torch
from torch import nn

from .errors import ConfigError, InitError
from .output import text_table
from .roles import BIAS, ParamInfo, Role, RoleMap, Slot, roles
from .roles.core import require_materialized

#: the named members of the family, declared once: name -> (s, description); "standard" has no s.
#: The init schemes of the same names (initlab.schemes.delegates) are made from this table.
NAMED = {
    "standard": (None, "effective-theory standard parametrization: per-role C_G/fan_in variances, no width "
                       "factors in the learning rates"),
    "nt": (0.0, "neural-tangent parametrization (s=0): per-role variances, per-group lr/wd width scalings"),
    "hybrid": (0.5, "hybrid √(NT·MU) parametrization (s=½)"),
    "mu": (1.0, "maximal-update parametrization (s=1, μP), see docs/parametrizations.md"),
}
NAMED_S = {name: s for name, (s, _) in NAMED.items() if s is not None}
#: the named depth members: name -> (s, depth α, description). Both sit on top of MU (s = 1); every
#: residual branch is multiplied by (L/L_base)^-α (EleutherAI/nanoGPT-mup, branch completep, model.py).
DEPTH_NAMED = {
    "depth-mup": (1.0, 0.5, "Depth-μP: μP plus residual branches × (L/L_base)^-1/2 and hidden AdamW "
                            "lr × (L/L_base)^-1/2 (arXiv 2310.02244, 2309.16620)"),
    "completep": (1.0, 1.0, "CompleteP: μP plus residual branches × (L/L_base)^-1 and depth-scaled AdamW ε "
                            "(arXiv 2505.01618; EleutherAI/nanoGPT-mup branch completep)"),
}
ALIASES = {"sp": "standard", "ntk": "nt", "ntp": "nt", "mup": "mu", "μp": "mu", "maximal": "mu",
           "depth-μp": "depth-mup", "depthmup": "depth-mup", "complete-p": "completep"}
EPS_SCALINGS = ("none", "completep", "split")
#: roles whose tensors sit inside a residual branch (with in-block norms: "hidden" in CompleteP's code)
BRANCH_ROLES = ("q", "k", "v", "o", "mlp_in", "mlp_gate", "mlp_out", "router", "gain")
OPTIMIZERS = ("adamw", "sgd")
INIT_STYLES = ("vit", "lm")
MLP_FACTORS = ("paper", "full")

# Variance constants C_G of the paper's ViT runs (section 2 of the digest) and their distributions.
# "fan_in": variance C/fan_in of the slot; "table": variance C (not divided by width);
# "head": C/(n * w^s) (w = n, or n/n_base with a base width).
VIT_CONSTANTS: dict[str, float] = {
    "patch_embed": 1.0,
    "pos_embed": 0.02 ** 2,
    "cls_token": 0.02 ** 2,  # not in the paper (no class token): treated as a position-table row
    "q": 0.5, "k": 0.5, "v": 0.5,  # Xavier on a fused qkv: 2/(n+3n) = (1/2)/n
    "o": 1.0 / 3.0,  # PyTorch Linear default, uniform ±1/sqrt(n)
    "mlp_in": 0.4,  # Xavier on (n, 4n): 2/(5n)
    "mlp_out": 1.6,  # Xavier on (4n, n): 2/(5n) = 1.6/(4n)
    "head": 1.0,
    "token_embed": 1.0,  # C_WE of the NT language runs; "standard" uses 0.02^2
}
STANDARD_TOKEN_EMBED = 0.02 ** 2
LM_STD = 0.02  # the paper's language runs (fairseq): std 0.02 for every weight
DISTRIBUTIONS: dict[str, str] = {
    "patch_embed": "normal", "pos_embed": "normal", "cls_token": "normal", "token_embed": "normal",
    "q": "uniform", "k": "uniform", "v": "uniform", "o": "uniform",
    "mlp_in": "uniform", "mlp_out": "uniform", "head": "normal",
}
_FAN_IN_ROLES = ("patch_embed", "q", "k", "v", "o", "mlp_in", "mlp_out")
_TABLE_ROLES = ("pos_embed", "cls_token", "token_embed")
# Roles that follow another role's rules: a gated MLP's gate is an MLP-in matrix; an MoE router maps
# width n to a fixed number of experts, so like the head it is a readout (finite fan-out).
ROLE_ALIASES = {"mlp_gate": "mlp_in", "router": "head"}
# Roles whose tensors PyTorch should not decay unless asked (biases are never decayed either).
DEFAULT_NO_DECAY = ("norm", "pos_embed", "cls_token", "gain")


@dataclass(frozen=True)
class Parametrization:
    """One member of the effective-theory family.

    Args:
        name: ``"standard"``, ``"nt"``, ``"hybrid"``, ``"mu"`` or ``"s=<float>"``.
        s: the family index in [0, 1]; ``None`` for standard.
        base_width: optional n_base; learning-rate factors become (n/n_base)^e, and the extra
            n^-s of the head variance and tied-head rescale becomes (n/n_base)^-s.
        constants: per-role variance constants C_G overriding :data:`VIT_CONSTANTS`
            (keys: patch_embed, pos_embed, cls_token, token_embed, q, k, v, o, mlp_in, mlp_out, head).
        distributions: per-role ``"uniform"``/``"normal"`` overriding :data:`DISTRIBUTIONS`.
        init_style: ``"vit"`` (C_G/fan_in with the ViT-run constants) or ``"lm"`` (the paper's
            language runs: every body weight N(0, 0.02^2); only C_WE, the head and N_rescale vary).
        mlp_factors: ``"paper"`` (the experiments' choice, footnote 41: MLP-in and -out get the
            same factor as Q, K, V, U) or ``"full"`` (the tables' M-dependent factors).
        attn_scale: attention logit scale set by :func:`parametrize_`: ``"sqrt"`` (1/sqrt(head_dim),
            the paper's), ``"linear"`` (1/head_dim, true μP), a number, or ``None`` (leave as is).
        depth_alpha: α in [0, 1] of the depth family (``None``: no depth scaling): every residual
            branch's output × m_L^-α, m_L = L/L_base; AdamW lr of the tensors inside the blocks
            (weights, biases, in-block norms) × m_L^(α-1) (SGD: m_L^(2α-1), our inference); α = 1/2 is
            Depth-μP (``depth-mup``), α = 1 CompleteP (``completep``).
        base_depth: L_base (default 1: m_L = L), the depth at which every depth factor is 1.
        eps_scaling: AdamW ε per group: ``"completep"`` (the reference code: every group
            ε·m_w^-1·m_L^-α), ``"split"`` (arXiv 2512.22382: embeddings, head and final norm ε·m_w^-1,
            the tensors inside the blocks ε·m_w^-1·m_L^-α) or ``"none"``; default ``"completep"`` with a
            depth_alpha, else ``"none"``. m_w = n/n_base (1 without a base width); for s < 1 the width
            part is m_w^-(1+s)/2 (the per-entry gradient size, our inference), 1 for standard.
    """

    name: str = "standard"
    s: float | None = None
    base_width: int | None = None
    constants: Mapping[str, float] = field(default_factory=dict)
    distributions: Mapping[str, str] = field(default_factory=dict)
    init_style: str = "vit"
    mlp_factors: str = "paper"
    attn_scale: str | float | None = "sqrt"
    depth_alpha: float | None = None
    base_depth: int | None = None
    eps_scaling: str | None = None

    def __post_init__(self):
        # own copies, so that a caller's dict changing later cannot change this parametrization
        object.__setattr__(self, "constants", dict(self.constants))
        object.__setattr__(self, "distributions", dict(self.distributions))
        # the depth part of a name ("completep", "nt,depth=0.5") and depth_alpha are one fact too
        if not isinstance(self.name, str):
            raise ConfigError(f"parametrization must be a string like 'nt' or 's=0.3', got {self.name!r}")
        width_name, named_alpha = _split_depth(self.name)
        a = self.depth_alpha
        if a is not None and (isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a)
                              or not 0.0 <= a <= 1.0):
            raise ConfigError(f"depth_alpha must be a number in [0, 1] (0.5 = depth-mup, 1 = completep), "
                              f"got {a!r}")
        if named_alpha is not None and a is not None and float(a) != named_alpha:
            raise ConfigError(f"parametrization name {self.name!r} means depth_alpha={named_alpha:g} but "
                              f"depth_alpha={a} was given; pass one of them")
        object.__setattr__(self, "depth_alpha", None if a is None and named_alpha is None else
                           float(named_alpha if a is None else a))
        object.__setattr__(self, "name", width_name)
        if self.s is not None:
            if isinstance(self.s, bool) or not isinstance(self.s, (int, float)) or not (0.0 <= self.s <= 1.0):
                raise ConfigError(f"parametrization s must be a number in [0, 1], got {self.s!r}")
            object.__setattr__(self, "s", float(self.s))
        # name and s are one fact: Parametrization("nt") is NT, Parametrization(s=1.0) is "mu", and
        # a name that contradicts s is refused
        named = parse_s(self.name) if self.name != "standard" or self.s is None else self.s
        if self.name == "standard" and self.s is not None:
            object.__setattr__(self, "name", _name_of(self.s))
        elif self.s is None:
            object.__setattr__(self, "s", named)
            object.__setattr__(self, "name", _name_of(named))
        elif named != self.s:
            raise ConfigError(f"parametrization name {self.name!r} means s={named} but s={self.s} was "
                              f"given; pass one of them (e.g. Parametrization('nt') or "
                              f"Parametrization(s=0.0))")
        else:
            object.__setattr__(self, "name", _name_of(self.s))
        if self.base_width is not None and (isinstance(self.base_width, bool) or
                                            not isinstance(self.base_width, int) or self.base_width <= 0):
            raise ConfigError(f"base_width must be a positive integer, got {self.base_width!r}")
        if self.init_style not in INIT_STYLES:
            raise ConfigError(f"init_style must be one of {', '.join(INIT_STYLES)}, got {self.init_style!r}")
        if self.mlp_factors not in MLP_FACTORS:
            raise ConfigError(f"mlp_factors must be 'paper' or 'full', got {self.mlp_factors!r}")
        if self.mlp_factors == "full" and self.base_width is not None:
            raise ConfigError("mlp_factors='full' has no effect with a base_width (every factor is "
                              "(n/n_base)^e, 1 at the base width); drop base_width or use "
                              "mlp_factors='paper'")
        for role, c in self.constants.items():
            if role not in VIT_CONSTANTS:
                raise ConfigError(f"no variance constant for role {role!r}; known: {', '.join(VIT_CONSTANTS)}")
            if not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
                raise ConfigError(f"variance constant C_{role} must be a finite number >= 0, got {c!r}")
        for role, d in self.distributions.items():
            if role not in DISTRIBUTIONS or d not in ("uniform", "normal"):
                raise ConfigError(f"distribution for {role!r} must be 'uniform' or 'normal' "
                                  f"(roles: {', '.join(DISTRIBUTIONS)}), got {d!r}")
        a = self.attn_scale
        if not (a is None or a in ("sqrt", "linear") or
                (isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) and a > 0)):
            raise ConfigError(f"attn_scale must be 'sqrt', 'linear', a positive number or None, got {a!r}")
        if self.base_depth is not None and (isinstance(self.base_depth, bool) or
                                            not isinstance(self.base_depth, int) or self.base_depth <= 0):
            raise ConfigError(f"base_depth must be a positive integer, got {self.base_depth!r}")
        if self.eps_scaling is not None and self.eps_scaling not in EPS_SCALINGS:
            raise ConfigError(f"eps_scaling must be one of {', '.join(EPS_SCALINGS)}, got {self.eps_scaling!r}")
        object.__setattr__(self, "name", _name_of(self.s, self.depth_alpha))

    def __hash__(self) -> int:
        return hash((self.name, self.s, self.base_width, tuple(sorted(self.constants.items())),
                     tuple(sorted(self.distributions.items())), self.init_style, self.mlp_factors,
                     self.attn_scale, self.depth_alpha, self.base_depth, self.eps_scaling))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def parse(cls, spec: "str | Parametrization", base_width: int | None = None,
              **options) -> "Parametrization":
        """``"standard"``, ``"nt"``, ``"hybrid"``, ``"mu"`` or ``"s=0.3"`` (also ``sp``, ``ntk``, ``mup``),
        the depth members ``"depth-mup"`` and ``"completep"``, or any of them with a depth exponent
        ``"nt,depth=0.5"``.

        ``options`` set the other fields (constants, init_style, mlp_factors, attn_scale,
        depth_alpha, base_depth, eps_scaling, ...).
        Raises :class:`ConfigError` with a one-line message for anything else.
        """
        if isinstance(spec, Parametrization):
            changes = dict(options)
            if base_width is not None:
                changes["base_width"] = base_width
            return replace(spec, **changes) if changes else spec
        s = parse_s(spec)
        return cls(name=str(spec).strip().lower().replace(" ", ""), s=s, base_width=base_width, **options)

    @property
    def is_standard(self) -> bool:
        return self.s is None

    def __str__(self) -> str:
        bases = [f"base width {self.base_width}"] if self.base_width else []
        bases += [f"base depth {self.base_depth}"] if self.base_depth and self.depth_alpha is not None else []
        return self.name + (f" ({', '.join(bases)})" if bases else "")

    # -- depth ----------------------------------------------------------------------------------
    def _m_depth(self, depth: int) -> float:
        """m_L = L/L_base (L_base = 1 without a base depth)."""
        return max(int(depth), 1) / (self.base_depth or 1)

    def branch_multiplier(self, depth: int) -> float:
        """The residual-branch multiplier m_L^-α (1 without a depth exponent): CompleteP's
        ``residual_scaling = 1/(depth_multiplier ** depth_alpha_exp)`` (model.py, class Block)."""
        if self.depth_alpha is None:
            return 1.0
        return self._m_depth(depth) ** (-self.depth_alpha)

    def depth_lr_factor(self, optimizer: str, *, depth: int, hidden: bool) -> float:
        """The depth part of a group's lr: m_L^(α-1) (AdamW) for a tensor inside the blocks
        (``hidden``), 1 for embeddings, head and final norm (CompleteP's ``depth_lr_scaling``); SGD:
        m_L^(2α-1) (our inference: the branch multiplier scales the gradient by m_L^-α too)."""
        if self.depth_alpha is None or not hidden:
            return 1.0
        a = self.depth_alpha
        exp = (a - 1.0) if _check_optimizer(optimizer) == "adamw" else (2.0 * a - 1.0)
        return self._m_depth(depth) ** exp

    @property
    def eps_rule(self) -> str:
        """The AdamW ε rule in force: ``eps_scaling``, else ``"completep"`` with a depth exponent."""
        if self.eps_scaling is not None:
            return self.eps_scaling
        return "completep" if self.depth_alpha is not None else "none"

    def eps_factor(self, *, width: int, depth: int, hidden: bool) -> float:
        """AdamW ε of a group relative to the base ε: the width part m_w^-(1+s)/2 (m_w^-1 at s = 1;
        1 for standard, m_w = n/n_base or 1 without a base width) times m_L^-α for every group
        (``"completep"``, the reference code) or for the tensors inside the blocks only (``"split"``)."""
        rule = self.eps_rule
        if rule == "none":
            return 1.0
        m_w = width / self.base_width if self.base_width else 1.0
        f = 1.0 if self.is_standard else m_w ** (-(1.0 + self.s) / 2.0)
        if self.depth_alpha is not None and (rule == "completep" or hidden):
            f *= self._m_depth(depth) ** (-self.depth_alpha)
        return f

    # -- width powers -------------------------------------------------------------------------
    def _w(self, width: int) -> float:
        """The width that enters a power: n, or n/n_base with a base width."""
        return width / self.base_width if self.base_width else float(width)

    # -- initialization -----------------------------------------------------------------------
    def constant(self, role: str) -> float:
        """C_G for a role (overrides first, then the ViT-run constants; standard C_WE = 0.02^2)."""
        role = ROLE_ALIASES.get(str(role), str(role))
        if role in self.constants:
            return float(self.constants[role])
        if role == "token_embed" and self.is_standard:
            return STANDARD_TOKEN_EMBED
        return VIT_CONSTANTS[role]

    def distribution(self, role: str) -> str:
        role = ROLE_ALIASES.get(str(role), str(role))
        if self.init_style == "lm" and role in _FAN_IN_ROLES:
            return self.distributions.get(role, "normal")
        return self.distributions.get(role, DISTRIBUTIONS[role])

    def variance(self, role: str, *, fan_in: int, width: int) -> float:
        """Init variance of a weight slot playing ``role`` (fan_in of the slot, model width n).

        fan-in roles: C_G/fan_in (``init_style="lm"``: 0.02^2, or C_G if overridden); tables
        (pos, cls, token embedding): C_G; head: C_head/(fan_in · w^s), w = n or n/n_base
        (standard: s = 0). ``mlp_gate`` follows ``mlp_in``, ``router`` the head.
        """
        role = ROLE_ALIASES.get(str(role), str(role))
        if role in _FAN_IN_ROLES:
            if self.init_style == "lm":
                return float(self.constants.get(role, LM_STD ** 2))
            return self.constant(role) / max(fan_in, 1)
        if role in _TABLE_ROLES:
            return self.constant(role)
        if role == "head":
            s = self.s or 0.0
            return self.constant("head") / (max(fan_in, 1) * self._w(width) ** s)
        raise InitError(f"no initialization variance for role {role!r}")

    def head_multiplier(self, width: int, *, tied: bool) -> float:
        """N_rescale: n^-(1+s)/2 for a tied head (n^-1/2 · (n/n_base)^-s/2 with a base width);
        1 for an untied head (its variance carries the n^-s) and for standard."""
        if not tied or self.is_standard:
            return 1.0
        return width ** -0.5 * self._w(width) ** (-self.s / 2)

    def logit_scale(self, head_dim: int) -> float | None:
        """Attention logit multiplier, or None to leave the model's own."""
        a = self.attn_scale
        if a is None:
            return None
        if a == "sqrt":
            return 1.0 / math.sqrt(head_dim)
        if a == "linear":
            return 1.0 / head_dim
        return float(a)

    # -- learning rates -----------------------------------------------------------------------
    def lr_rule(self, role: str, kind: str, optimizer: str, *, fan_in: int = 1,
                fan_out: int = 1) -> tuple[float, float]:
        """(constant, width exponent) of λ_G (SGD) or λ̃_G (AdamW) for one slot, s included.

        The paper's factor is ``constant * n**exponent``. Standard: (1, 0). ``fan_in``/``fan_out``
        are the slot's (for n_patch, M = mlp ratio and n_out).
        """
        optimizer = _check_optimizer(optimizer)
        if self.is_standard:
            return 1.0, 0.0
        role = ROLE_ALIASES.get(str(role), str(role))
        adam = optimizer == "adamw"
        head = role == "head"
        if role == "other":
            return 1.0, 0.0  # unmapped tensors: no factor (documented)
        n_out = max(fan_out, 1)  # a zero-size head tensor has no outputs to average over
        if head and kind == BIAS:  # b_head: 1 (SGD), n_out^-1/2 (AdamW), never multiplied by n^s
            return (n_out ** -0.5 if adam else 1.0), 0.0
        if head:  # W_head: 1/n (SGD), 1/(n sqrt(n_out)) (AdamW)
            return (n_out ** -0.5 if adam else 1.0), -1.0
        if kind == BIAS or role in ("norm", "gain", "pos_embed", "cls_token", "token_embed"):
            # b_PE, W_WE: 1 (SGD), n^-1/2 (AdamW); hidden biases, norms, gains, cls: same by inference
            const, exp = 1.0, (-0.5 if adam else 0.0)
        elif role == "patch_embed":
            const, exp = 1.0 / max(fan_in, 1), (-0.5 if adam else 0.0)
        elif role in ("q", "k", "v", "o"):
            const, exp = 1.0, (-1.5 if adam else -1.0)
        elif role == "mlp_in":  # fan_out = M n
            m = fan_out / max(fan_in, 1)
            const = (m ** -0.5 if adam else 1.0) if self.mlp_factors == "full" else 1.0
            exp = -1.5 if adam else -1.0
        elif role == "mlp_out":  # fan_in = M n
            m = fan_in / max(fan_out, 1)
            const = (1.0 / m) if self.mlp_factors == "full" else 1.0
            exp = -1.5 if adam else -1.0
        else:
            raise InitError(f"no learning-rate rule for role {role!r}")
        return const, exp + (self.s / 2 if adam else self.s)

    def lr_factor(self, role: str, kind: str, optimizer: str, *, width: int, fan_in: int = 1,
                  fan_out: int = 1) -> float:
        """λ_G or λ̃_G at width n: constant·n^e, or (n/n_base)^e with a base width (=1 there)."""
        const, exp = self.lr_rule(role, kind, optimizer, fan_in=fan_in, fan_out=fan_out)
        if self.base_width:
            return self._w(width) ** exp
        return const * float(width) ** exp


def parse_member(spec: str) -> tuple[float | None, float | None]:
    """(s, depth α) of a parametrization name: ``"completep"`` -> (1, 1), ``"depth-mup"`` -> (1, 0.5),
    ``"nt,depth=0.5"`` -> (0, 0.5), ``"mu"`` -> (1, None). :class:`ConfigError` otherwise."""
    width, alpha = _split_depth(spec)
    return parse_s(width), alpha


def _split_depth(spec) -> tuple[str, float | None]:
    """(width member name, depth α or None) of a name; a depth member gives ("mu", α)."""
    if not isinstance(spec, str):
        raise ConfigError(f"parametrization must be a string like 'nt' or 's=0.3', got {spec!r}")
    key = spec.strip().lower().replace(" ", "")
    key = ALIASES.get(key, key)
    if key in DEPTH_NAMED:
        return "mu", DEPTH_NAMED[key][1]
    if "," not in key:
        return key, None
    width, _, rest = key.partition(",")
    if not rest.startswith("depth="):
        raise ConfigError(f"parametrization {spec!r}: after the comma write depth=<α in [0, 1]>, "
                          f"e.g. 'nt,depth=0.5'")
    try:
        alpha = float(rest[len("depth="):])
    except ValueError:
        raise ConfigError(f"cannot read the depth exponent of {spec!r}; write e.g. 'mu,depth=0.5'") from None
    if not math.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"parametrization {spec!r}: depth must lie in [0, 1] (0.5 = depth-mup, 1 = completep)")
    width = ALIASES.get(width, width)
    if width in DEPTH_NAMED:
        raise ConfigError(f"parametrization {spec!r}: {width} already sets the depth exponent; write "
                          f"'mu,depth={alpha:g}' instead")
    return width, alpha


def parse_s(spec: str) -> float | None:
    """The family index of a parametrization name: None for standard, 0 for nt, 0.5 for hybrid,
    1 for mu (and the depth members depth-mup, completep), x for ``"s=x"`` (aliases sp, ntk, ntp,
    mup, μp, maximal); a ``",depth=α"`` suffix is allowed. :class:`ConfigError` otherwise."""
    key, _ = _split_depth(spec)
    if key == "standard":
        return None
    if key in NAMED_S:
        return NAMED_S[key]
    if key.startswith("s="):
        try:
            s = float(key[2:])
        except ValueError:
            raise ConfigError(f"cannot read s from parametrization {spec!r}; write e.g. 's=0.3'") from None
        if not math.isfinite(s) or not 0.0 <= s <= 1.0:
            raise ConfigError(f"parametrization {spec!r}: s must lie in [0, 1] (0 = nt, 0.5 = hybrid, 1 = mu)")
        return s
    raise ConfigError(f"unknown parametrization {spec!r}; choose standard, nt, hybrid, mu, s=<value in [0, 1]>, "
                      f"depth-mup, completep, or one of them with ',depth=<α>'")


def _name_of(s: float | None, depth_alpha: float | None = None) -> str:
    if depth_alpha is not None:
        for name, (ds, da, _) in DEPTH_NAMED.items():
            if s == ds and depth_alpha == da:
                return name
        return f"{_name_of(s)},depth={depth_alpha:g}"
    if s is None:
        return "standard"
    for name, value in NAMED_S.items():
        if s == value:
            return name
    return f"s={s:g}"


def _check_optimizer(optimizer: str) -> str:
    opt = str(optimizer).lower()
    if opt not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be 'adamw' or 'sgd' for parametrized groups, got {optimizer!r}")
    return opt


def _coerce(p) -> Parametrization:
    return p if isinstance(p, Parametrization) else Parametrization.parse(p)


def is_tied(rmap: RoleMap) -> bool:
    """True when the output layer is the token embedding (no separate head weight)."""
    if rmap.controls.tied_head is not None:
        return bool(rmap.controls.tied_head)
    return bool(rmap.by_role(Role.TOKEN_EMBED)) and not rmap.by_role(Role.HEAD)


# -- initialization ---------------------------------------------------------------------------------
def _draw(shape, var: float, dist: str, generator) -> torch.Tensor:
    """i.i.d. mean-0 draws with variance ``var`` on CPU (so a CPU generator works for any device)."""
    if dist == "normal":
        return torch.randn(shape, generator=generator, dtype=torch.float32) * math.sqrt(var)
    bound = math.sqrt(3.0 * var)
    return (torch.rand(shape, generator=generator, dtype=torch.float32) * 2 - 1) * bound


@torch.no_grad()
def _write(view: torch.Tensor, value: torch.Tensor) -> None:
    view.copy_(value.to(device=view.device, dtype=view.dtype))


def _parametrize_tensors(rmap: RoleMap, p: Parametrization, keep: set, generator,
                         include_frozen: bool = False) -> None:
    width = rmap.width
    for info in rmap:
        if info.frozen and not include_frozen:
            continue
        for slot in info.slots:
            role = str(slot.role)
            if role in keep or role in ("gain", "other"):
                continue
            region = info.region(slot)
            if region.numel() == 0:  # a zero-size tensor (e.g. an empty bias table): nothing to draw
                continue
            if role == "norm":  # gain 1: the stored value is 1 − offset (0 for Gemma's x·(1 + w))
                region.fill_(0.0 if info.kind == BIAS else info.unit_gain)
            elif info.kind == BIAS:
                region.zero_()
            else:
                var = p.variance(role, fan_in=slot.fan_in, width=width)
                _write(region, _draw(region.shape, var, p.distribution(role), generator))


@torch.no_grad()
def parametrize_(model: nn.Module, p: "Parametrization | str", *, generator: torch.Generator | None = None,
                 role_map: RoleMap | None = None, keep: Iterable[str] = (),
                 mimetic: bool | dict | None = None, include_frozen: bool = False) -> nn.Module:
    """Re-initialize ``model`` in place as parametrization ``p`` prescribes, role by role.

    * weights: variance from :meth:`Parametrization.variance` (fused qkv: per slot region),
      uniform or normal per role; the head: C_head/n^(1+s); tables: C_G;
    * every bias 0 (hidden, patch and head biases), norms: gain 1 (the stored value is the role
      map's ``unit_gain``: 0 for Gemma's x·(1 + w)), bias 0;
    * branch gains, unmapped (``other``) and frozen (``requires_grad=False``) tensors are left
      alone (``include_frozen=True`` writes frozen ones too, e.g. a fixed position table);
    * the head multiplier: N_rescale for a tied head, 1 for an untied one;
    * the residual-branch multiplier (L/L_base)^-α of a depth member (1 otherwise), through the
      role map's control ``set_branch_multiplier`` (it survives save/reload, see
      :mod:`initlab.roles.persist`);
    * the attention logit scale: ``p.attn_scale`` (1/sqrt(head_dim) by default).

    Args:
        generator: CPU generator for reproducible draws.
        role_map: a precomputed :func:`initlab.roles` map.
        keep: role names to leave untouched (e.g. ``("q", "k", "v", "o")`` after mimetic init).
        mimetic: run :func:`initlab.mimetic_` afterwards (``True`` or a dict of its options):
            mimetic wins on the Q, K, V, O weights; everything else stays as prescribed here.
        include_frozen: also write frozen tensors (default: they keep their values).
    """
    p = _coerce(p)
    _require_module(model, "parametrize_")
    require_materialized(model, "parametrize it")
    rmap = role_map if role_map is not None else roles(model)
    keep = {str(Role(r)) for r in keep}
    # every check before anything is written: the multipliers need controls to act through
    mult = p.head_multiplier(rmap.width, tied=is_tied(rmap))
    if rmap.controls.set_head_multiplier is None and mult != 1.0:
        raise InitError(f"{rmap.model_class}'s output layer is tied to its token embedding and its role "
                        f"map exposes no head multiplier, but {p} needs N_rescale = {mult:.4g} on the "
                        f"logits of a tied head; untie the head (a separate nn.Linear, mapped as "
                        f"'head'), use a parametrization without it ('standard'), or give the "
                        f"adapter's controls a set_head_multiplier")
    branch = p.branch_multiplier(rmap.depth)
    if rmap.controls.set_branch_multiplier is None and branch != 1.0:
        raise InitError(f"{p} multiplies every residual branch by {branch:.4g} (depth {rmap.depth}), but the "
                        f"role map of {rmap.model_class} names no residual-branch outputs (an attention "
                        f"output projection and an MLP output per block); map them (role 'o' and "
                        f"'mlp_out') or use a parametrization without a depth exponent")
    if rmap.controls.check_branch_multiplier is not None:
        rmap.controls.check_branch_multiplier(branch)
    from .roles.dtensor import full_tensors  # FSDP2: write full tensors, then reshard
    with full_tensors(rmap) as full:
        _parametrize_tensors(full, p, keep, generator, include_frozen)
    if rmap.controls.set_head_multiplier is not None:
        rmap.controls.set_head_multiplier(mult)
    if rmap.controls.set_branch_multiplier is not None:
        rmap.controls.set_branch_multiplier(branch)
    for att in rmap.attention:
        scale = p.logit_scale(att.head_dim)
        if scale is None:
            continue
        if att.set_logit_scale is not None:
            att.set_logit_scale(scale)
        elif p.attn_scale != "sqrt":
            raise InitError(f"{att.module_name}: the adapter cannot set the attention logit scale "
                            f"(wanted {scale:.4g}); use attn_scale='sqrt' or None")
    if mimetic:
        from .mimetic import mimetic_
        opts = {"include_frozen": include_frozen, **(mimetic if isinstance(mimetic, dict) else {})}
        mimetic_(model, generator=generator, role_map=rmap, **opts)
    return model


def _require_module(model, verb: str) -> None:
    if not isinstance(model, nn.Module):
        raise InitError(f"{verb}() works on a torch.nn.Module, got {type(model).__name__} "
                        f"({model!r:.40}); pass the model itself, e.g. {verb}(model, ...)")


# -- optimizer groups -------------------------------------------------------------------------------
def _slot_factor(p: Parametrization, info: ParamInfo, slot: Slot, optimizer: str, width: int) -> float:
    return p.lr_factor(str(slot.role), info.kind, optimizer, width=width, fan_in=slot.fan_in,
                       fan_out=slot.fan_out)


def _decays(info: ParamInfo, no_decay: set[str]) -> bool:
    if info.kind == BIAS and "bias" in no_decay:
        return False
    return not any(str(r) in no_decay for r in info.roles)


def is_hidden(info: ParamInfo) -> bool:
    """True for a tensor inside a residual block (CompleteP's "hidden" groups: the block's weights,
    biases and norms); embeddings, the head and the final norm are not."""
    if any(str(r) in BRANCH_ROLES for r in info.roles):
        return True
    return Role.NORM in info.roles and info.layer is not None


def group_key(info: ParamInfo) -> str:
    """Group name of a tensor: its role key (``"q+k+v"``), plus ``".bias"`` for biases."""
    return info.role + (".bias" if info.kind == BIAS else "")


def param_groups(model: nn.Module, p: "Parametrization | str", *, lr: float, weight_decay: float = 0.0,
                 optimizer: str = "adamw", role_map: RoleMap | None = None,
                 no_decay: Iterable[str] | None = None, eps: float = 1e-8) -> list[dict]:
    """PyTorch optimizer parameter groups implementing the paper's update rule, one per role.

    Each group: ``params``, ``lr`` = lr·λ_G (SGD) or lr·λ̃_G (AdamW), ``weight_decay`` = wd/λ_G
    (so PyTorch's per-step decay lr_G·wd_G equals the paper's η·wd), ``role`` (e.g. ``"q+k+v"``,
    ``"head.bias"``), ``lr_factor`` (λ: a scheduler that sets lr itself should use
    ``group["lr"] = lr_t * group["lr_factor"]``), ``decay`` (the wd this group realizes: per-step
    decay = lr_t·decay) and ``param_names`` (PyTorch's own key for parameter names).

    Depth members (``depth_alpha``): the tensors inside the blocks get lr × m_L^(α-1) more; their
    ``weight_decay`` compensates the width factor only, as CompleteP's code does (model.py,
    ``configure_optimizers``: ``weight_decay / width_lr_scaling``), so ``decay`` = wd·m_L^(α-1) there.
    When ``p.eps_rule`` scales AdamW's ε, every group carries ``eps`` = ``eps``·``eps_factor``.

    Biases, norms, position tables, the class token and branch gains get no decay unless
    ``no_decay`` says otherwise (it lists role names, and ``"bias"`` for all biases; default
    :data:`DEFAULT_NO_DECAY` plus biases). Frozen tensors (``requires_grad=False``) are left out.

    ``torch.optim.AdamW(param_groups(model, p, lr=..., weight_decay=...))`` is the paper's AdamW.
    """
    p = _coerce(p)
    optimizer = _check_optimizer(optimizer)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ConfigError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ConfigError(f"eps must be a positive number, got {eps!r}")
    _require_module(model, "param_groups")
    rmap = role_map if role_map is not None else roles(model)
    nd = set(DEFAULT_NO_DECAY) | {"bias"} if no_decay is None else _no_decay_names(no_decay)
    width, depth = rmap.width, rmap.depth
    scale_eps = optimizer == "adamw" and p.eps_rule != "none"
    groups: dict[tuple, dict] = {}
    for info in rmap:
        if not info.param.requires_grad:
            continue
        factors = {_slot_factor(p, info, s, optimizer, width) for s in info.slots}
        if len(factors) > 1:
            raise InitError(f"{info.name} ({info.role}) holds slots with different learning-rate "
                            f"factors {sorted(factors)}; split the tensor or use mlp_factors='paper'")
        width_factor = factors.pop()
        hidden = is_hidden(info)
        depth_factor = p.depth_lr_factor(optimizer, depth=depth, hidden=hidden)
        factor = width_factor * depth_factor
        decay = (weight_decay if _decays(info, nd) else 0.0) * depth_factor
        eps_factor = p.eps_factor(width=width, depth=depth, hidden=hidden) if scale_eps else None
        key = (group_key(info), factor, decay, eps_factor)
        if key not in groups:
            groups[key] = {"params": [], "lr": lr * factor, "weight_decay": decay / factor,
                           "role": group_key(info), "lr_factor": factor, "decay": decay,
                           "param_names": []}
            if scale_eps:
                groups[key].update(eps=eps * eps_factor, eps_factor=eps_factor)
        groups[key]["params"].append(info.param)
        groups[key]["param_names"].append(info.name)
    if not groups:
        raise ConfigError(f"every parameter of {rmap.model_class} is frozen (requires_grad=False), so "
                          f"there is nothing to optimize; unfreeze the tensors to train "
                          f"(p.requires_grad_(True)) before building the optimizer groups")
    return list(groups.values())


TIMESCALE_UNITS = ("epochs", "tokens")


def weight_decay_from_timescale(tau: float, *, lr: float, steps_per_epoch: float | None = None,
                                tokens_per_step: float | None = None, unit: str = "epochs") -> float:
    """The AdamW weight decay whose timescale τ = 1/(η·λ) is ``tau`` (Wang & Aitchison, arXiv
    2405.13698): τ counted in optimizer steps is τ_iter = 1/(lr·wd), so

    * ``unit="epochs"``: τ_iter = tau · steps_per_epoch (= dataset size / batch), wd = 1/(lr·τ_iter);
    * ``unit="tokens"``: τ_iter = tau / tokens_per_step (= batch · context), wd = 1/(lr·τ_iter).

    ``lr`` is the base (peak) lr: :func:`param_groups` then gives every decayed group the per-step
    decay lr_t·wd (the depth members: × m_L^(α-1) inside the blocks), i.e. this timescale.
    Keeping τ fixed while the data grows (more steps per epoch) lowers wd in proportion.
    """
    if unit not in TIMESCALE_UNITS:
        raise ConfigError(f"the weight-decay timescale unit must be 'epochs' or 'tokens', got {unit!r}")
    for name, v in (("tau", tau), ("lr", lr)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ConfigError(f"{name} must be a positive number, got {v!r}")
    per = steps_per_epoch if unit == "epochs" else tokens_per_step
    if not (isinstance(per, (int, float)) and per > 0):
        what = "steps_per_epoch (dataset size / batch)" if unit == "epochs" else "tokens_per_step (batch x context)"
        raise ConfigError(f"a weight-decay timescale in {unit} needs {what}, got {per!r}")
    tau_steps = tau * per if unit == "epochs" else tau / per
    return 1.0 / (lr * tau_steps)


def _no_decay_names(no_decay) -> set[str]:
    """``no_decay`` as a set of role names (and ``"bias"``); a misspelled name is refused."""
    if isinstance(no_decay, str):
        no_decay = [no_decay]
    valid = [r.value for r in Role] + ["bias"]
    names = set()
    for r in no_decay:
        key = r.value if isinstance(r, Role) else str(r)
        if key not in valid:
            raise ConfigError(f"no_decay lists {r!r}, which is not a role name; use role names "
                              f"({', '.join(valid)}), e.g. no_decay=['norm', 'bias']")
        names.add(key)
    return names


def describe(model: nn.Module, p: "Parametrization | str", *, optimizer: str = "adamw",
             role_map: RoleMap | None = None) -> str:
    """A table of every tensor's role, init (distribution, std) and learning-rate factor."""
    p = _coerce(p)
    optimizer = _check_optimizer(optimizer)
    rmap = role_map if role_map is not None else roles(model)
    rows = [("name", "role", "init", "lr factor", "width exponent")]
    for info in rmap:
        for slot in info.slots:
            role = str(slot.role)
            if info.frozen:
                init = "kept (frozen)"
            elif role in ("gain", "other"):
                init = "kept"
            elif role == "norm":
                init = "0" if info.kind == BIAS else f"{info.unit_gain:g}"
            elif info.kind == BIAS:
                init = "0"
            else:
                var = p.variance(role, fan_in=slot.fan_in, width=rmap.width)
                init = f"{p.distribution(role)} std {math.sqrt(var):.4g}"
            _, exp = p.lr_rule(role, info.kind, optimizer, fan_in=slot.fan_in, fan_out=slot.fan_out)
            f = _slot_factor(p, info, slot, optimizer, rmap.width)
            rows.append((info.name + (f"[{role}]" if len(info.slots) > 1 else ""), group_key(info),
                         init, f"{f:.4g}", f"{exp:+g}"))
    return text_table(rows)


__all__ = ["Parametrization", "parse_s", "parse_member", "parametrize_", "param_groups", "describe", "is_tied",
           "group_key", "is_hidden", "DEPTH_NAMED", "weight_decay_from_timescale",
           "VIT_CONSTANTS", "DISTRIBUTIONS", "DEFAULT_NO_DECAY"]
