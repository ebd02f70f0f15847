"""The init plan: one spec, parsed once, validated completely, then applied.

Every way initlab initializes a model goes through :class:`InitPlan`: the library's :func:`init_`,
``materialize_`` (meta device), the training engine, and the CLI's train, compare, sweep, probe,
weights and coordcheck commands. A plan holds

* the scheme chain of the spec with every option routed, typed and checked (a ``trunc_normal``
  std below 0, a mimetic ``vo_sign`` of 3 and an unknown ``svd`` method are refused here, before
  a model is even seen), and
* **one** :class:`~initlab.parametrization.Parametrization`: the one the spec implies (``"nt"`` in
  ``"nt+mimetic"``) or the one asked for beside it (``param="mu"``), with its base width and
  options. The weights are drawn with this object and the optimizer groups are built from it, so
  the two cannot disagree.

:meth:`InitPlan.apply_` checks the model (capabilities, per-scheme checks, every rule's std on
every tensor region) before it writes the first tensor, so a refused plan leaves the model as it
was. Seeding has one rule, :meth:`InitPlan.generator`: one CPU generator per run, derived from the
run's seed, used by every draw of the chain in order (and :func:`build_seeded` for the module
defaults of a model built for a seed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InitError
from ..parametrization import Parametrization, is_tied, parametrize_, parse_member
from ..roles import roles
from ..roles.core import require_materialized
from ..values import parse_value
from .registry import get_scheme, parse, refusal_of
from .spec import Context, Scheme, apply_rules, std_problem, value

#: the stream of :func:`initlab.data.batches.derive_seed` that init draws use (data use others)
INIT_STREAM = 7


@dataclass(frozen=True)
class PlanStep:
    """One scheme of the chain with its final options."""

    scheme: Scheme
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class InitPlan:
    """A validated init chain plus the single parametrization of the run.

    Build it with :meth:`InitPlan.build`; apply it with :meth:`apply_`.

    Attributes:
        spec: the spec as given.
        steps: the chain, left to right.
        parametrization: the one :class:`Parametrization` for weights and optimizer groups.
        parametrize_first: True when the parametrization was asked for beside the spec
            (``param="nt"`` with ``spec="mimetic"``): its draws come before the chain.
        include_frozen: also write frozen tensors (``requires_grad=False``: a fixed position
            table, a frozen layer). Default False: they keep their values and every scheme works
            on :meth:`RoleMap.trainable <initlab.roles.RoleMap.trainable>`.
    """

    spec: str
    steps: tuple[PlanStep, ...]
    parametrization: Parametrization
    parametrize_first: bool = False
    include_frozen: bool = False

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def build(cls, spec: str = "default", *, param: "str | Parametrization" = "standard",
              base_width: int | None = None, param_options: dict | None = None,
              options: dict | None = None, always_parametrize: bool = False,
              include_frozen: bool = False) -> "InitPlan":
        """Parse and validate ``spec`` once; raise :class:`InitError`/:class:`ConfigError` on
        anything wrong, before any model is touched.

        Args:
            spec: ``"gpt2"``, ``"trunc_normal(0.01)+mimetic"``, ``"nt+mimetic"``...
            param: the parametrization asked for beside the spec (``--param``); when the spec
                implies one too, both must have the same s.
            base_width, param_options: defaults of the parametrization's fields (``init_style``,
                ``attn_scale``, ...); options given to the spec's parametrization scheme win.
            options: scheme options; a plain key goes to every scheme of the chain that takes it,
                ``"scheme.key"`` to one scheme (ignored when that scheme is not in the chain).
            always_parametrize: draw every weight as the parametrization prescribes before the
                chain even when it is ``standard`` (the probes compare against its constants).
            include_frozen: write frozen tensors too (see the class attributes).
        """
        if not isinstance(include_frozen, bool):
            raise InitError(f"include_frozen must be True or False, got {include_frozen!r}")
        chain = [(get_scheme(name), inline) for name, inline in parse(spec)]
        why = refusal_of([s for s, _ in chain])
        if why is not None:
            raise InitError(why)
        per = _route(chain, dict(options or {}))
        for (scheme, _), o in zip(chain, per):
            if scheme.validate is not None:
                scheme.validate(o)
            if scheme.rules:
                _check_rule_values(scheme, o)
        fields = dict(param_options or {})
        if base_width is not None:
            fields["base_width"] = base_width
        implied = [(s, o) for (s, _), o in zip(chain, per) if s.parametrization]
        asked = param if isinstance(param, Parametrization) else None
        asked_s, asked_depth = ((asked.s, asked.depth_alpha) if asked is not None else parse_member(param))
        if implied:
            scheme, o = implied[0]
            implied_s, implied_depth = parse_member(scheme.parametrization)
            if (asked_s is not None and asked_s != implied_s) or \
                    (asked_depth is not None and asked_depth != implied_depth):
                raise InitError(f"init {spec!r} implies parametrization {scheme.parametrization!r} but "
                                f"param is {str(param)!r}; drop one of them or make them agree")
            fields.update({k: v for k, v in o.items() if v is not None})
            p = Parametrization.parse(scheme.parametrization, **fields)
            return cls(spec, tuple(PlanStep(s, o) for (s, _), o in zip(chain, per)), p, False,
                       include_frozen)
        p = Parametrization.parse(asked if asked is not None else param, **fields)
        steps = tuple(PlanStep(s, o) for (s, _), o in zip(chain, per))
        return cls(spec, steps, p, parametrize_first=always_parametrize or not p.is_standard,
                   include_frozen=include_frozen)

    # -- the seeding rule ----------------------------------------------------------------------
    @staticmethod
    def generator(seed: int) -> torch.Generator:
        """The CPU generator every init draw of a run with ``seed`` comes from."""
        from ..data.batches import derive_seed
        return torch.Generator().manual_seed(derive_seed(int(seed), INIT_STREAM))

    # -- application ---------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return [s.scheme.name for s in self.steps]

    def check(self, model: nn.Module, role_map=None):
        """Every model-dependent check of the plan, writing nothing; returns the role map."""
        _require_module(model)
        require_materialized(model)
        if role_map is None:
            role_map = roles(model)
        for step in self.steps:  # the scheme's own check first: it knows the most precise reason
            if step.scheme.check is not None:
                step.scheme.check(model, role_map, step.options)
            _requires(role_map, step.scheme)
            if step.scheme.rules:
                _check_rule_stds(role_map, step.scheme, step.options)
        return role_map

    @torch.no_grad()
    def apply_(self, model: nn.Module, *, generator: torch.Generator | None = None,
               role_map=None) -> nn.Module:
        """Initialize ``model`` in place; nothing is written unless every check passes."""
        if generator is not None and (not isinstance(generator, torch.Generator)
                                      or generator.device.type != "cpu"):
            raise InitError("generator must be a CPU torch.Generator (draws are made on the CPU and "
                            "copied to the parameters' device)")
        from ..roles.dtensor import has_dtensors
        _require_module(model)
        require_materialized(model)
        frozen = self.include_frozen
        extra = {"include_frozen": True} if frozen else {}  # the default (False) is every writer's own
        rmap = role_map if role_map is not None else roles(model)
        rmap = self.check(model, rmap if frozen else rmap.trainable())
        # FSDP2 (DTensor parameters): each pass over the model gathers one layer's tensors at a
        # time (see _by_layer), so a rank never holds more than one layer's full tensors
        sharded = has_dtensors(rmap)
        if self.parametrize_first:
            self._parametrize(model, rmap, generator, extra, sharded)
        for step in self.steps:
            scheme, o = step.scheme, step.options
            if scheme.parametrization:
                self._parametrize(model, rmap, generator, extra, sharded)
            if scheme.rules:
                for part in _by_layer(rmap, sharded):
                    apply_rules(part, scheme.rules, o, generator, **extra)
            if scheme.apply is not None:  # mimetic_/structured_ take include_frozen
                if scheme.layerwise or not sharded:  # gathers one layer at a time itself
                    scheme.apply(model, rmap, {**o, **extra}, generator)
                else:  # a construction of its own (not checked to stay in a layer): all gathered
                    for full in _by_layer(rmap, sharded, whole=True):
                        scheme.apply(model, full, {**o, **extra}, generator)
            if scheme.setup is not None:  # model-level knobs (controls), no tensor values
                scheme.setup(model, rmap, o)
        return model

    def _parametrize(self, model, rmap, generator, extra: dict, sharded: bool) -> None:
        for part in _by_layer(rmap, sharded):
            parametrize_(model, self.parametrization, generator=generator, role_map=part, **extra)

    def initialize_(self, model: nn.Module, seed: int, *, role_map=None) -> nn.Module:
        """:meth:`apply_` with the run's generator (:meth:`generator`)."""
        return self.apply_(model, generator=self.generator(seed), role_map=role_map)


def _by_layer(rmap, sharded: bool, *, whole: bool = False):
    """The role map in parts that a pass over the model can visit one after the other.

    Without DTensors: the map itself, once. With DTensors (FSDP2): runs of consecutive tensors of
    the same layer (``info.layer``; the tensors outside blocks form runs of their own), each with
    its DTensors gathered to full copies (:func:`~initlab.roles.dtensor.full_tensors`) and written
    back, shard by shard, before the next run is gathered. A pass that draws tensor by tensor in
    the map's order (the rule engine, parametrize_) draws the same numbers either way, so the
    result equals the unsharded model's; peak memory is one layer's full tensors. ``whole=True``:
    one part, the whole model gathered (for constructions that read across layers).
    """
    from dataclasses import replace

    from ..roles.dtensor import full_tensors
    if not sharded:
        yield rmap
        return
    names = list(rmap.params)
    runs: list[list[str]] = []
    for n in names:
        if whole or not runs or rmap.params[runs[-1][-1]].layer != rmap.params[n].layer:
            if not (whole and runs):
                runs.append([])
        runs[-1].append(n)
    # a part answers "is the head tied to the embedding?" as the whole map does (parametrize_
    # asks; a part without the embedding would otherwise say no)
    controls = replace(rmap.controls, tied_head=is_tied(rmap))
    for run in runs:
        part = replace(rmap, params={n: rmap.params[n] for n in run}, controls=controls)
        with full_tensors(part) as full:
            yield full


def build_seeded(build, seed: int):
    """``build()`` with the global torch RNG seeded by ``seed`` (PyTorch's module defaults become
    reproducible) and restored afterwards: the seeding rule's first half, without a global effect.
    The second half is :meth:`InitPlan.generator`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def _require_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise InitError(f"init_() initializes a torch.nn.Module in place, got {type(model).__name__} "
                        f"({model!r:.40}); pass the model first and the spec second, e.g. "
                        f"init_(model, 'mimetic')")


@torch.no_grad()
def init_(model: nn.Module, spec: str = "default", *, generator: torch.Generator | None = None,
          role_map=None, include_frozen: bool = False, **options) -> nn.Module:
    """Initialize ``model`` in place with a named scheme or a ``+``-joined chain of them.

    Args:
        model: any model :func:`initlab.roles` can map (wrappers are looked through).
        spec: e.g. ``"gpt2"``, ``"trunc_normal(0.01)+mimetic"``, ``"nt+mimetic"``.
        generator: a CPU ``torch.Generator``; every draw of the chain uses it, in order.
        role_map: a precomputed role map (built when omitted).
        include_frozen: also write frozen tensors (``requires_grad=False``). By default every
            scheme leaves them as they are: a fixed position table (Whisper's sinusoidal encoder
            positions) is never randomized, a frozen layer keeps its weights.
        **options: scheme options. A plain key goes to every scheme of the chain that has it
            (unknown keys are an error); ``"scheme.key"`` targets one scheme and is ignored when
            that scheme is not in the chain.

    Returns ``model``. Bad specs, bad options, refused combinations and models that cannot
    cooperate raise :class:`~initlab.errors.InitError` before anything is written.
    """
    _require_module(model)
    return InitPlan.build(spec, options=options, include_frozen=include_frozen).apply_(
        model, generator=generator, role_map=role_map)


# -- option routing --------------------------------------------------------------------------------
def _route(chain: list[tuple[Scheme, dict]], options: dict) -> list[dict]:
    per = [dict(s.options) for s, _ in chain]
    names = [s.name for s, _ in chain]
    plain = {k: v for k, v in options.items() if "." not in k}
    dotted = {k: v for k, v in options.items() if "." in k}
    for k, v in plain.items():
        takers = [i for i, (s, _) in enumerate(chain) if k in s.options]
        if not takers:
            accepted = sorted({o for s, _ in chain for o in s.options})
            raise InitError(f"option {k!r} is not accepted by {'+'.join(names)}; accepted: "
                            f"{', '.join(accepted) or 'none'}")
        for i in takers:
            per[i][k] = v
    for i, (s, inline) in enumerate(chain):
        for k, v in inline.items():
            if k is None:
                if s.primary is None:
                    raise InitError(f"{s.name} takes no positional option; use {s.name}(key=value) with "
                                    f"one of: {', '.join(s.options) or 'none'}")
                k = s.primary
            if k not in s.options:
                raise InitError(f"{s.name} has no option {k!r}; its options: {', '.join(s.options) or 'none'}")
            per[i][k] = v
    for k, v in dotted.items():
        sname, opt = k.split(".", 1)
        target = get_scheme(sname).name  # unknown scheme names are an error (typos)
        # a scheme that is not in this chain ignores its dotted options, so one option set can
        # serve every spec of a comparison ("structured.focus=0.8" with --inits default,structured)
        for i in [i for i, (s, _) in enumerate(chain) if s.name == target]:
            if opt not in chain[i][0].options:
                raise InitError(f"{chain[i][0].name} has no option {opt!r}; its options: "
                                f"{', '.join(chain[i][0].options) or 'none'}")
            per[i][opt] = v
    for i, (s, _) in enumerate(chain):
        for k, v in per[i].items():
            per[i][k] = v = _coerce(s, k, s.options.get(k), v)
            if isinstance(v, float) and not math.isfinite(v):
                raise InitError(f"{s.name}: option {k} must be finite, got {v}")
    return per


def _coerce(scheme: Scheme, key: str, default, value):
    """Give an option the type of its default (strings from files/flags are parsed)."""
    if isinstance(value, str) and not isinstance(default, str):
        value = parse_value(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InitError(f"{scheme.name}: option {key} must be true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InitError(f"{scheme.name}: option {key} must be a number, got {value!r}")
    return value


# -- checks ----------------------------------------------------------------------------------------
def _requires(rmap, scheme: Scheme) -> None:
    for need in scheme.requires:
        if need == "attention":
            rmap.require_attention(scheme.name)
        elif need == "gains" and not rmap.by_role("gain"):
            raise InitError(f"{scheme.name} sets residual-branch gains, but {rmap.model_class} has none; "
                            f"build the model with branch_gain='{scheme.name}' (initlab ViT/GPT option)")
        elif need == "skip_scale" and rmap.controls.set_skip_scale is None:
            raise InitError(f"{scheme.name} needs a residual skip-scale control, which "
                            f"{rmap.model_class}'s role map does not expose")
        # "grid" is checked by the scheme's own check (it needs the model's patch grid)


def _check_rule_values(scheme: Scheme, options: dict) -> None:
    """Evaluate every rule on a generic region (width 64, depth 12, first block): a negative or
    non-finite std from the options is refused when the plan is built, without a model."""
    for rule in scheme.rules:
        for role in rule.roles:
            for kind in rule.kinds():
                ctx = Context(role, kind, 64, 64, 64, 12, 0, options, name=role)
                if value(rule.std, ctx) is None:
                    continue
                why = std_problem(rule, ctx)
                if why is not None:
                    raise InitError(f"{scheme.name}: {why}; check its options "
                                    f"({', '.join(f'{k}={v}' for k, v in options.items())})")


def _check_rule_stds(rmap, scheme: Scheme, options: dict) -> None:
    """Every region a rule will write gets a valid std (checked on the real model, writing nothing)."""
    from .spec import context
    for info in rmap:
        for slot in info.slots:
            rule = None
            for r in scheme.rules:
                if r.applies(info, slot):
                    rule = r
            if rule is None:
                continue
            ctx = context(rmap, info, slot, options)
            if value(rule.std, ctx) is None:
                continue
            why = std_problem(rule, ctx)
            if why is not None:
                raise InitError(f"{scheme.name} on {info.name}: {why}; check the scheme's options")


__all__ = ["InitPlan", "PlanStep", "init_", "build_seeded", "INIT_STREAM"]
