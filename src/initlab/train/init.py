"""Initialization of a freshly built model: parametrization, then the named init scheme.

Order (documented in docs/training.md):

1. ``torch.manual_seed(seed)`` before the model is built, so PyTorch's module defaults are
   reproducible and identical on every rank;
2. if the parametrization is not ``standard`` and the init spec does not itself imply one,
   :func:`initlab.parametrize_` draws every weight as the parametrization prescribes (and sets the
   head multiplier N_rescale);
3. :func:`initlab.schemes.init_` applies the init spec (e.g. ``"mimetic"`` then rewrites Q, K,
   V, O) with a CPU generator seeded from ``seed``.

The parametrization used for the optimizer groups is ``config.param``, or the one the init spec
implies (``parametrization_of("nt+mimetic") == "nt"``) when ``config.param`` is ``standard``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .config import TrainConfig

INIT_STREAM = 7


def init_generator(seed: int) -> torch.Generator:
    from ..data.batches import derive_seed
    return torch.Generator().manual_seed(derive_seed(seed, INIT_STREAM))


def resolve_parametrization(config: TrainConfig):
    """The :class:`~initlab.parametrization.Parametrization` of the run, and whether the init spec implies it."""
    from ..parametrization import Parametrization
    from ..schemes import parametrization_of
    implied = parametrization_of(config.init)
    options = _parametrization_options(config)
    chosen = Parametrization.parse(config.param, base_width=config.base_width, **options)
    if implied is not None:
        implied_p = Parametrization.parse(implied, base_width=config.base_width, **options)
        if chosen.is_standard:
            chosen = implied_p
        elif chosen.s != implied_p.s:
            raise ConfigError(f"init {config.init!r} implies parametrization {implied!r} but param is "
                              f"{config.param!r}; drop one of them or make them agree")
    return chosen, implied is not None


def _parametrization_options(config: TrainConfig) -> dict:
    """Options that must be the same for the init and the optimizer groups.

    The language runs of the paper keep std 0.02 bodies (``init_style="lm"``); an attention scale
    the user chose for the model (``--model-option attn_scale=linear``) must not be overwritten by
    the parametrization's default 1/sqrt(head_dim).
    """
    options = {}
    if config.task == "lm":
        options["init_style"] = "lm"
    if "attn_scale" in config.model_options:
        options["attn_scale"] = config.model_options["attn_scale"]
    return options


@torch.no_grad()
def initialize_(model: nn.Module, config: TrainConfig):
    """Initialize ``model`` (on CPU, freshly built) as ``config`` says; returns the parametrization."""
    from ..parametrization import parametrize_
    from ..schemes import init_
    p, implied = resolve_parametrization(config)
    gen = init_generator(config.seed)
    options = dict(config.init_options)
    if implied:
        # the spec's own parametrization (e.g. "mu" in "mu+mimetic") must be the one the optimizer
        # groups use: same base width and options, or init and learning rates disagree
        options = {"base_width": config.base_width, **_parametrization_options(config), **options}
    elif not p.is_standard:
        parametrize_(model, p, generator=gen)
    init_(model, config.init, generator=gen, **options)
    return p

