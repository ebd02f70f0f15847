"""Building blocks shared by initlab's reference ViT and GPT.

The block is pre-LN by default, as in the effective-theory paper (arXiv 2304.02034, section 1):
``z <- skip_scale * z + branch_gain * R(LN(z))``. ``skip_scale`` and ``branch_gain`` exist so
that baselines which need the model's cooperation (DeepNorm's alpha, ReZero/SkipInit, LayerScale)
are options of the model rather than monkey patches.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError


def check_heads(width: int, n_heads: int) -> int:
    """Return head_dim, or raise a clear error when width does not split into heads."""
    if width <= 0 or n_heads <= 0:
        raise ConfigError(f"width ({width}) and heads ({n_heads}) must be positive integers")
    if width % n_heads:
        raise ConfigError(
            f"width {width} is not divisible by heads {n_heads}; choose heads that divide the "
            f"width (e.g. {', '.join(str(h) for h in range(1, min(width, 16) + 1) if width % h == 0)})"
        )
    return width // n_heads


class Attention(nn.Module):
    """Multi-head self-attention with a fused or separate q/k/v projection.

    Weights follow ``nn.Linear`` (out, in); in the fused layout rows [0, d) are q, [d, 2d) are k
    and [2d, 3d) are v, head h owning rows [h*hd, (h+1)*hd) inside each block (timm/nanoGPT layout).
    ``scale`` is the attention-logit multiplier: 1/sqrt(head_dim) (standard) or 1/head_dim (muP).
    """

    def __init__(self, width: int, n_heads: int, *, bias: bool = True, fused_qkv: bool = True,
                 attn_scale: str = "sqrt", causal: bool = False):
        super().__init__()
        self.width = width
        self.n_heads = n_heads
        self.head_dim = check_heads(width, n_heads)
        self.causal = causal
        self.fused_qkv = fused_qkv
        self.scale = attn_scale_value(attn_scale, self.head_dim)
        if fused_qkv:
            self.qkv = nn.Linear(width, 3 * width, bias=bias)
        else:
            self.q = nn.Linear(width, width, bias=bias)
            self.k = nn.Linear(width, width, bias=bias)
            self.v = nn.Linear(width, width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        if self.fused_qkv:
            q, k, v = self.qkv(x).split(d, dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        shape = (b, t, self.n_heads, self.head_dim)
        q, k, v = (y.view(shape).transpose(1, 2) for y in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


def attn_scale_value(attn_scale: str | float, head_dim: int) -> float:
    """Attention-logit scale: ``"sqrt"`` -> 1/sqrt(hd), ``"linear"`` -> 1/hd, or a number."""
    if attn_scale == "sqrt":
        return 1.0 / math.sqrt(head_dim)
    if attn_scale == "linear":
        return 1.0 / head_dim
    if isinstance(attn_scale, (int, float)) and math.isfinite(attn_scale) and attn_scale > 0:
        return float(attn_scale)
    raise ConfigError(f"attn_scale must be 'sqrt', 'linear' or a positive number, got {attn_scale!r}")


class MLP(nn.Module):
    def __init__(self, width: int, ratio: int = 4, *, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(width, ratio * width, bias=bias)
        self.fc2 = nn.Linear(ratio * width, width, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class BranchGain(nn.Module):
    """Multiplier on a residual branch: ReZero/SkipInit (scalar, init 0) or LayerScale (vector)."""

    def __init__(self, width: int, kind: str, init: float):
        super().__init__()
        shape = (1,) if kind == "scalar" else (width,)
        self.gain = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def make_norm(width: int, affine: bool, eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(width, eps=eps, elementwise_affine=affine)


class Block(nn.Module):
    """One Transformer block: attention then MLP, each a residual branch.

    ``norm_position="pre"``: z + g*R(LN(z)) (default). ``"post"``: LN(skip_scale*z + g*R(z)), the
    layout DeepNorm rescales. ``branch_gain``: None, ``"rezero"`` (scalar, 0), ``"skipinit"``
    (scalar, ``branch_gain_init``) or ``"layerscale"`` (per channel, ``branch_gain_init``).
    """

    def __init__(self, width: int, n_heads: int, *, mlp_ratio: int = 4, bias: bool = True,
                 ln_affine: bool = True, ln_eps: float = 1e-6, fused_qkv: bool = True,
                 attn_scale: str | float = "sqrt", causal: bool = False,
                 norm_position: str = "pre", branch_gain: str | None = None,
                 branch_gain_init: float = 0.1, skip_scale: float = 1.0):
        super().__init__()
        if norm_position not in ("pre", "post"):
            raise ConfigError(f"norm_position must be 'pre' or 'post', got {norm_position!r}")
        self.norm_position = norm_position
        self.skip_scale = float(skip_scale)
        self.norm1 = make_norm(width, ln_affine, ln_eps)
        self.attn = Attention(width, n_heads, bias=bias, fused_qkv=fused_qkv,
                              attn_scale=attn_scale, causal=causal)
        self.norm2 = make_norm(width, ln_affine, ln_eps)
        self.mlp = MLP(width, mlp_ratio, bias=bias)
        self.gain1 = self.gain2 = None
        if branch_gain is not None:
            kinds = {"rezero": ("scalar", 0.0), "skipinit": ("scalar", branch_gain_init),
                     "layerscale": ("vector", branch_gain_init)}
            if branch_gain not in kinds:
                raise ConfigError(f"branch_gain must be one of {sorted(kinds)} or None, got {branch_gain!r}")
            kind, init = kinds[branch_gain]
            self.gain1 = BranchGain(width, kind, init)
            self.gain2 = BranchGain(width, kind, init)
        self.branch_scale = 1.0

    @property
    def branch_scale(self) -> float:
        """The depth family's residual-branch multiplier (set by parametrize_): applied on the output
        of each branch's last linear map (attention ``proj``, MLP ``fc2``), where the role map says
        the branch output is, so hooks on those modules see what the residual stream receives."""
        return self.__dict__.get("_branch_scale", 1.0)

    @branch_scale.setter
    def branch_scale(self, value: float) -> None:
        set_output_scale(self.__dict__, (self.attn.proj, self.mlp.fc2), value)

    def _branch(self, gain, y):
        return y if gain is None else gain(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self._skip
        if self.norm_position == "pre":
            x = skip(x) + self._branch(self.gain1, self.attn(self.norm1(x)))
            return skip(x) + self._branch(self.gain2, self.mlp(self.norm2(x)))
        x = self.norm1(skip(x) + self._branch(self.gain1, self.attn(x)))
        return self.norm2(skip(x) + self._branch(self.gain2, self.mlp(x)))

    def _skip(self, x: torch.Tensor) -> torch.Tensor:
        # no elementwise op in the common case alpha = 1 (a Python float: no graph break)
        return x if self.skip_scale == 1.0 else self.skip_scale * x


def _scale_output(module: nn.Module, args, output):
    m = module.__dict__.get("_initlab_output_scale", 1.0)
    return output if m == 1.0 else output * m


def set_output_scale(store: dict, modules, value: float) -> None:
    """Multiply each module's output by ``value`` (a forward hook, installed once); ``store`` (the
    owner's ``__dict__``) keeps the value as ``_branch_scale``."""
    store["_branch_scale"] = float(value)
    for mod in modules:
        mod.__dict__["_initlab_output_scale"] = float(value)
        if value != 1.0 and not any(h is _scale_output for h in mod._forward_hooks.values()):
            mod.register_forward_hook(_scale_output)


class HeadMultiplierState:
    """Mixin for models with a ``head_multiplier`` attribute: the multiplier a parametrization sets
    (N_rescale) travels with the state_dict as the module's extra state (a 0-dim tensor), so a round
    trip keeps the function the weights were initialized for; state dicts saved before it existed
    still load. The residual-branch multiplier of the depth parametrizations (every block's
    ``branch_scale``) travels with it: the state is then the pair (head, branch)."""

    def get_extra_state(self) -> torch.Tensor:
        branch = self.branch_multiplier()
        if branch == 1.0:
            return torch.tensor(self.head_multiplier, dtype=torch.float64)
        return torch.tensor([self.head_multiplier, branch], dtype=torch.float64)

    def set_extra_state(self, state) -> None:
        if isinstance(state, torch.Tensor) and state.numel() == 2:
            self.head_multiplier = float(state[0])
            self.set_branch_multiplier(float(state[1]))
        elif isinstance(state, (torch.Tensor, float, int)):
            self.head_multiplier = float(state)
            self.set_branch_multiplier(1.0)

    def branch_multiplier(self) -> float:
        blocks = getattr(self, "blocks", None) or ()
        return float(getattr(blocks[0], "branch_scale", 1.0)) if len(blocks) else 1.0

    def set_branch_multiplier(self, value: float) -> None:
        for block in getattr(self, "blocks", None) or ():
            block.branch_scale = float(value)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        key = prefix + "_extra_state"
        if key not in state_dict and key in missing_keys:
            missing_keys.remove(key)


class LMReadout:
    """Mixin for initlab's language models: logits = head_multiplier · s Wᵀ through the token
    embedding (tied) or the ``head`` Linear, and the mean cross-entropy when targets are given."""

    def readout(self, s: torch.Tensor, targets: torch.Tensor | None = None):
        w = self.tok_embed.weight if self.head is None else self.head.weight
        logits = F.linear(s, w) * self.head_multiplier
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss


# position tables: learned N(0, 0.02^2), fixed sin-cos buffer, or learned starting as sin-cos
POS_KINDS = ("learned", "sincos", "sincos-learned")


def sincos_1d(n_pos: int, width: int) -> torch.Tensor:
    """Fixed 1-D sin-cos table (Vaswani et al.), shape (n_pos, width)."""
    if width % 2:
        raise ConfigError(f"sin-cos position tables need an even width, got {width}")
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    omega = 1.0 / (10000 ** (torch.arange(width // 2, dtype=torch.float64) / (width / 2)))
    ang = pos * omega[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1).float()


def sincos_2d(grid_h: int, grid_w: int, width: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table (MAE/MoCo-v3 style): half the channels encode rows, half columns."""
    if width % 4:
        raise ConfigError(f"2-D sin-cos position tables need a width divisible by 4, got {width}")
    rows = sincos_1d(grid_h, width // 2)  # (gh, w/2)
    cols = sincos_1d(grid_w, width // 2)  # (gw, w/2)
    table = torch.cat([rows[:, None, :].expand(grid_h, grid_w, -1),
                       cols[None, :, :].expand(grid_h, grid_w, -1)], dim=-1)
    return table.reshape(grid_h * grid_w, width)
