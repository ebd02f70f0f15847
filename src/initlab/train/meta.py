"""Meta-device construction (the FSDP2 / torchtitan flow): build shapes only, allocate, then init.

    with torch.device("meta"):
        model = create_model("vit-micro")
    materialize_(model, "cpu", init="mimetic", generator=g)

``to_empty`` allocates uninitialized memory, so every tensor must be written afterwards: module
defaults via each module's ``reset_parameters()``, the learned tables via ``reset_tables()``
(N(0, 0.02^2)), then the init scheme on top. With ``torch.manual_seed(s)`` before both, the
result equals building the model directly on the device under the same seed.
"""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def materialize_(model: nn.Module, device: str | torch.device = "cpu", *, init: str = "default",
                 generator: torch.Generator | None = None, **init_options) -> nn.Module:
    """Allocate a meta-device ``model`` on ``device`` and initialize every tensor in place.

    The init spec is parsed and its options validated (one :class:`~initlab.schemes.InitPlan`)
    before anything is allocated."""
    from ..schemes.plan import InitPlan
    plan = InitPlan.build(init, options=init_options)
    model.to_empty(device=device)
    for module in model.modules():  # parents before children, in registration order
        reset = getattr(module, "reset_parameters", None)
        if callable(reset) and module is not model:
            reset()
    # fixed (non-parameter) sincos tables are computed in the constructor, so recompute them
    _restore_fixed_buffers(model, device)
    # the model's own init on top of the module defaults: ViT/GPT draw their tables, Llama its
    # N(0, 0.02^2) weights (the same draws, in the same order, as building it on the device)
    reset_own = getattr(model, "reset_tables", None) or getattr(model, "reset_parameters", None)
    if callable(reset_own):
        reset_own()
    plan.apply_(model, generator=generator)
    return model


def _restore_fixed_buffers(model: nn.Module, device) -> None:
    """Recompute the fixed sincos position tables of our models, which ``to_empty`` left as garbage."""
    from ..models import GPT, ViT
    from ..models.layers import sincos_1d, sincos_2d
    pos = getattr(model, "pos_embed", None)
    if not isinstance(pos, torch.Tensor) or isinstance(pos, nn.Parameter):
        return
    width = pos.shape[-1]
    if isinstance(model, ViT):
        table = sincos_2d(model.grid, model.grid, width)
        if model.pool == "cls":
            table = torch.cat([torch.zeros(1, width), table])
    elif isinstance(model, GPT):
        table = sincos_1d(pos.shape[1], width)
    else:
        return
    pos.copy_(table[None].to(device=pos.device, dtype=pos.dtype))
