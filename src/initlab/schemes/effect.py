"""What an init spec does to a model, tensor by tensor (``initlab schemes --show``).

:func:`spec_effect` builds a preset model for a seed, applies the spec's :class:`InitPlan` and
returns one row per role-map region: role, kind, layer, shape, std before and after, mean after,
and whether the region changed. The CLI prints it; tests and notebooks can call it directly.
"""
from __future__ import annotations

import torch

from ..roles import roles
from .plan import InitPlan, build_seeded

HEADER = ("tensor", "role", "kind", "layer", "shape", "std before", "std after", "mean after", "")


def _std(t: torch.Tensor) -> str:
    return f"{t.double().std().item():.4g}" if t.numel() > 1 else f"{t.item():.4g}"


def spec_effect(spec: str, preset: str = "vit-micro", model_options: dict | None = None,
                seed: int = 0) -> list[tuple[str, ...]]:
    """Rows (after :data:`HEADER`) describing ``spec`` applied to ``create_model(preset,
    **model_options)`` built and initialized for ``seed``. Bad specs raise before a model is built."""
    from ..models import create_model

    plan = InitPlan.build(spec)
    model = build_seeded(lambda: create_model(preset, **dict(model_options or {})), seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    plan.initialize_(model, seed)
    rows = []
    for info in roles(model):
        for slot in info.slots:
            old = before[info.name][slot.index] if slot.index else before[info.name]
            new = info.region(slot)
            name = info.name + ("" if not slot.index or len(info.slots) == 1 else f"[{slot.role.value}]")
            rows.append((name, slot.role.value, info.kind, "" if info.layer is None else str(info.layer),
                         "x".join(map(str, new.shape)), _std(old), _std(new),
                         f"{new.double().mean().item():.3g}", "" if torch.equal(old, new) else "changed"))
    return rows


__all__ = ["spec_effect", "HEADER"]
