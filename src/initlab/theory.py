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

    def __post_init__(self):
        if self.width <= 0 or self.heads <= 0 or self.depth < 0 or self.width % self.heads:
            raise ConfigError(f"theory needs positive width divisible by heads and depth >= 0, got "
                              f"width={self.width}, heads={self.heads}, depth={self.depth}")
        if self.pool not in ("mean", "cls", "token"):
            raise ConfigError(f"pool must be 'mean', 'cls' or 'token', got {self.pool!r}")

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


def propagate(k_stem: torch.Tensor, net: Network, *, batch: int, tokens: int, samples: int = 256,
              seed: int = 0, keep_kernels: bool = True) -> Prediction:
    """Run the leading-order kernel recursion through ``net.depth`` pre-LN blocks.

    ``k_stem`` is the N×N stem kernel (N = batch·tokens, tokens including a cls token). The MHSA
    expectation uses ``samples`` Gaussian logit draws per block from a generator seeded with
    ``seed + block``; its standard error is accumulated into ``g_stderr``.
    """
    if k_stem.shape != (batch * tokens, batch * tokens):
        raise ConfigError(f"stem kernel of shape {tuple(k_stem.shape)} does not match batch={batch} "
                          f"x tokens={tokens}")
    c, eps = net.constants, net.ln_eps
    mask = attention_mask(batch, tokens, net.causal)
    vis = _within(mask.to(DTYPE), batch, tokens)
    k = k_stem.to(DTYPE).clone()
    out = Prediction(net, batch, tokens, _g(k), [], [], [], [], [], 0.0, [], [], [], [], 0.0, [], [],
                     mask=mask, seed=seed, samples=samples)
    err2 = 0.0
    for layer in range(net.depth):
        if keep_kernels:
            out.kernels_in.append(k.clone())
        f = ln_kernel(k, eps)
        out.ln1.append(float(f.diagonal().mean()))
        fw = _within(f, batch, tokens)
        fd = fw.diagonal(dim1=1, dim2=2)
        lv = net.logit_gain * c.q * c.k * fd[:, :, None] * fd[:, None, :]
        out.logit_var.append(float((lv * vis).sum() / vis.sum()))
        gen = torch.Generator().manual_seed(seed + layer)
        att = attention_forward(f, mask, net, tokens, samples=samples, generator=gen)
        g0 = _g(k)
        k = k + att.increment
        out.mhsa_increment.append(_g(k) - g0)
        out.entropy.append(att.entropy)
        out.distance.append(att.distance)
        err2 += att.g_increment_stderr ** 2
        out.g_mid.append(_g(k))
        if keep_kernels:
            out.kernels_mid.append(k.clone())
        f = ln_kernel(k, eps)
        out.ln2.append(float(f.diagonal().mean()))
        phi, _ = gelu_kernels(f, c.mlp_in)
        g1 = _g(k)
        k = k + c.mlp_out * phi
        out.mlp_increment.append(_g(k) - g1)
        out.g.append(_g(k))
        out.g_stderr.append(math.sqrt(err2))
        out.cosine.append(_mean_cosine(k, batch, tokens))
    f = ln_kernel(k, eps)
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
    for layer in reversed(range(net.depth)):
        k_in, k_mid = pred.kernels_in[layer], pred.kernels_mid[layer]
        row = {}
        f = ln_kernel(k_mid, eps)
        phi, dphi = gelu_kernels(f, c.mlp_in)
        row["mlp_out"] = math.sqrt(max(float((d * phi).sum()) / n, 0.0))
        row["mlp_in"] = math.sqrt(max(c.mlp_out * float((f * dphi * d).sum()) / (net.mlp_ratio * n), 0.0))
        d = d + _through_ln(c.mlp_in * c.mlp_out * dphi * d, k_mid, eps)
        f = ln_kernel(k_in, eps)
        gen = torch.Generator().manual_seed(pred.seed + 10_000 + layer)
        wdw, wfw, tr, kpath = _attention_backward(f, d, pred.mask, net, pred.samples, gen)
        vu = c.v * c.o
        row["v"] = math.sqrt(max(c.o * float((f * wdw).sum()) / n, 0.0))
        row["o"] = math.sqrt(max(c.v * float((d * wfw).sum()) / n, 0.0))
        base = net.logit_gain * vu * float((d * f * tr).sum()) / n
        row["q"] = math.sqrt(max(c.k * base, 0.0))
        row["k"] = math.sqrt(max(c.q * base, 0.0))
        ds = vu * wdw + qk * vu * (d * tr + kpath)
        d = d + _through_ln(ds, k_in, eps)
        blocks.append(row)
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
# from a model: read the network description (and, if asked, the constants) off the role map
# ------------------------------------------------------------------------------------------------
def network_of(model, *, constants: Constants | None = None, role_map=None) -> Network:
    """The :class:`Network` of an initlab ViT/GPT (pre-LN), constants read from its weights unless
    given. Reading C_G = Var(W)·fan_in from the weights is reading the initialization, not the
    signal: no activation is looked at."""
    from .roles import roles

    rm = role_map or roles(model)
    cfg = getattr(model, "config", {})
    if cfg.get("norm_position", "pre") != "pre" or cfg.get("branch_gain") or cfg.get("skip_scale", 1.0) != 1.0:
        raise ConfigError("the effective theory covers pre-LN blocks with skip scale 1 and no branch "
                          "gains; build the model with norm_position='pre', branch_gain=None")
    att = rm.require_attention("the effective-theory constants")[0]
    mod = model.get_submodule(att.module_name)
    scale = float(getattr(mod, "scale", 1.0 / math.sqrt(att.head_dim)))
    consts = constants or constants_of(model, role_map=rm)
    is_gpt = "vocab_size" in cfg
    head_mult = float(rm.controls.get_head_multiplier()) if rm.controls.get_head_multiplier else 1.0
    heads = rm.by_role("head", "weight")
    head_bias = rm.by_role("head", "bias")
    if is_gpt and not heads:  # tied: the head is the token table
        head_var = consts.embed
        n_out = cfg["vocab_size"]
    else:
        w = heads[0].param.detach().double()
        head_var = float(w.pow(2).mean())
        n_out = w.shape[0]
    hb = float(head_bias[0].param.detach().double().pow(2).mean()) if head_bias else 0.0
    first = model.get_submodule(att.module_name.rsplit(".", 1)[0])
    eps = float(getattr(getattr(first, "norm1", None), "eps", cfg.get("ln_eps", 1e-6)))
    pool = "token" if is_gpt else cfg.get("pool", "mean")
    ratio = rm.by_role("mlp_in")[0].fan_out // rm.width if rm.by_role("mlp_in") else 4
    return Network(width=rm.width, heads=att.n_heads, depth=len(rm.attention), constants=consts,
                   mlp_ratio=ratio, ln_eps=eps, logit_gain=scale * scale * att.head_dim,
                   causal=bool(getattr(mod, "causal", False)), pool=pool, head_var=head_var,
                   head_bias_var=hb, head_multiplier=head_mult, n_out=n_out)


def constants_of(model, *, role_map=None) -> Constants:
    """C_G = mean(W²)·fan_in per role, read from the model's current weights (see network_of)."""
    from .roles import roles

    rm = role_map or roles(model)

    def cg(role: str, per_entry: bool = False) -> float | None:
        tot, cnt = 0.0, 0
        for info, slot in rm.slots(role, "weight"):
            reg = info.region(slot).double()
            tot += float(reg.pow(2).sum()) * (1 if per_entry else slot.fan_in)
            cnt += reg.numel()
        return tot / cnt if cnt else None

    base = Constants()
    vals = {}
    for name, role, per in (("patch", "patch_embed", False), ("pos", "pos_embed", True),
                            ("cls", "cls_token", True), ("embed", "token_embed", True),
                            ("q", "q", False), ("k", "k", False), ("v", "v", False), ("o", "o", False),
                            ("mlp_in", "mlp_in", False), ("mlp_out", "mlp_out", False)):
        v = cg(role, per)
        vals[name] = getattr(base, name) if v is None else v
    pb = rm.by_role("patch_embed", "bias")
    vals["patch_bias"] = float(pb[0].param.detach().double().pow(2).mean()) if pb else 0.0
    if not rm.by_role("pos_embed"):  # fixed sin-cos table: entries of mean square 1/2
        vals["pos"] = 0.5 if getattr(model, "config", {}).get("pos") == "sincos" else 0.0
    return replace(base, **vals)


def predict_for(model, batch: torch.Tensor, *, constants: Constants | None = None,
                samples: int = 256, seed: int = 0, gradients: bool = True, role_map=None) -> dict:
    """Leading-order prediction for ``model`` on ``batch`` (images or token ids).

    Returns ``{"prediction": Prediction, "gradients": dict | None, "network": Network}``.
    Sin-cos position tables are treated as a table of i.i.d. entries with the same mean square
    (approximate: their rows are not orthogonal).
    """
    from .roles import roles

    rm = role_map or roles(model)
    net = network_of(model, constants=constants, role_map=rm)
    cfg = getattr(model, "config", {})
    gram, n_patch = None, None
    if "vocab_size" in cfg:
        b, t = batch.shape
        k0 = stem_kernel_tokens(batch, net.constants)
        tokens = t
    else:
        p = cfg.get("patch_size")
        if p is None:
            raise ConfigError("predict_for needs an initlab ViT/GPT (with model.config)")
        x = patches(batch, p)
        b, t, n_patch = x.shape
        cls = cfg.get("pool") == "cls"
        k0 = stem_kernel_vision(x, net.constants, cls=cls)
        tokens = t + (1 if cls else 0)
        flat = x.reshape(b * t, n_patch)
        gram = flat @ flat.t()
        if cls:
            g2 = torch.zeros(b, tokens, b, tokens, dtype=DTYPE)
            g2[:, 1:, :, 1:] = gram.reshape(b, t, b, t)
            gram = g2.reshape(b * tokens, b * tokens)
    with single_threaded():  # small N×N matrices: extra threads only add contention
        pred = propagate(k0, net, batch=b, tokens=tokens, samples=samples, seed=seed)
        grads = predict_gradients(pred, patch_gram=gram, n_patch=n_patch) if gradients else None
    pos = getattr(model, "pos_embed", None)
    if grads is not None and isinstance(pos, torch.nn.Parameter) and pos.shape[-2] > tokens:
        grads["pos_embed"] *= math.sqrt(tokens / pos.shape[-2])  # rows past the sequence get no gradient
    return {"prediction": pred, "gradients": grads, "network": net}
