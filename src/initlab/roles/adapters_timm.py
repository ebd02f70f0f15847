"""Adapter for timm's ``VisionTransformer`` (fused ``qkv`` Linear, ``proj``, LayerScale gains).

Matched by class name and module (``timm.*``), so importing initlab never imports timm. Layout
(huggingface/pytorch-image-models ``timm/layers/attention.py``): ``blocks.i.attn.qkv`` is an
``nn.Linear`` of shape (3d, d) with rows [q | k | v], head h owning rows [h*k, (h+1)*k) of each.
"""
from __future__ import annotations

from torch import nn

from .core import RoleMap
from .mapping import roles_from_mapping
from .registry import register_adapter

TIMM_VIT_MAPPING = {
    "attention": {"blocks.*.attn": dict(qkv="qkv", o="proj", heads="num_heads")},
    "patch_embed": ["patch_embed.proj"],
    "cls_token": ["cls_token"],
    "pos_embed": ["pos_embed"],
    "other": ["reg_token", "mask_token"],
    "mlp_in": ["blocks.*.mlp.fc1"],
    "mlp_out": ["blocks.*.mlp.fc2"],
    "gain": ["blocks.*.ls1", "blocks.*.ls2"],
    "head": ["head", "head.fc", "attn_pool.**"],
}


def is_timm_vit(model: nn.Module) -> bool:
    cls = type(model)
    return cls.__name__ == "VisionTransformer" and cls.__module__.split(".")[0] == "timm"


def timm_vit_roles(model: nn.Module) -> RoleMap:
    return roles_from_mapping(model, {**TIMM_VIT_MAPPING, "strict": False},
                              adapter="timm.VisionTransformer", require_matches=False)


register_adapter("timm.VisionTransformer", is_timm_vit, timm_vit_roles)
