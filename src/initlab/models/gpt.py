"""Reference decoder-only GPT (pre-LN, tied head with a rescale, as in arXiv 2304.02034)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .layers import POS_KINDS, Block, HeadMultiplierState, LMReadout, check_heads, make_norm, sincos_1d

TABLE_STD = 0.02  # token and position tables start N(0, 0.02^2), as GPT-2/nanoGPT


class GPT(LMReadout, HeadMultiplierState, nn.Module):
    """Causal language model.

    Args:
        vocab_size, block_size: vocabulary and maximum context length.
        width, depth, heads, mlp_ratio, bias, ln_affine, fused_qkv, attn_scale: as :class:`ViT`.
        pos: ``"learned"`` table (std 0.02), fixed 1-D ``"sincos"`` (a buffer), or
            ``"sincos-learned"``: a learned table that starts as the 1-D sin-cos one.
        tie_head: logits = head_multiplier * LN(z) @ W_tokenᵀ (the paper's tied head with
            N_rescale); otherwise a separate bias-free Linear head.
        head_multiplier: N_rescale, the constant multiplying the logits.
    """

    TASK = "lm"  # what the training engine does with a preset of this class

    def __init__(self, *, vocab_size: int = 256, block_size: int = 128, width: int = 128,
                 depth: int = 4, heads: int = 4, mlp_ratio: int = 4, bias: bool = True,
                 ln_affine: bool = True, ln_eps: float = 1e-5, pos: str = "learned",
                 fused_qkv: bool = True, attn_scale: str | float = "sqrt", tie_head: bool = True,
                 head_multiplier: float = 1.0, norm_position: str = "pre",
                 branch_gain: str | None = None, branch_gain_init: float = 0.1,
                 skip_scale: float = 1.0):
        super().__init__()
        check_heads(width, heads)
        if pos not in POS_KINDS:
            raise ConfigError(f"pos must be one of {', '.join(POS_KINDS)}, got {pos!r}")
        if vocab_size <= 0 or block_size <= 0:
            raise ConfigError("vocab_size and block_size must be positive")
        self.config = dict(vocab_size=vocab_size, block_size=block_size, width=width, depth=depth,
                           heads=heads, mlp_ratio=mlp_ratio, bias=bias, ln_affine=ln_affine,
                           ln_eps=ln_eps, pos=pos, fused_qkv=fused_qkv, attn_scale=attn_scale,
                           tie_head=tie_head, head_multiplier=head_multiplier,
                           norm_position=norm_position, branch_gain=branch_gain,
                           branch_gain_init=branch_gain_init, skip_scale=skip_scale)
        self.width, self.depth, self.heads = width, depth, heads
        self.block_size = block_size
        self.head_multiplier = float(head_multiplier)
        self.tok_embed = nn.Embedding(vocab_size, width)
        self._pos = pos
        if pos == "sincos":
            self.register_buffer("pos_embed", sincos_1d(block_size, width)[None], persistent=False)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(1, block_size, width))
        self.blocks = nn.ModuleList(
            Block(width, heads, mlp_ratio=mlp_ratio, bias=bias, ln_affine=ln_affine, ln_eps=ln_eps,
                  fused_qkv=fused_qkv, attn_scale=attn_scale, causal=True,
                  norm_position=norm_position, branch_gain=branch_gain,
                  branch_gain_init=branch_gain_init, skip_scale=skip_scale)
            for _ in range(depth))
        self.norm = make_norm(width, ln_affine, ln_eps)
        self.head = None if tie_head else nn.Linear(width, vocab_size, bias=False)
        self.reset_tables()

    @torch.no_grad()
    def reset_tables(self, generator: torch.Generator | None = None) -> None:
        self.tok_embed.weight.normal_(0.0, TABLE_STD, generator=generator)
        if self._pos == "sincos-learned":
            self.pos_embed.copy_(sincos_1d(self.block_size, self.width)[None].to(self.pos_embed))
        elif isinstance(self.pos_embed, nn.Parameter):
            self.pos_embed.normal_(0.0, TABLE_STD, generator=generator)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Returns logits (B, T, V); with ``targets`` returns (logits, mean cross-entropy)."""
        t = idx.shape[1]
        if t > self.block_size:
            raise ConfigError(f"sequence length {t} exceeds block_size {self.block_size}")
        z = self.tok_embed(idx) + self.pos_embed[:, :t]
        for block in self.blocks:
            z = block(z)
        return self.readout(self.norm(z), targets)
