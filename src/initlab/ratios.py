"""The position/content ratio at initialization (a ViT's, a language model's): a measurement, like
the probes.

``p/x`` = RMS of the position table over RMS of the patch-embedded content at init. With QK ≈ I
(mimetic init) a token attends to the tokens most similar to it; whether "similar" means "nearby"
(p/x large) or "looks alike" (p/x small) is decided by this ratio, which the results page's regime
map reports beside each cell.
"""
from __future__ import annotations

import torch

from .errors import InitlabError

#: images :func:`ratio_images` returns (the first test images, or noise of their shape)
RATIO_IMAGES = 256


def ratio_images(data_root: str | None = None) -> torch.Tensor:
    """The images :func:`position_content_ratio` embeds: the first :data:`RATIO_IMAGES`
    Fashion-MNIST test images, normalized, when they are found, else unit-variance noise of the same
    shape (drawn from its own generator)."""
    try:
        from .data import load_vision
        test = load_vision("fashion-mnist", root=data_root, split="test")
    except (InitlabError, OSError):  # no data here: noise of the same variance
        return torch.randn(RATIO_IMAGES, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    x = test.images[:RATIO_IMAGES].float() / 255.0
    return ((x - x.mean()) / x.std()).reshape(-1, 1, 28, 28)


def position_content_ratio(pos: str, pool: str, patch: int, width: int, data_root: str | None = None,
                           stems: int = 8, images: torch.Tensor | None = None) -> float:
    """RMS of the position table over RMS of the patch-embedded content at init (PyTorch's default
    stem, averaged over ``stems`` seeded draws of the model), on ``images`` (default
    :func:`ratio_images`): the variable that decides what QK ≈ I attends to at init.
    Deterministic: the draws use their own seeds, the global RNG is left as it was."""
    from .models import ViT
    from .schemes.plan import build_seeded

    if images is None:
        images = ratio_images(data_root)
    content_ms = table_ms = 0.0
    for seed in range(stems):
        model = build_seeded(lambda: ViT(patch_size=patch, width=width, heads=2, depth=1, pos=pos, pool=pool), seed)
        with torch.no_grad():
            content = model.patch_embed(images).flatten(2).transpose(1, 2)
            content_ms += float(content.pow(2).mean()) / stems
            table_ms += float(model.pos_embed.detach()[0, -content.shape[1]:].pow(2).mean()) / stems
    return (table_ms / content_ms) ** 0.5


def table_content_ratio(model, role_map=None) -> float:
    """RMS of ``model``'s position table over RMS of its embedded tokens (the token embedding
    times the model's embedding scale), read through the role map (its facts name the table and
    the scale); nan when the model adds no position table (rotary, none)."""
    from .roles import role_map as get_role_map

    rmap = role_map if role_map is not None else get_role_map(model)
    name = rmap.facts.positions.table
    tokens = rmap.by_role("token_embed")
    if name is None or not tokens:
        return float("nan")
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    if name not in tensors:
        return float("nan")
    with torch.no_grad():
        table_rms = float(tensors[name].detach().float().pow(2).mean().sqrt())
        content_rms = float(tokens[0].param.detach().float().pow(2).mean().sqrt()) * abs(rmap.facts.embed_scale)
    return table_rms / content_rms


def lm_position_content_ratio(model: str, init: str, seeds: int = 3, **shape) -> float:
    """:func:`table_content_ratio` of the language-model preset ``model`` (``shape``: its options,
    e.g. ``width=128, pos="learned"``) after ``init`` as a run with that seed would draw it, the
    mean square ratio over ``seeds`` seeds; nan for rotary or no positions. Deterministic; the
    global RNG is left as it was."""
    from .models import create_model
    from .schemes.plan import InitPlan, build_seeded

    plan = InitPlan.build(init)
    table_ms = []
    for seed in range(seeds):
        m = build_seeded(lambda: create_model(model, **shape), seed)
        plan.initialize_(m, seed)
        table_ms.append(table_content_ratio(m) ** 2)
    return (sum(table_ms) / len(table_ms)) ** 0.5


__all__ = ["ratio_images", "position_content_ratio", "table_content_ratio", "lm_position_content_ratio",
           "RATIO_IMAGES"]
