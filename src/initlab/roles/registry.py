"""Adapters teach the role map new model families; :func:`roles` picks the first that matches.

An adapter is ``(name, matches(model) -> bool, build(model) -> RoleMap)``. Adapters hold all
knowledge of storage layouts; schemes only ever read the resulting :class:`RoleMap`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import RoleMapError
from .core import RoleMap


@dataclass(frozen=True)
class Adapter:
    name: str
    matches: Callable[[nn.Module], bool]
    build: Callable[[nn.Module], RoleMap]


_ADAPTERS: list[Adapter] = []


def register_adapter(name: str, matches: Callable[[nn.Module], bool],
                     build: Callable[[nn.Module], RoleMap], *, first: bool = False) -> None:
    """Add an adapter; ``first=True`` puts it ahead of the built-in ones."""
    if any(a.name == name for a in _ADAPTERS):
        raise RoleMapError(f"an adapter named {name!r} is already registered")
    a = Adapter(name, matches, build)
    _ADAPTERS.insert(0, a) if first else _ADAPTERS.append(a)


def adapters() -> list[str]:
    return [a.name for a in _ADAPTERS]


def unwrap(model: nn.Module) -> nn.Module:
    """Strip ``torch.compile`` / DDP / FSDP-style wrappers that hold the real model."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        for attr in ("_orig_mod", "module", "_fsdp_wrapped_module"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module) and type(model).__name__ in (
                    "OptimizedModule", "DistributedDataParallel", "DataParallel",
                    "FullyShardedDataParallel"):
                model = inner
                break
    return model


def _with_branch_controls(rmap: RoleMap, inner: nn.Module) -> RoleMap:
    """An adapter without its own residual-branch control gets the generic one (hooks on the branch
    outputs the map names, :func:`initlab.roles.persist.branch_controls`)."""
    if rmap.controls.set_branch_multiplier is None:
        from .persist import branch_controls
        branch_controls(rmap, inner)
    return rmap


def roles(model: nn.Module, mapping: dict | None = None) -> RoleMap:
    """Build the :class:`RoleMap` of ``model``.

    Args:
        model: an initlab model, a supported third-party model, or anything with ``mapping``.
        mapping: explicit module-name patterns to roles, for models no adapter knows (see
            :func:`initlab.roles.mapping.roles_from_mapping`).
    """
    if not isinstance(model, nn.Module):
        raise RoleMapError(f"roles() needs a torch.nn.Module, got {type(model).__name__}")
    inner = unwrap(model)
    if mapping is not None:
        from .mapping import roles_from_mapping
        return _with_branch_controls(roles_from_mapping(inner, mapping), inner)
    for a in _ADAPTERS:
        if a.matches(inner):
            return _with_branch_controls(a.build(inner), inner)
    raise RoleMapError(
        f"initlab does not know how to map {type(inner).__module__}.{type(inner).__name__}. Pass an "
        f"explicit mapping, e.g. initlab.role_map(model, mapping={{'attention': {{'blocks.*.attn': "
        f"dict(q='q_proj', k='k_proj', v='v_proj', o='out_proj', heads=8)}}, 'mlp_in': ['**.fc1'], ...}}), "
        f"or register an adapter with initlab.roles.register_adapter. Known adapters: {', '.join(adapters())}.")
