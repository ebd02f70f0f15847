"""Initialization of a freshly built model from its :class:`TrainConfig`, through one init plan.

Order (documented in docs/training.md):

1. the model is built with PyTorch's module defaults drawn under the run's seed (the engine does
   it, and restores the global RNG when the run ends), so they are reproducible and identical on
   every rank;
2. :func:`init_plan` turns the config into one :class:`~initlab.schemes.InitPlan`: the init spec
   parsed and validated once, and the single :class:`~initlab.parametrization.Parametrization` of
   the run (``--param``, or the one the spec implies, e.g. ``nt`` in ``nt+mimetic``, with the base
   width, the language runs' ``init_style="lm"`` and the model's ``attn_scale``). The commands build
   it once, when they check the config, and pass it down (config -> plan -> engine -> optimizer);
   there is no cache: a plan is a value that travels with its config;
3. the plan is applied with the run's init generator (:meth:`InitPlan.generator`), and the engine
   builds its optimizer groups from the same parametrization object.
"""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from ..schemes.plan import InitPlan
from .config import TrainConfig


def init_plan(config: TrainConfig) -> InitPlan:
    """The validated :class:`InitPlan` of ``config`` (a new one each call: build it once and pass it)."""
    return InitPlan.build(config.init, param=config.param, base_width=config.base_width,
                          param_options=parametrization_fields(config), options=dict(config.init_options))


def parametrization_fields(config: TrainConfig) -> dict:
    """Parametrization fields that follow from the rest of the config.

    The language runs of the paper keep std 0.02 bodies (``init_style="lm"``); an attention scale
    the user chose for the model (``--model-option attn_scale=linear``) must not be overwritten by
    the parametrization's default 1/sqrt(head_dim).
    """
    fields = {}
    if config.base_depth is not None:
        fields["base_depth"] = config.base_depth
    if config.task == "lm":
        fields["init_style"] = "lm"
    if "attn_scale" in config.model_options:
        fields["attn_scale"] = config.model_options["attn_scale"]
    return fields


def plan_for(config: TrainConfig, plan: InitPlan | None = None) -> InitPlan:
    """``plan`` when it was built for ``config`` (its spec and base width), else a new one; a plan
    of another config is refused in one line rather than silently used."""
    if plan is None:
        return init_plan(config)
    if not isinstance(plan, InitPlan):
        raise ConfigError(f"plan must be an InitPlan (initlab.train.init.init_plan(config)), got "
                          f"{type(plan).__name__}")
    if plan.spec != config.init or plan.parametrization.base_width != config.base_width or \
            plan.parametrization.base_depth != config.base_depth:
        raise ConfigError(f"the plan was built for init {plan.spec!r} (base width "
                          f"{plan.parametrization.base_width}), the config asks for {config.init!r} "
                          f"(base width {config.base_width}); build it with init_plan(config)")
    return plan


def initialize_(model: nn.Module, config: TrainConfig, plan: InitPlan | None = None):
    """Initialize ``model`` (on CPU, freshly built) as ``config`` says, with ``plan`` when given
    (:func:`plan_for`); returns the parametrization the optimizer groups must use (the plan's one
    object)."""
    plan = plan_for(config, plan)
    plan.initialize_(model, config.seed)
    return plan.parametrization
