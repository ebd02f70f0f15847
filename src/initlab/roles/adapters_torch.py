"""Adapter for models built from PyTorch's own attention modules.

Covers ``nn.MultiheadAttention`` (packed ``in_proj_weight`` (3E, E) with rows [q | k | v], or
separate ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight`` when ``kdim``/``vdim`` differ
from ``embed_dim``; the bias is always the packed ``in_proj_bias``), ``out_proj``, and the MLP of
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (``linear1`` -> mlp_in, ``linear2``
-> mlp_out). It matches any model that contains an ``nn.MultiheadAttention`` (and no other adapter
claimed it first), including ``nn.Transformer``, ``nn.TransformerEncoder`` and user models built
from these layers. Attention layers are numbered in module order; a decoder layer contributes its
self-attention and then its cross-attention.

Around the layers: ``nn.Embedding`` modules are ``token_embed`` (``pos_embed`` when their name says
position: ``pos``, ``wpe``, ``position``), an ``nn.Linear`` after the last attention layer is the
``head`` (one before the first projects the inputs into the trunk: ``mlp_in``), and a Linear whose
weight is an embedding's is a tied head. Other tensors get role ``other`` and are left alone by
every scheme; pass an explicit mapping (:mod:`initlab.roles.mapping`) to name them.

A second adapter here, ``torch.structural``, maps plain PyTorch models built without
``nn.MultiheadAttention`` (a nanoGPT with a fused ``c_attn``, a hand-written Llama block with
``q_proj``/``k_proj``/``v_proj``/``o_proj`` and grouped-query attention) from their module
structure, like Hugging Face models without a listed family.
"""
from __future__ import annotations

import re
from dataclasses import replace

from torch import nn

from ..errors import RoleMapError
from .core import (BIAS, InputFacts, ModelFacts, PositionFacts, Projection, Role, RoleMap,
                   RoleMapBuilder, join_name)
from .mapping import first_int
from .registry import register_adapter

_POS_NAME = re.compile(r"(^|[._])(pos|wpe|position)", re.I)

_LAYERS = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def add_mha(b: RoleMapBuilder, index: int, name: str, mha: nn.MultiheadAttention, *,
         cross: bool = False) -> None:
    e = mha.embed_dim
    bias = mha.in_proj_bias
    if mha._qkv_same_embed_dim:
        wname = join_name(name, "in_proj_weight")
        bname = join_name(name, "in_proj_bias") if bias is not None else None
        q, k, v = (Projection(wname, mha.in_proj_weight, "out_in", e, e, j * e, bias, bname)
                   for j in range(3))
    else:
        q, k, v = (Projection(join_name(name, f"{r}_proj_weight"), getattr(mha, f"{r}_proj_weight"),
                              "out_in", dim, e) for r, dim in (("q", e), ("k", mha.kdim), ("v", mha.vdim)))
    o_bias = mha.out_proj.bias
    o = Projection(join_name(name, "out_proj.weight"), mha.out_proj.weight, "out_in", e, e, 0,
                   o_bias, join_name(name, "out_proj.bias") if o_bias is not None else None)
    b.add_attention(index, name, q=q, k=k, v=v, o=o, n_heads=mha.num_heads, cross=cross)
    if not mha._qkv_same_embed_dim and bias is not None:
        # separate weights still share one packed bias: register its three slices
        for j, role in enumerate((Role.Q, Role.K, Role.V)):
            b.add(join_name(name, "in_proj_bias"), role, kind=BIAS, layer=index, fan_in=1, fan_out=e,
                  index=(slice(j * e, (j + 1) * e),))
    for extra in ("bias_k", "bias_v"):  # add_bias_kv: learned extra key/value tokens
        if isinstance(getattr(mha, extra, None), nn.Parameter):
            b.add(join_name(name, extra), Role.OTHER, kind=BIAS, layer=index, fan_in=1, fan_out=e)


def has_torch_attention(model: nn.Module) -> bool:
    return any(isinstance(m, nn.MultiheadAttention) for m in model.modules())


def torch_roles(model: nn.Module) -> RoleMap:
    b = RoleMapBuilder(model)
    n_attn = 0
    mlp_layers = 0
    inside: list[str] = []  # attention modules and Transformer layers: their Linears are mapped
    first = last = None  # module order of the first and last attention
    norm_first = set()
    order = {}
    for i, (name, mod) in enumerate(model.named_modules()):
        order[name] = i
        if any(name.startswith(c + ".") for c in inside):
            continue
        if isinstance(mod, _LAYERS):
            layer = n_attn  # index of this layer's self-attention, visited next
            b.add_module(join_name(name, "linear1"), Role.MLP_IN, layer=layer)
            b.add_module(join_name(name, "linear2"), Role.MLP_OUT, layer=layer)
            norm_first.add(bool(getattr(mod, "norm_first", False)))
            mlp_layers += 1
        elif isinstance(mod, nn.MultiheadAttention):
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else None
            # a decoder layer's multihead_attn reads the encoder's memory: cross-attention
            cross = isinstance(parent, nn.TransformerDecoderLayer) and name.endswith("multihead_attn")
            add_mha(b, n_attn, name, mod, cross=cross)
            n_attn += 1
            inside.append(name)
            first = i if first is None else first
            last = i
        elif isinstance(mod, nn.Embedding):
            b.add_module(name, Role.POS_EMBED if _POS_NAME.search(name.rsplit(".", 1)[-1]) else Role.TOKEN_EMBED)
    b.add_norms(layer_of=first_int)
    for name, mod in model.named_modules():  # Linears around the layers: input projection or head
        if not isinstance(mod, nn.Linear) or isinstance(mod, nn.modules.linear.NonDynamicallyQuantizableLinear):
            continue
        if any(name.startswith(c + ".") for c in inside) or "." in name and any(
                isinstance(m, _LAYERS) for m in _ancestors(model, name)):
            continue
        if b.canonical_name(mod.weight) in b.infos:  # its weight is an embedding's: a tied head
            if b.infos[b.canonical_name(mod.weight)].role == Role.TOKEN_EMBED.value:
                b.controls.tied_head = True
                if mod.bias is not None:
                    b.add(join_name(name, "bias"), Role.HEAD, kind=BIAS, fan_in=1, fan_out=mod.bias.numel())
            continue
        width = b.attention[0].d_model
        if mod.in_features == width and mod.out_features != width:
            role = Role.HEAD  # reads the trunk's width
        elif mod.out_features == width and mod.in_features != width:
            role = Role.MLP_IN  # writes into the trunk: an input projection
        else:
            role = Role.HEAD if order[name] > last else Role.MLP_IN
        b.add_module(name, role)
    if b.controls.tied_head is None:
        b.controls.tied_head = False if b.infos and any(
            Role.HEAD in i.roles for i in b.infos.values()) else None
    _bare_tables(b, model)
    width = b.attention[0].d_model
    embeds = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    batch_first = all(getattr(m, "batch_first", False) for m in model.modules()
                      if isinstance(m, nn.MultiheadAttention))
    tokens = [m for n, m in model.named_modules()
              if isinstance(m, nn.Embedding) and not _POS_NAME.search(n.rsplit(".", 1)[-1])]
    inputs = (InputFacts("tokens", None, batch_first, vocab_size=tokens[0].num_embeddings)
              if tokens else InputFacts("embeddings", None, batch_first))
    b.facts = ModelFacts(inputs=inputs,
                         norm_position=None if len(norm_first) != 1 else ("pre" if norm_first.pop() else "post"))
    rmap = b.build(width=width, depth=mlp_layers or n_attn, adapter="torch.nn", allow_unmapped=True)
    rmap.facts = replace(rmap.facts, positions=_positions(model, rmap))
    return rmap


def _ancestors(model: nn.Module, name: str):
    parts = name.split(".")
    return [model.get_submodule(".".join(parts[:i])) for i in range(1, len(parts))]


def _bare_tables(b: RoleMapBuilder, model: nn.Module) -> None:
    """Parameters sitting on a module (not in a layer): a position table or a class token."""
    for n, p in model.named_parameters():
        if b.canonical_name(p) in b.infos or p.dim() < 2 or first_int(n) is not None:
            continue
        leaf = n.rsplit(".", 1)[-1]
        if _POS_NAME.search(leaf):
            b.add(n, Role.POS_EMBED, fan_in=1, fan_out=p.shape[-1])
        elif re.search(r"cls|class_token", leaf, re.I):
            b.add(n, Role.CLS_TOKEN, fan_in=1, fan_out=p.shape[-1])


def _positions(model: nn.Module, rmap: RoleMap) -> PositionFacts:
    from .adapters_hf import position_facts
    rope = any(re.search(r"rotary|rope", type(m).__name__, re.I) for m in model.modules()) or any(
        re.search(r"freqs|rope|rotary|inv_freq", n, re.I) for n, _ in model.named_buffers())
    pos = position_facts(model, rmap, rope=rope)
    if pos.kind == "unknown" and not rmap.by_role(Role.POS_EMBED):
        pos = replace(pos, kind="none")
    return pos


def _looks_like_transformer(model: nn.Module) -> bool:
    from .adapters_hf import is_attention_class
    return any(is_attention_class(m) for m in model.modules())


def structural_torch_roles(model: nn.Module) -> RoleMap:
    """nanoGPT, a hand-written Llama: roles from the module structure (see the module doc)."""
    from .adapters_hf import embed_scale_of, norm_position_of, structural_roles
    try:
        rmap = structural_roles(model, None, "torch.structural")
    except RoleMapError as exc:
        raise RoleMapError(
            f"initlab cannot infer the roles of {type(model).__name__} from its structure: {exc}. "
            f"Pass an explicit mapping, e.g. initlab.role_map(model, mapping={{'attention': "
            f"{{'layers.*.attn': dict(q='q_proj', k='k_proj', v='v_proj', o='o_proj', heads=8, "
            f"kv_heads=2)}}, 'token_embed': ['tok_embeddings'], 'mlp_gate': ['**.w1'], 'mlp_in': ['**.w3'], "
            f"'mlp_out': ['**.w2'], 'head': ['output'], 'strict': False}}) (docs/adapters.md)") from None
    tied = False
    names = {id(p): n for n, p in model.named_parameters()}
    for name, mod in model.named_modules():  # a Linear outside the blocks sharing an embedding's weight
        w = getattr(mod, "weight", None)
        if isinstance(mod, nn.Linear) and first_int(name) is None and isinstance(w, nn.Parameter):
            info = rmap.params.get(names.get(id(w), ""))
            if info is not None and Role.TOKEN_EMBED in info.roles:
                tied = True
    rmap.controls.tied_head = tied
    tokens = [i for i in rmap.by_role(Role.TOKEN_EMBED) if i.param.dim() == 2]
    tables = [i for i in rmap.by_role(Role.POS_EMBED) if i.param.dim() >= 2]
    inputs = (InputFacts("tokens", None, vocab_size=tokens[0].param.shape[0],
                         max_positions=tables[0].param.numel() // tables[0].param.shape[-1] if tables else None)
              if tokens else InputFacts("unknown"))
    rmap.facts = replace(rmap.facts, inputs=inputs, positions=_positions(model, rmap),
                         embed_scale=embed_scale_of(model, rmap),
                         norm_position=norm_position_of(model, None))
    return rmap


register_adapter("torch.nn", has_torch_attention, torch_roles)
register_adapter("torch.structural", _looks_like_transformer, structural_torch_roles)
