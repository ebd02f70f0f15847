"""initlab: initialize Transformers the way theory and pre-trained models say they should be.

Public API (imported lazily, so ``import initlab`` stays fast and optional pieces stay optional):

* ``initlab.roles(model)`` (the package is callable) -> :class:`~initlab.roles.RoleMap` (which tensor is Q, K, V, O, ...)
* ``initlab.mimetic_(model, ...)``: mimetic attention initialization (arXiv 2305.09828)
* ``initlab.Parametrization``, ``initlab.parametrize_``, ``initlab.param_groups``: the
  effective-theory family (arXiv 2304.02034)
* ``initlab.init_(model, scheme)``, ``initlab.schemes()``: the registry of named schemes
* ``initlab.probe(model, batch)``: signal propagation at initialization; ``initlab.theory``
* ``initlab.models``: reference ``ViT`` and ``GPT``
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "Role": ("initlab.roles", "Role"),
    "RoleMap": ("initlab.roles", "RoleMap"),
    "mimetic_": ("initlab.mimetic", "mimetic_"),
    "ViT": ("initlab.models", "ViT"),
    "GPT": ("initlab.models", "GPT"),
    "create_model": ("initlab.models", "create_model"),
    "Parametrization": ("initlab.parametrization", "Parametrization"),
    "parametrize_": ("initlab.parametrization", "parametrize_"),
    "param_groups": ("initlab.parametrization", "param_groups"),
    "init_": ("initlab.schemes", "init_"),
    "InitlabError": ("initlab.errors", "InitlabError"),
}
_SUBMODULES = {"models", "roles", "data", "errors", "theory", "train", "cli", "mimetic",
               "parametrization", "schemes", "probe"}


# ``roles``, ``schemes`` and ``probe`` are callable modules: ``initlab.schemes()`` lists the schemes
# and ``initlab.schemes.init_`` is reachable, whichever is used first.


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"initlab.{name}")
    raise AttributeError(f"module 'initlab' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))


__all__ = sorted(_LAZY)
