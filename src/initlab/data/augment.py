"""Batched tensor augmentation (torchvision does not work here, and per-image PIL ops are slow).

Every op works on a whole (B, C, H, W) batch on its device with one gather or ``where``; the
random numbers come from a CPU ``torch.Generator`` (the same draws on every device, so a run is
reproducible on CPU and GPU alike) and are moved to the data's device.

Ops are split into ``sample_*`` (draw parameters for n images) and ``apply`` steps so that a data
loader can draw for a whole global batch and apply to one rank's part of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError


def sample_crop_offsets(n: int, padding: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2) int64 (dy, dx) offsets, uniform in [0, 2*padding], for :func:`crop_with_offsets`."""
    return torch.randint(0, 2 * padding + 1, (n, 2), generator=generator)


def crop_with_offsets(x: torch.Tensor, offsets: torch.Tensor, padding: int, fill=0.0) -> torch.Tensor:
    """Pad ``x`` (B, C, H, W) by ``padding`` with ``fill`` and take the H x W window at ``offsets``.

    ``fill`` is a number or a per-channel (C,) tensor. Offset (padding, padding) is the identity.
    Implemented without materializing the padded batch: one gather of source pixels (clamped
    indices) and a ``where`` that puts ``fill`` where the window leaves the image (2-3x faster
    than 4-way advanced indexing into a padded copy).
    """
    if padding == 0:
        return x
    b, c, h, w = x.shape
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    offsets = offsets.to(x.device, non_blocking=True) - padding  # output pixel (i, j) reads input (i + dy, j + dx)
    rows = torch.arange(h, device=x.device) + offsets[:, 0:1]  # (B, H)
    cols = torch.arange(w, device=x.device) + offsets[:, 1:2]  # (B, W)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    src = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]  # (B, H, W)
    out = x.reshape(b, c, h * w).gather(2, src.reshape(b, 1, h * w).expand(b, c, h * w))
    return torch.where(inside[:, None], out.view(b, c, h, w), fill)


def random_crop(x: torch.Tensor, padding: int, *, generator: torch.Generator | None = None,
                fill=0.0) -> torch.Tensor:
    """Random translation by up to ``padding`` pixels: zero-pad (or ``fill``) and crop back."""
    return crop_with_offsets(x, sample_crop_offsets(x.shape[0], padding, generator=generator), padding, fill)


def sample_flips(n: int, p: float = 0.5, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) bool: which images to mirror."""
    return torch.rand(n, generator=generator) < p


def flip_where(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images of ``x`` where ``flips`` is True."""
    return torch.where(flips.to(x.device, non_blocking=True)[:, None, None, None], x.flip(-1), x)


def random_hflip(x: torch.Tensor, *, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image with probability ``p``."""
    return flip_where(x, sample_flips(x.shape[0], p, generator=generator))


@dataclass(frozen=True)
class Augment:
    """Random crop with ``padding`` (0: none) and optional horizontal flips."""

    padding: int = 0
    flip: bool = False

    def __post_init__(self):
        if self.padding < 0:
            raise ConfigError(f"augmentation padding must be >= 0, got {self.padding}")

    @property
    def active(self) -> bool:
        return self.padding > 0 or self.flip

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict:
        """Parameters for n images; crop offsets are drawn before flips, always in that order."""
        params = {}
        if self.padding > 0:
            params["offsets"] = sample_crop_offsets(n, self.padding, generator=generator)
        if self.flip:
            params["flips"] = sample_flips(n, generator=generator)
        return params

    def apply(self, x: torch.Tensor, params: dict, fill=0.0) -> torch.Tensor:
        if "offsets" in params:
            x = crop_with_offsets(x, params["offsets"], self.padding, fill)
        if "flips" in params:
            x = flip_where(x, params["flips"])
        return x

    def __call__(self, x: torch.Tensor, *, generator: torch.Generator | None = None, fill=0.0) -> torch.Tensor:
        return self.apply(x, self.sample(x.shape[0], generator), fill)
