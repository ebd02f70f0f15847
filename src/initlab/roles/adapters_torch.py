"""Adapter for models built from PyTorch's own attention modules.

Covers ``nn.MultiheadAttention`` (packed ``in_proj_weight`` (3E, E) with rows [q | k | v], or
separate ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight`` when ``kdim``/``vdim`` differ
from ``embed_dim``; the bias is always the packed ``in_proj_bias``), ``out_proj``, and the MLP of
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer`` (``linear1`` -> mlp_in, ``linear2``
-> mlp_out). It matches any model that contains an ``nn.MultiheadAttention`` (and no other adapter
claimed it first), including ``nn.Transformer``, ``nn.TransformerEncoder`` and user models built
from these layers. Attention layers are numbered in module order; a decoder layer contributes its
self-attention and then its cross-attention.

Tensors this adapter cannot name (a user's own embedding or head Linear) get role ``other`` and are
left alone by every scheme; pass an explicit mapping (:mod:`initlab.roles.mapping`) to name them.
``nn.Embedding`` modules are mapped as ``token_embed``.
"""
from __future__ import annotations

from torch import nn

from .core import BIAS, InputFacts, ModelFacts, Projection, Role, RoleMap, RoleMapBuilder, join_name
from .registry import register_adapter

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
    for name, mod in model.named_modules():
        if isinstance(mod, _LAYERS):
            layer = n_attn  # index of this layer's self-attention, visited next
            b.add_module(join_name(name, "linear1"), Role.MLP_IN, layer=layer)
            b.add_module(join_name(name, "linear2"), Role.MLP_OUT, layer=layer)
            mlp_layers += 1
        elif isinstance(mod, nn.MultiheadAttention):
            add_mha(b, n_attn, name, mod)
            n_attn += 1
        elif isinstance(mod, nn.Embedding):
            b.add_module(name, Role.TOKEN_EMBED)
    b.add_norms()
    width = b.attention[0].d_model
    embeds = [m for m in model.modules() if isinstance(m, nn.Embedding)]
    batch_first = all(getattr(m, "batch_first", False) for m in model.modules()
                      if isinstance(m, nn.MultiheadAttention))
    b.facts = ModelFacts(inputs=InputFacts("tokens", None, batch_first, vocab_size=embeds[0].num_embeddings)
                         if embeds else InputFacts("embeddings", None, batch_first))
    return b.build(width=width, depth=mlp_layers or n_attn, adapter="torch.nn",
                   allow_unmapped=True)


register_adapter("torch.nn", has_torch_attention, torch_roles)
