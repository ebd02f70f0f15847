"""initlab's reference models and named presets."""
from __future__ import annotations

from ..errors import ConfigError
from .gpt import GPT
from .layers import Attention, Block, MLP, sincos_1d, sincos_2d
from .vit import ViT

# Named shapes. Vision presets default to 28x28x1 patch-7 inputs (Fashion-MNIST); pass
# image_size/patch_size/in_chans to override.
PRESETS: dict[str, tuple[type, dict]] = {
    "vit-micro": (ViT, dict(width=64, depth=4, heads=2)),
    "vit-mini": (ViT, dict(width=128, depth=6, heads=4)),
    "vit-tiny": (ViT, dict(width=192, depth=12, heads=3)),
    "vit-small": (ViT, dict(width=384, depth=12, heads=6)),
    "vit-base": (ViT, dict(width=768, depth=12, heads=12)),
    "gpt-micro": (GPT, dict(width=64, depth=2, heads=2)),
    "gpt-mini": (GPT, dict(width=128, depth=4, heads=4)),
    "gpt-char": (GPT, dict(width=192, depth=6, heads=3, block_size=256)),
    "gpt2-small": (GPT, dict(width=768, depth=12, heads=12, vocab_size=50257, block_size=1024)),
}


def create_model(name: str, **overrides):
    """Build a preset by name, e.g. ``create_model("vit-tiny", patch_size=4, image_size=32)``."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    cls, kwargs = PRESETS[name]
    return cls(**{**kwargs, **overrides})


__all__ = ["ViT", "GPT", "Block", "Attention", "MLP", "PRESETS", "create_model", "sincos_1d", "sincos_2d"]
