"""Registry of named schemes, spec strings, composition rules and :func:`init_`.

A spec is one name or several joined by ``+``, applied left to right, each optionally with
options in parentheses: ``"trunc_normal(0.01)+mimetic(beta_vo=0.2)"``. A bare value sets the
scheme's primary option; several options are separated by ``;`` (or ``,`` inside the
parentheses). ``split_specs`` splits a comma-separated list of specs (the CLI's ``--inits``)
without breaking parentheses.
"""
from __future__ import annotations

import re
from typing import Iterable

from ..errors import InitError
from ..values import parse_value
from .spec import Scheme, SchemeInfo

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


def parse(spec: str) -> list[tuple[str, dict]]:
    """``"a+b(0.1)+c(k=v;k2=v2)"`` -> [("a", {}), ("b", {None: 0.1}), ("c", {"k": v, "k2": v2})]."""
    if not isinstance(spec, str) or not spec.strip():
        raise InitError(f"an init spec must be a non-empty string, got {spec!r}")
    out = []
    for part in _split_top(spec, "+"):
        part = part.strip()
        if not part:
            raise InitError(f"empty name around '+' in init spec {spec!r}; join names like nt+mimetic")
        m = re.fullmatch(r"([^()]+?)\s*(?:\((.*)\))?", part, flags=re.S)
        if not part or m is None:
            raise InitError(f"cannot read {part!r} in init spec {spec!r}; write name or name(key=value)")
        name, args = m.group(1).strip(), m.group(2)
        opts: dict = {}
        if args is not None and args.strip():
            for a in _split_top(args, ",;"):
                if "=" in a:
                    k, v = a.split("=", 1)
                    opts[k.strip()] = parse_value(v)
                elif a.strip():
                    if None in opts:
                        raise InitError(f"{name}: only one positional option allowed in {part!r}")
                    opts[None] = parse_value(a)
        out.append((name, opts))
    return out


def resolve(spec: str) -> list[tuple[Scheme, dict]]:
    return [(get_scheme(name), opts) for name, opts in parse(spec)]


# -- composition ----------------------------------------------------------------------------------
def refusal_of(chain: list[Scheme]) -> str | None:
    """Why a chain of schemes is refused (a sentence), or None when it composes."""
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
