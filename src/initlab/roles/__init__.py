"""Role map: which tensor is Q, K, V, O, MLP, embedding, norm, head, bias, for any supported model.

``initlab.role_map(model)`` (here also ``roles(model)``) returns a :class:`RoleMap`; adapters add
model families.
"""
from __future__ import annotations

from .core import (ATTENTION_ROLES, BIAS, WEIGHT, AttentionLayer, InputFacts, ModelControls, ModelFacts,
                   ParamInfo, PositionFacts, Projection, Role, RoleMap, RoleMapBuilder, Slot)
from .registry import adapters, register_adapter, roles, unwrap
from . import initlab_llama, initlab_models  # noqa: F401  (registers the built-in adapters)
from . import adapters_hf, adapters_timm, adapters_torch  # noqa: F401  (third-party layouts; import-guarded)
from .mapping import roles_from_mapping

role_map = roles  # the top-level verb's name: initlab.role_map(model)

__all__ = ["roles", "role_map", "Role", "RoleMap", "RoleMapBuilder", "ParamInfo", "Slot", "Projection",
           "AttentionLayer", "ModelControls", "ModelFacts", "InputFacts", "PositionFacts", "register_adapter", "adapters", "unwrap",
           "ATTENTION_ROLES", "WEIGHT", "BIAS", "roles_from_mapping"]
