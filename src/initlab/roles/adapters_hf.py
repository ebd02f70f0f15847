"""Adapters for Hugging Face ``transformers`` models: GPT-2, BERT-like, ViT, LLaMA-like (GQA).

Matched by module name (``transformers.*``), so importing initlab never imports transformers.
Each family is an explicit mapping (:mod:`initlab.roles.mapping`); the family is picked by
``config.model_type`` when known, else by trying each family's attention pattern.

Layouts:

* GPT-2: ``attn.c_attn`` is a ``Conv1D`` with weight (in, out) = (d, 3d), columns [q | k | v]
  (y = x W + b), ``attn.c_proj`` (d, d) likewise; the canonical views are column slices, no
  transpose. The LM head is tied to ``wte`` and listed once.
* BERT/RoBERTa/ViT (transformers < 5 naming): separate ``query``/``key``/``value`` Linears and
  ``attention.output.dense``.
* ViT (transformers >= 5 naming) and LLaMA/Mistral/Qwen2: ``q_proj``/``k_proj``/``v_proj``/
  ``o_proj``; LLaMA-style models may have ``num_key_value_heads`` < ``num_attention_heads``
  (grouped-query attention) and a ``head_dim`` that is not hidden/heads.

Modules a family does not name (task heads we do not know, rotary buffers have no parameters) get
role ``other``: no scheme touches them.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from ..errors import RoleMapError
from .core import BIAS, InputFacts, ModelFacts, PositionFacts, Role, RoleMap, RoleMapBuilder
from .mapping import first_int, module_layout, roles_from_mapping, scale_getter
from .registry import register_adapter
from . import adapters_hybrid as hybrid

_HEADS = "config.num_attention_heads"

GPT2 = {
    "attention": {"**.h.*.attn": dict(qkv="c_attn", o="c_proj", heads="config.n_head")},
    "token_embed": ["**.wte"], "pos_embed": ["**.wpe"],
    "mlp_in": ["**.mlp.c_fc"], "mlp_out": ["**.mlp.c_proj"],
    "head": ["lm_head", "score", "**.multiple_choice_head.summary", "qa_outputs", "classifier"],
}
BERT = {
    "attention": {"**.layer.*.attention": dict(q="self.query", k="self.key", v="self.value",
                                             o="output.dense", heads=_HEADS)},
    "token_embed": ["**.embeddings.word_embeddings", "**.embeddings.token_type_embeddings"],
    "pos_embed": ["**.embeddings.position_embeddings"],
    "mlp_in": ["**.layer.*.intermediate.dense"], "mlp_out": ["**.layer.*.output.dense"],
    "head": ["**.pooler.dense", "cls.**", "classifier", "qa_outputs", "lm_head.dense", "lm_head.decoder"],
}
_VIT_COMMON = {
    "patch_embed": ["**.embeddings.patch_embeddings.projection"],
    "cls_token": ["**.embeddings.cls_token"], "pos_embed": ["**.embeddings.position_embeddings"],
    "other": ["**.embeddings.mask_token"],
    "head": ["classifier", "**.pooler.dense"],
}
VIT = {  # transformers >= 5
    "attention": {"**.layers.*.attention": dict(q="q_proj", k="k_proj", v="v_proj", o="o_proj",
                                              heads=_HEADS)},
    "mlp_in": ["**.layers.*.mlp.fc1"], "mlp_out": ["**.layers.*.mlp.fc2"], **_VIT_COMMON,
}
VIT_V4 = {  # transformers < 5
    "attention": {"**.layer.*.attention": dict(q="attention.query", k="attention.key",
                                             v="attention.value", o="output.dense", heads=_HEADS)},
    "mlp_in": ["**.layer.*.intermediate.dense"], "mlp_out": ["**.layer.*.output.dense"], **_VIT_COMMON,
}
LLAMA = {
    "attention": {"**.layers.*.self_attn": dict(q="q_proj", k="k_proj", v="v_proj", o="o_proj",
                                              heads=_HEADS, kv_heads="config.num_key_value_heads")},
    "token_embed": ["**.embed_tokens"],
    "mlp_in": ["**.layers.*.mlp.gate_proj", "**.layers.*.mlp.up_proj"],
    "mlp_out": ["**.layers.*.mlp.down_proj"],
    "head": ["lm_head", "score"],
}

FAMILIES: dict[str, list[dict]] = {
    "gpt2": [GPT2],
    "bert": [BERT], "roberta": [BERT],
    "vit": [VIT, VIT_V4],
    "llama": [LLAMA], "mistral": [LLAMA], "qwen2": [LLAMA], "qwen3": [LLAMA],
}


# ------------------------------------------------------------------------------------------------
# every other transformers model: found by structure (attention modules, MLP names, MoE experts)
# ------------------------------------------------------------------------------------------------
_Q = ("q_proj", "query", "q", "q_lin", "wq", "query_proj", "Wq", "self.query", "attention.query",
      "attention.q_proj", "self_attn.q_proj")
_K = ("k_proj", "key", "k", "k_lin", "wk", "key_proj", "Wk", "self.key", "attention.key",
      "attention.k_proj", "self_attn.k_proj")
_V = ("v_proj", "value", "v", "v_lin", "wv", "value_proj", "Wv", "self.value", "attention.value",
      "attention.v_proj", "self_attn.v_proj")
_QKV = ("qkv_proj", "qkv", "c_attn", "query_key_value", "Wqkv", "W_pack", "in_proj", "qkv_linear",
        "attention.qkv", "self.qkv", "self.in_proj")
_O = ("o_proj", "out_proj", "dense", "o", "out_lin", "wo", "c_proj", "proj", "output.dense",
      "attention.output.dense", "out", "attention.o_proj", "self_attn.o_proj", "Wo", "attention.dense",
      "output")  # LED / BigBird-Pegasus encoders: the attention's own `output` Linear
# LED's encoder self-attention wraps a Longformer one: q/k/v one level down
_Q += ("longformer_self_attn.query",)
_K += ("longformer_self_attn.key",)
_V += ("longformer_self_attn.value",)
# Seamless-M4T's conformer speech encoder: linear_q/k/v/out (its relative-position projection
# linear_pos and pos_bias_u/v add a position term beside q.k; see _EXTRA_HIDDEN)
_Q += ("linear_q",)
_K += ("linear_k",)
_V += ("linear_v",)
_O += ("linear_out",)
# DeBERTa-v2/v3: query_proj/key_proj/value_proj one level down (attention.self), output.dense beside
_Q += ("self.query_proj",)
_K += ("self.key_proj",)
_V += ("self.value_proj",)
# CPM-Ant: project_q/k/v and attention_out
_Q += ("project_q",)
_K += ("project_k",)
_V += ("project_v",)
_O += ("attention_out",)
# Moshi: each projection is a MoshiLinear wrapping an nn.Linear (`.linear`)
_Q += ("q_proj.linear",)
_K += ("k_proj.linear",)
_V += ("v_proj.linear",)
_O += ("o_proj.linear",)
# MiniCPM5-MoE: the query fused with its output gate, per head [q_h | gate_h] (a gated query)
_Q += ("q_gate_proj",)
# NeoMME: the output projection sits in a sigmoid-gated wrapper beside its gate (gate_proj)
_O += ("output_projection.o_proj",)
_HEAD_ATTRS = ("num_heads", "num_attention_heads", "n_head", "n_heads", "heads", "n_local_heads")
_KV_ATTRS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "kv_heads", "n_head_kv",
             "n_local_kv_heads")
_HEAD_DIM_ATTRS = ("head_dim", "attention_head_size", "head_size", "d_head", "dim_head")
# width of a value head where it differs from the query/key head width
_V_HEAD_DIM_ATTRS = ("v_head_dim", "v_channels_per_head", "value_head_dim")
# submodules that mean "the output projection reads the attention's heads concatenated with a
# parallel branch's" (ConvBERT's span-based dynamic convolution, conv_out_layer): the context of
# the attention heads comes first (modeling_convbert: torch.cat([context_layer, conv_out], 2))
_CONCAT_CONTEXT = ("conv_out_layer",)
# attention-module names too generic to tell self from cross: their holder's name decides
_GENERIC_LEAVES = ("attention", "attn", "self_attn", "mha")
# module classes that mean "not softmax attention" and that initlab does not map: refused with this
# reason. State-space / linear-attention mixers are mapped (adapters_hybrid) when the model also has
# softmax attention layers (a hybrid); a model with none is refused there.
_NOT_SOFTMAX = (
    (re.compile(r"AdditiveAttention"), "additive attention (no q/k dot product)"),
    (re.compile(r"MoA$|MixtureOfAttention"), "mixture-of-attention-heads experts"),
    (re.compile(r"Diff\w*Attention"), "differential attention (two softmax maps subtracted, "
                                      "heads paired)"),
    (re.compile(r"^GraniteSpeech\w*ConformerAttention$"),
     "conformer attention whose logits add a Shaw relative-position term q.E[i-j] (a distance table "
     "of head width inside the attention, blocked into context windows) to q.k, with keys and values "
     "from one fused to_kv projection; initlab's per-head q/k/v views cannot express that term"),
)
# hidden matrices the generic MLP pass does not name: (name pattern, role, why). Each is an
# input-side matrix (x -> a hidden quantity) or an output-side one, so it is scaled like the MLP
# matrix of the same side; nothing here is attention's own q/k/v/o.
_EXTRA_HIDDEN = (
    # Doge: dt_proj maps the values to one gate per head (the dynamic mask), a per-head gate
    (re.compile(r"\.self_attn\.dt_proj$"), Role.MLP_GATE),
    # conformer relative-position key projections (Canary / Cohere-ASR relative_k_proj, Seamless
    # linear_pos): project a position encoding into key space, an input-side matrix
    (re.compile(r"\.(relative_k_proj|linear_pos)$"), Role.MLP_IN),
    # DeBERTa-v2/v3 (share_att_key=False): pos_key_proj/pos_query_proj project the relative-position
    # table into key/query space for the disentangled c2p/p2c terms beside q.k
    (re.compile(r"\.(pos_key_proj|pos_query_proj)$"), Role.MLP_IN),
    # ConvBERT's span-based dynamic convolution beside its attention heads: conv_out_layer (x -> the
    # convolved values), conv_kernel_layer (-> per-head kernel logits) and the separable convolution's
    # pointwise (kernel 1) matrix are input-side matrices; its depthwise convolution stays `other`
    (re.compile(r"\.(conv_out_layer|conv_kernel_layer|key_conv_attn_layer\.pointwise)$"), Role.MLP_IN),
    # Inkling: rel_logits_proj.proj mixes per-head relative states into a bias per distance
    (re.compile(r"\.rel_logits_proj$"), Role.MLP_IN),
    # conformer convolution module: pointwise (kernel 1) convolutions are the module's in (GLU,
    # 2x wide) and out matrices; the depthwise convolution stays `other`, like a Mamba conv1d
    (re.compile(r"\.pointwise_conv1$"), Role.MLP_IN),
    (re.compile(r"\.pointwise_conv2$"), Role.MLP_OUT),
    # MobileBERT: bottleneck.input/attention project the block input to the inner width
    (re.compile(r"\.bottleneck\.(input|attention)\.dense$"), Role.MLP_IN),
    # Hiera: the first block of a stage projects the residual stream to the wider stage width
    (re.compile(r"\.stages\.\d+\.layers\.\d+\.proj$"), Role.MLP_IN),
    # VibeVoice's diffusion head: adaLN modulation (shift, scale, gate from the condition)
    (re.compile(r"diffusion_head\.layers\.\d+\.linear$"), Role.MLP_GATE),
)
# names of projections that make an attention latent (MLA): mapped by adapters_hybrid.add_mla
_MLA = hybrid.MLA_NAMES
# cross-attention by module name: BART/Whisper encoder_attn, BERT crossattention, T5's
# EncDecAttention, Pix2Struct's encoder_decoder_attention
_CROSS = re.compile(r"(encoder_attn|crossattention|cross_attn|cross_attention|enc_dec_attn|"
                    r"encdecattention|encoder_decoder_attention)", re.I)
_MLP_IN = ("ffn", "up_proj", "fc1", "c_fc", "wi", "wi_1", "fc_in", "dense_h_to_4h", "intermediate.dense",
           "lin1", "w3", "linear1", "dense_in", "mlp.fc1", "in_proj", "fc_1", "w_in", "Wi",
           "intermediate_dense")  # Seamless-M4T conformer feed-forwards
_MLP_GATE = ("gate_proj", "w1", "wi_0", "gate_up_proj", "ff_gate")
_MLP_OUT = ("ffn_output", "down_proj", "fc2", "c_proj", "wo", "fc_out", "dense_4h_to_h", "output.dense", "lin2",
            "w2", "linear2", "dense_out", "Wo", "fc_2", "w_out", "out_proj", "output_dense")
_MLP_PARENTS = re.compile(r"(^|\.)(mlp|ffn|feed_forward|feedforward|ff|intermediate|output|"
                          r"shared_expert|shared_experts|shared_mlp|experts\.\d+|mlp\.\d+|"
                          r"block_sparse_moe|moe|fc|mlp_block|ffn_layer|dense_mlp)(\.|$)", re.I)


def _attr_int(mods, names):
    for mod in mods:
        for n in names:
            v = getattr(mod, n, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def _find(model: nn.Module, base: str, names) -> str | None:
    for rel in names:
        full = f"{base}.{rel}" if base else rel
        try:
            mod = model.get_submodule(full)
        except AttributeError:
            continue
        w = getattr(mod, "weight", None)
        if isinstance(w, nn.Parameter) and w.dim() == 2:
            return full
    return None


def _config_chain(model: nn.Module, mod: nn.Module):
    """The attention module, its config, the model's config and the text/vision sub-configs."""
    out = [mod]
    for obj in (getattr(mod, "config", None), getattr(model, "config", None)):
        if obj is not None:
            out.append(obj)
    return out


def _fused_layout(model_type: str, mod: nn.Module, heads: int, kv: int, hd: int):
    """(groups, stride, [(offset, size) for q, k, v]) of a fused qkv tensor's output axis."""
    t = model_type or ""
    name = type(mod).__name__
    per_head = (heads, 3 * hd, [(0, hd), (hd, hd), (2 * hd, hd)])
    if t in ("gpt_neox", "gpt_neox_japanese", "persimmon", "fuyu", "bloom", "deberta") or \
            name.startswith(("GPTNeoX", "Persimmon", "Bloom", "DisentangledSelfAttention")):
        return per_head
    if t == "falcon" or name.startswith("Falcon"):
        if getattr(mod, "new_decoder_architecture", False):
            r = heads // kv
            return kv, (r + 2) * hd, [(0, r * hd), (r * hd, hd), ((r + 1) * hd, hd)]
        if not getattr(mod, "multi_query", False):
            return per_head
    if t == "codegen" or name.startswith("CodeGen"):
        mp = getattr(mod, "mp_num", 4)
        local = heads * hd // mp
        return mp, 3 * local, [(0, local), (2 * local, local), (local, local)]  # [q | v | k]
    if t == "gpt_bigcode" or name.startswith("GPTBigCode"):
        if not getattr(mod, "multi_query", True):
            return per_head
    return 1, 0, [(0, heads * hd), (heads * hd, kv * hd), (heads * hd + kv * hd, kv * hd)]


# submodules of an attention module that mix q/k/v after (or before) their projections, so the
# kernel's q, k, v are not x W_q, x W_k, x W_v: (path pattern, why). Checked on every model.
_QKV_MIXING = (
    (re.compile(r"(^|\.)conv_qk\w*$"),
     "queries and keys mixed across time and heads by causal convolutions after their projections "
     "(compressed convolutional attention: conv_qk_*), each averaged with the other's projection, and "
     "half of each value head read from the previous token, so the kernel's q, k and v are not x W_q, "
     "x W_k, x W_v and mimetic init of the projections would not set the products it targets"),
    (re.compile(r"(^|\.)(q|k|v|query|key|value)(_proj)?\.\w*conv\w*$"),
     "a q/k/v projection module that runs a (short, causal) convolution over time after its Linear "
     "(e.g. Inkling-2's k_proj.sconv), so the kernel's keys and values are not x W_k, x W_v of the "
     "token's own features and mimetic init of the Linear would not set the products it targets"),
)


def _unmappable_attention(model: nn.Module) -> str | None:
    """Why the attention modules of ``model`` have no q/k/v initlab can map (asked only when none
    was found): convolutional or batch-normalized projections."""
    for name, mod in model.named_modules():
        if not is_attention_class(mod):
            continue
        for rel, sub in mod.named_modules():
            where = f"{name}.{rel} ({type(mod).__name__})"
            if isinstance(sub, (nn.Conv1d, nn.Conv2d)) and rel in _Q + _K + _V:
                return (f"q/k/v projections that are convolutions (weight {tuple(sub.weight.shape)}, "
                        f"groups={sub.groups}, kernel {tuple(sub.kernel_size)}), e.g. {where}"
                        + ("; grouped: each head's q/k/v read only its group of features (block-"
                           "diagonal), so no head's W_q W_kᵀ can be the dense d x d target mimetic "
                           "init solves for" if sub.groups > 1 else
                           "; initlab's per-head views are of 2-D matrices"))
            if isinstance(sub, (nn.Conv1d, nn.Conv2d)) and max(sub.kernel_size) > 1 and \
                    re.search(r"(^|[._])(query|key|value|q|k|v)([._]|$)", rel):
                return (f"convolutional projections: q/k/v read a {sub.kernel_size} neighbourhood "
                        f"through a convolution (and a norm) before their Linear, e.g. {where}, so "
                        f"the kernel's q/k/v are not x W of the token's own features")
            kids = list(sub.children())
            if rel and any(isinstance(c, nn.Linear) for c in kids) and \
                    any(isinstance(c, (nn.BatchNorm1d, nn.BatchNorm2d)) for c in kids):
                return (f"q/k/v (or output) projections followed by batch normalization, e.g. {where}: "
                        f"in training the kernel's q/k/v are normalized by batch statistics, not x W")
    return None


def _refusal(model: nn.Module) -> str | None:
    found = {}
    for name, mod in model.named_modules():
        cname = type(mod).__name__
        if is_attention_class(mod):
            for rel, _sub in mod.named_modules():
                for rx, why in _QKV_MIXING:
                    if rel and rx.search(rel):
                        found.setdefault(why, f"{name}.{rel} ({cname})")
        convs = [c for c in ("q_sconv", "k_sconv", "v_sconv") if isinstance(getattr(mod, c, None), nn.Module)]
        if convs and is_attention_class(mod):  # Inkling: a causal short convolution after k/v
            found.setdefault(f"keys/values that pass through a causal short convolution ({', '.join(convs)}) "
                             f"after their projection, so the attention's own k and v are not x W_k and "
                             f"x W_v and mimetic init of W_k/W_v would not set the products it targets",
                             f"{name} ({cname})")
        for rx, why in _NOT_SOFTMAX:
            if rx.search(cname):
                found.setdefault(why, f"{name} ({cname})")
    if not found:
        return None
    return "; ".join(f"{why}, e.g. {where}" for why, where in found.items())


def _attention_layer(b: RoleMapBuilder, model: nn.Module, name: str, mod: nn.Module, index: int,
                     model_type: str) -> bool:
    """Register ``mod`` as an attention layer if its projections can be found; False if not."""
    q, k, v = (_find(model, name, c) for c in (_Q, _K, _V))
    fused = None if (q and k and v) else _find(model, name, _QKV)
    o = _find(model, name, _O)
    if not (o and ((q and k and v) or fused)):
        return False
    if fused and o == fused:
        return False
    inner = [mod] + [model.get_submodule(x.rsplit(".", 1)[0]) for x in (q, fused) if x and "." in x[len(name) + 1:]]
    chain = inner + _config_chain(model, mod)
    heads = _attr_int(chain, _HEAD_ATTRS)
    if heads is None:
        raise RoleMapError(f"{name}: cannot tell the number of heads (no num_heads/"
                           f"num_attention_heads attribute on the module or its config)")
    hd = _attr_int(inner, _HEAD_DIM_ATTRS)
    lin = lambda full, **kw: b.linear(full, layout=module_layout(model.get_submodule(full)), **kw)
    if fused:
        whole = lin(fused)
        kv = _attr_int(inner, _KV_ATTRS)
        if kv is None and getattr(mod, "multi_query", False):
            kv = 1
        if hd is None:
            kv0 = kv or heads
            if whole.d_out % (heads + 2 * kv0):
                raise RoleMapError(f"{fused}: fused width {whole.d_out} does not split into {heads} "
                                   f"query and 2x{kv0} key/value heads")
            hd = whole.d_out // (heads + 2 * kv0)
        kv = kv or (whole.d_out // hd - heads) // 2
        groups, stride, parts = _fused_layout(model_type, mod, heads, kv, hd)
        if groups == 1 and sum(s for _, s in parts) != whole.d_out:
            raise RoleMapError(f"{fused}: fused width {whole.d_out} does not hold {heads} query and "
                               f"2x{kv} key/value heads of {hd}")
        qp, kp, vp = (lin(fused, offset=off, d_out=size * groups, groups=groups, stride=stride)
                      if groups > 1 else lin(fused, offset=off, d_out=size) for off, size in parts)
    else:
        qp, kp, vp = lin(q), lin(k), lin(v)
        if hd is None or qp.d_out not in (heads * hd, 2 * heads * hd):  # 2x: a gated query
            hd = qp.d_out // heads
        if qp.d_out == 2 * heads * hd:  # gated query: per head [q_h | gate_h]
            qp = lin(q, offset=0, d_out=heads * hd, groups=heads, stride=2 * hd)
        kv = kp.d_out // hd if kp.d_out % hd == 0 else None
        if not kv or heads % kv:
            raise RoleMapError(f"{name}: key width {kp.d_out} is not a whole number of "
                               f"{hd}-wide heads dividing {heads} query heads")
    vd = hd
    if vp.d_out != kv * hd:  # value heads of their own width (MiMo-V2, Perceiver's decoder)
        vd = _attr_int(inner, _V_HEAD_DIM_ATTRS) or (vp.d_out // kv if vp.d_out % kv == 0 else hd)
    op = lin(o)
    if op.d_in != heads * vd and any(isinstance(getattr(m, c, None), nn.Module)
                                     for m in inner for c in _CONCAT_CONTEXT):
        # the output projection reads [attention heads | a parallel branch's heads] (ConvBERT):
        # the attention's O is its first heads x v_head_dim inputs; the rest are the branch's
        op = lin(o, d_in=heads * vd)
        mo = model.get_submodule(o)
        fin, fout = _fans_of(mo)
        rest = fin - heads * vd
        b.add(f"{o}.weight", Role.MLP_OUT, layer=index, fan_in=rest, fan_out=fout,
              index=(slice(None), slice(heads * vd, fin)) if module_layout(mo) == "out_in"
              else (slice(heads * vd, fin), slice(None)))
    causal = getattr(mod, "is_causal", None)
    if causal is None and "causal" in type(mod).__name__.lower():  # nanoGPT's CausalSelfAttention
        causal = True
    # cross-attention: flagged by the module, named so (the module or its holder, list indices
    # skipped: BLT's cross_attn_layers.0, Perceiver's cross_attention.attention), or queries and keys
    # reading features of different widths (they cannot read one sequence)
    words = [w for w in name.split(".") if not w.isdigit()]
    cross = bool(getattr(mod, "is_cross_attention", False) or _CROSS.search(".".join(words[-2:]))
                 or qp.d_in != kp.d_in)
    # Zamba's shared block reads [hidden state, original embeddings] (2d) and writes d: the first d
    # value-input features are the residual stream (docs/mimetic.md, mimetic's VO identity)
    residual_in = (0, op.d_out) if model_type in ("zamba", "zamba2") and vp.d_in == 2 * op.d_out else None
    b.add_attention(index, name, q=qp, k=kp, v=vp, o=op, n_heads=heads, n_kv_heads=kv,
                    head_dim=hd, cross=cross, causal=None if causal is None else bool(causal) and not cross,
                    get_logit_scale=scale_getter(inner) or _disentangled_scale(inner, hd), v_head_dim=vd,
                    get_value_scale=_value_scale_getter(inner), residual_in=residual_in)
    for full, role in ((q, Role.Q), (k, Role.K), (v, Role.V)):
        # Longformer/LED global-attention projections: a second q/k/v for the global tokens
        if full and _find(model, "", (full + "_global",)):
            b.add_module(full + "_global", role, layer=index)
    for extra in ("q_bias", "v_bias", "k_bias"):  # DeBERTa: biases beside a bias-free fused weight
        p = getattr(mod, extra, None)
        if isinstance(p, nn.Parameter) and p.dim() == 1:
            role = {"q_bias": Role.Q, "k_bias": Role.K, "v_bias": Role.V}[extra]
            b.add(f"{name}.{extra}", role, kind=BIAS, layer=index, fan_in=1, fan_out=p.numel())
    return True


def _value_scale_getter(inner):
    """A getter of the constant the attention multiplies its values by (``v_scale``, MiMo-V2's
    ``attention_value_scale``), or None."""
    for m in inner:
        v = getattr(m, "v_scale", None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return lambda m=m: getattr(m, "v_scale")
    return None


def _disentangled_scale(inner, hd: int):
    """DeBERTa(-v2/v3) divides its logits by √(head_dim · (1 + the number of disentangled terms
    c2p/p2c it is configured with)), relative attention on or off (modeling_deberta(_v2))."""
    for m in inner:
        if getattr(m, "relative_attention", None) is not None and \
                isinstance(getattr(m, "pos_att_type", None), (list, tuple)):
            return lambda m=m: (hd * (1 + sum(t in m.pos_att_type for t in ("c2p", "p2c")))) ** -0.5
    return None


def is_attention_class(mod: nn.Module) -> bool:
    name = type(mod).__name__  # an attention module, not a layer or block that holds one
    return bool(re.search(r"Attention|Attn", name)) and not re.search(r"(Layer|Block|Model)$", name)


def _experts(b: RoleMapBuilder, name: str, mod: nn.Module, d_model: int, layer) -> bool:
    """Fused 3-D expert tensors (transformers >= 5): gate_up_proj / up_proj / down_proj."""
    ps = dict(mod.named_parameters(recurse=False))
    if not any(p.dim() == 3 for p in ps.values()) or not (
            "Expert" in type(mod).__name__ or any(n in ps for n in ("gate_up_proj", "down_proj", "up_proj"))):
        return False
    tr = getattr(mod, "is_transposed", None)
    concat = getattr(mod, "is_concatenated", True)

    def io(p):  # (fan_in axis, fan_out axis) of an (E, a, b) expert tensor
        if tr is None:
            if p.shape[2] == p.shape[1]:
                raise RoleMapError(f"{name}: cannot tell the (in, out) layout of square expert "
                                   f"tensors; pass an explicit mapping")
            tr_ = p.shape[1] == d_model if "down" not in pn and "output" not in pn else p.shape[2] == d_model
        else:
            tr_ = bool(tr)
        return (1, 2) if tr_ else (2, 1)

    for pn, p in ps.items():
        full = f"{name}.{pn}"
        if p.dim() == 3:
            ain, aout = io(p)
            fin, fout = p.shape[ain], p.shape[aout]
            if pn in ("gate_up_proj", "input_linear.weight", "w13") or ("gate" in pn and "up" in pn):
                half = fout // 2
                sel = lambda part: ((slice(None),) * aout + ((slice(part * half, (part + 1) * half)
                                     if concat else slice(part, None, 2)),))
                b.add(full, Role.MLP_GATE, layer=layer, fan_in=fin, fan_out=half, index=sel(0))
                b.add(full, Role.MLP_IN, layer=layer, fan_in=fin, fan_out=half, index=sel(1))
            elif "down" in pn or "output" in pn or pn in ("w2",):
                b.add(full, Role.MLP_OUT, layer=layer, fan_in=fin, fan_out=fout)
            elif "gate" in pn:
                b.add(full, Role.MLP_GATE, layer=layer, fan_in=fin, fan_out=fout)
            else:
                b.add(full, Role.MLP_IN, layer=layer, fan_in=fin, fan_out=fout)
        elif p.dim() == 2 and pn.endswith("bias"):
            b.add(full, Role.MLP_OUT if ("down" in pn or "output" in pn) else Role.MLP_IN, kind=BIAS,
                  layer=layer, fan_in=1, fan_out=p.numel())
    return True


def _hf_generic(model: nn.Module, model_type: str | None) -> RoleMap:
    rmap = structural_roles(model, model_type, f"transformers.{model_type or 'generic'}")
    head_controls(rmap.controls, model)
    return rmap


def structural_roles(model: nn.Module, model_type: str | None, adapter: str) -> RoleMap:
    """Roles found from the module structure alone: attention modules (by class name) with q/k/v
    (or fused qkv) and output projections found by name, MLPs, experts, norms, embeddings, heads.
    Used for every transformers model without a listed family and for plain PyTorch models
    (nanoGPT, a hand-written Llama) by the ``torch.structural`` adapter."""
    why = _refusal(model)
    if why:
        raise RoleMapError(f"{type(model).__name__} (model_type={model_type!r}) is not a softmax-"
                           f"attention Transformer initlab can map: it has {why}. initlab refuses it "
                           f"rather than map part of it wrongly.")
    b = RoleMapBuilder(model)
    mods = dict(model.named_modules())
    mixers = hybrid.mixers(model)  # hybrids: state-space / linear-attention layers beside attention
    claimed: list[str] = []
    index = 0
    for name, mod in mods.items():
        if not name or any(name.startswith(c + ".") for c in claimed) or any(
                name == m or name.startswith(m + ".") for m in mixers):
            continue
        if hybrid.is_mla(mod):
            hybrid.add_mla(b, name=name, model=model, mod=mod, index=index)
            claimed.append(name)
            index += 1
            continue
        if isinstance(mod, nn.MultiheadAttention):  # e.g. SigLIP's attention-pooling head
            from .adapters_torch import add_mha
            add_mha(b, index, name, mod, cross=True)
            claimed.append(name)
            index += 1
            continue
        if not is_attention_class(mod):
            continue
        if _attention_layer(b, model, name, mod, index, model_type):
            claimed.append(name)
            index += 1
    if not b.attention and mixers:
        kinds = sorted(set(mixers.values()))
        raise RoleMapError(f"{type(model).__name__} (model_type={model_type!r}) is not a softmax-"
                           f"attention Transformer initlab can map: it has no softmax attention layer "
                           f"with q/k/v and output projections initlab recognises, only "
                           f"{' and '.join(kinds)} (e.g. {next(iter(mixers))}); the role map, mimetic "
                           f"init and the theory are about softmax attention")
    if not b.attention and hybrid.unknown_latent(model):
        raise RoleMapError(f"latent attention of a layout initlab does not know, e.g. "
                           f"{hybrid.unknown_latent(model)}: a low-rank query (q_a_proj/q_b_proj) without "
                           f"MLA's per-head key/value up-projection (kv_b_proj), so there is no per-head "
                           f"key to solve mimetic init for; pass an explicit mapping")
    if not b.attention:
        why = _unmappable_attention(model)
        raise RoleMapError("found no attention module with q/k/v (or fused qkv) and output "
                           "projections" + (f": its attention has {why}" if why else ""))
    width = b.attention[0].d_model
    for name in mixers:  # hybrid: the mixers' matrices get MLP-like roles (adapters_hybrid)
        hybrid.add_mixer(b, model, name)
        claimed.append(name)
    for c in claimed:  # an attention output gate (gated attention): a hidden matrix like the MLP gate
        for name, mod in model.get_submodule(c).named_modules(prefix=c):
            w = getattr(mod, "weight", None)
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(mod, nn.Linear) and ("gate" in leaf or leaf == "g_proj") and \
                    b.canonical_name(w) not in b.infos:
                b.add_module(name, Role.MLP_GATE, layer=first_int(name))
    # MLPs, experts and routers inside the blocks
    for name, mod in mods.items():
        if any(name == c or name.startswith(c + ".") for c in claimed):
            continue
        layer = first_int(name)
        if layer is None and not _MLP_PARENTS.search(name.rsplit(".", 1)[0] if "." in name else ""):
            continue
        if _experts(b, name, mod, width, layer):
            continue
        w = getattr(mod, "weight", None)
        if not isinstance(w, nn.Parameter) or w.dim() != 2 or type(mod).__name__ == "Embedding":
            continue
        leaf = name.rsplit(".", 1)[-1]
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        two = ".".join(name.split(".")[-2:])
        cls = type(mod).__name__
        if "Router" in cls or leaf in ("router", "gate", "wg", "layer") and w.shape[0] < w.shape[1] \
                and ("router" in name or leaf == "gate" or leaf == "wg") or leaf == "shared_expert_gate":
            b.add_module(name, Role.ROUTER, layer=layer)
        elif leaf in ("gate_up_proj", "Wi"):
            # fused [gate | up] (glm, phi3); ModernBERT's Wi is [input | gate]
            fin, fout = _fans_of(mod)
            half = fout // 2
            first, second = (Role.MLP_GATE, Role.MLP_IN) if leaf == "gate_up_proj" else (Role.MLP_IN, Role.MLP_GATE)
            for part, role in ((0, first), (1, second)):
                sl = slice(part * half, (part + 1) * half)
                b.add(f"{name}.weight", role, layer=layer, fan_in=fin, fan_out=half,
                      index=(sl, slice(None)) if module_layout(mod) == "out_in" else (slice(None), sl))
                bias = getattr(mod, "bias", None)
                if isinstance(bias, nn.Parameter):
                    b.add(f"{name}.bias", role, kind=BIAS, layer=layer, fan_in=1, fan_out=half,
                          index=(slice(part * half, (part + 1) * half),))
        elif leaf in _MLP_GATE or two in _MLP_GATE:
            b.add_module(name, Role.MLP_GATE, layer=layer)
        elif leaf in _MLP_IN or two in _MLP_IN:
            b.add_module(name, Role.MLP_IN, layer=layer)
        elif leaf in _MLP_OUT or two in _MLP_OUT:
            b.add_module(name, Role.MLP_OUT, layer=layer)
        elif _MLP_PARENTS.search(parent):  # unknown name inside an MLP: in if it widens, else out
            fin, fout = _fans_of(mod)
            b.add_module(name, Role.MLP_IN if fout >= fin else Role.MLP_OUT, layer=layer)
    for name, mod in mods.items():  # hidden matrices by name (_EXTRA_HIDDEN), claimed or not
        for rx, role in _EXTRA_HIDDEN:
            if not rx.search(name):
                continue
            w = getattr(mod, "weight", None)
            if isinstance(w, nn.Parameter) and w.dim() >= 2 and b.canonical_name(w) not in b.infos:
                b.add_module(name, role, layer=first_int(name))
            for pn, p in mod.named_parameters(recurse=False):  # a bare (in, out) matrix: x @ W
                if pn != "weight" and p.dim() == 2 and b.canonical_name(p) not in b.infos:
                    b.add(f"{name}.{pn}", role, layer=first_int(name), fan_in=p.shape[0],
                          fan_out=p.shape[1])
    b.add_norms(layer_of=first_int)
    # embeddings, tokens and patch stems first, so a head tied to an embedding stays token_embed
    free = [(n, m) for n, m in mods.items() if n and not any(n == c or n.startswith(c + ".") for c in claimed)
            and any(True for _ in m.parameters(recurse=False))]
    for name, mod in free:
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(mod, nn.Embedding):
            if re.search(r"rel|bucket|bias", leaf, re.I):
                continue
            role = Role.POS_EMBED if re.search(r"pos|wpe|position", leaf, re.I) else Role.TOKEN_EMBED
            b.add_module(name, role, layer=None)
        elif isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and (
                first_int(name) is None or re.search(r"patch", name, re.I)):
            b.add_module(name, Role.PATCH_EMBED, layer=first_int(name))
        for pn, p in mod.named_parameters(recurse=False):
            full = f"{name}.{pn}"
            if b.canonical_name(p) in b.infos:
                continue
            if pn in ("cls_token", "distillation_token", "register_tokens", "class_embedding", "probe"):
                b.add(full, Role.CLS_TOKEN, fan_in=1, fan_out=p.shape[-1])
            elif re.fullmatch(r"position_embeddings?|pos_embed|positional_embedding", pn) and p.dim() >= 2:
                b.add(full, Role.POS_EMBED, fan_in=1, fan_out=p.shape[-1])
            elif p.dim() == 2 and re.search(r"proj", pn) and first_int(name) is None:
                b.add(full, Role.MLP_IN, fan_in=p.shape[0], fan_out=p.shape[1])  # x @ W projector
    for name, mod in free:  # heads: matrices outside the blocks (a tied one is already token_embed)
        w = getattr(mod, "weight", None)
        if isinstance(w, nn.Parameter) and w.dim() == 2 and first_int(name) is None and \
                not isinstance(mod, nn.Embedding) and b.canonical_name(w) not in b.infos and \
                re.search(r"embed|project_in|proj_in|patch|projection|projector", name, re.I):
            # a projection into the trunk (ALBERT's embedding mapping, a multimodal projector):
            # a hidden matrix, initialized and scaled like an MLP's input
            b.add_module(name, Role.MLP_IN)
        elif isinstance(w, nn.Parameter) and w.dim() == 2 and first_int(name) is None and \
                not isinstance(mod, nn.Embedding):
            if b.canonical_name(w) not in b.infos:
                b.add_module(name, Role.HEAD)
            else:
                bias = getattr(mod, "bias", None)
                if isinstance(bias, nn.Parameter) and b.canonical_name(bias) not in b.infos:
                    b.add(f"{name}.bias", Role.HEAD, kind=BIAS, fan_in=1, fan_out=bias.numel())
    for n, p in model.named_parameters():  # bare parameters directly on the model
        if "." not in n and b.canonical_name(p) not in b.infos and n in ("cls_token", "pos_embed"):
            b.add(n, Role.CLS_TOKEN if n == "cls_token" else Role.POS_EMBED, fan_in=1, fan_out=p.shape[-1])
    depth = sum(1 for a in b.attention if not a.cross)
    if mixers:  # a hybrid's depth counts its blocks, attention or not
        hybrid.add_block_linears(b, model, mixers)
        depth = len({first_int(n) for n in mixers} | {first_int(a.module_name) for a in b.attention
                                                       if not a.cross}) or depth
    return b.build(width=width, depth=depth, adapter=adapter, allow_unmapped=True)


def _fans_of(mod: nn.Module) -> tuple[int, int]:
    w = mod.weight
    if module_layout(mod) == "in_out":
        return w.shape[0], w.shape[1]
    return w.shape[1], w.shape[0]


# The tied head's multiplier (N_rescale) and its persistence live in roles/persist.py; these names
# stay importable from here (pickled models reference initlab.roles.adapters_hf._scale_logits).
from .persist import head_controls, scale_logits as _scale_logits, tied_output  # noqa: E402,F401


_INPUT_KINDS = {"input_ids": "tokens", "pixel_values": "image", "input_features": "features",
                "input_values": "audio"}  # raw waveform (B, samples), not frames


def _cfg(config, *names, sub=("text_config", "vision_config", "encoder", "audio_config")):
    """The first of ``names`` set on the config (or, failing that, on a sub-config)."""
    for cfg in (config, *(getattr(config, s, None) for s in sub)):
        for n in names:
            v = getattr(cfg, n, None) if cfg is not None else None
            if v is not None:
                return v
    return None


def _pair(v) -> tuple[int, int] | None:
    if v is None:
        return None
    return (int(v), int(v)) if isinstance(v, int) else tuple(int(x) for x in v)[:2]


def _number(v) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_meta and v.is_floating_point():
        return float(v)
    return None


def embed_scale_of(model: nn.Module, rmap: RoleMap) -> float:
    """The constant the token embedding's output is multiplied by (Gemma: √d, BART with
    ``scale_embedding``: √d), read from the embedding module (``scalar_embed_scale`` /
    ``embed_scale``: transformers' scaled-embedding classes) or the stack that holds it."""
    infos = [i for i in rmap.by_role(Role.TOKEN_EMBED) if i.param.dim() == 2]
    if not infos:
        return 1.0
    parts = infos[0].name.rpartition(".")[0].split(".")
    for i in range(len(parts), -1, -1):
        try:
            mod = model.get_submodule(".".join(parts[:i]))
        except AttributeError:
            continue
        for attr in ("scalar_embed_scale", "embed_scale"):
            v = _number(getattr(mod, attr, None))
            if v is not None:
                return v
    return 1.0


# norm position by family where the module names do not tell (BART's names are MBart's too)
_POST_LN = {"bert", "roberta", "xlm-roberta", "camembert", "albert", "electra", "distilbert",
            "deberta", "deberta-v2", "mpnet", "ernie", "bart", "led", "marian", "blenderbot-small",
            "big_bird", "roformer", "nezha", "data2vec-text", "xmod", "layoutlm", "convbert",
            "squeezebert", "mobilebert", "funnel", "xlm", "flaubert", "splinter", "canine",
            "rembert", "luke", "mra", "nystromformer", "yoso", "lilt", "esm"}
_PRE_LN = {"mbart", "whisper", "t5", "mt5", "umt5", "longt5", "switch_transformers", "pegasus",
           "pegasus_x", "bigbird_pegasus", "m2m100", "nllb-moe", "blenderbot", "plbart", "prophetnet",
           "speech_to_text", "opt", "xglm", "biogpt", "gpt2", "vit", "deit", "dinov2",
           "dinov2_with_registers", "clip", "siglip", "megatron-bert"}
_PRE_NAMES = re.compile(r"(^|\.)(input_layernorm|layernorm_before|ln_1|pre_attention_layernorm|"
                        r"pre_feedforward_layernorm|attention_norm|ln_attn|layer_norm1|norm1|attn_norm)$")
_POST_NAMES = re.compile(r"(^|\.)(attention\.output\.LayerNorm|post_attention_layernorm_only)$")


def norm_position_of(model: nn.Module, model_type: str | None) -> str | None:
    """``"pre"``/``"post"`` from the family, else from the block's norm names, else None."""
    if model_type in _POST_LN:
        return "post"
    if model_type in _PRE_LN:
        return "pre"
    names = [n for n, m in model.named_modules() if n and first_int(n) is not None]
    if any(_PRE_NAMES.search(n) for n in names):
        return "pre"
    if any(_POST_NAMES.search(n) for n in names):
        return "post"
    return None


def _position_buffer(model: nn.Module, width: int) -> str | None:
    """A fixed (buffer) position table: float, 2-D or more, rows of the model width."""
    for n, buf in model.named_buffers():
        if re.search(r"pos|position", n, re.I) and buf.dim() >= 2 and buf.is_floating_point() \
                and buf.shape[-1] == width:
            return n
    return None


def position_facts(model: nn.Module, rmap: RoleMap, *, grid=None, rope: bool = False,
                   relative: bool = False) -> PositionFacts:
    """Kind, table(s), grid and prefix of the position encoding, from the role map: the first
    ``pos_embed`` table (model order: the encoder's) is the main one; a frozen one is ``fixed``.
    ``grid`` (from the config) is checked against the table and derived from it when it does not
    fit (a table for another image size)."""
    tables = [i for i in rmap.by_role(Role.POS_EMBED) if i.kind != BIAS and i.param.dim() >= 2]
    prefix = sum(i.param.shape[-2] if i.param.dim() >= 2 else 1 for i in rmap.by_role(Role.CLS_TOKEN))
    names = tuple(i.name for i in tables)
    if tables:
        main = tables[0]
        kind, table, rows = ("fixed" if main.frozen else "learned"), main.name, \
            main.param.numel() // main.param.shape[-1]
    else:
        table = _position_buffer(model, rmap.width)
        rows = None
        if table is not None:
            buf = model.get_buffer(table)
            kind, rows, names = "fixed", buf.numel() // buf.shape[-1], (table,)
        elif rope:
            kind = "rope"
        elif relative:
            kind = "relative"
        else:
            kind = "unknown"
    table_prefix = 0
    if grid is not None and rows is not None:
        table_prefix = rows - grid[0] * grid[1]
        if table_prefix < 0 or table_prefix > prefix:  # the table is laid out on another grid
            grid = None
            for extra in sorted({prefix, 1, 0}, reverse=True):
                side = math.isqrt(max(rows - extra, 0))
                if side > 0 and side * side == rows - extra:
                    grid, table_prefix = (side, side), extra
                    break
    interpolated = grid is not None and any(
        callable(getattr(m, "interpolate_pos_encoding", None)) for m in model.modules())
    return PositionFacts(kind, table, grid, prefix, table_prefix if grid is not None else 0, names,
                         interpolated)


def _input_kind_from_roles(rmap: RoleMap) -> tuple[str, int | None]:
    """("tokens" | "image" | "unknown", image channels) from the model's input stem, for a
    forward keyword that does not say (Perceiver's ``inputs``): a token table and no 2-D patch
    convolution reads token ids; a 2-D patch convolution and no token table reads images."""
    tables = [i for i in rmap.by_role(Role.TOKEN_EMBED) if i.param.dim() == 2]
    stems = rmap.by_role(Role.PATCH_EMBED)  # any convolution stem: images, audio frames
    if tables and not stems:
        return "tokens", None
    if stems and all(i.param.dim() == 4 for i in stems) and not tables:
        return "image", int(stems[0].param.shape[1])
    return "unknown", None


def hf_facts(model: nn.Module, rmap: RoleMap) -> ModelFacts:
    """Inputs, positions, embedding scale and norm position of a transformers model, from its
    config, its modules and its role map."""
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None)
    name = getattr(model, "main_input_name", None)
    kind = _INPUT_KINDS.get(name, "unknown")
    chans = None
    if kind == "unknown" and not getattr(cfg, "is_encoder_decoder", False):
        # a forward keyword of its own (Perceiver's `inputs`): the input stem says. Not for an
        # encoder-decoder, whose token table may be the decoder's (speech-encoder-decoder)
        kind, chans = _input_kind_from_roles(rmap)
    image = _pair(_cfg(cfg, "image_size")) if kind == "image" else None
    inputs = InputFacts(
        kind, name, vocab_size=_cfg(cfg, "vocab_size") if kind == "tokens" else None,
        max_positions=_cfg(cfg, "max_position_embeddings", "n_positions", "max_source_positions"),
        image_size=image,
        in_chans=(_cfg(cfg, "num_channels", "num_mel_bins") or chans) if kind in ("image", "features") else None,
        encoder_decoder=bool(getattr(cfg, "is_encoder_decoder", False)))
    patch = _pair(_cfg(cfg, "patch_size"))
    grid = (image[0] // patch[0], image[1] // patch[1]) if image and patch else None
    rope = _cfg(cfg, "rope_theta", "rope_parameters", "rotary_dim") is not None or any(
        "rotary" in type(m).__name__.lower() for m in model.modules())
    relative = _cfg(cfg, "relative_attention_num_buckets") is not None
    positions = position_facts(model, rmap, grid=grid, rope=rope, relative=relative)
    return ModelFacts(inputs=inputs, positions=positions, causal=rmap.facts.causal,
                      embed_scale=embed_scale_of(model, rmap),
                      norm_position=norm_position_of(model, model_type))


def is_transformers_model(model: nn.Module) -> bool:
    # the MRO, not the class itself: fully_shard (FSDP2) swaps in a subclass defined elsewhere
    return any(c.__module__.split(".")[0] == "transformers" for c in type(model).__mro__)


def hf_roles(model: nn.Module) -> RoleMap:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    errors = []
    for spec in FAMILIES.get(model_type, []):
        try:
            rmap = roles_from_mapping(model, {**spec, "strict": False},
                                      adapter=f"transformers.{model_type}", require_matches=False)
            head_controls(rmap.controls, model)
            rmap.facts = hf_facts(model, rmap)
            return rmap
        except RoleMapError as exc:
            errors.append(f"{model_type} layout: {exc}")
    try:
        rmap = _hf_generic(model, model_type)
        rmap.facts = hf_facts(model, rmap)
        return rmap
    except RoleMapError as exc:
        errors.append(str(exc))
    raise RoleMapError(
        f"initlab cannot map {type(model).__name__} (model_type={model_type!r}): "
        + " | ".join(errors) + " Pass an explicit mapping to initlab.role_map(model, mapping=...) "
        f"(see docs/adapters.md).")


register_adapter("transformers", is_transformers_model, hf_roles)
