"""Registry of named schemes, spec strings, composition rules and :func:`init_`.

A spec is one name or several joined by ``+``, applied left to right, each optionally with
options in parentheses: ``"trunc_normal(0.01)+mimetic(beta_vo=0.2)"``. A bare value sets the
scheme's primary option; several options are separated by ``;`` (or ``,`` inside the
parentheses). ``split_specs`` splits a comma-separated list of specs (the CLI's ``--inits``)
without breaking parentheses.
"""
from __future__ import annotations

import math
import re
from typing import Iterable

import torch
from torch import nn

from ..errors import InitError
from .spec import Scheme, SchemeInfo, apply_rules

_REGISTRY: dict[str, Scheme] = {}
_ALIASES: dict[str, str] = {}
_S_PARAM = re.compile(r"^s=([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)$")

COMPOSITION_RULES = (
    "at most one parametrization (standard, nt, hybrid, mu, s=<x>) per spec",
    "a parametrization comes first: it redraws every weight, so schemes before it would be lost",
    "no scheme after mimetic*/structured may write the roles whose products they built "
    "(q, k, v, o; structured also the position table): put them last",
    "a scheme whose every write is overwritten by a later one is refused as dead (e.g. trunc_normal+gpt2)",
    "schemes needing the model's cooperation are refused on models without it: rezero/skipinit/"
    "layerscale need branch gains (branch_gain=...), deepnorm a skip-scale control and post-LN, "
    "structured a ViT patch grid",
)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_scheme(scheme: Scheme, *, aliases: Iterable[str] = (), replace: bool = False) -> Scheme:
    """Add ``scheme`` under its name (and ``aliases``); names are case- and -/_-insensitive."""
    if not isinstance(scheme, Scheme):
        raise InitError(f"register_scheme needs a Scheme, got {type(scheme).__name__}")
    if "+" in scheme.name or "(" in scheme.name:
        raise InitError(f"scheme name {scheme.name!r} may not contain '+' or '('")
    names = (scheme.name, *aliases)
    for n in names:  # validate every name before changing anything
        owner = _ALIASES.get(_key(n))
        if owner is not None and owner != scheme.name and not replace:
            raise InitError(f"a scheme named {n!r} is already registered ({owner}); pass replace=True")
    for n in names:
        _ALIASES[_key(n)] = scheme.name
    _REGISTRY[scheme.name] = scheme
    return scheme


def get_scheme(name: str) -> Scheme:
    """The registered :class:`Scheme` called ``name`` (or an alias, or ``s=<float>``)."""
    k = _key(name)
    if k in _ALIASES:
        return _REGISTRY[_ALIASES[k]]
    m = _S_PARAM.match(k)
    if m:
        from .delegates import parametrization_scheme
        return parametrization_scheme(f"s={m.group(1)}",
                                      f"effective-theory parametrization with s = {m.group(1)}")
    raise InitError(f"unknown init scheme {name!r}; known: {', '.join(_REGISTRY)} "
                    f"(or s=<float>; see `initlab schemes`)")


def schemes() -> list[SchemeInfo]:
    """Every registered scheme: name, description, citation, roles, parametrization, formula."""
    return [s.info() for s in _REGISTRY.values()]


def aliases_of(name: str) -> list[str]:
    return sorted(k for k, v in _ALIASES.items() if v == name and k != _key(name))


# -- spec strings ---------------------------------------------------------------------------------
def _split_top(text: str, seps: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise InitError(f"unbalanced ')' in init spec {text!r}")
        if ch in seps and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise InitError(f"unbalanced '(' in init spec {text!r}")
    parts.append("".join(cur))
    return parts


def split_specs(text: str) -> list[str]:
    """Split ``"default,trunc_normal(std=0.01,truncate=3),nt+mimetic"`` at top-level commas."""
    out = [p.strip() for p in _split_top(text, ",")]
    if any(not p for p in out):
        raise InitError(f"empty init name in {text!r}")
    return out


def _parse_value(text: str):
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        return t.strip("'\"")


def parse(spec: str) -> list[tuple[str, dict]]:
    """``"a+b(0.1)+c(k=v;k2=v2)"`` -> [("a", {}), ("b", {None: 0.1}), ("c", {"k": v, "k2": v2})]."""
    if not isinstance(spec, str) or not spec.strip():
        raise InitError(f"an init spec must be a non-empty string, got {spec!r}")
    out = []
    for part in _split_top(spec, "+"):
        part = part.strip()
        m = re.fullmatch(r"([^()]+?)\s*(?:\((.*)\))?", part, flags=re.S)
        if not part or m is None:
            raise InitError(f"cannot read {part!r} in init spec {spec!r}; write name or name(key=value)")
        name, args = m.group(1).strip(), m.group(2)
        opts: dict = {}
        if args is not None and args.strip():
            for a in _split_top(args, ",;"):
                if "=" in a:
                    k, v = a.split("=", 1)
                    opts[k.strip()] = _parse_value(v)
                elif a.strip():
                    if None in opts:
                        raise InitError(f"{name}: only one positional option allowed in {part!r}")
                    opts[None] = _parse_value(a)
        out.append((name, opts))
    return out


def resolve(spec: str) -> list[tuple[Scheme, dict]]:
    return [(get_scheme(name), opts) for name, opts in parse(spec)]


# -- composition ----------------------------------------------------------------------------------
def _refusal(chain: list[Scheme]) -> str | None:
    names = [s.name for s in chain]
    params = [s for s in chain if s.parametrization]
    if len(params) > 1:
        return (f"{' and '.join(s.name for s in params)} are two parametrizations; a model has one "
                f"(pick one, e.g. '{params[0].name}+mimetic')")
    if params:
        first = next(s for s in chain if s.written() or s.parametrization)
        if first is not params[0]:
            return (f"{params[0].name} must come first in '{'+'.join(names)}': it redraws every weight, "
                    f"so what {first.name} wrote before it would be lost (write "
                    f"'{params[0].name}+{first.name}')")
    for i, a in enumerate(chain):
        for b in chain[i + 1:]:
            hit = [r for r in a.fixes if r in {r for r, _ in b.written()}]
            if hit and set(b.fixes) & set(hit):
                return (f"{a.name} and {b.name} both build the structure of {', '.join(hit)}; the "
                        f"second would erase the first, so use one of them")
            if hit:
                return (f"{b.name} after {a.name} would overwrite {', '.join(hit)}, whose joint "
                        f"structure {a.name} built; put {a.name} last ('{b.name}+{a.name}')")
            wa = set(a.written())
            if wa and wa <= set(b.written()):
                return (f"{a.name} is dead in '{'+'.join(names)}': {b.name} overwrites everything it "
                        f"writes; drop {a.name}")
    return None


def refusal(spec: str) -> str | None:
    """Why ``spec`` is refused (a sentence), or None when it composes. Model checks not included."""
    return _refusal([s for s, _ in resolve(spec)])


def check_spec(spec: str) -> None:
    """Raise :class:`InitError` if ``spec`` names unknown schemes or a refused combination."""
    why = refusal(spec)
    if why is not None:
        raise InitError(why)


def parametrization_of(spec: str) -> str | None:
    """The parametrization a spec implies ("nt" for "nt+mimetic"), or None; the engine builds its
    optimizer groups with it."""
    chain = [s for s, _ in resolve(spec)]
    why = _refusal(chain)
    if why is not None:
        raise InitError(why)
    for s in chain:
        if s.parametrization:
            return s.parametrization
    return None


# -- options --------------------------------------------------------------------------------------
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
        idx = [i for i, (s, _) in enumerate(chain) if s.name == target]
        for i in idx:
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
        value = _parse_value(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InitError(f"{scheme.name}: option {key} must be true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InitError(f"{scheme.name}: option {key} must be a number, got {value!r}")
    return value


# -- the entry point ------------------------------------------------------------------------------
def _requires(model: nn.Module, rmap, scheme: Scheme) -> None:
    for need in scheme.requires:
        if need == "attention" and not rmap.attention:
            raise InitError(f"{scheme.name} initializes attention, but {rmap.model_class} has no attention "
                            f"layers in its role map")
        elif need == "gains" and not rmap.by_role("gain"):
            raise InitError(f"{scheme.name} sets residual-branch gains, but {rmap.model_class} has none; "
                            f"build the model with branch_gain='{scheme.name}' (initlab ViT/GPT option)")
        elif need == "skip_scale" and rmap.controls.set_skip_scale is None:
            raise InitError(f"{scheme.name} needs a residual skip-scale control, which "
                            f"{rmap.model_class}'s role map does not expose")


@torch.no_grad()
def init_(model: nn.Module, spec: str = "default", *, generator: torch.Generator | None = None,
          role_map=None, **options) -> nn.Module:
    """Initialize ``model`` in place with a named scheme or a ``+``-joined chain of them.

    Args:
        model: any model :func:`initlab.roles` can map (wrappers are looked through).
        spec: e.g. ``"gpt2"``, ``"trunc_normal(0.01)+mimetic"``, ``"nt+mimetic"``.
        generator: a CPU ``torch.Generator``; every draw of the chain uses it, in order.
        role_map: a precomputed role map (built when omitted).
        **options: scheme options. A plain key goes to every scheme of the chain that has it
            (unknown keys are an error); ``"scheme.key"`` targets one scheme and is ignored when
            that scheme is not in the chain.

    Returns ``model``. Refused combinations and models that cannot cooperate raise
    :class:`~initlab.errors.InitError` before anything is written.
    """
    if generator is not None and (not isinstance(generator, torch.Generator)
                                  or generator.device.type != "cpu"):
        raise InitError("generator must be a CPU torch.Generator (draws are made on the CPU and "
                        "copied to the parameters' device)")
    chain = resolve(spec)
    why = _refusal([s for s, _ in chain])
    if why is not None:
        raise InitError(why)
    per = _route(chain, options)
    for n, p in model.named_parameters():
        if p.is_meta:
            raise InitError(f"parameter {n} is on the meta device; materialize the model first "
                            f"(model.to_empty(device=...)), then initialize it")
    if role_map is None:
        from ..roles import roles
        role_map = roles(model)
    from ..roles.dtensor import full_tensors  # FSDP2: read/write full tensors, then reshard
    with full_tensors(role_map) as rm:
        for (scheme, _), o in zip(chain, per):
            _requires(model, rm, scheme)
            if scheme.check is not None:
                scheme.check(model, rm, o)
        for (scheme, _), o in zip(chain, per):
            if scheme.rules:
                apply_rules(rm, scheme.rules, o, generator)
            if scheme.apply is not None:
                scheme.apply(model, rm, o, generator)
            if scheme.setup is not None:
                scheme.setup(model, rm, o)
    return model
