"""Adapter for initlab's own ViT and GPT (fused or separate q/k/v)."""
from __future__ import annotations

from ..models.gpt import GPT
from ..models.layers import Attention, Block
from ..models.vit import ViT
from .core import InputFacts, ModelFacts, PositionFacts, Role, RoleMap, RoleMapBuilder
from .registry import register_adapter


def _attention(b: RoleMapBuilder, i: int, name: str, attn: Attention) -> None:
    d = attn.width
    if attn.fused_qkv:
        q, k, v = (b.linear(f"{name}.qkv", offset=j * d, d_out=d) for j in range(3))
    else:
        q, k, v = (b.linear(f"{name}.{p}") for p in ("q", "k", "v"))

    def set_scale(value: float, attn=attn) -> None:
        attn.scale = float(value)

    b.add_attention(i, name, q=q, k=k, v=v, o=b.linear(f"{name}.proj"), n_heads=attn.n_heads,
                    set_logit_scale=set_scale, causal=bool(getattr(attn, "causal", False)),
                    get_logit_scale=lambda attn=attn: attn.scale)


def _blocks(b: RoleMapBuilder, model) -> None:
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}"
        _attention(b, i, f"{p}.attn", block.attn)
        b.add_module(f"{p}.mlp.fc1", Role.MLP_IN, layer=i)
        b.add_module(f"{p}.mlp.fc2", Role.MLP_OUT, layer=i)
        for g in ("gain1", "gain2"):
            if getattr(block, g) is not None:
                b.add(f"{p}.{g}.gain", Role.GAIN, layer=i, fan_in=1, fan_out=model.width)


def _controls(b: RoleMapBuilder, model) -> None:
    b.controls.get_head_multiplier = lambda: model.head_multiplier
    b.controls.tied_head = getattr(model, "head", None) is None

    def set_head(value: float) -> None:
        model.head_multiplier = float(value)

    def set_skip(value: float) -> None:
        for block in model.blocks:
            block.skip_scale = float(value)
        if isinstance(model.config, dict) and "skip_scale" in model.config:
            model.config["skip_scale"] = float(value)  # the recorded config stays truthful for rebuilds

    b.controls.set_head_multiplier = set_head
    b.controls.set_skip_scale = set_skip
    branch_control(b, model)


def branch_control(b: RoleMapBuilder, model) -> None:
    """The residual-branch multiplier on every block (kept in the model's state dict)."""
    b.controls.get_branch_multiplier = model.branch_multiplier
    b.controls.set_branch_multiplier = model.set_branch_multiplier


def _positions(model, **kw) -> PositionFacts:
    """A ``"sincos"`` table is a buffer (fixed); ``"learned"``/``"sincos-learned"`` are parameters."""
    pos = model.config["pos"]
    if pos in (None, "none") or not hasattr(model, "pos_embed") or model.pos_embed is None:
        return PositionFacts(kind="none", **kw)
    kind = "fixed" if pos == "sincos" else "learned"
    return PositionFacts(kind=kind, table="pos_embed", tables=("pos_embed",), **kw)


def _layer_of(module_name: str):
    parts = module_name.split(".")
    return int(parts[1]) if parts[0] == "blocks" and len(parts) > 1 else None


def vit_roles(model: ViT) -> RoleMap:
    b = RoleMapBuilder(model)
    b.add_module("patch_embed", Role.PATCH_EMBED)
    if model.cls_token is not None:
        b.add("cls_token", Role.CLS_TOKEN, fan_in=1, fan_out=model.width)
    if "pos_embed" in b.named:
        b.add("pos_embed", Role.POS_EMBED, fan_in=1, fan_out=model.width)
    _blocks(b, model)
    b.add_module("head", Role.HEAD)
    b.add_norms(layer_of=_layer_of)
    _controls(b, model)
    cfg = model.config
    b.facts = ModelFacts(
        inputs=InputFacts("image", None, image_size=(cfg["image_size"], cfg["image_size"]),
                          in_chans=cfg["in_chans"]),
        positions=_positions(model, grid=(model.grid, model.grid),
                             prefix_tokens=0 if model.cls_token is None else 1,
                             table_prefix=0 if model.cls_token is None else 1),
        causal=False, norm_position=cfg["norm_position"])
    return b.build(width=model.width, depth=model.depth, adapter="initlab.ViT")


def gpt_roles(model: GPT) -> RoleMap:
    b = RoleMapBuilder(model)
    b.add_module("tok_embed", Role.TOKEN_EMBED)
    if "pos_embed" in b.named:
        b.add("pos_embed", Role.POS_EMBED, fan_in=1, fan_out=model.width)
    _blocks(b, model)
    if model.head is not None:
        b.add_module("head", Role.HEAD)
    b.add_norms(layer_of=_layer_of)
    _controls(b, model)
    cfg = model.config
    b.facts = ModelFacts(
        inputs=InputFacts("tokens", None, vocab_size=cfg["vocab_size"], max_positions=cfg["block_size"]),
        positions=_positions(model), causal=True, norm_position=cfg["norm_position"])
    return b.build(width=model.width, depth=model.depth, adapter="initlab.GPT")


register_adapter("initlab.ViT", lambda m: isinstance(m, ViT), vit_roles)
register_adapter("initlab.GPT", lambda m: isinstance(m, GPT), gpt_roles)
