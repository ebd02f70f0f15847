"""Reference Llama-style decoder: RoPE, RMSNorm, SwiGLU, no biases, optional QK-norm and GQA (and,
as an option for experiments on position schemes, a learned or fixed absolute table, or none).

The layout and the arithmetic follow Hugging Face's ``LlamaForCausalLM`` (rotary embeddings with
the rotate-half convention, pre-norm RMSNorm with weight w computing x·w, a gated SiLU MLP, bias-free
projections, an untied head by default), so that a Llama built here computes the same logits as a
``LlamaForCausalLM`` with the same weights (``tests/test_llama.py`` checks it). Its own init is
Hugging Face's: every Linear and the embedding N(0, 0.02²), norms 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .layers import HeadMultiplierState, LMReadout, set_output_scale, attn_scale_value, check_heads, sincos_1d

INIT_STD = 0.02  # Hugging Face's initializer_range for Llama
#: position schemes: rotary (Llama), a learned absolute table N(0, 0.02²), a fixed 1-D sin-cos table
#: scaled so its RMS equals the token embeddings' at init (position/content ratio 1), or none (NoPE)
LLAMA_POS = ("rope", "learned", "sincos", "none")


def mlp_hidden_size(width: int, multiple_of: int = 32) -> int:
    """Llama's SwiGLU hidden size: 2/3 of 4·width (the same parameter count as a GELU MLP of ratio
    4), rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * 4 * width / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def rope_tables(n_pos: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (n_pos, head_dim) of rotary embeddings, rotate-half layout."""
    if head_dim % 2:
        raise ConfigError(f"rotary embeddings need an even head_dim, got {head_dim}")
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, hd) rotated by position: x·cos + rotate_half(x)·sin."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class LlamaAttention(nn.Module):
    """Causal attention with rotary positions, ``kv_heads`` key/value heads (GQA) and optional
    per-head RMSNorm on queries and keys (QK-norm, as OLMo-2/Qwen3)."""

    def __init__(self, width: int, n_heads: int, n_kv_heads: int, *, attn_scale: str | float = "sqrt",
                 qk_norm: bool = False, norm_eps: float = 1e-6, rope: bool = True):
        super().__init__()
        self.rope = rope
        self.head_dim = check_heads(width, n_heads)
        if n_kv_heads <= 0 or n_heads % n_kv_heads:
            raise ConfigError(f"kv_heads must divide heads: {n_heads} heads do not split into "
                              f"{n_kv_heads} key/value groups")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.scale = attn_scale_value(attn_scale, self.head_dim)
        kv = n_kv_heads * self.head_dim
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, kv, bias=False)
        self.v_proj = nn.Linear(width, kv, bias=False)
        self.o_proj = nn.Linear(width, width, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=norm_eps) if qk_norm else None

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        if self.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale,
                                           enable_gqa=self.n_kv_heads != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(width, hidden, bias=False)
        self.up_proj = nn.Linear(width, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    """Pre-norm block: z + attn(RMSNorm(z)), then z + mlp(RMSNorm(z))."""

    def __init__(self, width: int, n_heads: int, n_kv_heads: int, hidden: int, *,
                 attn_scale: str | float, qk_norm: bool, norm_eps: float, rope: bool = True):
        super().__init__()
        self.norm1 = nn.RMSNorm(width, eps=norm_eps)
        self.attn = LlamaAttention(width, n_heads, n_kv_heads, attn_scale=attn_scale,
                                   qk_norm=qk_norm, norm_eps=norm_eps, rope=rope)
        self.norm2 = nn.RMSNorm(width, eps=norm_eps)
        self.mlp = SwiGLU(width, hidden)

    @property
    def branch_scale(self) -> float:
        """The depth family's residual-branch multiplier, on the o_proj and down_proj outputs."""
        return self.__dict__.get("_branch_scale", 1.0)

    @branch_scale.setter
    def branch_scale(self, value: float) -> None:
        set_output_scale(self.__dict__, (self.attn.o_proj, self.mlp.down_proj), value)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class Llama(LMReadout, HeadMultiplierState, nn.Module):
    """Llama-style causal language model (char/byte level in initlab's presets).

    Args:
        vocab_size, block_size: vocabulary and maximum context length.
        width, depth, heads: model width, number of blocks, query heads.
        kv_heads: key/value heads (grouped-query attention); None = ``heads``.
        mlp_hidden: SwiGLU hidden size; None = :func:`mlp_hidden_size` (2/3 · 4 · width, rounded).
        pos: ``"rope"`` (rotary, Llama's), ``"learned"`` (an absolute table N(0, 0.02²) added to the
            token embeddings, GPT-2's), ``"sincos"`` (a fixed 1-D sin-cos table, a buffer, scaled so
            its RMS equals the token embeddings' std 0.02: position/content ratio 1 at init) or
            ``"none"`` (no position signal but the causal mask, NoPE).
        rope_theta: rotary base. qk_norm: per-head RMSNorm on q and k.
        norm_eps: RMSNorm epsilon. attn_scale: ``"sqrt"`` (1/√hd), ``"linear"`` or a number.
        tie_head: logits through the token embedding (then ``head_multiplier`` is N_rescale);
            default an untied bias-free head, as Llama.
        head_multiplier: the constant multiplying the logits.
    """

    TASK = "lm"

    def __init__(self, *, vocab_size: int = 256, block_size: int = 128, width: int = 128,
                 depth: int = 4, heads: int = 4, kv_heads: int | None = None,
                 mlp_hidden: int | None = None, pos: str = "rope", rope_theta: float = 10000.0,
                 qk_norm: bool = False,
                 norm_eps: float = 1e-6, attn_scale: str | float = "sqrt", tie_head: bool = False,
                 head_multiplier: float = 1.0):
        super().__init__()
        check_heads(width, heads)
        if vocab_size <= 0 or block_size <= 0 or depth <= 0:
            raise ConfigError("vocab_size, block_size and depth must be positive")
        if pos is None:  # `--model-option pos=none` parses to None: no positions
            pos = "none"
        if pos not in LLAMA_POS:
            raise ConfigError(f"pos must be one of {', '.join(LLAMA_POS)}, got {pos!r}")
        kv_heads = heads if kv_heads is None else kv_heads
        hidden = mlp_hidden_size(width) if mlp_hidden is None else mlp_hidden
        if hidden <= 0:
            raise ConfigError(f"mlp_hidden must be positive, got {hidden}")
        self.config = dict(vocab_size=vocab_size, block_size=block_size, width=width, depth=depth,
                           heads=heads, kv_heads=kv_heads, mlp_hidden=hidden, pos=pos, rope_theta=rope_theta,
                           qk_norm=qk_norm, norm_eps=norm_eps, attn_scale=attn_scale,
                           tie_head=tie_head, head_multiplier=head_multiplier)
        self.width, self.depth, self.heads = width, depth, heads
        self.block_size = block_size
        self.head_multiplier = float(head_multiplier)
        self.tok_embed = nn.Embedding(vocab_size, width)
        if pos == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, block_size, width))
        elif pos == "sincos":
            self.register_buffer("pos_embed", self.sincos_table()[None], persistent=False)
        else:
            self.pos_embed = None
        self.blocks = nn.ModuleList(
            LlamaBlock(width, heads, kv_heads, hidden, attn_scale=attn_scale, qk_norm=qk_norm,
                       norm_eps=norm_eps, rope=pos == "rope") for _ in range(depth))
        self.norm = nn.RMSNorm(width, eps=norm_eps)
        self.head = None if tie_head else nn.Linear(width, vocab_size, bias=False)
        self._rope: dict = {}  # (device, dtype) -> (cos, sin): derived, so never a buffer
        self.reset_parameters()

    def sincos_table(self) -> torch.Tensor:
        """The fixed table (block_size, width): 1-D sin-cos with entries of RMS 1/√2, scaled to RMS
        ``INIT_STD`` (the token embeddings' std), so position and content start the same size."""
        return sincos_1d(self.block_size, self.width) * (INIT_STD * 2 ** 0.5)

    def rope(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The rotary cos/sin tables (block_size, head_dim), computed once per device. They are not
        buffers: a meta-device build and ``to_empty`` (FSDP2) cannot leave them uninitialized."""
        key = str(device)
        if key not in self._rope:
            cfg = self.config
            cos, sin = rope_tables(self.block_size, self.width // self.heads, cfg["rope_theta"])
            self._rope[key] = (cos.to(device), sin.to(device))
        return self._rope[key]

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Hugging Face's Llama init: Linear and embedding weights N(0, 0.02²), norms 1."""
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                mod.weight.normal_(0.0, INIT_STD, generator=generator)
            elif isinstance(mod, nn.RMSNorm):
                mod.weight.fill_(1.0)
        if isinstance(self.pos_embed, nn.Parameter):
            self.pos_embed.normal_(0.0, INIT_STD, generator=generator)
        elif self.pos_embed is not None:  # the fixed table: recomputed (a meta build leaves garbage)
            self.pos_embed.copy_(self.sincos_table()[None].to(self.pos_embed))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """Returns logits (B, T, V); with ``targets`` returns (logits, mean cross-entropy)."""
        t = idx.shape[1]
        if t > self.block_size:
            raise ConfigError(f"sequence length {t} exceeds block_size {self.block_size}")
        cos, sin = self.rope(idx.device)
        cos, sin = cos[:t], sin[:t]
        z = self.tok_embed(idx)
        if self.pos_embed is not None:
            z = z + self.pos_embed[:, :t]
        for block in self.blocks:
            z = block(z, cos, sin)
        return self.readout(self.norm(z), targets)
