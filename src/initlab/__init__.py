"""initlab: initialize Transformers the way theory and pre-trained models say they should be.

The public API, in one place (imported lazily, so ``import initlab`` stays fast):

Verbs
    ``role_map(model)``                   which tensor is Q, K, V, O, MLP, embedding, norm, head
    ``init_(model, spec, generator=)``    a named scheme or a ``+`` chain (``"nt+mimetic"``), in place
    ``list_schemes()``                    every registered scheme: name, citation, roles, formula
    ``mimetic_(model, preset=...)``       mimetic attention init (arXiv 2305.09828), in place
    ``parametrize_(model, p)``            draw every weight as a parametrization prescribes
    ``param_groups(model, p, lr=...)``    optimizer groups with the parametrization's lr/wd factors
    ``probe_model(model, batch)``         signal propagation at init, held against the theory
    ``create_model(name, ...)``           a reference ViT/GPT preset (``"vit-micro"``, ``"gpt-mini"``)
    ``materialize_(model, device, init=)`` allocate a meta-device model and initialize it
    ``restore_(model)``                   after a reload, put back a tied head's multiplier

Values
    ``Parametrization`` (standard, nt, hybrid, mu, s=x; arXiv 2304.02034), ``InitPlan`` (a spec
    parsed and validated once, with the run's one Parametrization), ``RoleMap``, ``Role``, ``ViT``,
    ``GPT``, and ``InitlabError``, the base of every error initlab raises on purpose.

Submodules with more: ``initlab.roles``, ``initlab.schemes``, ``initlab.parametrization``,
``initlab.theory``, ``initlab.probe``, ``initlab.models``, ``initlab.train``, ``initlab.data``.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    # verbs
    "role_map": ("initlab.roles", "role_map"),
    "init_": ("initlab.schemes", "init_"),
    "list_schemes": ("initlab.schemes", "list_schemes"),
    "mimetic_": ("initlab.mimetic", "mimetic_"),
    "parametrize_": ("initlab.parametrization", "parametrize_"),
    "param_groups": ("initlab.parametrization", "param_groups"),
    "probe_model": ("initlab.probe", "probe"),
    "create_model": ("initlab.models", "create_model"),
    "materialize_": ("initlab.train.meta", "materialize_"),
    "restore_": ("initlab.roles.persist", "restore_"),
    # values
    "Parametrization": ("initlab.parametrization", "Parametrization"),
    "InitPlan": ("initlab.schemes", "InitPlan"),
    "RoleMap": ("initlab.roles", "RoleMap"),
    "Role": ("initlab.roles", "Role"),
    "ViT": ("initlab.models", "ViT"),
    "GPT": ("initlab.models", "GPT"),
    "InitlabError": ("initlab.errors", "InitlabError"),
}
_SUBMODULES = {"models", "roles", "data", "errors", "theory", "train", "cli", "mimetic",
               "parametrization", "schemes", "probe", "coord_check", "weights", "output", "values",
               "plotting", "experiments"}


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


__all__ = list(_LAZY)
