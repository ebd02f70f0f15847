"""Hybrid and multi-head-latent-attention (MLA) layers of Hugging Face models, for the generic
adapter (:mod:`initlab.roles.adapters_hf`).

* **Hybrids** (Jamba, Bamba, Zamba2, Nemotron-H, Falcon-H1, OLMo-hybrid, Qwen3-Next, Qwen3.5,
  MiniMax, RecurrentGemma, ...): their softmax attention layers are ordinary attention and are
  mapped as such; the other token mixers (state-space / Mamba mixers, gated delta-rule and other
  linear attention, RG-LRU recurrent blocks) are *mixers*: every matrix in them gets an MLP-like
  role, ``mlp_out`` for the projection back to the residual stream (``out_proj``, ``o_proj``,
  ``linear_out``), ``mlp_gate`` for a gate, ``mlp_in`` for every other matrix (input, x/dt/B/C
  projections, the RG-LRU's per-head gate blocks). Parametrizations and optimizer groups treat
  them as the hidden matrices they are. The SSM's own vectors (``A_log``, ``D``, ``dt_bias``), its
  depthwise causal convolution and gated norms keep role ``other``: their values are the mixer's
  design (a spectrum of decay rates, a skip of 1, a time-step range), not a width-scaled matrix.
  A model whose only token mixers are such layers (Mamba, RWKV) has no softmax attention and is
  refused.
* **MLA** (DeepSeek-V2/V3 and the models that reuse its attention): queries and keys/values are
  products of a down-projection to a latent (``q_a_proj`` -> RMSNorm, ``kv_a_proj_with_mqa`` ->
  RMSNorm) and a per-head up-projection (``q_b_proj``, ``kv_b_proj``), and each head's query/key
  is split into a no-RoPE part (``qk_nope_head_dim``) and a RoPE part (``qk_rope_head_dim``, the
  key's shared by all heads). :class:`LatentAttentionLayer` exposes the *composite* per-head maps
  of the no-RoPE part (down x norm gain x up, d_model x head_dim) as ``q_head``/``k_head``/
  ``v_head``, so ``qk_product``/``vo_product`` read as for any attention layer; the stored
  factors are in ``q_down``, ``q``, ``kv_down``, ``k``, ``v``. Mimetic init of these layers lives
  in :mod:`initlab.mimetic_latent` (docs/mimetic.md, "Multi-head latent attention").
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from .core import AttentionLayer, Projection, Role, RoleMapBuilder
from .mapping import first_int, module_layout

# token mixers that are not softmax attention, and that a hybrid maps with MLP-like roles
_MIXER = (
    (re.compile(r"Mamba|SSM|Mixer$|ShortConv|Rwkv|RWKV|S4|Hyena|RecurrentBlock$|Rglru"),
     "state-space / recurrent layers"),
    (re.compile(r"GatedDeltaNet|DeltaNet|DeltaAttention|Linear\w*Attention|Lightning|Retention|"
                r"KimiDelta|LinearAttn|GLA\b"),
     "linear (delta-rule / kernelized) attention"),
)
# a layer, block or model that merely holds a mixer (JambaMambaDecoderLayer), or a part of one
_HOLDER = re.compile(r"(DecoderLayer|Block|Model|LM)$|Norm|Embedding|Rotary|Cache")
_OUT = re.compile(r"(^|_)(out|o|down)(_|$)|out_proj|o_proj|linear_out|down_proj", re.I)
# names of projections that make an attention latent (MLA)
MLA_NAMES = ("kv_a_proj_with_mqa", "kv_b_proj")


def mixer_kind(mod: nn.Module) -> str | None:
    """Why ``mod`` is a non-softmax token mixer (state-space, linear attention), or None."""
    name = type(mod).__name__
    if is_mla(mod):  # KimiLinearAttention: softmax MLA despite the model's name
        return None
    if name.endswith("RecurrentBlock"):  # RecurrentGemma's RG-LRU block (holds no attention)
        return _MIXER[0][1]
    if _HOLDER.search(name):
        return None
    for rx, why in _MIXER:
        if rx.search(name):
            return why
    return None


def mixers(model: nn.Module) -> dict[str, str]:
    """Outermost non-softmax token mixers of ``model``: {module name: kind}."""
    out: dict[str, str] = {}
    inside: list[str] = []  # softmax attention modules: a short convolution in them is theirs
    for name, mod in model.named_modules():
        if not name or any(name.startswith(m + ".") for m in out):
            continue
        if any(name.startswith(a + ".") for a in inside):
            continue
        if re.search(r"Attention|Attn", type(mod).__name__) and not _HOLDER.search(type(mod).__name__) \
                and not mixer_kind(mod):
            inside.append(name)
            continue
        why = mixer_kind(mod)
        if why and any(True for _ in mod.parameters()):
            out[name] = why
    return out


def add_mixer(b: RoleMapBuilder, model: nn.Module, name: str) -> None:
    """Roles for every matrix of one mixer: ``mlp_out`` back to the residual stream, ``mlp_gate``
    for gates, ``mlp_in`` otherwise. Vectors, convolutions and gated norms stay ``other``."""
    layer = first_int(name)
    root = model.get_submodule(name)
    for mname, mod in root.named_modules(prefix=name):
        leaf = mname.rsplit(".", 1)[-1]
        w = getattr(mod, "weight", None)
        if isinstance(w, nn.Parameter) and w.dim() == 2 and not isinstance(mod, nn.Embedding) \
                and b.canonical_name(w) not in b.infos:
            role = Role.MLP_OUT if _OUT.search(leaf) else \
                Role.MLP_GATE if "gate" in leaf else Role.MLP_IN
            fin, fout = (w.shape[0], w.shape[1]) if module_layout(mod) == "in_out" else (w.shape[1], w.shape[0])
            b.add(f"{mname}.weight", role, layer=layer, fan_in=fin, fan_out=fout)
            bias = getattr(mod, "bias", None)
            if isinstance(bias, nn.Parameter) and b.canonical_name(bias) not in b.infos:
                b.add(f"{mname}.bias", role, kind="bias", layer=layer, fan_in=1, fan_out=bias.numel())
        for pn, p in mod.named_parameters(recurse=False):
            # RG-LRU: per-head block-diagonal gates (heads, in, out), x @ W per head
            if p.dim() == 3 and "gate" in pn and pn.endswith("weight") and b.canonical_name(p) not in b.infos:
                b.add(f"{mname}.{pn}", Role.MLP_GATE, layer=layer, fan_in=p.shape[1], fan_out=p.shape[2])
            elif p.dim() == 2 and "gate" in pn and pn.endswith("bias") and b.canonical_name(p) not in b.infos:
                b.add(f"{mname}.{pn}", Role.MLP_GATE, kind="bias", layer=layer, fan_in=1, fan_out=p.shape[-1])
            # Zamba: per-head projections stored as (heads, out, in) parameters, W @ x per head
            elif p.dim() == 3 and "proj" in pn and pn.endswith("weight") and b.canonical_name(p) not in b.infos:
                b.add(f"{mname}.{pn}", Role.MLP_IN, layer=layer, fan_in=p.shape[2], fan_out=p.shape[1])
            elif p.dim() == 2 and "proj" in pn and pn.endswith("bias") and b.canonical_name(p) not in b.infos:
                b.add(f"{mname}.{pn}", Role.MLP_IN, kind="bias", layer=layer, fan_in=1, fan_out=p.shape[-1])


def add_block_linears(b: RoleMapBuilder, model: nn.Module, mixer_names) -> None:
    """Linears left unmapped in a hybrid's blocks (Zamba's projection after its shared attention
    block): hidden d -> d' matrices, role ``mlp_in``."""
    blocks = {m[:m.index(str(first_int(m))) + len(str(first_int(m)))] for m in mixer_names
              if first_int(m) is not None}
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if isinstance(mod, nn.Linear) and any(name.startswith(blk + ".") for blk in blocks) and \
                b.canonical_name(w) not in b.infos:
            b.add_module(name, Role.MLP_IN, layer=first_int(name))


# ------------------------------------------------------------------------------------------------
# multi-head latent attention
# ------------------------------------------------------------------------------------------------
def is_mla(mod: nn.Module) -> bool:
    return all(isinstance(getattr(mod, n, None), nn.Module) for n in MLA_NAMES) and all(
        isinstance(getattr(mod, n, None), int) for n in ("qk_nope_head_dim", "kv_lora_rank", "v_head_dim"))


def unknown_latent(model: nn.Module) -> str | None:
    """A module with a latent query (``q_a_proj``/``q_b_proj``) but not MLA's key/value layout."""
    for name, mod in model.named_modules():
        if isinstance(getattr(mod, "q_b_proj", None), nn.Module) and not is_mla(mod):
            return f"{name} ({type(mod).__name__})"
    return None


def _gain(norm: nn.Module | None) -> torch.Tensor | None:
    w = getattr(norm, "weight", None) if norm is not None else None
    return w if isinstance(w, nn.Parameter) else None


@dataclass
class LatentAttentionLayer(AttentionLayer):
    """One multi-head latent attention layer (DeepSeek-V2/V3 MLA).

    Head h's no-RoPE query is ``norm(x Dq) Uq_h`` and its no-RoPE key ``norm(x Dkv) Uk_h``, its
    value ``norm(x Dkv) Uv_h``, with ``Dq`` (d x r_q, ``q_down``; absent when the model projects
    queries directly: then Dq = I), ``Dkv`` (d x r_kv, ``kv_down``) and the up-projections
    ``q`` (r_q -> heads x nope), ``k`` (r_kv -> heads x nope), ``v`` (r_kv -> heads x v_head_dim)
    stored interleaved per head in ``q_b_proj``/``kv_b_proj``. ``q_head``/``k_head``/``v_head`` are
    the composite linear maps Dq diag(g_q) Uq_h (d x nope) etc. -- copies, not views: write the
    factors, never the composites. The RMS normalization of each latent divides each query's
    (key's) logits by a positive per-token scalar, which the composite leaves out.
    ``q_rope``/``k_rope``: the RoPE parts (per-head query rows; the key's shared rows of
    ``kv_a_proj_with_mqa``).
    """

    q_down: Projection | None = None
    q_norm: nn.Parameter | None = None
    kv_down: Projection | None = None
    kv_norm: nn.Parameter | None = None
    v_head_dim: int = 0
    rope_head_dim: int = 0
    q_rope: Projection | None = None
    k_rope: Projection | None = None

    latent = True

    def __post_init__(self):
        pass  # heads are never grouped in MLA; q, k and v read different latents by design

    @staticmethod
    def _factor(down: Projection | None, norm: nn.Parameter | None, d: int, like) -> torch.Tensor:
        """Dq diag(g) (d x r) in float64; the identity when there is no down-projection."""
        if down is None:
            return torch.eye(d, dtype=torch.float64, device=like.device)
        m = down.matrix().double()
        return m * norm.detach().double() if norm is not None else m

    def q_factor(self) -> torch.Tensor:
        return self._factor(self.q_down, self.q_norm, self.d_model, self.q.weight)

    def kv_factor(self) -> torch.Tensor:
        return self._factor(self.kv_down, self.kv_norm, self.d_model, self.k.weight)

    def q_up(self, h: int) -> torch.Tensor:
        return self.q.cols(h * self.head_dim, (h + 1) * self.head_dim)

    def k_up(self, h: int) -> torch.Tensor:
        return self.k.cols(h * self.head_dim, (h + 1) * self.head_dim)

    def v_up(self, h: int) -> torch.Tensor:
        return self.v.cols(h * self.v_head_dim, (h + 1) * self.v_head_dim)

    def q_head(self, h: int) -> torch.Tensor:
        return (self.q_factor() @ self.q_up(h).double()).to(self.q.weight.dtype)

    def k_head(self, g: int) -> torch.Tensor:
        return (self.kv_factor() @ self.k_up(g).double()).to(self.k.weight.dtype)

    def v_head(self, g: int) -> torch.Tensor:
        return (self.kv_factor() @ self.v_up(g).double()).to(self.v.weight.dtype)

    def o_head(self, h: int) -> torch.Tensor:
        return self.o.matrix()[h * self.v_head_dim:(h + 1) * self.v_head_dim]

    def qk_product(self, h: int) -> torch.Tensor:
        """The no-RoPE part of head h: Dq g_q Uq_h Uk_hᵀ g_kv Dkvᵀ (d x d), float64."""
        return self.q_factor() @ (self.q_up(h).double() @ self.k_up(h).double().t()) @ self.kv_factor().t()

    def vo_product(self) -> torch.Tensor:
        """Σ_h Dkv g_kv Uv_h Wo_h (d x d), float64."""
        m = sum(self.v_up(h).double() @ self.o_head(h).double() for h in range(self.n_heads))
        return self.kv_factor() @ m


def add_mla(b: RoleMapBuilder, model: nn.Module, name: str, mod: nn.Module, index: int) -> LatentAttentionLayer:
    """Register one MLA module: roles q (q_a_proj, q_b_proj / q_proj), k (kv_a_proj_with_mqa and
    the key rows of kv_b_proj), v (the value rows of kv_b_proj), o (o_proj)."""
    from ..errors import RoleMapError
    heads = getattr(mod, "num_heads", None) or getattr(getattr(mod, "config", None), "num_attention_heads", None)
    nope, rope = mod.qk_nope_head_dim, getattr(mod, "qk_rope_head_dim", 0) or 0
    vd, r_kv = mod.v_head_dim, mod.kv_lora_rank
    if not isinstance(heads, int) or nope <= 0:
        raise RoleMapError(f"{name}: latent attention without a head count or a no-RoPE key part "
                           f"(qk_nope_head_dim={nope}); mimetic init has nothing to write")
    lin = lambda n, **kw: b.linear(f"{name}.{n}", **kw)
    q_name = next((n for n in ("q_b_proj", "q_proj") if isinstance(getattr(mod, n, None), nn.Linear)), None)
    if q_name is None:
        raise RoleMapError(f"{name} ({type(mod).__name__}): latent attention whose queries are not a "
                           f"down/up product (no q_b_proj or q_proj; e.g. a query fused with a gate "
                           f"over [residual, latent]), so no per-head query map to solve for")
    q_up = lin(q_name, offset=0, d_out=heads * nope, groups=heads, stride=nope + rope)
    q_rope = lin(q_name, offset=nope, d_out=heads * rope, groups=heads, stride=nope + rope) if rope else None
    q_down = lin("q_a_proj") if q_name == "q_b_proj" else None
    kv_down = lin("kv_a_proj_with_mqa", offset=0, d_out=r_kv)
    k_rope = lin("kv_a_proj_with_mqa", offset=r_kv, d_out=rope) if rope else None
    k_up = lin("kv_b_proj", offset=0, d_out=heads * nope, groups=heads, stride=nope + vd)
    v_up = lin("kv_b_proj", offset=nope, d_out=heads * vd, groups=heads, stride=nope + vd)
    o = lin("o_proj")
    d = kv_down.d_in
    if o.d_out != d or o.d_in != heads * vd or (q_down is None and q_up.d_in != d):
        raise RoleMapError(f"{name}: latent attention shapes do not match {heads} heads "
                           f"(no-RoPE {nope}, value {vd}) over width {d}")
    causal = getattr(mod, "is_causal", None)
    att = LatentAttentionLayer(index, name, d, heads, heads, nope, q_up, k_up, v_up, o, None, False,
                               None if causal is None else bool(causal),
                               q_down=q_down, q_norm=_gain(getattr(mod, "q_a_layernorm", None)),
                               kv_down=kv_down, kv_norm=_gain(getattr(mod, "kv_a_layernorm", None)),
                               v_head_dim=vd, rope_head_dim=rope, q_rope=q_rope, k_rope=k_rope)
    parts = [(Role.Q, q_up), (Role.Q, q_rope), (Role.Q, q_down), (Role.K, kv_down), (Role.K, k_rope),
             (Role.K, k_up), (Role.V, v_up), (Role.O, o)]
    for role, proj in parts:
        if proj is None:
            continue
        b.add(proj.name, role, layer=index, fan_in=proj.d_in, fan_out=proj.d_out, index=proj.index)
        if proj.bias is not None:
            b.add(proj.bias_name, role, kind="bias", layer=index, fan_in=1, fan_out=proj.d_out,
                  index=proj.bias_index)
    for sub, m in mod.named_modules(prefix=name):  # DeepSeek-V3.2's sparse-attention indexer
        w = getattr(m, "weight", None)
        if isinstance(m, nn.Linear) and b.canonical_name(w) not in b.infos:
            b.add_module(sub, Role.MLP_IN, layer=first_int(sub))
    b.attention.append(att)
    return att


__all__ = ["LatentAttentionLayer", "add_block_linears", "add_mixer", "add_mla", "is_mla", "mixer_kind", "mixers"]
