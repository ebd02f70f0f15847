"""Explicit mappings: module-name patterns to roles, for any model no adapter knows.

Format (every key optional except ``attention``). Patterns are matched against the names of
``model.named_modules()`` (or of ``model.named_parameters()`` for tensors that live directly on a
module, such as a class token), segment by segment: ``*`` matches within one dotted segment
(``blocks.*.attn`` matches ``blocks.3.attn`` but not ``blocks.3.attn.qkv``), ``**`` matches any
number of segments (``**.fc1`` matches ``fc1`` and ``blocks.3.mlp.fc1``), ``?`` one character::

    initlab.role_map(model, mapping={
        "attention": {
            # separate q/k/v/o Linears (names relative to the matched module)
            "blocks.*.attn": dict(q="q_proj", k="k_proj", v="v_proj", o="out_proj", heads=8),
            # or a fused qkv tensor, [q | k | v] along the output axis
            # "blocks.*.attn": dict(qkv="qkv", o="proj", heads=8, kv_heads=2),
        },
        "token_embed": ["tok_emb"], "pos_embed": ["pos_emb"], "patch_embed": ["stem"],
        "cls_token": ["cls"], "mlp_in": ["**.fc1"], "mlp_out": ["**.fc2"], "head": ["lm_head"],
        "mlp_gate": ["**.w1"], "router": ["**.gate"],  # a gated MLP's gate, an MoE router
        "gain": ["**.ls*"], "norm": ["**.ln*"],   # norms are also found automatically
        "other": ["rotary.*"],                     # mapped but touched by no scheme
        "strict": True,                            # unmapped parameters are an error
    })

In an attention spec:

* ``heads`` (required) and ``kv_heads`` (default ``heads``; fewer for grouped-query attention):
  an int, or a string naming an attribute of the attention module or of the model
  (``"num_heads"``, ``"config.num_key_value_heads"``).
* ``layout``: ``"auto"`` (default: Hugging Face ``Conv1D`` is ``"in_out"``, everything else
  ``"out_in"`` like ``nn.Linear``), ``"out_in"`` or ``"in_out"``.
* ``head_dim``: optional; default = q width / heads.
* ``cross``: True for a cross-attention layer (keys/values read another sequence: mimetic init
  leaves it alone); ``causal``: True/False when the layer is masked to earlier positions.

``q``/``k``/``v``/``qkv``/``o`` name a submodule with a ``weight`` (an ``nn.Linear``, a Hugging Face
``Conv1D``) or a 2-D parameter of the attention module itself, laid out (out, in) like a Linear's
weight; its bias is the parameter of the same name with ``weight`` replaced by ``bias``, if there
is one. So ``nn.MultiheadAttention``'s packed weights are
``dict(qkv="in_proj_weight", o="out_proj", heads="num_heads")`` (bias: ``in_proj_bias``).

A pattern that matches nothing is an error (it is almost always a typo). Layer numbers of other
tensors are the first integer in their module path (``blocks.3.mlp.fc1`` -> 3).
"""
from __future__ import annotations

import functools
import re
from typing import Any

from torch import nn

from ..errors import RoleMapError
from .core import BIAS, Projection, Role, RoleMap, RoleMapBuilder

_ROLE_KEYS = ("patch_embed", "token_embed", "pos_embed", "cls_token", "mlp_in", "mlp_gate", "mlp_out",
              "router", "norm", "head", "gain", "other")
_ATTN_KEYS = {"q", "k", "v", "o", "qkv", "heads", "kv_heads", "layout", "head_dim", "cross", "causal",
              "residual_in"}


def scale_getter(modules):
    """A getter of the attention-logit multiplier (``scaling``/``scale`` float attribute) of the
    first module that has one, or None (the layer then uses 1/√head_dim)."""
    for mod in modules:
        for attr in ("scaling", "scale"):
            v = getattr(mod, attr, None)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return lambda mod=mod, attr=attr: getattr(mod, attr)
    return None


def first_int(name: str) -> int | None:
    m = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
    return int(m.group(1)) if m else None


def _resolve_count(value: Any, module: nn.Module, model: nn.Module, what: str, where: str) -> int:
    if isinstance(value, bool):
        raise RoleMapError(f"{where}: {what} must be an int or an attribute name, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        n = None
        for root in (module, model):
            obj = root
            try:
                for part in value.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                continue
            n = obj
            break
        if not isinstance(n, int) or isinstance(n, bool):
            raise RoleMapError(f"{where}: {what}={value!r} names no integer attribute of the "
                               f"attention module or the model; give the number instead")
    else:
        raise RoleMapError(f"{where}: {what} must be an int or an attribute name, got {value!r}")
    if n <= 0:
        raise RoleMapError(f"{where}: {what} must be positive, got {n}")
    return n


def module_layout(module: nn.Module) -> str:
    """``"in_out"`` for Hugging Face ``Conv1D`` (weight (in, out)), else ``"out_in"``."""
    return "in_out" if type(module).__name__ == "Conv1D" else "out_in"


def _sub(prefix: str, rel: str) -> str:
    return f"{prefix}.{rel}" if prefix else rel


@functools.lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> re.Pattern:
    """Compile a dotted-name pattern: ``*`` within a segment, ``**`` across segments, ``?``."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**.", i):
            out.append(r"(?:.*\.)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(r".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^.]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _matching(names, pattern: str) -> list[str]:
    rx = pattern_regex(pattern)
    return [n for n in names if rx.match(n)]


def add_attention_spec(b: RoleMapBuilder, index: int, name: str, spec: dict, model: nn.Module,
                       ) -> None:
    """Register one attention module described by a mapping spec (see module docstring)."""
    unknown = set(spec) - _ATTN_KEYS
    if unknown:
        raise RoleMapError(f"attention spec for {name}: unknown keys {sorted(unknown)}; "
                           f"allowed: {sorted(_ATTN_KEYS)}")
    module = model.get_submodule(name)
    if "heads" not in spec:
        raise RoleMapError(f"attention spec for {name}: 'heads' is required (e.g. heads=8)")
    heads = _resolve_count(spec["heads"], module, model, "heads", name)
    kv_heads = _resolve_count(spec.get("kv_heads", heads), module, model, "kv_heads", name)
    if heads % kv_heads:
        raise RoleMapError(f"{name}: {heads} query heads do not split into {kv_heads} key/value "
                           f"groups; kv_heads must divide heads")
    layout_opt = spec.get("layout", "auto")
    if layout_opt not in ("auto", "out_in", "in_out"):
        raise RoleMapError(f"{name}: layout must be 'auto', 'out_in' or 'in_out', got {layout_opt!r}")

    def lin(rel: str, **kw) -> Projection:
        full = _sub(name, rel)
        try:
            mod = model.get_submodule(full)
        except AttributeError:
            mod = None
        if mod is None or not isinstance(getattr(mod, "weight", None), nn.Parameter):
            return _param_projection(model, name, rel, layout_opt, **kw)
        layout = module_layout(mod) if layout_opt == "auto" else layout_opt
        return b.linear(full, layout=layout, **kw)

    if "qkv" in spec:
        if any(k in spec for k in ("q", "k", "v")):
            raise RoleMapError(f"attention spec for {name}: give either qkv= or q=, k=, v=, not both")
        whole = lin(spec["qkv"])
        total = whole.d_out
        head_dim = spec.get("head_dim") or total // (heads + 2 * kv_heads)
        if (heads + 2 * kv_heads) * head_dim != total:
            raise RoleMapError(f"{whole.name}: fused width {total} does not hold {heads} query and "
                               f"2x{kv_heads} key/value heads of equal size; check heads/kv_heads")
        dq, dkv = heads * head_dim, kv_heads * head_dim
        q = lin(spec["qkv"], offset=0, d_out=dq)
        k = lin(spec["qkv"], offset=dq, d_out=dkv)
        v = lin(spec["qkv"], offset=dq + dkv, d_out=dkv)
    else:
        missing = [k for k in ("q", "k", "v") if k not in spec]
        if missing:
            raise RoleMapError(f"attention spec for {name}: missing {missing}; give q=, k=, v= "
                               f"(separate projections) or qkv= (fused)")
        q, k, v = lin(spec["q"]), lin(spec["k"]), lin(spec["v"])
    if "o" not in spec:
        raise RoleMapError(f"attention spec for {name}: missing o= (the output projection)")
    o = lin(spec["o"])
    head_dim = spec.get("head_dim")
    causal = spec.get("causal", getattr(module, "is_causal", None))  # HF attention modules say so
    cross = spec.get("cross", False)
    for key, val in (("cross", cross), ("causal", causal)):
        if val is not None and not isinstance(val, bool):
            raise RoleMapError(f"attention spec for {name}: {key} must be True or False, got {val!r}")
    residual_in = spec.get("residual_in")  # value-input features the residual carries to the output
    if residual_in is not None and not (
            isinstance(residual_in, (tuple, list)) and len(residual_in) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in residual_in)):
        raise RoleMapError(f"attention spec for {name}: residual_in must be (offset, width), two "
                           f"ints, got {residual_in!r}")
    inner = [module] + [model.get_submodule(pr.name.rsplit(".", 1)[0]) for pr in (q,) if "." in pr.name]
    b.add_attention(index, name, q=q, k=k, v=v, o=o, n_heads=heads, n_kv_heads=kv_heads,
                    head_dim=head_dim if "qkv" not in spec else None, cross=bool(cross),
                    causal=causal if isinstance(causal, bool) else None,
                    get_logit_scale=scale_getter(inner),
                    residual_in=None if residual_in is None else tuple(residual_in))


def _param_projection(model: nn.Module, name: str, rel: str, layout_opt: str, *, offset: int = 0,
                      d_out: int | None = None) -> Projection:
    """A projection over a bare 2-D parameter (``in_proj_weight``); bias: ``*bias`` beside it."""
    full = _sub(name, rel)
    try:
        p = model.get_parameter(full)
    except AttributeError:
        raise RoleMapError(f"attention spec for {name}: {rel!r} is neither a submodule with a weight "
                           f"nor a parameter (looked for {full}); name a Linear/Conv1D module or a "
                           f"2-D parameter such as 'in_proj_weight'") from None
    if p.dim() != 2:
        raise RoleMapError(f"{full} has shape {tuple(p.shape)}; a projection needs a 2-D weight")
    layout = "out_in" if layout_opt == "auto" else layout_opt
    d_in, total = (p.shape[1], p.shape[0]) if layout == "out_in" else (p.shape[0], p.shape[1])
    owner, _, pname = full.rpartition(".")
    bias, bname = None, None
    if "weight" in pname:
        cand = _sub(owner, pname.replace("weight", "bias"))
        try:
            bp = model.get_parameter(cand)
        except AttributeError:
            bp = None
        if bp is not None and bp.dim() == 1 and bp.shape[0] == total:
            bias, bname = bp, cand
    return Projection(full, p, layout, d_in, total - offset if d_out is None else d_out, offset,
                      bias, bname)


def roles_from_mapping(model: nn.Module, mapping: dict, *, adapter: str = "mapping",
                       require_matches: bool = True) -> RoleMap:
    """Build a :class:`RoleMap` from an explicit mapping (format in the module docstring).

    ``require_matches=False`` lets adapters list optional parts (a pooler, a class token) that a
    given model may not have.
    """
    if not isinstance(mapping, dict):
        raise RoleMapError(f"mapping must be a dict, got {type(mapping).__name__}")
    unknown = set(mapping) - set(_ROLE_KEYS) - {"attention", "strict"}
    if unknown:
        raise RoleMapError(f"mapping has unknown keys {sorted(unknown)}; allowed: attention, "
                           f"{', '.join(_ROLE_KEYS)}, strict")
    attn = mapping.get("attention") or {}
    if not isinstance(attn, dict):
        raise RoleMapError("mapping['attention'] must be a dict of module pattern -> spec dict")
    b = RoleMapBuilder(model)
    modules = dict(model.named_modules())
    module_names = [n for n in modules if n]

    # attention layers, numbered in model order
    matched: list[tuple[str, dict]] = []
    for pattern, spec in attn.items():
        if not isinstance(spec, dict):
            raise RoleMapError(f"attention spec for {pattern!r} must be a dict, got {spec!r}")
        names = _matching(module_names, pattern)
        if not names and require_matches:
            raise RoleMapError(f"attention pattern {pattern!r} matches no module of "
                               f"{type(model).__name__}")
        matched += [(n, spec) for n in names]
    order = {n: i for i, n in enumerate(module_names)}
    matched.sort(key=lambda t: order[t[0]])
    seen = set()
    for i, (name, spec) in enumerate(m for m in matched if not (m[0] in seen or seen.add(m[0]))):
        add_attention_spec(b, i, name, spec, model)

    b.add_norms(layer_of=first_int)  # first, so a broad pattern ("cls.*") cannot claim a norm
    for key in _ROLE_KEYS:
        patterns = mapping.get(key, [])
        if isinstance(patterns, str):
            patterns = [patterns]
        for pattern in patterns:
            mods = [n for n in _matching(module_names, pattern)
                    if any(True for _ in modules[n].parameters(recurse=False))]
            params = [] if mods else _matching(b.named, pattern)
            if not mods and not params:
                if require_matches:
                    raise RoleMapError(f"{key} pattern {pattern!r} matches no module or parameter "
                                       f"of {type(model).__name__}")
                continue
            for n in mods:
                for pname, p in modules[n].named_parameters(recurse=False):
                    full = _sub(n, pname)
                    if b.canonical_name(p) in b.infos:
                        continue
                    kind = BIAS if pname == "bias" else "weight"
                    if kind == BIAS:
                        b.add(full, key, kind=BIAS, layer=first_int(n), fan_in=1, fan_out=p.numel())
                    elif pname == "weight":
                        b.add_module(n, key, layer=first_int(n))
                    else:
                        b.add(full, key, layer=first_int(n), fan_in=1, fan_out=p.shape[-1])
            for n in params:
                p = b.named[n]
                if b.canonical_name(p) not in b.infos:
                    b.add(n, key, kind=BIAS if n.endswith("bias") else "weight",
                          layer=first_int(n), fan_in=1, fan_out=p.shape[-1] if p.dim() else 1)
    if not b.attention:
        raise RoleMapError(f"the mapping for {type(model).__name__} found no attention layer")
    width = b.attention[0].d_model
    return b.build(width=width, depth=len(b.attention), adapter=adapter,
                   allow_unmapped=not mapping.get("strict", True))
