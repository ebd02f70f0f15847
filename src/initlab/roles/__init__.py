"""Role map: which tensor is Q, K, V, O, MLP, embedding, norm, head, bias, for any supported model.

``initlab.roles(model)`` returns a :class:`RoleMap`; adapters add model families.
"""
from __future__ import annotations

from .core import (ATTENTION_ROLES, BIAS, WEIGHT, AttentionLayer, ModelControls, ParamInfo,
                   Projection, Role, RoleMap, RoleMapBuilder, Slot)
from .registry import adapters, register_adapter, roles, unwrap
from . import initlab_models  # noqa: F401  (registers the built-in adapters)

__all__ = ["roles", "Role", "RoleMap", "RoleMapBuilder", "ParamInfo", "Slot", "Projection",
           "AttentionLayer", "ModelControls", "register_adapter", "adapters", "unwrap",
           "ATTENTION_ROLES", "WEIGHT", "BIAS"]
