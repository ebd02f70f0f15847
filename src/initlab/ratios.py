"""The position/content ratio of a ViT at initialization: a measurement, like the probes.

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


__all__ = ["ratio_images", "position_content_ratio", "RATIO_IMAGES"]
