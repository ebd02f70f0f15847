"""Leading-order signal propagation of a pre-LN Transformer at initialization.

Effective theory of Transformers at initialization (Dinan, Yaida, Zhang 2023, arXiv 2304.02034),
section 6 of the paper.

Everything here takes explicit numbers (per-role constants ``C_G``, width, heads, epsilon, the
input's patch or token statistics) and returns numbers; nothing is fitted to a measurement.

Notation (the paper's): the residual stream z^ℓ_t ∈ R^n for token t, its per-token second moment
``G = mean_i z_i²``, LayerNorm outputs s = LN(z) with overlap ``F_tt' = s_t·s_t'/n``. Every weight of
role G is drawn i.i.d. with variance ``C_G / fan_in`` (eqs 1.25-1.34); the head with a per-entry
variance ``head_var`` and an output multiplier (N_rescale).

**Leading order = the kernel recursion.** At infinite width the token-token kernel
``K_tt' = z_t·z_t'/n`` is deterministic given the input and obeys (pre-LN, no biases)

* stem (vision):   ``K_tt' = C_patch · x_t·x_t'/n_patch + C_PE·δ_pos(t)pos(t')``  (+ bias², cls)
* stem (language): ``K_tt' = C_WE·δ_tok(t)tok(t') + C_PE·δ_pos(t)pos(t')``
* LN:              ``F_tt' = K_tt' / sqrt((K_tt+ε)(K_t't'+ε))``, so mean s² = G/(G+ε)  (item 2)
* MHSA:            ``K += C_U·C_V·E[Ω F Ωᵀ]`` with Ω = softmax(logits), logits Gaussian with
                   covariance ``γ·C_Q·C_K·F⊗F`` (γ = logit_scale²·head_dim, 1 for 1/√C) (items 1, 3)
* MLP:             ``K += C_X·E[GELU(w_t)GELU(w_t')]``, (w_t, w_t') ~ N(0, C_W·F)         (item 1)
* branch multiplier m (the depth family's (L/L_base)^-α, 1 in the paper): each increment × m²,
  each gradient inside a branch × m, and the backward kernel's branch term × m²

Its diagonal is the paper's G recursion: ``G^{ℓ+1} = G^ℓ + ΔG_MHSA + C_X·E[GELU(w)²]``, linear
growth in depth, independent of width. The expectation over softmax weights has no closed form;
we estimate it by Monte Carlo over Gaussian logits and report the standard error.

A batch of B inputs is treated as one sequence of N = B·T tokens with a block-diagonal (and, for
decoders, causal) attention mask: the kernel then also carries cross-input entries, which the
gradients of a batch-summed output need. The same recursion run backwards gives the gradient
kernel ``D_tt' = δ_t·δ_t'`` with δ = ∂f/∂z, from which every group's gradient RMS and the NTK
diagonal (item 5) follow; see :func:`predict_gradients`.

Corrections are O(1/n) (LayerNorm's mean subtraction, finite head dimension in the logits) and
O(1/√(n·tokens)) fluctuations of a single draw of the weights; see ``docs/theory.md``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F_

from .errors import ConfigError
from .threads import single_threaded

DTYPE = torch.float64




# ------------------------------------------------------------------------------------------------
# constants and network description
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Constants:
    """Per-role initialization constants C_G: weight variance = C_G / fan_in (eqs 1.25-1.34).

    ``pos``, ``cls``, ``embed`` and ``patch_bias`` are per-entry variances (not divided by width),
    as the paper's C_PE and C_WE. Defaults are the paper's ViT values (digest §2).
    """

    patch: float = 1.0
    pos: float = 0.02 ** 2
    cls: float = 0.02 ** 2
    embed: float = 1.0
    patch_bias: float = 0.0
    q: float = 0.5
    k: float = 0.5
    v: float = 0.5
    o: float = 1.0 / 3.0
    mlp_in: float = 2.0 / 5.0
    mlp_out: float = 8.0 / 5.0
    mlp_gate: float = 0.0  # gated MLP (SwiGLU/GeGLU): the gate's C; mlp_in is then the up projection's
    token_type: float = 0.0  # per-entry variance of a table every token reads one row of (BERT's type 0)

    @classmethod
    def paper_vit(cls) -> "Constants":
        return cls()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_parametrization(cls, p, *, width: int, mlp_ratio: int = 4, n_patch: int = 1) -> "Constants":
        """The constants a :class:`initlab.parametrization.Parametrization` draws with at ``width``:
        C_G = variance·fan_in for fan-in roles (so ``init_style="lm"``'s std 0.02 gives 0.02²·n),
        the per-entry variance for tables."""
        from .parametrization import Parametrization

        p = Parametrization.parse(p)
        fan = {"patch_embed": n_patch, "q": width, "k": width, "v": width, "o": width,
               "mlp_in": width, "mlp_out": mlp_ratio * width}
        vals = {name: p.variance(role, fan_in=fan[role], width=width) * fan[role]
                for name, role in (("patch", "patch_embed"), ("q", "q"), ("k", "k"), ("v", "v"),
                                   ("o", "o"), ("mlp_in", "mlp_in"), ("mlp_out", "mlp_out"))}
        for name, role in (("pos", "pos_embed"), ("cls", "cls_token"), ("embed", "token_embed")):
            vals[name] = p.variance(role, fan_in=1, width=width)
        return cls(**vals)


@dataclass(frozen=True)
class Network:
    """The numbers the leading-order theory needs about one pre-LN Transformer.

    ``logit_gain`` = logit_scale² · head_dim (1 for the 1/√C scale, 1/C for μP's 1/C scale).
    ``head_var`` is the per-entry variance of the head weight (C_head/n^{1+s}, or C_WE for a tied
    language head), ``head_multiplier`` the constant multiplying the logits (N_rescale).
    ``pool``: "mean" or "cls" (vision: one output per input) or "token" (language: per token).
    """

    width: int
    heads: int
    depth: int
    constants: Constants = field(default_factory=Constants)
    mlp_ratio: int = 4
    ln_eps: float = 1e-6
    logit_gain: float = 1.0
    causal: bool = False
    pool: str = "mean"
    head_var: float | None = None
    head_bias_var: float = 0.0
    head_multiplier: float = 1.0
    n_out: int = 10
    norm_position: str = "pre"  # "pre" (GPT-2, LLaMA, ViT, T5) or "post" (BERT, BART)
    activation: str = "gelu"  # a key of ACTIVATIONS
    gated: bool = False  # MLP = W_out (φ(W_gate s) ∘ W_in s)
    stem_norm: bool = False  # a norm right after the embeddings (BERT, BART)
    final_norm: bool = True  # a norm after the last block (pre-LN models)
    group_size: int = 1  # query heads per key/value head (GQA): a shared K/V collects their gradients
    branch_multiplier: float = 1.0  # every residual branch's output × m (depth-mup, completep)

    def __post_init__(self):
        if self.width <= 0 or self.heads <= 0 or self.depth < 0 or self.width % self.heads:
            raise ConfigError(f"theory needs positive width divisible by heads and depth >= 0, got "
                              f"width={self.width}, heads={self.heads}, depth={self.depth}")
        if self.pool not in ("mean", "cls", "token"):
            raise ConfigError(f"pool must be 'mean', 'cls' or 'token', got {self.pool!r}")
        if self.norm_position not in ("pre", "post"):
            raise ConfigError(f"norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if not (math.isfinite(self.branch_multiplier) and self.branch_multiplier > 0):
            raise ConfigError(f"branch_multiplier must be a positive number, got {self.branch_multiplier!r}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def head_variance(self) -> float:
        """Per-entry head variance; default C_head = 1 over fan-in n (NT/standard)."""
        return 1.0 / self.width if self.head_var is None else self.head_var


# ------------------------------------------------------------------------------------------------
# one-dimensional closed forms (the paper's numbers)
# ------------------------------------------------------------------------------------------------
def _hermite(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of E[f(x)], x ~ N(0, 1) (probabilists' Gauss-Hermite)."""
    x, w = np.polynomial.hermite_e.hermegauss(order)
    return x, w / w.sum()


def gelu(x):
    """Exact (erf) GELU, as ``torch.nn.functional.gelu`` computes it."""
    x = torch.as_tensor(x, dtype=DTYPE)
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_prime(x):
    x = torch.as_tensor(x, dtype=DTYPE)
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _t(x):
    return torch.as_tensor(x, dtype=DTYPE)


ACTIVATIONS = {  # the MLP nonlinearities the theory knows (float64 in, float64 out)
    "gelu": gelu,
    "gelu_tanh": lambda x: 0.5 * _t(x) * (1 + torch.tanh(math.sqrt(2 / math.pi) * (_t(x) + 0.044715 * _t(x) ** 3))),
    "relu": lambda x: _t(x).clamp_min(0),
    "silu": lambda x: _t(x) * torch.sigmoid(_t(x)),
    "quick_gelu": lambda x: _t(x) * torch.sigmoid(1.702 * _t(x)),
    "relu2": lambda x: _t(x).clamp_min(0) ** 2,
    "tanh": lambda x: torch.tanh(_t(x)),
}


def _derivative(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "gelu":
        return gelu_prime(x)
    x = _t(x).detach().requires_grad_(True)
    with torch.enable_grad():
        y = ACTIVATIONS[name](x)
        (g,) = torch.autograd.grad(y.sum(), x)
    return g


def activation_kernels(f: torch.Tensor, c_w: float, activation: str = "gelu", *, order: int = 32
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[φ(w_t)φ(w_t')], E[φ'(w_t)φ'(w_t')]) for (w_t, w_t') ~ N(0, C_W·F) and φ = ``activation``.

    GELU: :func:`gelu_kernels` (one closed-form integral); ReLU: the arc-cosine kernel (closed
    form); any other φ: two-dimensional Gauss-Hermite quadrature of ``order``² nodes.
    """
    if activation == "gelu":
        return gelu_kernels(f, c_w)
    var = c_w * f.diagonal().clamp_min(0)
    a = var.sqrt()
    ab = (a[:, None] * a[None, :]).clamp_min(1e-300)
    rho = (c_w * f / ab).clamp(-1.0, 1.0)
    if activation == "relu":
        theta = torch.arccos(rho)
        phi = ab / (2 * math.pi) * (torch.sqrt(1 - rho * rho) + (math.pi - theta) * rho)
        return phi, (math.pi - theta) / (2 * math.pi)
    x, w = (torch.as_tensor(v, dtype=DTYPE) for v in _hermite(order))
    fn = ACTIVATIONS[activation]
    u = a[:, None, None, None] * x[None, None, :, None]  # (N, 1, Q, 1)
    v = a[None, :, None, None] * (rho[:, :, None, None] * x[None, None, :, None]
                                  + torch.sqrt(1 - rho * rho)[:, :, None, None] * x[None, None, None, :])
    ww = w[:, None] * w[None, :]
    phi = (ww * fn(u) * fn(v)).sum((-1, -2))
    dphi = (ww * _derivative(activation, u) * _derivative(activation, v)).sum((-1, -2))
    return (phi + phi.t()) / 2, (dphi + dphi.t()) / 2


def mlp_kernel(f: torch.Tensor, net: "Network") -> torch.Tensor:
    """The MLP's increment of the kernel: C_X·E[φφ'] (plain) or C_X·(C_up·F)∘E[φ(g)φ(g')] with
    g ~ N(0, C_gate·F) (gated: gate and up weights independent)."""
    c = net.constants
    if net.gated:
        phi, _ = activation_kernels(f, c.mlp_gate, net.activation)
        return c.mlp_out * c.mlp_in * f * phi
    phi, _ = activation_kernels(f, c.mlp_in, net.activation)
    return c.mlp_out * phi


def gelu_second_moment(variance: float, *, order: int = 64) -> float:
    """E[GELU(w)²] for w ~ N(0, variance) by Gauss-Hermite quadrature.

    Digest §7 item 1: 0.4252 for variance 1 and 0.1456 for variance C_W = 0.4.
    """
    if variance < 0:
        raise ConfigError(f"variance must be >= 0, got {variance}")
    x, w = _hermite(order)
    return float((torch.as_tensor(w) * gelu(math.sqrt(variance) * torch.as_tensor(x)) ** 2).sum())


def mlp_increment(c_x: float, c_w: float, f: float = 1.0) -> float:
    """Leading-order MLP increment of G: C_X · E[GELU(w)²], w ~ N(0, C_W·F) (§6, item 1).

    With the paper's C_X = 8/5, C_W = 2/5 and F ≈ 1 this is 0.233.
    """
    return c_x * gelu_second_moment(c_w * f)


def stem_second_moment(c_patch: float, mean_x2: float, c_pe: float) -> float:
    """Vision stem: G¹ = C_patch·mean(x²) + C_PE (§6 item 1); language: pass mean_x2=C_WE, c_patch=1."""
    return c_patch * mean_x2 + c_pe


def ln_output_second_moment(g: float, eps: float) -> float:
    """mean s² of LN(z) with frozen affine = G/(G+ε) (§6 item 2); LN removes the channel mean too."""
    return g / (g + eps)


def attention_logit_variance(c_q: float, c_k: float, f_tt: float = 1.0, f_uu: float = 1.0,
                             logit_gain: float = 1.0) -> float:
    """Var of q_t·k_u/√C = C_Q·C_K·F_tt·F_uu (§6 item 3; 0.25 for the ViT constants).

    ``logit_gain`` = scale²·head_dim multiplies it (1/C logits: gain 1/C, variance → 0 as C grows).
    """
    return logit_gain * c_q * c_k * f_tt * f_uu


def mhsa_increment_bounds(c_u: float, c_v: float, c_q: float, c_k: float, tokens: int,
                          logit_gain: float = 1.0) -> tuple[float, float]:
    """Bounds of the MHSA increment of G (§6 item 1): (C_U·C_V·e^{γC_QC_K}/T, C_U·C_V).

    The lower bound is for mutually orthogonal tokens (Ω F Ωᵀ = Σ Ω², E over log-normal softmax
    weights ≈ e^{var}/T), the upper for identical tokens (F = 1). Use the visible-token count
    under a causal mask.
    """
    if tokens <= 0:
        raise ConfigError(f"tokens must be positive, got {tokens}")
    return c_u * c_v * math.exp(logit_gain * c_q * c_k) / tokens, c_u * c_v


def output_logit_variance(width: int, head_var: float, multiplier: float = 1.0, f_mean: float = 1.0,
                          head_bias_var: float = 0.0) -> float:
    """Var of one output logit = N²·(n·head_var·F̄ + b²) (§6 item 4).

    F̄ = mean_{t,t'} F_tt' after mean pooling (vision), F_tt for a per-token language head. NT
    ViT: n·(C_head/n)·F̄ = C_head·F̄; standard language (std 0.02, N=1): n·4e-4·F, growing with n.
    """
    return multiplier ** 2 * (width * head_var * f_mean + head_bias_var)


# ------------------------------------------------------------------------------------------------
# input statistics -> stem kernel
# ------------------------------------------------------------------------------------------------
def patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) images -> (B, T, C·p²) patches, in the order a stride-p Conv2d visits them."""
    if images.dim() != 4:
        raise ConfigError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    return F_.unfold(images.to(DTYPE), patch_size, stride=patch_size).transpose(1, 2)


def stem_kernel_vision(patch_vectors: torch.Tensor, constants: Constants, *, cls: bool = False
                       ) -> torch.Tensor:
    """Stem kernel K¹ (N×N, N = B·T) of a patchify stem plus learned position table.

    K_tt' = C_patch·x_t·x_t'/n_patch + b² + C_PE·[same position] (+ C_cls on the cls tokens): the
    position table and cls token are shared by all inputs, so they correlate across the batch.
    """
    b, t, n_patch = patch_vectors.shape
    x = patch_vectors.reshape(b * t, n_patch).to(DTYPE)
    k = constants.patch * (x @ x.t()) / n_patch + constants.patch_bias
    if cls:
        kk = torch.zeros(b, t + 1, b, t + 1, dtype=DTYPE)
        kk[:, 1:, :, 1:] = k.reshape(b, t, b, t)
        kk[:, 0, :, 0] = constants.cls
        t += 1
        k = kk.reshape(b * t, b * t)
    pos = torch.arange(t).repeat(b)
    return k + constants.pos * (pos[:, None] == pos[None, :]).to(DTYPE)


def stem_kernel_tokens(tokens: torch.Tensor, constants: Constants) -> torch.Tensor:
    """Language stem kernel: K_tt' = C_WE·[same token] + C_PE·[same position] (digest §7 item 1)."""
    b, t = tokens.shape
    tok = tokens.reshape(-1)
    pos = torch.arange(t).repeat(b)
    same = lambda a: (a[:, None] == a[None, :]).to(DTYPE)  # noqa: E731
    return constants.embed * same(tok) + constants.pos * same(pos)


def attention_mask(batch: int, tokens: int, causal: bool) -> torch.Tensor:
    """Which (query, key) pairs of the N = B·T flattened tokens can attend: same input (and t' <= t)."""
    sample = torch.arange(batch).repeat_interleave(tokens)
    pos = torch.arange(tokens).repeat(batch)
    mask = sample[:, None] == sample[None, :]
    if causal:
        mask &= pos[None, :] <= pos[:, None]
    return mask


# ------------------------------------------------------------------------------------------------
# kernel maps
# ------------------------------------------------------------------------------------------------
def ln_kernel(k: torch.Tensor, eps: float) -> torch.Tensor:
    """F = K / sqrt((K_tt+ε)(K_t't'+ε)): overlap of frozen-affine LayerNorm outputs (§6 item 2)."""
    r = 1.0 / torch.sqrt(k.diagonal() + eps)
    return k * r[:, None] * r[None, :]


def gelu_kernels(f: torch.Tensor, c_w: float, *, order: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[GELU(w_t)GELU(w_t')], E[GELU'(w_t)GELU'(w_t')]) for (w_t, w_t') ~ N(0, C_W·F).

    Write w_t = a·x and w_t' = μ + σ·y with μ = bρx, σ = b√(1−ρ²), x, y ~ N(0, 1) independent.
    The y expectation is closed-form (s = √(1+σ²)):
    E[GELU(μ+σy)] = μΦ(μ/s) + σ²φ(μ/s)/s and E[GELU'(μ+σy)] = Φ(μ/s) + μφ(μ/s)/s³;
    the x expectation is Gauss-Hermite quadrature of ``order`` nodes.
    """
    x, w = (torch.as_tensor(a, dtype=DTYPE) for a in _hermite(order))
    var = c_w * f.diagonal().clamp_min(0)
    a = var.sqrt()
    rho = (c_w * f / (a[:, None] * a[None, :]).clamp_min(1e-300)).clamp(-1.0, 1.0)
    mu = a[None, :, None] * rho[:, :, None] * x  # (N, N, Q): conditional mean of w_t' given x
    sig2 = (a * a)[None, :, None] * (1 - rho * rho)[:, :, None]
    s = torch.sqrt(1 + sig2)
    z = mu / s
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2.0)))
    inner_v = mu * cdf + sig2 * pdf / s
    inner_d = cdf + mu * pdf / s ** 3
    outer_v = gelu(a[:, None] * x)[:, None, :]  # (N, 1, Q)
    outer_d = gelu_prime(a[:, None] * x)[:, None, :]
    phi = (w * outer_v * inner_v).sum(-1)
    dphi = (w * outer_d * inner_d).sum(-1)
    return (phi + phi.t()) / 2, (dphi + dphi.t()) / 2


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh((m + m.t()) / 2)
    return vecs * vals.clamp_min(0).sqrt()[None, :]


def attention_samples(f: torch.Tensor, mask: torch.Tensor, logit_variance: float, samples: int,
                      generator: torch.Generator, chunk: int = 64):
    """Yield chunks of softmax matrices Ω (s, N, N) with logits ~ N(0, logit_variance·F⊗F).

    logits = √var · L Z Lᵀ with L Lᵀ = F and Z i.i.d. N(0, 1): E[ℓ_tu ℓ_t'u'] = var·F_tt'·F_uu'.
    """
    root = _sqrt_psd(f)
    scale = math.sqrt(max(logit_variance, 0.0))
    done = 0
    while done < samples:
        s = min(chunk, samples - done)
        z = torch.randn(s, f.shape[0], f.shape[0], generator=generator, dtype=DTYPE)
        logits = scale * (root @ z @ root.t())
        yield torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
        done += s


@dataclass
class AttentionStats:
    increment: torch.Tensor  # C_U C_V E[Ω F Ωᵀ] (N×N)
    g_increment_stderr: float  # Monte Carlo standard error of the mean-diagonal increment
    entropy: float  # E[-Σ Ω log Ω] per query token
    distance: float  # E[Σ_t' Ω_tt' |t - t'|] per query token (token-index distance)


def attention_forward(f: torch.Tensor, mask: torch.Tensor, net: Network, tokens: int, *,
                      samples: int, generator: torch.Generator) -> AttentionStats:
    """MHSA kernel increment C_U·C_V·E[Ω F Ωᵀ] by Monte Carlo over Gaussian logits (§6 item 1)."""
    c = net.constants
    var = net.logit_gain * c.q * c.k
    acc = torch.zeros_like(f)
    diag_means, ent, dist = [], 0.0, 0.0
    pos = torch.arange(f.shape[0]) % tokens
    gap = (pos[:, None] - pos[None, :]).abs().to(DTYPE)
    for om in attention_samples(f, mask, var, samples, generator):
        m = om @ f @ om.transpose(1, 2)
        acc += m.sum(0)
        diag_means.append(m.diagonal(dim1=1, dim2=2).mean(1))
        ent += float(-(om * torch.log(om.clamp_min(1e-300))).sum(-1).mean(-1).sum())
        dist += float((om * gap).sum(-1).mean(-1).sum())
    d = torch.cat(diag_means)
    k = c.o * c.v
    stderr = k * float(d.std()) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return AttentionStats(k * acc / samples, stderr, ent / samples, dist / samples)


# ------------------------------------------------------------------------------------------------
# forward prediction
# ------------------------------------------------------------------------------------------------
@dataclass
class Prediction:
    """Leading-order prediction per block (index ℓ = 0..depth-1), plus the stem and the output.

    ``g[ℓ]`` is G at the output of block ℓ, ``g_mid[ℓ]`` after its attention branch, ``g_stem`` the
    stem. Kernels (N×N, N = batch·tokens) are kept for the gradient prediction.
    """

    network: Network
    batch: int
    tokens: int
    g_stem: float
    g: list[float]
    g_mid: list[float]
    g_stderr: list[float]  # accumulated Monte Carlo standard error of g[ℓ]
    ln1: list[float]  # mean s² at the attention LayerNorm of block ℓ
    ln2: list[float]
    ln_final: float
    cosine: list[float]  # mean token-token cosine of z at block outputs (rank-collapse indicator)
    logit_var: list[float]  # attention-logit variance in block ℓ (mean over visible pairs)
    entropy: list[float]
    distance: list[float]
    output_logit_var: float
    mhsa_increment: list[float]
    mlp_increment: list[float]
    kernels_in: list[torch.Tensor] = field(repr=False, default_factory=list)
    kernels_mid: list[torch.Tensor] = field(repr=False, default_factory=list)
    kernel_out: torch.Tensor | None = field(repr=False, default=None)
    mask: torch.Tensor | None = field(repr=False, default=None)
    seed: int = 0
    samples: int = 0

    def per_block(self) -> list[dict]:
        return [dict(block=i, G=self.g[i], G_mid=self.g_mid[i], G_stderr=self.g_stderr[i],
                     ln1_s2=self.ln1[i], ln2_s2=self.ln2[i], cosine=self.cosine[i],
                     attn_logit_var=self.logit_var[i], attn_logit_mean=0.0,
                     attn_entropy=self.entropy[i], attn_distance=self.distance[i],
                     mhsa_increment=self.mhsa_increment[i], mlp_increment=self.mlp_increment[i])
                for i in range(len(self.g))]


def _within(k: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
    """Within-input diagonal blocks of an N×N kernel: (B, T, T)."""
    kk = k.reshape(batch, tokens, batch, tokens)
    return torch.stack([kk[b, :, b] for b in range(batch)])


def _mean_cosine(k: torch.Tensor, batch: int, tokens: int) -> float:
    if tokens < 2:
        return 1.0
    w = _within(k, batch, tokens)
    d = w.diagonal(dim1=1, dim2=2).clamp_min(1e-300).sqrt()
    c = w / (d[:, :, None] * d[:, None, :])
    off = ~torch.eye(tokens, dtype=torch.bool)
    return float(c[:, off].mean())


def cross_attention_increment(f_q: torch.Tensor, f_mem: torch.Tensor, batch: int, net: Network, *,
                              samples: int, generator: torch.Generator) -> torch.Tensor:
    """Cross-attention's kernel increment C_U·C_V·E[Ω F_mem Ωᵀ]: queries from the decoder stream
    (overlap ``f_q``, N×N), keys and values from the encoder output (overlap ``f_mem``, M×M), logits
    ~ N(0, γC_QC_K·F_q⊗F_mem), each query attending to the tokens of its own input."""
    c = net.constants
    var = net.logit_gain * c.q * c.k
    n, m = f_q.shape[0], f_mem.shape[0]
    mask = torch.arange(batch).repeat_interleave(n // batch)[:, None] == \
        torch.arange(batch).repeat_interleave(m // batch)[None, :]
    rq, rm_ = _sqrt_psd(f_q), _sqrt_psd(f_mem)
    acc = torch.zeros(n, n, dtype=DTYPE)
    done = 0
    while done < samples:
        s = min(64, samples - done)
        z = torch.randn(s, rq.shape[1], rm_.shape[1], generator=generator, dtype=DTYPE)
        om = torch.softmax((math.sqrt(max(var, 0.0)) * (rq @ z @ rm_.t())).masked_fill(~mask, float("-inf")), -1)
        acc += (om @ f_mem @ om.transpose(1, 2)).sum(0)
        done += s
    return c.o * c.v * acc / samples


def propagate(k_stem: torch.Tensor, net: Network, *, batch: int, tokens: int, samples: int = 256,
              seed: int = 0, keep_kernels: bool = True, memory: torch.Tensor | None = None) -> Prediction:
    """Run the leading-order kernel recursion through ``net.depth`` blocks.

    ``k_stem`` is the N×N stem kernel (N = batch·tokens, tokens including a cls token), before a
    stem norm if ``net.stem_norm``. Pre-LN blocks: z += MHSA(LN z); z += MLP(LN z). Post-LN:
    z = LN(z + MHSA z); z = LN(z + MLP z). ``memory`` (M×M, the encoder stack's output overlap)
    adds a cross-attention branch after the self-attention (encoder-decoder decoders). The MHSA
    expectation uses ``samples`` Gaussian logit draws per block from a generator seeded with
    ``seed + block``; its standard error is accumulated into ``g_stderr``.
    """
    if k_stem.shape != (batch * tokens, batch * tokens):
        raise ConfigError(f"stem kernel of shape {tuple(k_stem.shape)} does not match batch={batch} "
                          f"x tokens={tokens}")
    c, eps = net.constants, net.ln_eps
    m2 = net.branch_multiplier ** 2  # a branch's output × m: its kernel increment × m²
    pre = net.norm_position == "pre"
    mask = attention_mask(batch, tokens, net.causal)
    vis = _within(mask.to(DTYPE), batch, tokens)
    k = k_stem.to(DTYPE).clone()
    if net.stem_norm:
        k = ln_kernel(k, eps)
    out = Prediction(net, batch, tokens, _g(k), [], [], [], [], [], 0.0, [], [], [], [], 0.0, [], [],
                     mask=mask, seed=seed, samples=samples)
    err2 = 0.0
    for layer in range(net.depth):
        if keep_kernels:
            out.kernels_in.append(k.clone())
        f = ln_kernel(k, eps) if pre else k
        fw = _within(f, batch, tokens)
        fd = fw.diagonal(dim1=1, dim2=2)
        lv = net.logit_gain * c.q * c.k * fd[:, :, None] * fd[:, None, :]
        out.logit_var.append(float((lv * vis).sum() / vis.sum()))
        gen = torch.Generator().manual_seed(seed + layer)
        att = attention_forward(f, mask, net, tokens, samples=samples, generator=gen)
        g0 = _g(k)
        k = k + m2 * att.increment
        out.mhsa_increment.append(_g(k) - g0)
        out.entropy.append(att.entropy)
        out.distance.append(att.distance)
        err2 += (m2 * att.g_increment_stderr) ** 2
        if pre:
            out.ln1.append(float(f.diagonal().mean()))
        else:
            k = ln_kernel(k, eps)
            out.ln1.append(float(k.diagonal().mean()))
        if memory is not None:
            gen = torch.Generator().manual_seed(seed + 5_000 + layer)
            k = k + m2 * cross_attention_increment(ln_kernel(k, eps) if pre else k, memory, batch, net,
                                                   samples=samples, generator=gen)
            if not pre:
                k = ln_kernel(k, eps)
        if keep_kernels:
            out.kernels_mid.append(k.clone())
        f = ln_kernel(k, eps) if pre else k
        g1 = _g(k)
        k = k + m2 * mlp_kernel(f, net)
        out.mlp_increment.append(_g(k) - g1)
        if pre:
            out.g_mid.append(g1)
            out.ln2.append(float(f.diagonal().mean()))
        else:
            out.g_mid.append(_g(k))
            k = ln_kernel(k, eps)
            out.ln2.append(float(k.diagonal().mean()))
        out.g.append(_g(k))
        out.g_stderr.append(math.sqrt(err2))
        out.cosine.append(_mean_cosine(k, batch, tokens))
    f = ln_kernel(k, eps) if net.final_norm else k
    out.ln_final = float(f.diagonal().mean())
    out.kernel_out = k
    out.output_logit_var = output_logit_variance(
        net.width, net.head_variance, net.head_multiplier, _readout_overlap(f, net, batch, tokens),
        net.head_bias_var)
    return out


def _g(k: torch.Tensor) -> float:
    return float(k.diagonal().mean())


def _readout(net: Network, batch: int, tokens: int) -> torch.Tensor:
    """Weights r_t with which token t of the final LN output enters its input's output logit."""
    if net.pool == "mean":
        r = torch.full((tokens,), 1.0 / tokens, dtype=DTYPE)
    elif net.pool == "cls":
        r = torch.zeros(tokens, dtype=DTYPE)
        r[0] = 1.0
    else:  # per-token outputs (language): f = Σ_t logit_t
        r = torch.ones(tokens, dtype=DTYPE)
    return r.repeat(batch)


def _readout_overlap(f: torch.Tensor, net: Network, batch: int, tokens: int) -> float:
    """F̄ entering one output logit: mean_b Σ r_t r_t' F_tt' (vision), mean F_tt (per token)."""
    if net.pool == "token":
        return float(f.diagonal().mean())
    r = _readout(net, batch, tokens).reshape(batch, tokens)
    w = _within(f, batch, tokens)
    return float(torch.einsum("bt,btu,bu->b", r, w, r).mean())


# ------------------------------------------------------------------------------------------------
# backward prediction: gradient RMS per group and the NTK diagonal
# ------------------------------------------------------------------------------------------------
def _attention_backward(f, d, mask, net, samples, generator):
    """E over Gaussian logits of the matrices the attention backward needs (see predict_gradients)."""
    c = net.constants
    var = net.logit_gain * c.q * c.k
    wdw = torch.zeros_like(f)
    wfw = torch.zeros_like(f)
    tr = torch.zeros_like(f)
    kpath = torch.zeros_like(f)
    ff = f * f
    e = f * d
    for om in attention_samples(f, mask, var, samples, generator):
        omt = om.transpose(1, 2)
        wdw += (omt @ d @ om).sum(0)
        s = om @ f @ omt  # (s, N, N): ω_tᵀ F ω_u
        wfw += s.sum(0)
        fw = om @ f  # row t = (F ω_t)ᵀ
        t2 = (fw * fw) @ omt
        tr += (om @ ff @ omt - t2 - t2.transpose(1, 2) + s * s).sum(0)
        m = omt @ (fw * (e @ om))
        kpath += (f * (omt @ e @ om) - m - m.transpose(1, 2) + omt @ (e * s) @ om).sum(0)
    return wdw / samples, wfw / samples, tr / samples, kpath / samples


def predict_gradients(pred: Prediction, *, patch_gram: torch.Tensor | None = None,
                      n_patch: int | None = None) -> dict:
    """Leading-order RMS of ∂f/∂θ per group for f = Σ_inputs (one output logit), by backprop of the
    gradient kernel D_tt' = δ_t·δ_t' (δ = ∂f/∂z) through the same recursion (§6 item 5).

    Readout: δ at the final LN output is N·w_k·r_t, so D = N²·n·head_var·r rᵀ, then the LN
    Jacobian divides by √(K_tt+ε) (its projections are O(1/n)). Per block, backwards:

    * MLP (z += X·φ(W s)):  RMS²_X = Σ D∘Φ / n,  RMS²_W = C_X·Σ F∘Φ'∘D / (M n),
      D += C_W·C_X·Φ'∘D / √((K_tt+ε)(K_t't'+ε)), with Φ, Φ' the GELU and GELU' kernels.
    * MHSA: RMS²_V = C_U·Σ F∘E[ΩᵀDΩ]/n, RMS²_U = C_V·Σ D∘E[ΩFΩᵀ]/n,
      RMS²_Q = γ·C_K·C_V·C_U·Σ D∘F∘E[Tr]/n (K: C_Q), with Tr_tu = tr(P_t F P_uᵀ F) and
      P_t = diag(ω_t) − ω_tω_tᵀ the softmax Jacobian; D gains C_V·C_U·E[ΩᵀDΩ] (value path) plus
      γ·C_Q·C_K·C_V·C_U·(D∘E[Tr] + the key path), divided by the LN scale.
    * Stem: RMS²_patch = Σ D∘(x_t·x_t')/(n·n_patch), RMS²_pos = Σ_{same position} D/(T·n).
    * Head: RMS²_W = N²·Σ r r F / n_out (mean over the batch-summed output), RMS_b = N·B/√n_out.

    Returns ``{"blocks": [{role: rms}], "patch_embed": ..., "pos_embed": ..., "head": ..., ...}``.
    """
    net, batch, tokens = pred.network, pred.batch, pred.tokens
    if not pred.kernels_in or pred.kernel_out is None:
        raise ConfigError("predict_gradients needs a Prediction made with keep_kernels=True")
    c, n, eps, m = net.constants, net.width, net.ln_eps, net.head_multiplier
    r = _readout(net, batch, tokens)
    k_out = pred.kernel_out
    f_out = ln_kernel(k_out, eps)
    d = m * m * n * net.head_variance * r[:, None] * r[None, :]
    out: dict = {}
    if net.pool != "token":
        out["head"] = math.sqrt(m * m * float((r[:, None] * r[None, :] * f_out).sum()) / net.n_out)
        out["head_bias"] = m * batch / math.sqrt(net.n_out)
    d = _through_ln(d, k_out, eps)
    blocks = []
    qk = net.logit_gain * c.q * c.k
    bm = net.branch_multiplier  # gradients inside a branch × m, the branch's backward term × m²
    for layer in reversed(range(net.depth)):
        k_in, k_mid = pred.kernels_in[layer], pred.kernels_mid[layer]
        row = {}
        f = ln_kernel(k_mid, eps)
        m_n = net.mlp_ratio * n
        if net.gated:  # h = φ(g)∘u: the up projection sees φ(g), the gate φ'(g)·u
            pa, dpa = activation_kernels(f, c.mlp_gate, net.activation)
            up = c.mlp_in * f
            row["mlp_out"] = math.sqrt(max(float((d * up * pa).sum()) / n, 0.0))
            up2 = c.mlp_out * float((f * pa * d).sum()) / m_n
            gate2 = c.mlp_out * float((f * up * dpa * d).sum()) / m_n
            row["mlp_up"], row["mlp_gate"] = math.sqrt(max(up2, 0.0)), math.sqrt(max(gate2, 0.0))
            row["mlp_in"] = math.sqrt(max((up2 + gate2) / 2, 0.0))  # both under role mlp_in (LLaMA's map)
            d = d + bm * bm * _through_ln(c.mlp_out * (c.mlp_gate * up * dpa + c.mlp_in * pa) * d, k_mid, eps)
        else:
            phi, dphi = activation_kernels(f, c.mlp_in, net.activation)
            row["mlp_out"] = math.sqrt(max(float((d * phi).sum()) / n, 0.0))
            row["mlp_in"] = math.sqrt(max(c.mlp_out * float((f * dphi * d).sum()) / m_n, 0.0))
            d = d + bm * bm * _through_ln(c.mlp_in * c.mlp_out * dphi * d, k_mid, eps)
        f = ln_kernel(k_in, eps)
        gen = torch.Generator().manual_seed(pred.seed + 10_000 + layer)
        wdw, wfw, tr, kpath = _attention_backward(f, d, pred.mask, net, pred.samples, gen)
        vu = c.v * c.o
        row["v"] = math.sqrt(max(c.o * float((f * wdw).sum()) / n, 0.0))
        row["o"] = math.sqrt(max(c.v * float((d * wfw).sum()) / n, 0.0))
        base = net.logit_gain * vu * float((d * f * tr).sum()) / n
        row["q"] = math.sqrt(max(c.k * base, 0.0))
        # GQA: a key/value head serves group_size query heads with independent Q and O, so its
        # gradient is the sum of group_size uncorrelated per-head terms (the D recursion is unchanged)
        row["k"] = math.sqrt(max(c.q * base * net.group_size, 0.0))
        row["v"] *= math.sqrt(net.group_size)
        ds = vu * wdw + qk * vu * (d * tr + kpath)
        d = d + bm * bm * _through_ln(ds, k_in, eps)
        blocks.append({key: bm * v for key, v in row.items()})
    out["blocks"] = blocks[::-1]
    pos = torch.arange(batch * tokens) % tokens
    same_pos = (pos[:, None] == pos[None, :]).to(DTYPE)
    out["pos_embed"] = math.sqrt(max(float((d * same_pos).sum()) / (tokens * n), 0.0))
    if patch_gram is not None and n_patch:
        out["patch_embed"] = math.sqrt(max(float((d * patch_gram).sum()) / (n * n_patch), 0.0))
    out["backward_kernel_stem"] = d
    return out


def _through_ln(d: torch.Tensor, k: torch.Tensor, eps: float) -> torch.Tensor:
    r = 1.0 / torch.sqrt(k.diagonal() + eps)
    return d * r[:, None] * r[None, :]


# ------------------------------------------------------------------------------------------------
# learning-rate factors and the NTK diagonal (digest §3, eqs 1.99-1.116)
# ------------------------------------------------------------------------------------------------
def gradient_scale(group: str, width: int, *, mlp_ratio: int = 4, n_out: int = 10) -> float:
    """The paper's |g| column: typical size of one component of ∂f/∂θ for group G (up to O(1))."""
    table = {"patch_embed": width ** -0.5, "token_embed": width ** -0.5, "pos_embed": width ** -0.5,
             "q": width ** -0.5, "k": width ** -0.5, "v": width ** -0.5, "o": width ** -0.5,
             "mlp_in": (mlp_ratio * width) ** -0.5, "mlp_out": width ** -0.5,
             "head": n_out ** -0.5, "head_bias": n_out ** -0.5}
    if group not in table:
        raise ConfigError(f"no |g| for group {group!r}; known: {', '.join(table)}")
    return table[group]


def lr_factor(group: str, width: int, *, optimizer: str = "sgd", s: float = 0.0, n_patch: int = 1,
              mlp_ratio: int = 4, n_out: int = 10) -> float:
    """λ_G (SGD) or λ̃_G (AdamW) of the paper's table (eqs 1.99-1.116), times n^{s} (SGD) or
    n^{s/2} (AdamW) for non-head groups (footnotes 8, 26): s = 0 NT, 1/2 hybrid, 1 MU."""
    sgd = {"patch_embed": 1.0 / n_patch, "token_embed": 1.0, "pos_embed": 1.0,
           "q": 1.0 / width, "k": 1.0 / width, "v": 1.0 / width, "o": 1.0 / width,
           "mlp_in": 1.0 / width, "mlp_out": 1.0 / (mlp_ratio * width),
           "head": 1.0 / width, "head_bias": 1.0}
    if group not in sgd:
        raise ConfigError(f"no learning-rate factor for group {group!r}; known: {', '.join(sgd)}")
    head = group in ("head", "head_bias")
    if optimizer == "sgd":
        return sgd[group] * (1.0 if head else width ** s)
    if optimizer == "adamw":
        return sgd[group] * gradient_scale(group, width, mlp_ratio=mlp_ratio, n_out=n_out) * (
            1.0 if head else width ** (s / 2))
    raise ConfigError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")


def ntk_diagonal(grad_rms: dict[str, float], sizes: dict[str, int], width: int, *,
                 optimizer: str = "sgd", s: float = 0.0, **kw) -> dict[str, float]:
    """Per-group contribution to the NTK diagonal (§6 item 5):

    SGD:   Θ_G = λ_G · Σ_μ (∂f/∂θ_μ)² = λ_G · P_G · RMS_G²
    AdamW: Θ̃_G = Σ_μ (λ̃_G/|g_μ|)(∂f/∂θ_μ)² = λ̃_G · P_G · RMS_G, since Adam divides each
           component by its own typical size |g_μ| = RMS_G (n^{-1/2} under NT, n^{-1} under MU)

    With the paper's factors (and s matching the head's n^{-s}) each contribution is O(1) in width.
    """
    out = {}
    for g, rms in grad_rms.items():
        lam = lr_factor(g, width, optimizer=optimizer, s=s, **kw)
        out[g] = lam * sizes[g] * (rms if optimizer == "adamw" else rms * rms)
    return out


# ------------------------------------------------------------------------------------------------
# from a model: the architecture from one traced forward, the constants from the weights
# ------------------------------------------------------------------------------------------------
def traced(model, batch=None, *, role_map=None, decoder_tokens: int | None = None, seed: int = 0):
    """One no-grad forward in eval mode with the probe's hooks (modes, RNG and hooks restored):
    ``(structure, trace, layout, output, output_kind)``. ``batch`` defaults to a random one built
    from the role map's input facts. This reads the architecture (which norm runs where, the MLP
    nonlinearity, the head), never a statistic the theory predicts."""
    from .probe.structure import (Recorder, forward_inputs, layout_of, make_inputs, output_tensor,
                                  reached, structure_of)
    from .roles import roles
    from .roles.registry import unwrap

    rm = role_map or roles(model)
    inner = unwrap(model)
    if batch is None:
        batch = make_inputs(rm, inner, batch=2, tokens=8, generator=torch.Generator().manual_seed(seed))
    st = structure_of(inner, rm)
    args, kw = forward_inputs(rm, batch, decoder_tokens=decoder_tokens, seed=seed)
    modes = [(m, m.training) for m in inner.modules()]
    rec = Recorder(inner, st, batch_first=rm.facts.inputs.batch_first)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad(), rec:  # grad on: no fused fast path
            inner.eval()
            out = model(*args, **kw)
    finally:
        for m, mode in modes:
            m.training = mode
    logits, kind = output_tensor(out)
    st, tr, _ = reached(st, rec.trace)  # a tower the input does not reach is not predicted either
    return st, tr, layout_of(st, tr, _branch_multiplier(rm)), logits.detach().double(), kind


def _ms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean())


def _cg(rm, modules=None, role=None) -> float | None:
    """C = mean(W²)·fan_in over the weights of ``role`` (or of the listed modules)."""
    tot, cnt = 0.0, 0
    for info in rm:
        if info.kind != "weight":
            continue
        mod = info.name.rsplit(".", 1)[0]
        for slot in info.slots:
            if (modules is not None and mod in modules) or (role is not None and str(slot.role) == role):
                reg = info.region(slot).double()
                tot += float(reg.pow(2).sum()) * max(slot.fan_in, 1)
                cnt += reg.numel()
    return tot / cnt if cnt else None


def _pos_table(model, rm, root: str | None):
    """The position table read by the stack under ``root``: a pos_embed tensor of the role map,
    or the fixed buffer the facts name (kind "fixed"); None for RoPE, relative bias or none."""
    pos = rm.facts.positions
    if pos.kind in ("rope", "relative", "none"):
        return None
    names = [i.name for i in rm.by_role("pos_embed")]
    if pos.table and pos.table not in names:
        names.append(pos.table)
    under = [n for n in names if root and n.startswith(root + ".")]
    pick = under or ([n for n in names if pos.table == n] if not root else []) or names[:1]
    if not pick:
        return None
    name = pick[0]
    try:
        return model.get_parameter(name).detach()
    except AttributeError:
        try:
            return model.get_buffer(name).detach()
        except AttributeError:
            return None


def constants_of(model, *, role_map=None, structure=None, gate: int | None = None,
                 stack: int | None = None) -> Constants:
    """C_G = mean(W²)·fan_in per role, read from the model's current weights (see network_of).

    The token table is the largest token_embed table (the one the ids index); a smaller one (BERT's
    token types, every token reading row 0) gives ``token_type``. With a gated MLP (``gate`` =
    which of a block's two mlp_in projections goes through φ, see
    :func:`initlab.probe.structure.identify_activation`) the gate's C is ``mlp_gate`` and the other
    projection's ``mlp_in``. ``stack`` picks the position table of one stack of ``structure``.
    """
    from .roles import roles
    from .roles.registry import unwrap

    rm = role_map or roles(model)
    inner = unwrap(model)
    base = Constants()
    vals = {}
    for name, role in (("patch", "patch_embed"), ("q", "q"), ("k", "k"), ("v", "v"), ("o", "o"),
                       ("mlp_in", "mlp_in"), ("mlp_out", "mlp_out")):
        v = _cg(rm, role=role)
        vals[name] = getattr(base, name) if v is None else v
    if structure is not None and gate is not None:
        gates = {b.mlp_in[gate] for b in structure.blocks if len(b.mlp_in) == 2}
        ups = {b.mlp_in[1 - gate] for b in structure.blocks if len(b.mlp_in) == 2}
        vals["mlp_gate"], vals["mlp_in"] = _cg(rm, modules=gates) or 0.0, _cg(rm, modules=ups) or 0.0
    tables = sorted((i for i in rm.by_role("token_embed") if i.param.dim() == 2),
                    key=lambda i: -i.param.shape[0])
    if tables:
        vals["embed"] = _ms(tables[0].param)
        vals["token_type"] = sum(_ms(t.param) for t in tables[1:])
    cls = rm.by_role("cls_token")
    vals["cls"] = _ms(cls[0].param) if cls else base.cls
    root = None
    if structure is not None and stack is not None and len(structure.stacks) > 1:
        root = structure.stacks[stack].name.rsplit(".", 1)[0]
    table = _pos_table(inner, rm, root)
    vals["pos"] = 0.0 if table is None else _ms(table)
    pb = rm.by_role("patch_embed", "bias")
    vals["patch_bias"] = float(pb[0].param.detach().double().pow(2).mean()) if pb else 0.0
    return replace(base, **vals)


def _coverage(rm, layout) -> list[str]:
    """Why the leading-order recursion does not describe this model at init (empty: it does)."""
    why = list(layout.why)
    for info in rm:
        roles_ = set(info.roles)
        if "gain" in roles_:
            why.append(f"{info.name} is a residual-branch gain (outside the recursion)")
            break
    bad_norm = [i.name for i in rm.by_role("norm", None)
                if i.param.numel() and float((i.param.detach().double() + (i.gain_offset if i.kind == "weight" else 0)
                                              - (1.0 if i.kind == "weight" else 0.0)).abs().max()) > 1e-6]
    if bad_norm:
        why.append(f"norm gains/biases are not 1/0 ({bad_norm[0]}, ...): the recursion assumes unit gain")
    bias = [i.name for r in ("q", "k", "v", "o", "mlp_in", "mlp_gate", "mlp_out")
            for i in rm.by_role(r, "bias") if float(i.param.detach().abs().max()) > 0]
    if bias:
        why.append(f"nonzero biases ({bias[0]}, ...): the recursion assumes zero-initialized biases")
    return why


def _final_stream(st, tr, layout, s: int):
    name = layout.final_norm.get(s)
    if name is not None:
        for _, n, _tin, tout, _after in tr.outer:
            if n == name:
                return tout
    return tr.blocks[st.stacks[s].blocks[-1]].z_out


def _head_fit(rm, st, tr, layout, logits: torch.Tensor, kind: str):
    """The readout the output is, read from the forward: {"pool", "multiplier", "head_var",
    "head_bias_var", "n_out"}, or a string saying why the output is not one linear map of the
    final stream (then no output prediction)."""
    s = _final_stream(st, tr, layout, len(st.stacks) - 1)
    if s is None:
        return "the final stream was not recorded"
    s = s.detach().double()
    if kind == "hidden":
        if s.shape == logits.shape and float((s - logits).norm() / (logits.norm() + 1e-30)) < 1e-6:
            return dict(pool="hidden")
        return "the output is the last hidden state but not the final stream the theory follows"
    heads = [i for i in rm.by_role("head", "weight") if i.param.dim() == 2 and i.param.shape[1] == rm.width
             and i.param.shape[0] == logits.shape[-1]]
    tied = [i for i in rm.by_role("token_embed") if i.param.dim() == 2 and i.param.shape[0] == logits.shape[-1]]
    cands = heads[:1] or tied[:1]
    if not cands:
        return "no head or token table with as many rows as the output has entries"
    w = cands[0].param.detach().double()
    bias = next((i.param.detach().double() for i in rm.by_role("head", "bias")
                 if heads and i.name.rsplit(".", 1)[0] == heads[0].name.rsplit(".", 1)[0]), None)
    y = logits - (bias if bias is not None else 0.0)
    pools = {"token": s} if logits.dim() == s.dim() else {"cls": s[:, 0], "mean": s.mean(1)}
    for pool, x in pools.items():
        if x.shape[:-1] != y.shape[:-1]:
            continue
        p = x @ w.t()
        m = float((y * p).sum() / (p * p).sum().clamp_min(1e-300))
        if float((y - m * p).norm() / (y.norm() + 1e-30)) < 1e-4:
            return dict(pool=pool, multiplier=m, head_var=float(w.pow(2).mean()), weight=w,
                        head_bias_var=0.0 if bias is None else float(bias.pow(2).mean()), n_out=w.shape[0])
    return "the output is not one linear map of the final stream (a head with its own layers)"


@dataclass
class ModelPrediction:
    """The leading-order prediction for one model and batch, stack by stack.

    ``stacks[i]`` is a :class:`Prediction` or None; ``unavailable`` maps each quantity the theory
    does not give on this model to the reason. ``res["prediction"]``, ``res["gradients"]`` and
    ``res["network"]`` read the first stack (the only one of a decoder-only or encoder model).
    """

    networks: list
    stacks: list
    gradients: dict | None
    output_logit_var: float | None
    unavailable: dict
    blocks_per_stack: list = field(default_factory=list)

    def __getitem__(self, key):
        first = {"prediction": self.stacks[0] if self.stacks else None, "gradients": self.gradients,
                 "network": self.networks[0] if self.networks else None}
        if key not in first:
            raise KeyError(key)
        return first[key]

    def to_report(self, *, samples: int, seed: int) -> dict:
        """The probe report's ``predicted``: blocks aligned with the measured ones (None where not
        predicted)."""
        blocks, stems = [], []
        counts = self.blocks_per_stack or [n.depth if n else 0 for n in self.networks]
        for n, pred in zip(counts, self.stacks):
            stems.append(None if pred is None else pred.g_stem)
            blocks += pred.per_block() if pred is not None else [None] * n
        last = self.stacks[-1] if self.stacks else None
        g = self.gradients
        consts = next((n.constants.to_dict() for n in self.networks if n is not None), None)
        return dict(g_stem=stems[0] if stems else None, stems=stems, blocks=blocks,
                    output_logit_var=self.output_logit_var,
                    ln_final_s2=None if last is None or not last.network.final_norm else last.ln_final,
                    samples=samples, seed=seed, constants=consts, unavailable=self.unavailable,
                    grads=None if g is None else {k: v for k, v in g.items() if k != "backward_kernel_stem"})


def network_of(model, *, constants: Constants | None = None, role_map=None, batch=None,
               stack: int = 0) -> Network:
    """The :class:`Network` of one stack of ``model``: width, heads, logit scale, norm placement,
    MLP nonlinearity and head read from the role map and one traced forward (:func:`traced`),
    constants from the weights unless given. Reading C_G = Var(W)·fan_in from the weights is
    reading the initialization, not the signal. A model the recursion does not describe
    (branch gains, sandwich norms, parallel blocks, unknown nonlinearity) is a ConfigError."""
    from .roles import roles

    rm = role_map or roles(model)
    st, tr, layout, logits, kind = traced(model, batch, role_map=rm)
    why = _coverage(rm, layout)
    if why:
        raise ConfigError("the leading-order theory does not cover this model: " + "; ".join(why))
    nets, _ = _networks(model, rm, st, tr, layout, logits, kind, constants)
    if nets[stack] is None:
        raise ConfigError(f"no network for stack {stack}")
    return nets[stack]


def _networks(model, rm, st, tr, layout, logits, kind, constants):
    from .probe.structure import causal_of, logit_scale
    from .roles.registry import unwrap

    inner = unwrap(model)
    unavailable = {}
    head = _head_fit(rm, st, tr, layout, logits, kind)
    if isinstance(head, str):
        unavailable["output_logit_var"] = head
        head = dict(pool="token")
    head = dict(dict(multiplier=1.0, head_var=None, head_bias_var=0.0, n_out=10), **head)
    nets = []
    for si, stack in enumerate(st.stacks):
        b0 = st.blocks[stack.blocks[0]]
        att = b0.attention
        scale = logit_scale(att, inner.get_submodule(att.module_name))
        consts = constants or constants_of(model, role_map=rm, structure=st, gate=layout.gate, stack=si)
        eps = 1e-6
        for name in [layout.final_norm.get(si), *[e[1] for e in tr.blocks[b0.index].events if e[0] == "N"]]:
            mod = inner.get_submodule(name) if name else None
            v = getattr(mod, "eps", getattr(mod, "variance_epsilon", None)) if mod is not None else None
            if isinstance(v, (int, float)):
                eps = float(v)
                break
        mlp_in = [i for i in rm.by_role("mlp_in") if i.name.rsplit(".", 1)[0] in b0.mlp_in]
        ratio = (mlp_in[0].fan_out / rm.width) if mlp_in else 4
        last = si == len(st.stacks) - 1
        hv = head["head_var"] if last else None
        pool = head["pool"] if last and head["pool"] != "hidden" else "token"
        nets.append(Network(
            width=rm.width, heads=att.n_heads if rm.width % att.n_heads == 0 else 1,
            depth=len(stack.blocks), constants=consts, mlp_ratio=ratio, ln_eps=eps,
            logit_gain=scale * scale * att.head_dim, causal=causal_of(att, rm), pool=pool,
            head_var=hv, head_bias_var=head["head_bias_var"] if last else 0.0,
            head_multiplier=head.get("multiplier", 1.0) if last else 1.0, n_out=head.get("n_out", 10),
            norm_position=layout.norm_position or "pre", activation=layout.activation or "gelu",
            gated=layout.gate is not None, stem_norm=si in layout.stem_norm,
            final_norm=si in layout.final_norm, group_size=att.group_size,
            branch_multiplier=_branch_multiplier(rm)))
    return nets, dict(unavailable, _head=head)


def _branch_multiplier(rm) -> float:
    """The residual-branch multiplier the role map's control reports (1 without one)."""
    get = rm.controls.get_branch_multiplier
    return 1.0 if get is None else float(get())


def _stem(model, rm, st, si: int, net: Network, batch, kwargs):
    """(N×N stem kernel, batch, tokens, patch Gram, n_patch) of stack ``si``, or a reason string."""
    from .roles.registry import unwrap

    f = rm.facts.inputs
    c = net.constants
    stack = st.stacks[si]
    if stack.decoder:
        ids = kwargs.get("decoder_input_ids")
        if ids is None:
            return "the decoder's token ids are not known"
        kind, x = "tokens", ids
    else:
        kind, x = f.kind, batch if isinstance(batch, torch.Tensor) else kwargs.get(f.name or "")
    if x is None:
        return "the stack's input is not known"
    scale2 = float(rm.facts.embed_scale) ** 2
    if kind == "tokens":
        if not f.batch_first and not stack.decoder:
            x = x.t()
        b, t = x.shape
        k0 = scale2 * (stem_kernel_tokens(x, replace(c, pos=0.0)) + c.token_type) + \
            c.pos * stem_kernel_tokens(torch.zeros_like(x), Constants(embed=0.0, pos=1.0))
        return k0, b, t, None, None
    if kind == "embeddings":
        if not f.batch_first:
            x = x.transpose(0, 1)
        b, t, d = x.shape
        flat = x.reshape(b * t, d).to(DTYPE)
        pos = torch.arange(t).repeat(b)
        return flat @ flat.t() / d + c.pos * (pos[:, None] == pos[None, :]).to(DTYPE), b, t, None, None
    if kind == "image":
        convs = [i for i in rm.by_role("patch_embed") if i.param.dim() == 4]
        if len(convs) != 1:
            return "the patch embedding is not one Conv2d"
        mod = unwrap(model).get_submodule(convs[0].name.rsplit(".", 1)[0])
        p = convs[0].param.shape[-1]
        if tuple(getattr(mod, "stride", (p, p))) != (p, p) or convs[0].param.shape[-2] != p:
            return "the patch embedding's stride is not its kernel size"
        xp = patches(x, p)
        b, t, n_patch = xp.shape
        cls = rm.facts.positions.prefix_tokens > 0
        k0 = stem_kernel_vision(xp, c, cls=cls)
        tokens = t + (1 if cls else 0)
        flat = xp.reshape(b * t, n_patch)
        gram = flat @ flat.t()
        if cls:
            g2 = torch.zeros(b, tokens, b, tokens, dtype=DTYPE)
            g2[:, 1:, :, 1:] = gram.reshape(b, t, b, t)
            gram = g2.reshape(b * tokens, b * tokens)
        return k0, b, tokens, gram, n_patch
    return f"a {kind} stem (e.g. a convolutional audio front end) is outside the leading-order stem"


def predict_for(model, batch=None, *, constants: Constants | None = None, samples: int = 256,
                seed: int = 0, gradients: bool = True, role_map=None, trace=None, output=None,
                decoder_tokens: int | None = None) -> ModelPrediction:
    """Leading-order prediction for ``model`` on ``batch``, for any model the role map accepts.

    Per stack (one for decoder-only, encoder and vision models; encoder then decoder for an
    encoder-decoder, the decoder's cross-attention reading the encoder's predicted output): the
    stem kernel from the batch (token ids, patches, embeddings), then :func:`propagate` with the
    architecture read by :func:`traced` (pre/post norm, the MLP nonlinearity, gated or not) and the
    constants read from the weights unless given. Gradients (:func:`predict_gradients`) for one
    pre-LN stack (plain or gated MLP) with a linear head. Whatever is not predicted is listed in
    ``unavailable`` with the reason. RoPE and T5's relative position bias are left out of the
    logits (leading order: a rotation keeps the logit variance; the bias table's variance at init
    is 1/d_model); sin-cos tables are treated as i.i.d. entries with their mean square.
    """
    from .probe.structure import forward_inputs
    from .roles import roles

    rm = role_map or roles(model)
    if trace is None:
        st, tr, layout, logits, kind = traced(model, batch, role_map=rm, decoder_tokens=decoder_tokens,
                                              seed=seed)
    else:
        st, tr, layout = trace
        logits, kind = output[0], output[1]
    if batch is None:
        from .probe.structure import make_inputs
        from .roles.registry import unwrap
        batch = make_inputs(rm, unwrap(model), batch=2, tokens=8, generator=torch.Generator().manual_seed(seed))
    _, kwargs = forward_inputs(rm, batch, decoder_tokens=decoder_tokens, seed=seed)
    why = _coverage(rm, layout)
    if why:
        reason = "; ".join(why)
        return ModelPrediction([None] * len(st.stacks), [None] * len(st.stacks), None, None,
                               {"blocks": reason, "output_logit_var": reason, "gradients": reason},
                               [len(s.blocks) for s in st.stacks])
    nets, extra = _networks(model, rm, st, tr, layout, logits, kind, constants)
    unavailable = {k: v for k, v in extra.items() if not k.startswith("_")}
    head = extra["_head"]
    preds, memory, grads = [], None, None
    with single_threaded():  # small N×N matrices: extra threads only add contention
        for si, net in enumerate(nets):
            stem = _stem(model, rm, st, si, net, batch, kwargs)
            if isinstance(stem, str) or (st.stacks[si].decoder and memory is None):
                unavailable[f"stack {si} ({st.stacks[si].name})"] = stem if isinstance(stem, str) else \
                    "its cross-attention reads an encoder stack that is not predicted"
                preds.append(None)
                memory = None
                continue
            k0, b, t, gram, n_patch = stem
            pred = propagate(k0, net, batch=b, tokens=t, samples=samples, seed=seed + 1000 * si,
                             memory=memory if st.stacks[si].decoder else None)
            preds.append(pred)
            memory = ln_kernel(pred.kernel_out, net.ln_eps) if net.final_norm else pred.kernel_out
        last, lnet = preds[-1], nets[-1]
        out_var = None
        if last is not None and "output_logit_var" not in unavailable:
            out_var = last.ln_final if head["pool"] == "hidden" else last.output_logit_var
        elif last is None:
            unavailable.setdefault("output_logit_var", "the last stack is not predicted")
        if gradients:
            reason = None
            if len(nets) != 1 or last is None:
                reason = "gradients are derived for one stack (decoder-only, encoder or vision)"
            elif lnet.norm_position != "pre" or lnet.stem_norm:
                reason = "gradients are derived for pre-LN blocks with no stem norm"
            elif head["pool"] == "hidden" or "output_logit_var" in unavailable:
                reason = "gradients need a linear head (the objective is one output logit)"
            elif output is not None and "weight" in head and not bool(head["weight"][output[2]].any()):
                reason = (f"row {output[2]} of the head is all zeros (a padding token): its gradient "
                          f"is exactly 0; pass another output_index")
            if reason:
                unavailable["gradients"] = reason
            else:
                k0, b, t, gram, n_patch = _stem(model, rm, st, 0, lnet, batch, kwargs)
                grads = predict_gradients(last, patch_gram=gram, n_patch=n_patch)
                table = _pos_table(model, rm, None)
                if table is not None and rm.facts.positions.kind == "learned" and table.dim() >= 2 \
                        and table.shape[-2] > t:
                    grads["pos_embed"] *= math.sqrt(t / table.shape[-2])  # rows past the sequence: no gradient
    return ModelPrediction(nets, preds, grads, out_var, unavailable, [len(s.blocks) for s in st.stacks])
