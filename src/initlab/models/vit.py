"""Reference Vision Transformer (pre-LN, as in arXiv 2304.02034 section 1)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .layers import POS_KINDS, Block, HeadMultiplierState, check_heads, make_norm, sincos_2d

TABLE_STD = 0.02  # learned tables (position, class token) start N(0, 0.02^2), as timm/HF ViT


class ViT(HeadMultiplierState, nn.Module):
    """Vision Transformer with the options the papers vary.

    Args:
        image_size, patch_size, in_chans, num_classes: the image task.
        width, depth, heads, mlp_ratio: n, L, H, M (head_dim = width // heads).
        bias: biases in attention and MLP (the effective-theory paper has none).
        ln_affine: trainable LayerNorm gain/bias (False freezes them at 1/0, as in the paper).
        pos: ``"learned"`` table (std 0.02), fixed 2-D ``"sincos"`` (a buffer), or
            ``"sincos-learned"``: a learned table that starts as the 2-D sin-cos one.
        pool: ``"cls"`` (class token) or ``"mean"`` (mean over tokens; the paper and structured init).
        fused_qkv: one (3n, n) Linear or three (n, n) Linears.
        attn_scale: ``"sqrt"`` (1/sqrt(head_dim)) or ``"linear"`` (1/head_dim, muP) or a number.
        head_multiplier: constant multiplying the output logits (parametrizations set it).
        norm_position, branch_gain, branch_gain_init, skip_scale: see :class:`Block`.
    """

    TASK = "vision"  # what the training engine does with a preset of this class

    def __init__(self, *, image_size: int = 28, patch_size: int = 7, in_chans: int = 1,
                 num_classes: int = 10, width: int = 192, depth: int = 6, heads: int = 3,
                 mlp_ratio: int = 4, bias: bool = True, ln_affine: bool = True, ln_eps: float = 1e-6,
                 pos: str = "learned", pool: str = "cls", fused_qkv: bool = True,
                 attn_scale: str | float = "sqrt", head_multiplier: float = 1.0,
                 norm_position: str = "pre", branch_gain: str | None = None,
                 branch_gain_init: float = 0.1, skip_scale: float = 1.0):
        super().__init__()
        check_heads(width, heads)
        if image_size % patch_size:
            raise ConfigError(f"image_size {image_size} is not divisible by patch_size {patch_size}")
        if pos not in POS_KINDS:
            raise ConfigError(f"pos must be one of {', '.join(POS_KINDS)}, got {pos!r}")
        if pool not in ("cls", "mean"):
            raise ConfigError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.config = dict(image_size=image_size, patch_size=patch_size, in_chans=in_chans,
                           num_classes=num_classes, width=width, depth=depth, heads=heads,
                           mlp_ratio=mlp_ratio, bias=bias, ln_affine=ln_affine, ln_eps=ln_eps,
                           pos=pos, pool=pool, fused_qkv=fused_qkv, attn_scale=attn_scale,
                           head_multiplier=head_multiplier, norm_position=norm_position,
                           branch_gain=branch_gain, branch_gain_init=branch_gain_init,
                           skip_scale=skip_scale)
        self.width, self.depth, self.heads = width, depth, heads
        self.pool = pool
        self.grid = image_size // patch_size
        self.num_patches = self.grid ** 2
        self.head_multiplier = float(head_multiplier)
        self.patch_embed = nn.Conv2d(in_chans, width, kernel_size=patch_size, stride=patch_size)
        n_extra = 1 if pool == "cls" else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        n_pos = self.num_patches + n_extra
        self._pos = pos
        if pos == "sincos":
            self.register_buffer("pos_embed", self.sincos_table()[None], persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, width))
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio=mlp_ratio, bias=bias, ln_affine=ln_affine, ln_eps=ln_eps,
                  fused_qkv=fused_qkv, attn_scale=attn_scale, norm_position=norm_position,
                  branch_gain=branch_gain, branch_gain_init=branch_gain_init, skip_scale=skip_scale)
            for _ in range(depth))
        # post-LN blocks already end in a norm; pre-LN needs the final LN before the head
        self.norm = make_norm(width, ln_affine, ln_eps)
        self.head = nn.Linear(width, num_classes)
        self.reset_tables()

    def sincos_table(self) -> torch.Tensor:
        """The 2-D sin-cos table (n_pos, width); a zero row first for the class token."""
        table = sincos_2d(self.grid, self.grid, self.width)
        if self.cls_token is not None:
            table = torch.cat([torch.zeros(1, self.width), table])
        return table

    @torch.no_grad()
    def reset_tables(self, generator: torch.Generator | None = None) -> None:
        """Learned tables start at N(0, 0.02^2) (``pos="sincos-learned"``: the sin-cos table);
        modules keep PyTorch's defaults."""
        for t in (self.pos_embed, self.cls_token):
            if isinstance(t, nn.Parameter):
                t.normal_(0.0, TABLE_STD, generator=generator)
        if self._pos == "sincos-learned":
            self.pos_embed.copy_(self.sincos_table()[None].to(self.pos_embed))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Stem: patchify, add class token and position table -> (B, T, n)."""
        z = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            z = torch.cat([self.cls_token.expand(z.shape[0], -1, -1), z], dim=1)
        return z + self.pos_embed

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.tokens(x)
        for block in self.blocks:
            z = block(z)
        return self.norm(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.forward_features(x)
        s = s[:, 0] if self.pool == "cls" else s.mean(dim=1)
        return self.head(s) * self.head_multiplier
