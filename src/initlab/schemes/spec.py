"""Declarative initialization specs: a scheme is a list of per-role rules over the role map.

A :class:`Rule` says, for every tensor region (role slot) of some roles and kinds, which
distribution to draw from and with what standard deviation, the std being a function of the
slot's fans, the model's width and depth, the block index and the scheme's options. Rules never
name modules or storage layouts: they only see :class:`Context`, which the role map provides, so
one rule covers fused and separate q/k/v, nn.Linear and Conv1D alike.

Fans are those of the role slot (the projection's own map), not of the stored tensor: a fused
(3d, d) qkv weight gets q, k and v each with fan_in = fan_out = d, as separate Linears would
(timm's ``moco`` convention). Convolutions use PyTorch's fans (channels × kernel area).

Draws happen on the CPU from an optional ``torch.Generator`` in float32 and are copied into the
existing parameters in place (identity, dtype, device and ``requires_grad`` kept).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch

from ..errors import InitError
from ..roles import BIAS, WEIGHT, ParamInfo, Role, RoleMap, Slot

#: every role a weight rule may target (norms and gains are only touched by schemes that say so)
MATRIX_ROLES = ("q", "k", "v", "o", "mlp_in", "mlp_out", "head")
IN_PROJ = ("q", "k", "v", "mlp_in")  # baselines.md: "in-proj"
OUT_PROJ = ("o", "mlp_out")  # residual-branch output matrices
TABLES = ("token_embed", "pos_embed", "cls_token")
#: model capabilities a scheme may require: attention layers, residual-branch gains, a skip-scale
#: control, a ViT patch grid (the last checked by the scheme's own ``check``)
REQUIREMENTS = ("attention", "gains", "skip_scale", "grid")
#: roles a rule covers through another unless it names them: a gated MLP's gate projection and an
#: MoE router are input-side matrices (fan_in = d), initialized like mlp_in
SCHEME_ALIASES = {"mlp_gate": "mlp_in", "router": "mlp_in"}
DISTRIBUTIONS = ("normal", "trunc_normal", "uniform", "xavier_uniform", "xavier_normal",
                 "zeros", "constant")


@dataclass(frozen=True)
class Context:
    """What a rule's std may depend on, for one tensor region."""

    role: str
    kind: str  # "weight" | "bias"
    fan_in: int
    fan_out: int
    width: int  # d_model
    depth: int  # number of blocks L
    layer: int | None  # block index l (0-based), None outside the blocks
    options: dict  # the scheme's options after defaults
    name: str = ""  # parameter name (for error messages only)
    gain_offset: float = 0.0  # a norm weight's offset (Gemma: 1): a "constant" rule writes gain − offset

    @property
    def opt(self) -> dict:
        return self.options


Number = Union[float, Callable[[Context], float]]


@dataclass(frozen=True)
class Rule:
    """One per-role initialization rule.

    Args:
        roles: role names it applies to (e.g. ``("o", "mlp_out")``).
        dist: ``normal``, ``trunc_normal``, ``uniform`` (std-parametrized: bound = √3·std),
            ``xavier_uniform``/``xavier_normal`` (std = gain·√(2/(fan_in+fan_out)), ``std`` is the
            gain), ``zeros`` or ``constant`` (``std`` is the value; on a norm weight it is the gain
            the norm applies, so 1 writes the role map's ``unit_gain``: 0 into Gemma's x·(1 + w)).
        std: a number or a function of :class:`Context` (for xavier: the gain; constant: the value).
        truncate: for ``trunc_normal``, cut at ±truncate·std (a number of σ, or a function).
        kind: ``"weight"``, ``"bias"`` or ``"both"``.
        layers: optional predicate on the block index (None = every tensor of those roles).
        note: one line shown in the docs/CLI table.
    """

    roles: tuple[str, ...]
    dist: str = "normal"
    std: Number = 0.0
    truncate: Number | None = None
    kind: str = WEIGHT
    layers: Callable[[int | None], bool] | None = None
    note: str = ""

    def __post_init__(self):
        if isinstance(self.roles, str):
            object.__setattr__(self, "roles", (self.roles,))
        for r in self.roles:
            Role(r)  # RoleMapError naming the roles on a typo, at import time
        if self.dist not in DISTRIBUTIONS:
            raise InitError(f"unknown distribution {self.dist!r}; choose one of {', '.join(DISTRIBUTIONS)}")
        if self.kind not in (WEIGHT, BIAS, "both"):
            raise InitError(f"rule kind must be 'weight', 'bias' or 'both', got {self.kind!r}")

    def kinds(self) -> tuple[str, ...]:
        return (WEIGHT, BIAS) if self.kind == "both" else (self.kind,)

    def applies(self, info: ParamInfo, slot: Slot) -> bool:
        role = slot.role.value
        if role not in self.roles:  # a gate or router falls under the rule for mlp_in
            role = SCHEME_ALIASES.get(role, role)
        return (role in self.roles and info.kind in self.kinds()
                and (self.layers is None or self.layers(info.layer)))


def value(x: Number | None, ctx: Context) -> float | None:
    return x(ctx) if callable(x) else x


def target_std(rule: Rule, ctx: Context) -> float:
    """The std a rule prescribes for one region (0 for zeros; the value itself for constant)."""
    s = value(rule.std, ctx)
    if rule.dist == "zeros":
        return 0.0
    if rule.dist in ("xavier_uniform", "xavier_normal"):
        return float(s) * math.sqrt(2.0 / (ctx.fan_in + ctx.fan_out))
    return float(s)


def std_problem(rule: Rule, ctx: Context) -> str | None:
    """Why ``rule`` cannot draw the region ``ctx`` (a clause naming the value), or None: the std
    must be finite and >= 0 (a ``constant`` may be negative) and a ``trunc_normal`` truncation > 0.
    The one statement of the rule: the plan checks it before writing, :func:`draw` again when drawing."""
    std = target_std(rule, ctx)
    if not math.isfinite(std) or (std < 0 and rule.dist != "constant"):
        return f"the std of role {ctx.role} would be {std:g} (it must be finite and >= 0)"
    if rule.dist == "trunc_normal":
        t = value(rule.truncate, ctx)
        if t is None or not t > 0:
            return f"the truncation of role {ctx.role} would be {t} (it must be > 0, in units of std)"
    return None


def draw(rule: Rule, ctx: Context, shape: torch.Size,
         generator: torch.Generator | None) -> torch.Tensor:
    """Draw one region's values on the CPU in float32."""
    why = std_problem(rule, ctx)
    if why is not None:
        raise InitError(f"{ctx.name}: {why}; check the scheme's options")
    std = target_std(rule, ctx)
    if rule.dist == "zeros":
        return torch.zeros(shape)
    if rule.dist == "constant":  # a norm weight stores gain − offset (Gemma's x·(1 + w))
        return torch.full(shape, std - ctx.gain_offset)
    if rule.dist in ("normal", "xavier_normal"):
        return torch.randn(shape, generator=generator) * std
    if rule.dist in ("uniform", "xavier_uniform"):
        bound = math.sqrt(3.0) * std
        return (torch.rand(shape, generator=generator) * 2 - 1) * bound
    if std == 0:
        return torch.zeros(shape)
    return truncated_normal(shape, float(value(rule.truncate, ctx)), generator) * std


def truncated_normal(shape, t: float, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) conditioned on |x| <= t, float32 on the CPU.

    Redraws the out-of-range entries (a few percent at t = 2, none in practice at t = 100), which is
    exact and much faster on the CPU than ``nn.init.trunc_normal_``'s inverse-CDF path; narrow
    cuts (t < 1) use the inverse CDF instead.
    """
    if t < 1.0:
        lo = 0.5 * (1 + math.erf(-t / math.sqrt(2)))
        u = torch.rand(shape, generator=generator, dtype=torch.float64) * (1 - 2 * lo) + lo
        return torch.special.ndtri(u).clamp_(-t, t).float()
    x = torch.randn(shape, generator=generator)
    while True:
        bad = x.abs() > t
        n = int(bad.sum())
        if n == 0:
            return x
        x[bad] = torch.randn(n, generator=generator)


def context(rmap: RoleMap, info: ParamInfo, slot: Slot, options: dict) -> Context:
    offset = info.gain_offset if slot.role == Role.NORM and info.kind == WEIGHT else 0.0
    return Context(slot.role.value, info.kind, slot.fan_in, slot.fan_out, rmap.width, rmap.depth,
                   info.layer, options, info.name, offset)


@torch.no_grad()
def apply_rules(rmap: RoleMap, rules: tuple[Rule, ...], options: dict,
                generator: torch.Generator | None = None, *, include_frozen: bool = False) -> list[str]:
    """Apply ``rules`` to every matching (tensor, slot) of ``rmap``; later rules win on overlap.

    Returns the names of the tensors written. Regions no rule matches are left untouched, and so
    are frozen tensors (``requires_grad=False``) unless ``include_frozen``.
    """
    written = []
    for info in rmap:
        if info.frozen and not include_frozen:
            continue
        for slot in info.slots:
            rule = None
            for r in rules:  # the last matching rule wins, so schemes can state exceptions last
                if r.applies(info, slot):
                    rule = r
            if rule is None:
                continue
            region = info.region(slot)
            if region.numel() == 0:  # zero-size tensor: nothing to draw (its fans may be 0)
                continue
            ctx = context(rmap, info, slot, options)
            if value(rule.std, ctx) is None:  # an option switched this rule off
                continue
            region.copy_(draw(rule, ctx, region.shape, generator).to(region.device, region.dtype))
            written.append(info.name)
    return written


@dataclass(frozen=True)
class SchemeInfo:
    """One registry entry as listed by :func:`initlab.schemes.schemes`."""

    name: str
    description: str
    citation: str
    roles: tuple[str, ...]
    parametrization: str | None = None
    formula: str = ""
    models: str = "any role-mapped Transformer"
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scheme:
    """A named initialization scheme.

    Rule-based schemes list ``rules``; schemes that run a closed-form construction over the role
    map (mimetic, structured, the parametrizations) give ``apply(model, rmap, options, generator)``.
    ``validate(options)`` checks the options alone when a plan is built (no model needed);
    ``check(model, rmap, options)`` runs before anything of the chain is written and raises
    :class:`InitError` when the model cannot cooperate; ``setup(model, rmap, options)`` runs after
    the rules and sets model-level knobs (DeepNorm's α).

    Composition metadata (see :func:`initlab.schemes.init_`):
        writes: (role, kind) pairs this scheme overwrites; derived from ``rules`` when empty.
        fixes: roles whose joint structure the scheme builds (mimetic's products): a later scheme
            writing any of them would silently destroy it, so such chains are refused.
        requires: model capabilities checked before anything is written (see :data:`REQUIREMENTS`).
        parametrization: the effective-theory member this scheme stands for (``"nt"``...); the init
            plan runs :func:`initlab.parametrization.parametrize_` for it.
        layerwise: ``apply`` handles sharded (FSDP2/DTensor) tensors itself, one layer at a time
            (mimetic_); otherwise the plan gathers the whole model for ``apply`` on a sharded model.
    """

    name: str
    description: str
    citation: str
    rules: tuple[Rule, ...] = ()
    apply: Callable[..., Any] | None = None
    validate: Callable[[dict], Any] | None = None
    check: Callable[..., Any] | None = None
    setup: Callable[..., Any] | None = None
    options: dict = field(default_factory=dict)
    writes: tuple[tuple[str, str], ...] = ()
    fixes: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    parametrization: str | None = None
    formula: str = ""
    models: str = "any role-mapped Transformer"
    primary: str | None = None  # option a bare positional argument sets: "trunc_normal(0.01)"
    layerwise: bool = False

    def __post_init__(self):
        unknown = [r for r in self.requires if r not in REQUIREMENTS]
        if unknown:
            raise InitError(f"scheme {self.name!r}: unknown requirement(s) {', '.join(map(repr, unknown))}; "
                            f"known: {', '.join(REQUIREMENTS)}")
        if self.primary is not None and self.primary not in self.options:
            raise InitError(f"scheme {self.name!r}: primary option {self.primary!r} is not one of its "
                            f"options ({', '.join(self.options) or 'none'})")

    def written(self) -> tuple[tuple[str, str], ...]:
        if self.writes:
            return self.writes
        out = []
        for r in self.rules:
            for role in r.roles:
                for k in r.kinds():
                    if (role, k) not in out:
                        out.append((role, k))
        return tuple(out)

    def roles(self) -> tuple[str, ...]:
        seen = []
        for role, _ in self.written():
            if role not in seen:
                seen.append(role)
        return tuple(seen)

    def info(self) -> SchemeInfo:
        return SchemeInfo(self.name, self.description, self.citation, self.roles(),
                          self.parametrization, self.formula, self.models, dict(self.options))
