"""Adapter for initlab's Llama-style decoder (separate q/k/v/o, GQA, SwiGLU, RMSNorm, RoPE)."""
from __future__ import annotations

from ..models.llama import Llama
from .core import InputFacts, ModelFacts, PositionFacts, Role, RoleMap, RoleMapBuilder
from .initlab_models import branch_control
from .registry import register_adapter


def _layer_of(module_name: str):
    parts = module_name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 else None


def _positions(pos: str) -> PositionFacts:
    if pos in ("learned", "sincos"):
        return PositionFacts("learned" if pos == "learned" else "fixed", "pos_embed")
    return PositionFacts(pos)  # "rope" or "none"


def llama_roles(model: Llama) -> RoleMap:
    b = RoleMapBuilder(model)
    b.add_module("tok_embed", Role.TOKEN_EMBED)
    if "pos_embed" in b.named:
        b.add("pos_embed", Role.POS_EMBED, fan_in=1, fan_out=model.width)
    for i, block in enumerate(model.blocks):
        name = f"blocks.{i}.attn"
        attn = block.attn

        def set_scale(value: float, attn=attn) -> None:
            attn.scale = float(value)

        b.add_attention(i, name, q=b.linear(f"{name}.q_proj"), k=b.linear(f"{name}.k_proj"),
                        v=b.linear(f"{name}.v_proj"), o=b.linear(f"{name}.o_proj"),
                        n_heads=attn.n_heads, n_kv_heads=attn.n_kv_heads, set_logit_scale=set_scale,
                        causal=True)
        b.add_module(f"blocks.{i}.mlp.gate_proj", Role.MLP_GATE, layer=i)
        b.add_module(f"blocks.{i}.mlp.up_proj", Role.MLP_IN, layer=i)
        b.add_module(f"blocks.{i}.mlp.down_proj", Role.MLP_OUT, layer=i)
    if model.head is not None:
        b.add_module("head", Role.HEAD)
    b.add_norms(layer_of=_layer_of)
    b.controls.get_head_multiplier = lambda: model.head_multiplier
    b.controls.tied_head = model.head is None

    def set_head(value: float) -> None:
        model.head_multiplier = float(value)

    b.controls.set_head_multiplier = set_head
    branch_control(b, model)
    cfg = model.config
    b.facts = ModelFacts(
        inputs=InputFacts("tokens", None, vocab_size=cfg["vocab_size"], max_positions=cfg["block_size"]),
        positions=_positions(cfg["pos"]), causal=True, norm_position="pre")
    return b.build(width=model.width, depth=model.depth, adapter="initlab.Llama")


register_adapter("initlab.Llama", lambda m: isinstance(m, Llama), llama_roles)
