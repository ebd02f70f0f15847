"""Named initialization schemes, one keyword each: ``initlab.init_(model, "gpt2")``.

Schemes are declarative per-role specs over the role map (:mod:`initlab.schemes.spec`); a few
delegate to one closed-form construction (mimetic, structured, the effective-theory
parametrizations). ``init_(model, "a+b")`` applies a chain left to right and refuses chains that
make no sense (see :data:`COMPOSITION_RULES`); every call goes through one :class:`InitPlan`
(:mod:`initlab.schemes.plan`), which validates the whole chain before writing anything.
``schemes()`` lists name, description, citation, roles touched and implied parametrization;
``initlab schemes`` prints the table.
"""
from __future__ import annotations

from .delegates import MIMETIC, PARAMS, parametrization_scheme
from .lm_zoo import LM_ZOO
from .plan import InitPlan, PlanStep, build_seeded, init_
from .registry import COMPOSITION_RULES, aliases_of, get_scheme, parse, register_scheme, schemes, split_specs
from .spec import Context, Rule, Scheme, SchemeInfo, apply_rules
from .structured import STRUCTURED, structured_
from .zoo import ZOO

_ALIASES = {
    "default": ("pytorch", "none"),
    "trunc_normal": ("timm", "bert", "vit"),
    "gpt2": ("megatron", "nanogpt"),
    "torchtitan": ("titan",),
    "mitchell": ("olmo_mitchell",),
    "full_megatron": ("olmo_full_megatron", "olmo_megatron"),
    "small_init": ("smallinit",),
    "wang_init": ("wang",),
    "xavier": ("glorot", "xavier_uniform"),
    "t_fixup": ("tfixup",),
    "deepnorm": ("deepnet",),
    "skipinit": ("skip_init",),
    "layerscale": ("layer_scale",),
    "zero_out": ("zero_init", "zero_out_proj"),
    "structured": ("impulse", "convolutional"),
    "mu": ("mup",),
    "nt": ("ntk",),
    "modded_nanogpt": ("modded",),
    "modded_nanogpt_vo": ("modded_vo", "modded_nanogpt_mimetic_vo"),
    "olmo_normal": ("olmo_core_normal",),
    "olmo_llama": ("olmo_core_llama",),
    "olmo_llama_depth": ("olmo_core_llama_depth",),
    "olmo_fan_in": ("olmo_core_fan_in",),
    "conditioned": ("conditioned_init",),
    "mimetic_mlp": ("mlp_mimetic",),
}

# listing order of `initlab schemes`: the whole-network baselines of the zoo, the constructions of
# the papers (mimetic, the parametrizations, structured), then the zoo's residual-branch schemes,
# which start at deepnorm (named, not counted: a scheme added to either part keeps its place)
_RESIDUAL_FROM = [s.name for s in ZOO].index("deepnorm")
for _s in ZOO[:_RESIDUAL_FROM] + MIMETIC + PARAMS + (STRUCTURED,) + ZOO[_RESIDUAL_FROM:]:
    register_scheme(_s, aliases=_ALIASES.get(_s.name, ()))
for _s in LM_ZOO:  # language-model inits (lm_zoo.py)
    register_scheme(_s, aliases=_ALIASES.get(_s.name, ()))

__all__ = ["init_", "list_schemes", "InitPlan", "PlanStep", "build_seeded", "schemes", "get_scheme", "register_scheme",
           "parse", "split_specs", "Scheme", "SchemeInfo",
           "Rule", "Context", "apply_rules", "structured_", "parametrization_scheme",
           "COMPOSITION_RULES", "aliases_of", "MIMETIC", "PARAMS", "STRUCTURED", "ZOO", "LM_ZOO"]
list_schemes = schemes  # the top-level verb's name: initlab.list_schemes()
