"""Let a module be called like the function it is named after.

``initlab.roles``, ``initlab.schemes`` and ``initlab.probe`` are public functions *and* modules of
the same name. Importing a submodule binds it as an attribute of its package, shadowing a function
exported under that name, so each of these modules is made callable instead: ``initlab.roles(model)``
works, and so does ``initlab.roles.Role``, whatever was imported first.
"""
from __future__ import annotations

import sys
import types
from typing import Callable


def make_module_callable(module_name: str, func: Callable) -> None:
    """Calling the module ``module_name`` calls ``func`` with the same arguments."""
    module = sys.modules[module_name]

    class CallableModule(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return func(*args, **kwargs)

    CallableModule.__call__.__doc__ = func.__doc__
    module.__class__ = CallableModule
