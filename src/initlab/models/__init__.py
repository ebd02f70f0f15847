"""initlab's reference models and named presets."""
from __future__ import annotations

from ..errors import ConfigError
from .gpt import GPT
from .llama import Llama
from .layers import Attention, Block, MLP, sincos_1d, sincos_2d
from .vit import ViT

# Named shapes. Vision presets default to 28x28x1 patch-7 inputs (Fashion-MNIST); pass
# image_size/patch_size/in_chans to override. They use a fixed 2-D sin-cos position table and mean
# pooling, the regime of the structured-init literature: on the regime map (docs/results.md
# section 7) it was the best or within noise of the best position table and readout for every
# init we ran, and the one where mimetic and structured init gain most over the default. The
# ViT class itself keeps timm's learned table and class token (pos="learned", pool="cls").
VIT_REGIME = dict(pos="sincos", pool="mean")
PRESETS: dict[str, tuple[type, dict]] = {
    "vit-micro": (ViT, dict(width=64, depth=4, heads=2, **VIT_REGIME)),
    "vit-mini": (ViT, dict(width=128, depth=6, heads=4, **VIT_REGIME)),
    "vit-tiny": (ViT, dict(width=192, depth=12, heads=3, **VIT_REGIME)),
    "vit-small": (ViT, dict(width=384, depth=12, heads=6, **VIT_REGIME)),
    "vit-base": (ViT, dict(width=768, depth=12, heads=12, **VIT_REGIME)),
    "gpt-micro": (GPT, dict(width=64, depth=2, heads=2)),
    "gpt-mini": (GPT, dict(width=128, depth=4, heads=4)),
    "gpt-char": (GPT, dict(width=192, depth=6, heads=3, block_size=256)),
    "gpt2-small": (GPT, dict(width=768, depth=12, heads=12, vocab_size=50257, block_size=1024)),
    # Llama-style (RoPE, RMSNorm, SwiGLU, no biases, untied head; kv_heads/qk_norm as options)
    "llama-micro": (Llama, dict(width=64, depth=2, heads=2)),
    "llama-mini": (Llama, dict(width=128, depth=4, heads=4)),
    "llama-char": (Llama, dict(width=192, depth=6, heads=3, block_size=256)),
}


def model_options(cls: type) -> list[str]:
    """The keyword arguments the model class ``cls`` accepts (what ``--model-option`` may set)."""
    import inspect
    return [n for n, p in inspect.signature(cls).parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def check_model_options(name: str, options) -> None:
    """A :class:`ConfigError` naming the unknown keys and the valid ones, before anything is built."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    cls = PRESETS[name][0]
    valid = model_options(cls)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"unknown model option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))} for {name} ({cls.__name__}); valid: "
                          f"{', '.join(valid)}")


def create_model(name: str, **overrides):
    """Build a preset by name, e.g. ``create_model("vit-tiny", patch_size=4, image_size=32)``."""
    check_model_options(name, overrides)
    cls, kwargs = PRESETS[name]
    return cls(**{**kwargs, **overrides})


__all__ = ["ViT", "GPT", "Llama", "Block", "Attention", "MLP", "PRESETS", "create_model", "check_model_options",
           "sincos_1d", "sincos_2d"]
