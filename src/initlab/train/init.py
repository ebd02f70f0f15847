"""Initialization of a freshly built model from its :class:`TrainConfig`, through one init plan.

Order (documented in docs/training.md):

1. ``torch.manual_seed(seed)`` before the model is built (the engine does it), so PyTorch's module
   defaults are reproducible and identical on every rank;
2. :func:`init_plan` turns the config into one :class:`~initlab.schemes.InitPlan`: the init spec
   parsed and validated once, and the single :class:`~initlab.parametrization.Parametrization` of
   the run (``--param``, or the one the spec implies, e.g. ``nt`` in ``nt+mimetic``, with the base
   width, the language runs' ``init_style="lm"`` and the model's ``attn_scale``);
3. the plan is applied with the run's init generator (:meth:`InitPlan.generator`), and the engine
   builds its optimizer groups from the same parametrization object.
"""
from __future__ import annotations

import json

from torch import nn

from ..schemes.plan import InitPlan
from .config import TrainConfig

_PLANS: dict[str, InitPlan] = {}  # plans are immutable values: one per distinct init setting


def init_plan(config: TrainConfig) -> InitPlan:
    """The validated :class:`InitPlan` of ``config`` (built once per distinct init setting)."""
    fields = parametrization_fields(config)
    key = json.dumps([config.init, config.param, config.base_width, fields, config.init_options],
                     sort_keys=True, default=repr)
    plan = _PLANS.get(key)
    if plan is None:
        plan = InitPlan.build(config.init, param=config.param, base_width=config.base_width,
                              param_options=fields, options=dict(config.init_options))
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def parametrization_fields(config: TrainConfig) -> dict:
    """Parametrization fields that follow from the rest of the config.

    The language runs of the paper keep std 0.02 bodies (``init_style="lm"``); an attention scale
    the user chose for the model (``--model-option attn_scale=linear``) must not be overwritten by
    the parametrization's default 1/sqrt(head_dim).
    """
    fields = {}
    if config.task == "lm":
        fields["init_style"] = "lm"
    if "attn_scale" in config.model_options:
        fields["attn_scale"] = config.model_options["attn_scale"]
    return fields


def initialize_(model: nn.Module, config: TrainConfig):
    """Initialize ``model`` (on CPU, freshly built) as ``config`` says; returns the parametrization
    the optimizer groups must use (the plan's one object)."""
    plan = init_plan(config)
    plan.initialize_(model, config.seed)
    return plan.parametrization
