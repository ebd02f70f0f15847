"""Coverage sweep: initlab on every model type of the installed transformers' auto mappings.

For each type of the causal-LM, masked-LM, image-classification, seq2seq and speech-seq2seq auto
mappings, build the model from its (shrunk) config -- d=64, 2 layers, 4 heads, 2 KV heads where the
config has GQA; values the config derives re-derived at that size -- never ``from_pretrained``, then
run the journey (``STEPS``):

* **roles**: ``initlab.role_map(model)`` builds, and every attention-like module of the model lies
  inside (or around) a mapped attention layer (no silently skipped tower/layer);
* **mimetic**: ``mimetic_`` runs, the product identities hold through the role map's views
  (W_q^h W_k^gᵀ = A_h P_g, Σ W_v W_o = B or its best low-rank truncation, float64 targets re-drawn
  from the same generator) and every tensor outside trainable self-attention Q/K/V/O (and their
  biases) is bit-identical;
* **inits**, **probe**, **train** (mu groups + 2 AdamW steps), **persist** (save/reload, same
  logits): see :func:`render`. Each model gets the inputs its forward takes (:func:`make_batch`).

A type that initlab refuses with a :class:`initlab.errors.InitlabError` is "refused" (with the
message); any other exception is a bug and is reported as such. Run (the CPU is shared, one thread):

    OMP_NUM_THREADS=1 PYTHONPATH=src python tools/hf_coverage.py --out docs/coverage.md

``--types llama,gpt2`` restricts the sweep; ``--json FILE`` also writes the raw results.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import signal
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field

import torch

HEADS = {
    "causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "masked-lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "image": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "seq2seq": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "speech-seq2seq": "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
}
AUTO = {"causal-lm": "AutoModelForCausalLM", "masked-lm": "AutoModelForMaskedLM",
        "image": "AutoModelForImageClassification", "seq2seq": "AutoModelForSeq2SeqLM",
        "speech-seq2seq": "AutoModelForSpeechSeq2Seq"}
#: the journey's steps, in order; a type passes when every one is "ok"
STEPS = ("roles", "mimetic", "inits", "probe", "train", "persist")
#: the schemes of the "inits" step
INITS = ("trunc_normal", "mu", "small_init")
D, LAYERS, N_HEADS, N_KV, FFN = 64, 2, 4, 2, 128

# attribute name -> tiny value; applied to the config and to every sub-config that has it
_SCALARS = {
    "hidden_size": D, "n_embd": D, "d_model": D, "embed_dim": D, "dim": D, "hidden_dim": D,
    "n_embed": D, "word_embed_proj_dim": D, "d_embed": D, "projection_dim": D,
    "num_hidden_layers": LAYERS, "n_layer": LAYERS, "n_layers": LAYERS, "num_layers": LAYERS,
    "encoder_layers": LAYERS, "decoder_layers": LAYERS, "num_decoder_layers": LAYERS,
    "num_encoder_layers": LAYERS,
    "num_attention_heads": N_HEADS, "n_head": N_HEADS, "n_heads": N_HEADS, "num_heads": N_HEADS,
    "encoder_attention_heads": N_HEADS, "decoder_attention_heads": N_HEADS,
    "intermediate_size": FFN, "n_inner": FFN, "ffn_dim": FFN, "encoder_ffn_dim": FFN,
    "decoder_ffn_dim": FFN, "d_ff": FFN, "hidden_act_dim": FFN, "mlp_dim": FFN,
    "moe_intermediate_size": 48, "shared_expert_intermediate_size": 48,
    "head_dim": D // N_HEADS, "kv_channels": D // N_HEADS, "attention_head_dim": D // N_HEADS,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "image_size": 32, "patch_size": 4, "max_position_embeddings": 128, "n_positions": 128,
    "max_source_positions": 64, "max_target_positions": 128,
    "embedding_size": D, "max_window_layers": LAYERS, "emb_dim": D, "input_embedding_size": D,
    "output_embedding_size": D, "rotary_dim": 8, "window_size": 4, "d_latents": D,
    # BLT: the global transformer's width, read by the local encoder/decoder's projections; the
    # rows of its hashed n-gram tables (ids are taken modulo this)
    "hidden_size_global": D, "encoder_hash_byte_group_vocab": 512,
    # Dia's decoder: its cross-attention reads the encoder's width, with heads of its own
    "cross_hidden_size": D, "cross_head_dim": D // N_HEADS, "cross_num_attention_heads": N_HEADS,
    # Nemotron diarization head: the audio encoder's width, which its config validates on reload
    "audio_hidden_size": D,
}
_KV = ("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num",
       "n_head_kv", "num_key_value_groups_heads", "cross_num_key_value_heads")


def _is_config(x) -> bool:
    from transformers import PretrainedConfig
    return isinstance(x, PretrainedConfig)


def _set(cfg, key, value) -> None:
    try:
        setattr(cfg, key, value)
    except (AttributeError, TypeError, ValueError):  # read-only properties, validated fields
        pass


def shrink(cfg) -> None:
    """Shrink a config (and its sub-configs) in place to the sweep's tiny size."""
    heads0 = next((cfg.__dict__.get(k) for k in ("num_attention_heads", "n_head", "n_heads",
                                                 "num_heads") if isinstance(cfg.__dict__.get(k), int)), None)
    for key, value in _SCALARS.items():
        old = getattr(cfg, key, None) if key in cfg.__dict__ or hasattr(type(cfg), key) else None
        if isinstance(old, int) and not isinstance(old, bool):
            if key in ("image_size", "patch_size") and old < value:
                continue
            _set(cfg, key, value)
    for key in _KV:
        old = cfg.__dict__.get(key)
        if isinstance(old, int) and not isinstance(old, bool) and old > 0:
            _set(cfg, key, N_HEADS if heads0 is not None and old >= heads0 else N_KV)
    # list-valued per-stage settings (swin-like): same number of stages, 1 layer each
    depths = cfg.__dict__.get("depths")
    if isinstance(depths, (list, tuple)) and depths and all(isinstance(v, int) for v in depths):
        _set(cfg, "depths", [1] * len(depths))
        heads = cfg.__dict__.get("num_heads")
        if isinstance(heads, (list, tuple)) and len(heads) == len(depths) and \
                isinstance(cfg.__dict__.get("embed_dim"), int):
            _set(cfg, "num_heads", [2 * 2 ** i for i in range(len(depths))])
            _set(cfg, "embed_dim", 32)
        if isinstance(cfg.__dict__.get("window_size"), int) and isinstance(cfg.__dict__.get("patch_size"), int):
            # every stage at least one window wide (its resolution halves per stage)
            _set(cfg, "window_size", 2)
            _set(cfg, "image_size", cfg.patch_size * 2 ** len(depths))
    _keep_layer_kinds(cfg)
    # per-layer overrides of a heterogeneous config (NeoMME's per_layer_config, keyed by layer
    # index): the layers that remain keep theirs, which the config validates on reload
    layers = cfg.__dict__.get("num_hidden_layers")
    spec = cfg.__dict__.get("_heterogeneity_spec")
    overrides = getattr(spec, "per_layer_overrides", None)
    if isinstance(overrides, dict) and isinstance(layers, int):
        for i in [i for i in overrides if isinstance(i, int) and i >= layers]:
            del overrides[i]
    # Perceiver: 256 latents, 26 self-attentions per block by default
    if isinstance(cfg.__dict__.get("num_self_attends_per_block"), int):
        _set(cfg, "num_self_attends_per_block", LAYERS)
        if isinstance(cfg.__dict__.get("num_latents"), int):
            _set(cfg, "num_latents", 16)
    if getattr(cfg, "vocab_size", None) and cfg.vocab_size > 4096 and "pad_token_id" in cfg.__dict__:
        pass  # vocabularies keep their size: special token ids index into them
    # SSM / linear-attention mixers of hybrids: heads x head width = expand x d, small states
    for heads_key, dim_key in (("mamba_n_heads", "mamba_d_head"), ("mamba_num_heads", "mamba_head_dim"),
                               ("n_mamba_heads", "mamba_headdim"),  # Zamba2
                               ("linear_num_heads", "linear_head_dim")):
        if isinstance(cfg.__dict__.get(heads_key), int) and isinstance(cfg.__dict__.get(dim_key), int):
            expand = cfg.__dict__.get("mamba_expand", 2) if "mamba" in heads_key else 1
            _set(cfg, heads_key, N_HEADS)
            _set(cfg, dim_key, expand * D // N_HEADS)
    for key in ("n_groups", "mamba_n_groups", "n_group", "topk_group", "num_expert_group"):  # groups of heads / experts
        if isinstance(cfg.__dict__.get(key), int) and cfg.__dict__[key] > 1:
            _set(cfg, key, 1)
    if isinstance(cfg.__dict__.get("mamba_d_ssm"), int):
        _set(cfg, "mamba_d_ssm", cfg.__dict__.get("mamba_expand", 2) * D)
    if isinstance(cfg.__dict__.get("mamba_d_state"), int) and cfg.mamba_d_state > 16:
        _set(cfg, "mamba_d_state", 16)
    if isinstance(cfg.__dict__.get("attention_hidden_size"), int):  # Zamba: attention reads [h, h0]
        _set(cfg, "attention_hidden_size", 2 * D)
        _set(cfg, "attention_head_dim", 2 * D // N_HEADS)
    names = cfg.__dict__.get("stage_names")  # backbone-capable configs: stages follow the layers
    layers = cfg.__dict__.get("num_hidden_layers")
    if isinstance(names, list) and isinstance(layers, int) and len(names) == len(cfg.__dict__.get(
            "_stage_count", names)) and all(n.startswith("stage") for n in names[1:]) and len(names) > layers + 1:
        _set(cfg, "stage_names", ["stem"] + [f"stage{i}" for i in range(1, layers + 1)])
        if "_out_features" in cfg.__dict__:
            cfg.__dict__["_out_features"] = [f"stage{layers}"]
            cfg.__dict__["_out_indices"] = [layers]
    if "topk_method" in cfg.__dict__ and cfg.__dict__.get("num_experts_per_tok") is None:  # DeepSeek-V2
        _set(cfg, "n_routed_experts", 4)
        _set(cfg, "num_experts_per_tok", 2)
    if isinstance(cfg.__dict__.get("kv_lora_rank"), int):  # MLA: latents narrower than d, RoPE split
        for key, value in (("kv_lora_rank", 32), ("qk_nope_head_dim", 16), ("qk_rope_head_dim", 8),
                           ("v_head_dim", 16), ("head_dim", 8)):
            _set(cfg, key, value)
        if isinstance(cfg.__dict__.get("q_lora_rank"), int):
            _set(cfg, "q_lora_rank", 48)
        if "qk_head_dim" in cfg.__dict__:
            _set(cfg, "qk_head_dim", 24)
    # an adaptor's inner width tied to the text width it feeds at full size stays tied (Fun-ASR-Nano
    # validates adaptor_config.intermediate_size == text_config.hidden_size // 4, on reload too)
    adaptor, text = cfg.__dict__.get("adaptor_config"), cfg.__dict__.get("text_config")
    tied = _is_config(adaptor) and _is_config(text) and isinstance(text.__dict__.get("hidden_size"), int) \
        and adaptor.__dict__.get("intermediate_size") == text.hidden_size // 4
    for name, sub in list(cfg.__dict__.items()):
        if _is_config(sub):
            shrink(sub)
    if tied:
        _set(adaptor, "intermediate_size", text.hidden_size // 4)


_LAYER_LISTS = ("layer_types", "layers_block_type", "block_types", "mlp_layer_types")


def _keep_layer_kinds(cfg) -> None:
    """Per-layer lists (hybrids: which layers are attention, Mamba, linear attention): LAYERS
    layers, or one of each kind when there are more kinds, so a hybrid keeps its attention layers.
    Period/offset and index-list settings are rewritten to match."""
    lists = {k: v for k, v in cfg.__dict__.items() if isinstance(v, list) and v and (
        k in _LAYER_LISTS or k.endswith(("_per_layer", "layer_types")))}
    kinds = lists.get("layer_types") or lists.get("layers_block_type") or lists.get("block_types")
    if kinds and all(isinstance(v, str) for v in kinds):
        pick = list(range(min(LAYERS, len(kinds))))
        for kind in dict.fromkeys(kinds):  # two layers of each kind the first LAYERS miss
            if kind not in [kinds[i] for i in pick]:  # (two: Zamba ties its shared blocks)
                pick += [i for i, k in enumerate(kinds) if k == kind][:2]
        pick.sort()
        n = len(pick)
        for key, old in lists.items():
            if len(old) >= len(kinds) or len(old) > n:
                new = [old[i] for i in pick] if len(old) >= len(kinds) else old[:n]
                if "heads" in key and all(isinstance(v, int) for v in new):
                    new = [N_HEADS] * n
                _set(cfg, key, new)
        if n != LAYERS and isinstance(cfg.__dict__.get("num_hidden_layers"), int):
            _set(cfg, "num_hidden_layers", n)
        # index lists and per-layer lists the config validates on reload (from_pretrained):
        # Kolibri's index_layers / kv_source_layers name layers by index; Bailing's swiglu_limits
        # (expert_swiglu_limit_list) hold one value per layer
        idx = cfg.__dict__.get("index_layers")
        if isinstance(idx, list) and all(isinstance(i, int) for i in idx):
            _set(cfg, "index_layers", [pick.index(i) for i in idx if i in pick])
        src = cfg.__dict__.get("kv_source_layers")
        if isinstance(src, list) and len(src) == len(kinds):  # every layer its own K/V, as built
            _set(cfg, "kv_source_layers", list(range(n)))
        import dataclasses
        fields = [f.name for f in dataclasses.fields(cfg)] if dataclasses.is_dataclass(cfg) else []
        for key in dict.fromkeys([*cfg.__dict__, *fields]):
            if "limit" not in key:
                continue
            try:  # per-layer attributes of heterogeneous configs refuse a global read
                old = getattr(cfg, key)
            except Exception:  # noqa: BLE001
                continue
            if isinstance(old, list) and len(old) == len(kinds):
                _set(cfg, key, [old[i] for i in pick])
        if isinstance(cfg.__dict__.get("hybrid_layer_ids"), list):  # zamba2
            _set(cfg, "hybrid_layer_ids", [i for i, k in enumerate(cfg.layers_block_type) if k == "hybrid"])
    else:
        for key, old in lists.items():
            if len(old) > LAYERS:
                new = old[:LAYERS]
                if "heads" in key and all(isinstance(v, int) for v in new):
                    new = [N_HEADS] * LAYERS
                _set(cfg, key, new)
    if isinstance(cfg.__dict__.get("index_num_heads"), int):  # Kolibri: at most heads / kv heads
        _set(cfg, "index_num_heads", 1)
    layers = cfg.__dict__.get("num_hidden_layers")
    if isinstance(layers, int) and layers >= 3 and all(isinstance(cfg.__dict__.get(k), int) for k in (
            "n_input_layers", "n_recurrent_layers", "n_output_layers")):  # Dory: the three add up
        _set(cfg, "n_input_layers", 1)
        _set(cfg, "n_recurrent_layers", layers - 2)
        _set(cfg, "n_output_layers", 1)
    types = cfg.__dict__.get("attention_types")  # GPT-Neo: [[pattern, repeats]] expands to the layers
    if isinstance(types, list) and len(types) == 1 and isinstance(cfg.__dict__.get("num_layers"), int) \
            and isinstance(cfg.__dict__.get("attention_layers"), list):
        pattern, n = list(types[0][0]), cfg.num_layers
        _set(cfg, "attention_types", [[pattern, max(1, n // len(pattern))]])
        _set(cfg, "attention_layers", (pattern * n)[:n])
    # Jamba-style periods: attention in layer 1 of 2; Bamba-style index lists
    if isinstance(cfg.__dict__.get("attn_layer_period"), int):
        _set(cfg, "attn_layer_period", LAYERS)
        _set(cfg, "attn_layer_offset", LAYERS - 1)
    if "attn_layer_indices" in cfg.__dict__ and cfg.__dict__.get("mamba_n_heads"):
        _set(cfg, "attn_layer_indices", [LAYERS - 1])


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


@dataclass
class Result:
    head: str
    model_type: str
    cls: str = ""
    build: str = "ok"  # ok | error message
    # each step: "" (not reached) | ok | refused: msg | wrong: msg | bug: msg
    roles: str = ""
    mimetic: str = ""
    inits: str = ""
    probe: str = ""
    train: str = ""
    persist: str = ""
    adapter: str = ""
    attention: int = 0
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    has_attention: bool = True

    @property
    def not_softmax(self) -> bool:
        """Its attention-named modules are all state-space, linear or additive attention: outside
        the journey's denominator (``has_attention`` is False), refused with that reason."""
        return not self.has_attention and any("state-space / linear / additive" in n for n in self.notes)

    @property
    def buildable(self) -> bool:
        return self.build == "ok"

    @property
    def works(self) -> bool:
        return all(getattr(self, s) == "ok" for s in STEPS)

    @property
    def first_failure(self) -> str:
        return next((f"{s}: {getattr(self, s)}" for s in STEPS if getattr(self, s) != "ok"), "")


_NOT_SOFTMAX_CLASS = re.compile(r"AdditiveAttention|SwiftFormerEfficientAdditive")
# wi/wo (T5) only as a whole word part: "depthwise" is no hidden matrix name
_HIDDEN = re.compile(r"(mlp|expert|router|gate|ffn|feed_forward|fc\d|dense|proj|(?<![a-z])w[io](?![a-z])|"
                     r"c_fc|linear)", re.I)


def build(head: str, model_type: str, *, vocab: int | None = None):
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    cls_name = getattr(modeling_auto, HEADS[head])[model_type]
    cfg = CONFIG_MAPPING[model_type]()
    shrink(cfg)
    cfg = rederive(cfg, CONFIG_MAPPING[model_type]())
    if vocab is not None:  # tests: a small vocabulary when the config's special tokens allow it
        fits = {}

        def nested(c):  # the config and its sub-configs at any depth (T5Gemma2: encoder.text_config)
            yield c
            for v in c.__dict__.values():
                if _is_config(v):
                    yield from nested(v)
        for c in nested(cfg):
            ids = [getattr(c, k, None) for k in ("pad_token_id", "bos_token_id", "eos_token_id",  # and
                                                  "decoder_start_token_id", "sep_token_id",  # CTC's blank,
                                                  "blank_token_id")]  # a class of the vocabulary
            flat = [i for x in ids for i in (x if isinstance(x, (list, tuple)) else [x])
                    if isinstance(i, int)]
            if isinstance(c.__dict__.get("vocab_size"), int):
                fits[id(c)] = (c, all(i < vocab for i in flat))
        # all or none: a model whose head reads one config's vocabulary and whose loss reads
        # another's (VibeVoice, Dia, T5Gemma2's encoder text vs decoder) breaks when only one shrinks
        if all(ok for _, ok in fits.values()):
            for c, _ in fits.values():
                _set(c, "vocab_size", vocab)
    auto = AUTO[head]
    import transformers
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = getattr(transformers, auto).from_config(cfg)
        except TypeError as exc:  # DeiT: a tuple of classes and no `architectures` trips the auto class
            if "not iterable" not in str(exc):
                raise
            names = cls_name if isinstance(cls_name, (list, tuple)) else [cls_name]
            cfg.architectures = list(names)
            model = getattr(transformers, names[0])(cfg)
    if isinstance(cls_name, (list, tuple)):
        cls_name = type(model).__name__
    if vocab is not None:  # token ids the model holds itself (ShieldGemma2's yes/no answer tokens,
        # indexing its logits) must fit the vocabulary as well: else the config's own vocabulary
        try:
            rows = getattr(model.get_input_embeddings(), "num_embeddings", None)
        except (NotImplementedError, AttributeError):
            rows = None
        held = [v for k, v in vars(model).items() if "token" in k and isinstance(v, int)
                and not isinstance(v, bool)]
        if rows is not None and any(v >= rows for v in held):
            return build(head, model_type, vocab=None)
    if getattr(model.config, "use_cache", False):
        from transformers import DynamicCache
        try:
            DynamicCache(config=model.config)
        except AttributeError:  # BLT: its forward builds a cache its own config cannot describe
            model.config.use_cache = False  # (no num_hidden_layers), at any size: off, as a user must
    languages = getattr(cfg, "languages", None)
    if callable(getattr(model, "set_default_language", None)) and languages and \
            getattr(cfg, "default_language", None) is None:
        model.set_default_language(list(languages)[0])  # X-MOD: as its docs tell a user to
    return model.eval(), cls_name


def _rebuilt(cfg):
    """``cfg`` built again from its declared fields (sub-configs too), as ``__post_init__`` sees
    them: every value it derives is derived anew; other attributes it kept are carried over."""
    import dataclasses
    names = {f.name for f in dataclasses.fields(cfg)}
    d = cfg.to_dict()
    given = {k: (_rebuilt(cfg.__dict__[k]) if _is_config(cfg.__dict__.get(k)) else v)
             for k, v in d.items() if k in names and k != "transformers_version"}
    new = type(cfg)(**given)
    for k, v in d.items():
        if k not in names and k not in new.__dict__ and k not in ("model_type", "transformers_version"):
            setattr(new, k, v)
    return new


def _take_derived(cfg, new, full) -> None:
    """Attributes ``cfg``'s ``__post_init__`` derives (not declared fields) that the shrink left at
    their full-size value (still equal to ``full``'s): take the value derived from the shrunk fields."""
    import dataclasses
    names = {f.name for f in dataclasses.fields(cfg)}
    for k, v in list(cfg.__dict__.items()):
        if k.startswith("_"):
            continue
        if _is_config(v):
            if _is_config(new.__dict__.get(k)) and _is_config(full.__dict__.get(k)):
                _take_derived(v, new.__dict__[k], full.__dict__[k])
            continue
        if k not in names and k in new.__dict__ and k in full.__dict__ and full.__dict__[k] == v \
                and new.__dict__[k] != v:
            _set(cfg, k, new.__dict__[k])


def rederive(cfg, full):
    """Values a config derives from others in ``__post_init__`` kept consistent with the shrunk
    ones, as they would be had the config been built at the tiny size (``full``: the same config,
    not shrunk). Zamba2 derives ``mamba_headdim`` = expand x hidden / heads, T5Gemma its decoder's
    ``cross_attention_hidden_size`` = the encoder's width: left at the full-size value, the tiny
    model's own forward fails. HRM remembers its per-stack layer count (``num_layers_per_stack``,
    a field) and sets ``num_hidden_layers`` to stacks x cycles, the cache slots its forward indexes;
    it is rebuilt with one layer per stack (its two stacks are the sweep's 2 layers)."""
    import dataclasses
    if not dataclasses.is_dataclass(cfg):
        return cfg
    if isinstance(cfg.__dict__.get("num_layers_per_stack"), int) and \
            isinstance(cfg.__dict__.get("num_hidden_layers"), int):
        d = {k: v for k, v in cfg.to_dict().items() if k not in (
            "num_layers_per_stack", "model_type", "transformers_version")}
        return type(cfg)(**{**d, "num_hidden_layers": 1})
    try:
        new = _rebuilt(cfg)
    except Exception:  # noqa: BLE001 - a config that cannot be rebuilt as shrunk: kept as it is
        return cfg
    _take_derived(cfg, new, full)
    return cfg


def attention_modules(model) -> list[str]:
    """Names of modules that look like attention layers (class name ends in Attention...)."""
    out = []
    for name, mod in model.named_modules():
        cname = type(mod).__name__
        if re.search(r"Attention\d*$|SelfAttention|MultiheadAttention", cname) and \
                any(p.dim() >= 2 for p in mod.parameters()):
            out.append(name)
    return out


def uncovered_attention(model, rmap) -> list[str]:
    mapped = [a.module_name for a in rmap.attention]

    def related(a: str, b: str) -> bool:
        return a == b or a.startswith(b + ".") or b.startswith(a + ".")

    from initlab.roles.adapters_hybrid import mixer_kind  # hybrids: linear attention is a mixer
    mods = dict(model.named_modules())
    names = [n for n in attention_modules(model) if not mixer_kind(mods[n])]
    return [n for n in names if not any(related(n, m) for m in mapped)
            and not any(n.startswith(o + ".") for o in names if o != n and any(related(o, m) for m in mapped))]


def _targets(rmap, cfg: dict, seed: int):
    from initlab.mimetic import draw_targets, mimetic_layers
    g = torch.Generator().manual_seed(seed)
    # drawn in the order mimetic_ draws, for the layers it writes: self-attention, not frozen
    # (BLT's patcher), tied layers once (Zamba's shared block)
    return [(att, draw_targets(att, **cfg, dist="uniform", generator=g))
            for att in mimetic_layers(rmap.trainable())]


def _truncate(m: torch.Tensor, k: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(m)
    return (u[:, :k] * s[:k]) @ vh[:k]


def _group_projected(a: torch.Tensor, k: int, n_kv: int) -> list[torch.Tensor]:
    h_total, d, _ = a.shape
    r = h_total // n_kv
    out = []
    for h in range(h_total):
        g = h // r
        stacked = a[g * r:(g + 1) * r].reshape(r * d, d)
        vk = torch.linalg.svd(stacked)[2][:k].t()
        out.append(a[h] @ vk @ vk.t())
    return out


def mimetic_check(model, rmap, head: str) -> list[str]:
    """Run mimetic_ with explicit settings and check identities and untouched tensors."""
    import initlab
    from initlab.mimetic import PRESETS
    preset = "vision" if head == "image" else "language"
    cfg = dict(PRESETS[preset])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    initlab.mimetic_(model, preset=preset, svd="exact", generator=torch.Generator().manual_seed(7),
                     role_map=rmap)
    problems = []
    targets = _targets(rmap, cfg, 7)
    written = set()
    for att, (a, b) in targets:  # cross-attention and frozen layers: checked below, bit-identical
        k, d = att.head_dim, att.d_model
        latent = getattr(att, "latent", False)
        if latent:  # MLA: the best products the down-projections allow (docs/mimetic.md)
            from initlab.mimetic_latent import expected_products
            expect, want_vo = expected_products(att, a, b)
        else:
            expect = ([_truncate(a[h], min(k, d)) for h in range(att.n_heads)]
                      if att.n_kv_heads == att.n_heads else _group_projected(a, min(k, d), att.n_kv_heads))
        for h in range(att.n_heads):
            err = (att.qk_product(h) - expect[h]).abs().max().item()
            if not err < 1e-5:
                problems.append(f"{att.module_name} head {h}: QK off by {err:.2g}")
                break
        m = att.n_kv_heads * (att.v_head_dim or k)
        want = want_vo if latent else b if m >= min(b.shape) else _truncate(b, m)
        err = (att.vo_product() - want).abs().max().item()
        if not err < 1e-5:
            problems.append(f"{att.module_name}: VO off by {err:.2g}")
        for proj in att.projections().values():
            written.add(proj.name)
            if proj.bias_name:
                written.add(proj.bias_name)
        for info in rmap:  # biases registered by slot (packed in_proj_bias, DeBERTa's q_bias)
            if info.kind == "bias" and info.layer == att.index and \
                    any(str(r) in ("q", "k", "v", "o") for r in info.roles):
                written.add(info.name)
    for n, p in model.named_parameters():
        if n not in written and rmap.params.get(n) is not None and n in before:
            if not torch.equal(p.detach(), before[n]):
                problems.append(f"{n} changed but is not Q/K/V/O")
    return problems


_CAPTURED: dict = {}


def _capture(module, query, key, value, attention_mask, **kw):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    _CAPTURED.setdefault(id(module), (query.detach(), key.detach(), value.detach()))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kw)


def forward_check(model, rmap, head: str) -> list[str] | None:
    """Does the model compute, at position 0, the q/k/v the role map says it does?

    Runs the model with an attention implementation that records the (query, key, value) handed to
    the attention kernel, and the hidden states entering each mapped self-attention module, and
    compares with x @ q_head(h) (+ bias): values exactly, queries and keys at position 0 (where
    rotary embeddings are the identity) up to one scalar per layer (models pre-scale queries).
    None when the model does not route through transformers' attention interface.
    """
    from transformers import AttentionInterface
    AttentionInterface.register("initlab_check", _capture)
    try:
        model.set_attn_implementation("initlab_check")
    except Exception:  # noqa: BLE001 - models without the interface
        return None
    inputs: dict = {}  # the input each q/k/v projection module saw (first call)
    hooks = []
    for att in rmap.attention:
        if att.cross or getattr(att, "latent", False):  # MLA: composite maps, checked by mimetic
            continue
        for proj in (att.q, att.k, att.v):
            mname = proj.name.rsplit(".", 1)[0]
            if mname in inputs or any(h[0] == mname for h in hooks):
                continue

            def pre(m, args, name=mname):
                if args and isinstance(args[0], torch.Tensor):
                    inputs.setdefault(name, args[0].detach())
            hooks.append((mname, model.get_submodule(mname).register_forward_pre_hook(pre)))
    _CAPTURED.clear()
    try:
        cfg = model.config
        if head == "image":
            size = getattr(cfg, "image_size", 32)
            size = size if isinstance(size, int) else size[0]
            batch = dict(pixel_values=torch.randn(1, getattr(cfg, "num_channels", 3), size, size))
        else:
            batch = dict(input_ids=torch.randint(3, 50, (1, 6)))
            if getattr(cfg, "is_encoder_decoder", False):
                batch["decoder_input_ids"] = torch.randint(3, 50, (1, 4))
        with torch.no_grad():
            model(**batch)
    except Exception as exc:  # noqa: BLE001 - a tiny config the forward rejects: say so, check nothing
        return [f"NOTE forward failed ({type(exc).__name__}: {str(exc)[:60]}), q/k/v not checked "
                f"against it"]
    finally:
        for _, h in hooks:
            h.remove()
    problems, checked = [], 0
    mods = dict(model.named_modules())
    for att in rmap.attention:
        names = [p.name.rsplit(".", 1)[0] for p in (att.q, att.k, att.v)]
        if att.cross or getattr(att, "latent", False) or any(n not in inputs for n in names):
            continue
        root = mods[att.module_name]
        calls = [(_CAPTURED[id(m)]) for m in root.modules() if id(m) in _CAPTURED]
        if len(calls) != 1:
            continue
        q, k, v = calls[0]
        xs = {r: inputs[n][0] for r, n in zip("qkv", names)}  # (s, d) per projection
        if q.dim() != 4 or any(x.dim() != 2 for x in xs.values()) or q.shape[1] != att.n_heads \
                or v.shape[1] != att.n_kv_heads:
            problems.append(f"{att.module_name}: kernel got q {tuple(q.shape)}, v {tuple(v.shape)}; "
                            f"the role map says {att.n_heads} heads, {att.n_kv_heads} kv heads")
            continue
        qk_norm = any(hasattr(root, n) or any(hasattr(m, n) for m in root.modules())
                      for n in ("q_norm", "k_norm", "q_layernorm", "k_layernorm", "query_layernorm",
                                "qk_norm"))
        for name, proj, got, n in (("v", att.v, v, att.n_kv_heads), ("q", att.q, q, att.n_heads),
                                   ("k", att.k, k, att.n_kv_heads)):
            if name != "v" and qk_norm:
                continue
            hd = att.v_head_dim if name == "v" else att.head_dim  # value heads of their own width (MiMo-V2)
            bias = proj.bias_view()
            x = xs[name].double()
            pos = slice(None) if name == "v" else slice(0, 1)
            want = torch.stack([x[pos] @ proj.cols(h * hd, (h + 1) * hd).double() +
                                (0 if bias is None else bias[h * hd:(h + 1) * hd].double())
                                for h in range(n)])
            have = got[0, :, pos].double()
            if have.shape != want.shape:
                problems.append(f"{att.module_name}: {name} shape {tuple(have.shape)} vs {tuple(want.shape)}")
                break
            c = float((have * want).sum() / want.pow(2).sum().clamp_min(1e-30))
            if name == "v":
                c = att.value_scale()  # the kernel's values are value_scale · x W_v (MiMo-V2's v_scale)
            err = float((have - c * want).abs().max() / want.abs().max().clamp_min(1e-12))
            if not err < 1e-4:
                problems.append(f"{att.module_name}: the kernel's {name} is not the role map's "
                                f"(relative error {err:.2g})")
                break
        checked += 1
    if not checked:
        return None
    return problems


def hidden_other(rmap) -> list[str]:
    """Hidden matrices (MLP/expert/router/projection by name) the role map left as ``other``."""
    return [info.name for info in rmap if str(info.roles[0]) == "other" and info.param.dim() >= 2
            and re.search(r"weight|proj", info.name.rsplit(".", 1)[-1])  # not A_log, D, dt_bias
            and _HIDDEN.search(info.name.split(".")[-2] if "." in info.name else info.name)]


def main_input(model) -> str:
    """The keyword of the model's input: its ``main_input_name``, or, for a composite whose forward
    takes a generic ``inputs`` (SpeechEncoderDecoder), its encoder's (raw audio ``input_values``
    for a wav2vec2 encoder, ``input_features`` for a Speech2Text one)."""
    name = getattr(model, "main_input_name", "input_ids")
    enc = getattr(model, "encoder", None)
    if name == "inputs" and isinstance(getattr(enc, "main_input_name", None), str):
        name = enc.main_input_name
    return name


def make_batch(model, head: str) -> tuple[dict, torch.Tensor]:
    """(forward keyword arguments, labels) for a tiny batch of 2: what a user would feed.

    The input follows the model's ``main_input_name`` (token ids, pixels, log-mel frames or raw
    audio); labels follow the head (class ids for image classification, tokens otherwise). An
    encoder-decoder also gets decoder input ids (tiny configs may lack decoder_start_token_id)."""
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    name = main_input(model)
    emb = None
    try:
        emb = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        pass
    vocab = getattr(emb, "num_embeddings", None) or getattr(cfg, "vocab_size", None) or 64
    hi = max(min(vocab, 64), 4)
    import inspect
    params = inspect.signature(model.forward).parameters
    if name == "pixel_values" and "spatial_shapes" in params:
        # SigLIP2 / NaFlex: images as flattened patches (B, h*w, C*p*p) with their grid and mask
        vc = getattr(cfg, "vision_config", None) or cfg
        p = vc.patch_size if isinstance(vc.patch_size, int) else vc.patch_size[0]
        size = getattr(vc, "image_size", None)
        side = size // p if isinstance(size, int) else int(math.isqrt(vc.num_patches))
        side = min(side, int(math.isqrt(getattr(vc, "num_patches", side * side))))
        x = torch.randn(2, side * side, getattr(vc, "num_channels", 3) * p * p, generator=g)
        kw = {name: x, "spatial_shapes": torch.tensor([[side, side]] * 2),
              "pixel_attention_mask": torch.ones(2, side * side, dtype=torch.long)}
        return kw, torch.randint(0, max(getattr(cfg, "num_labels", 2), 1), (2,), generator=g)
    if name == "pixel_values" or (name == "inputs" and head == "image"):  # (Perceiver: "inputs")
        size = getattr(cfg, "image_size", 32)
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        x = torch.randn(2, getattr(cfg, "num_channels", 3), h, w, generator=g)
    elif name == "input_features":
        if getattr(cfg, "num_mel_bins", None):  # Whisper-like: (B, mels, 2 x source positions)
            x = torch.randn(2, cfg.num_mel_bins, 2 * getattr(cfg, "max_source_positions", 16), generator=g)
        else:  # Speech2Text-like: (B, frames, features); Seamless-M4T and Canary/Cohere-ASR
            # (conformer encoders) name their feature width elsewhere
            enc = getattr(cfg, "encoder_config", None)
            feat = getattr(cfg, "feature_projection_input_dim", None) or \
                getattr(enc, "num_mel_bins", None) or \
                getattr(cfg, "input_feat_per_channel", 80) * getattr(cfg, "input_channels", 1)
            x = torch.randn(2, 32, feat, generator=g)
    elif name == "input_values":  # raw audio
        x = torch.randn(2, 4000, generator=g)
    elif name == "inputs" and head == "masked-lm" and isinstance(getattr(cfg, "max_position_embeddings", None), int):
        # Perceiver's masked LM decodes one query per position of its table: the text fills it
        x = torch.randint(3, hi, (2, cfg.max_position_embeddings), generator=g)
    else:
        x = torch.randint(3, hi, (2, 8), generator=g)
    kw = {name: x}
    vc = getattr(cfg, "vision_config", None)
    if name == "input_ids" and "pixel_values" in params and vc is not None and not any(
            "image_token" in k for k in [*vars(cfg), *getattr(type(cfg), "attribute_map", {})]):
        # GIT: the image's patch tokens are prepended to the text (no placeholder token in it),
        # and the LM loss skips that many positions: a caption batch has its image
        size = vc.image_size if isinstance(vc.image_size, int) else vc.image_size[0]
        kw["pixel_values"] = torch.randn(2, getattr(vc, "num_channels", 3), size, size, generator=g)
    per_tok = getattr(cfg, "audio_length_per_tok", None)
    if name == "input_ids" and "input_features" in params and isinstance(per_tok, int):
        # Voxtral-Realtime: text conditioned on audio frame by frame -- the forward requires both,
        # the audio tower turning audio_length_per_tok frames into each token's embedding
        ac = getattr(cfg, "audio_config", None) or cfg
        kw["input_features"] = torch.randn(2, ac.num_mel_bins, x.shape[1] * per_tok, generator=g)
    if head == "image" and not (name == "input_ids" and getattr(cfg, "text_config", None) is not None):
        # (ShieldGemma2 classifies with a prompted language model, which takes token labels)
        return kw, torch.randint(0, max(getattr(cfg, "num_labels", 2), 1), (2,), generator=g)
    dec = getattr(cfg, "decoder_config", None)
    codebooks = getattr(dec, "num_channels", None) if getattr(cfg, "is_encoder_decoder", False) else None
    if isinstance(codebooks, int) and name == "input_ids":
        # Dia: the decoder reads audio codes, one per codebook per step, (B, T, codebooks), and its
        # loss takes them per codebook, (B x codebooks, T); codes below the decoder's vocabulary
        codes = torch.randint(0, min(dec.vocab_size, 64), (2, 5, codebooks), generator=g)
        kw["decoder_input_ids"] = codes
        return kw, codes.transpose(1, 2).reshape(2 * codebooks, 5)
    if getattr(cfg, "is_encoder_decoder", False):
        labels = torch.randint(3, hi, (2, 5), generator=g)
        kw["decoder_input_ids"] = labels
        return kw, labels
    return kw, x if not x.is_floating_point() else torch.randint(3, hi, (2, 5), generator=g)


def _logits(out) -> torch.Tensor:
    t = getattr(out, "logits", None)
    if t is None:
        t = out[0] if isinstance(out, (tuple, list)) else out
    return t


def _loss(model, kw: dict, labels: torch.Tensor) -> torch.Tensor:
    out = model(**kw, labels=labels)
    loss = getattr(out, "loss", None)
    return loss if loss is not None else _logits(out).float().pow(2).mean()


def _normalized(x: torch.Tensor, eps: float) -> list[torch.Tensor]:
    """x normalized over its last axis the two ways a norm may (LayerNorm, RMSNorm), unit gain."""
    ln = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    rms = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return [ln, rms]


def inits_check(fresh, head: str) -> list[str]:
    """trunc_normal / mu / small_init through ``init_``: only tensors of the scheme's roles change,
    frozen tensors do not, every norm the scheme wrote still computes the unit-gain normalization
    (Gemma's x(1+w) included), and every weight is finite."""
    import initlab
    owned_of = {s.name: set(s.roles) for s in initlab.list_schemes()}
    problems = []
    for scheme in INITS:
        model = fresh()
        rmap = initlab.role_map(model)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        initlab.init_(model, scheme, generator=torch.Generator().manual_seed(1), role_map=rmap)
        owned = owned_of[scheme]
        if "mlp_in" in owned:  # schemes treat gates and routers as mlp_in (schemes/spec.py)
            owned |= {"mlp_gate", "router"}
        changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
        for n in sorted(changed):
            info = rmap.params.get(n)
            roles_ = {str(r) for r in info.roles} if info is not None else {"?"}
            if not model.get_parameter(n).requires_grad:
                problems.append(f"{scheme} wrote frozen {n}")
            elif not roles_ & owned:
                problems.append(f"{scheme} changed {n} (role {'+'.join(sorted(roles_))}), not its own")
            if not torch.isfinite(model.get_parameter(n)).all():
                problems.append(f"{scheme} left {n} not finite")
        for mname, mod in model.named_modules():
            w = getattr(mod, "weight", None)
            if not isinstance(w, torch.nn.Parameter) or w.dim() != 1 or not any(
                    f"{mname}.{pn}" in changed for pn, _ in mod.named_parameters(recurse=False)):
                continue
            info = rmap.params.get(f"{mname}.weight")
            if info is None or "norm" not in {str(r) for r in info.roles}:
                continue
            eps = next((float(getattr(mod, a)) for a in ("eps", "variance_epsilon", "epsilon")
                        if isinstance(getattr(mod, a, None), (int, float))), 1e-6)
            x = torch.randn(3, w.shape[0], generator=torch.Generator().manual_seed(2)).to(w.dtype)
            try:
                with torch.no_grad():
                    y = mod(x)
            except Exception:  # noqa: BLE001 - a norm with extra inputs (gated): not checked
                continue
            if isinstance(y, tuple):
                y = y[0]
            if not any(torch.allclose(y.float(), ref.float(), rtol=1e-3, atol=1e-3)
                       for ref in _normalized(x.float(), eps)):
                ratio = float(y.float().abs().mean() / _normalized(x.float(), eps)[1].abs().mean())
                problems.append(f"{scheme}: norm {mname} computes {ratio:.3g}x the unit-gain output")
                break
        if problems:
            break
    return problems


def probe_check(fresh, head: str) -> list[str]:
    """``probe_model`` on a tiny batch of the model's own input returns a report."""
    import initlab
    model = fresh()
    kw, _ = make_batch(model, head)
    main = main_input(model)
    # the batch alone, or every input when the model needs more than it (SigLIP2's patch grid,
    # Voxtral-Realtime's audio, Dia's per-codebook decoder codes)
    dec = kw.get("decoder_input_ids")
    whole = set(kw) - {main, "decoder_input_ids"} or (dec is not None and dec.dim() != 2)
    report = initlab.probe_model(model, kw if whole else kw[main])
    return [] if report is not None else ["probe_model returned nothing"]


def train_check(fresh, head: str) -> list[str]:
    """parametrize mu, ``param_groups`` + AdamW, 2 steps: finite losses, every trained tensor
    that received a non-zero gradient moves, every trainable tensor is in a group."""
    import initlab
    model = fresh()
    model.train()
    rmap = initlab.role_map(model)
    initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(3), role_map=rmap)
    groups = initlab.param_groups(model, "mu", lr=1e-3, role_map=rmap)
    listed = {id(p) for g in groups for p in g["params"]}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    problems = [f"param_groups leaves {n} out" for n, p in model.named_parameters()
                if p.requires_grad and id(p) not in listed][:2]
    opt = torch.optim.AdamW(groups)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    kw, labels = make_batch(model, head)
    got_grad = set()
    for _ in range(2):
        opt.zero_grad()
        loss = _loss(model, kw, labels)
        if not torch.isfinite(loss):
            return problems + [f"loss {float(loss)} not finite"]
        loss.backward()
        got_grad |= {n for n, p in model.named_parameters()
                     if p.grad is not None and bool(p.grad.detach().abs().sum() > 0)}
        opt.step()
    lr0 = {id(p) for g in groups if g.get("lr", 0) > 0 for p in g["params"]}
    still = [n for n in trainable if n in got_grad and id(model.get_parameter(n)) in lr0
             and torch.equal(model.get_parameter(n).detach(), before[n])]
    if still:
        problems.append(f"{len(still)} trained tensors did not move, e.g. {still[0]}")
    return problems


def persist_check(fresh, head: str) -> tuple[list[str], str | None]:
    """parametrize mu, ``save_pretrained`` -> ``from_pretrained`` (a temporary directory) ->
    ``initlab.restore_`` (the documented reload step): the reloaded model computes the same logits.
    (problems, note)"""
    import tempfile
    import initlab
    model = fresh()
    model.eval()
    initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(4))
    kw, labels = make_batch(model, head)
    extra = {}
    with torch.no_grad():
        want = _logits(model(**kw, **extra)).float()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            again = type(model).from_pretrained(tmp).eval()
    initlab.restore_(again)
    with torch.no_grad():
        got = _logits(again(**kw, **extra)).float()
    if got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-5):
        return [], None
    ratio = float(want.abs().max() / got.abs().max().clamp_min(1e-30)) if got.shape == want.shape else float("nan")
    return [f"logits differ after save_pretrained/from_pretrained (max |before|/|after| = {ratio:.3g})"], None


def check(head: str, model_type: str, timeout: int = 120, vocab: int | None = None,
          steps: tuple[str, ...] = STEPS) -> Result:
    """The journey for one type: build tiny, then each step of ``steps`` on a fresh copy."""
    import copy
    import initlab
    from initlab.errors import InitlabError
    res = Result(head, model_type)
    t0 = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    try:
        try:
            model, res.cls = build(head, model_type, vocab=vocab)
        except _Timeout:
            raise
        except Exception as exc:  # noqa: BLE001 - many configs cannot be built tiny
            res.build = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            return res
        from initlab.roles.adapters_hybrid import mixer_kind  # linear/SSM "attention" is a mixer
        mods = dict(model.named_modules())
        res.has_attention = any(not mixer_kind(mods[n]) and not _NOT_SOFTMAX_CLASS.search(type(mods[n]).__name__)
                                for n in attention_modules(model)) or any(
            isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
        res.notes += [] if res.has_attention or not attention_modules(model) else [
            "attention-named modules are all state-space / linear / additive attention"]
        fresh = lambda: copy.deepcopy(model)  # noqa: E731 - every step starts from the built model
        for stage in STEPS:
            if stage not in steps:
                setattr(res, stage, "ok" if stage != "roles" else res.roles)
                continue
            try:
                if stage == "roles":
                    work = fresh()
                    rmap = initlab.role_map(work)
                    res.adapter, res.attention = rmap.adapter, len(rmap.attention)
                    missing = uncovered_attention(work, rmap)
                    probs = [f"attention not mapped: {', '.join(missing[:3])}"] if missing else []
                    others = hidden_other(rmap)
                    if others:
                        probs.append(f"hidden matrices with role other: {', '.join(others[:3])}"
                                     f"{' ...' if len(others) > 3 else ''}")
                    if not probs and head != "speech-seq2seq":
                        fc = forward_check(work, rmap, "image" if head == "image" else "lm")
                        if fc is None and any(getattr(a, "latent", False) for a in rmap.attention):
                            res.notes.append("latent (MLA) layers: composite q/k/v, checked by the mimetic step")
                            fc = []
                        if fc is None:
                            res.notes.append("q/k/v not checked against the forward (no attention interface)")
                            fc = []
                        res.notes += [p[5:] for p in fc if p.startswith("NOTE ")]
                        probs += [p for p in fc if not p.startswith("NOTE ")]
                elif stage == "mimetic":
                    work = fresh()
                    probs = mimetic_check(work, initlab.role_map(work), head)
                elif stage == "inits":
                    probs = inits_check(fresh, head)
                elif stage == "probe":
                    probs = probe_check(fresh, head)
                elif stage == "train":
                    probs = train_check(fresh, head)
                else:
                    probs, _ = persist_check(fresh, head)
                setattr(res, stage, "ok" if not probs else "wrong: " + "; ".join(probs[:2]))
            except _Timeout:
                raise
            except InitlabError as exc:
                setattr(res, stage, "refused: " + str(exc).splitlines()[0][:300])
            except Exception as exc:  # noqa: BLE001
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                setattr(res, stage, f"bug: {type(exc).__name__}: {str(exc)[:160]} "
                                    f"({tb.filename.split('/')[-1]}:{tb.lineno})")
            if stage == "roles" and res.roles != "ok":
                break  # nothing else can run without a role map
    except _Timeout:
        res.notes.append(f"timed out after {timeout}s")
        if res.build == "ok" and not res.cls:
            res.build = "timeout"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        res.seconds = round(time.perf_counter() - t0, 2)
    return res


def types_of(head: str) -> list[str]:
    from transformers.models.auto import modeling_auto
    return sorted(getattr(modeling_auto, HEADS[head]))


def _cell(s: str) -> str:
    s = s.replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= 140 else s[:137] + "..."


# known causes of failing steps, matched on "step: message" (first match wins), for the report
CAUSES = (
    (r"^probe: refused", "probe_model refused (reason in the row)"),
    (r"^probe: ", "probe_model does not run on this model (issue 18 item 3)"),
    (r"norm .* computes 2x", "a scheme wrote 1 into an x(1+w) norm gain: gain 2 (issue 18 item 1)"),
    (r"wrote frozen", "a scheme wrote a frozen tensor (issue 18 item 1)"),
    (r"^persist: wrong: logits differ", "the mu head multiplier is lost on reload (issue 18 item 2)"),
    (r"^mimetic: wrong: .*(EncDec|off by)", "mimetic identities off (cross-attention drawn as self?)"),
    (r"^roles: refused: .*no softmax attention", "refused: no softmax attention layer"),
    (r"^roles: refused", "refused by the role map (reason in the row)"),
    (r"^mimetic: refused", "mimetic refused (reason in the row)"),
    (r"hidden matrices with role other", "a hidden matrix left as role other"),
    (r"^(train|persist|inits): bug: .*(modeling_|configuration_)", "the tiny model's own forward fails"),
)


def cause_of(r: Result) -> str:
    msg = r.first_failure
    return next((label for rx, label in CAUSES if re.search(rx, msg)), "other: " + msg.split(":", 2)[0])


def stats(rs: list[Result]) -> dict:
    b = [r for r in rs if r.buildable]
    ns = [r for r in b if r.not_softmax]
    pool = [r for r in b if r.has_attention]  # the denominator: types with softmax attention
    works = [r for r in pool if r.works]
    refused = [r for r in pool if not r.works and r.first_failure.split(": ", 1)[1].startswith("refused")]
    out = dict(types=len(rs), buildable=len(b), attention=len(pool), not_softmax=len(ns), works=len(works),
               refused=len(refused), failing=len(pool) - len(works) - len(refused),
               coverage=f"{len(works)}/{len(pool)} = {100 * len(works) / max(len(pool), 1):.0f}%")
    for step in STEPS:
        out[step] = sum(1 for r in pool if getattr(r, step) == "ok")
    return out


def _short(s: str) -> str:
    if s == "ok" or not s:
        return s or "-"
    return _cell(s.split(":", 1)[0] + ": " + s.split(":", 1)[1].strip()[:70])


def render(results: list[Result], command: str, wall: str = "") -> str:
    heads = [h for h in HEADS if any(r.head == h for r in results)]
    lines = ["# Hugging Face coverage: the journey", "",
             "Every model type of the installed transformers' causal-LM, masked-LM, "
             "image-classification, seq2seq and speech-seq2seq auto mappings, built from its config "
             f"at tiny size (d={D}, {LAYERS} layers -- hybrids keep one layer of each kind, "
             f"{N_HEADS} heads, {N_KV} KV heads where the config uses GQA), never `from_pretrained` "
             "on a hub name (values the config derives from the shrunk ones re-derived, token ids "
             "the model holds kept inside its vocabulary, a language-id model's default language set "
             "as its docs say), goes through what a user does with initlab, each step on a fresh copy:",
             "",
             "1. **roles**: `initlab.role_map` maps every attention module (hybrids: the softmax "
             "layers; DeepSeek MLA as latent attention), no hidden matrix is left as `other`, and "
             "the q/k/v the map names are those the model hands its attention kernel;",
             "2. **mimetic**: `mimetic_` gives the product identities (re-drawn targets, float64, "
             "1e-5; MLA: the best products its down-projections allow, docs/mimetic.md) and "
             "changes nothing but trainable self-attention Q/K/V/O (cross-attention and frozen "
             "layers untouched);",
             "3. **inits**: `init_` with " + ", ".join(f"`{s}`" for s in INITS) + ": only tensors "
             "of the scheme's roles (`list_schemes`) change, frozen tensors do not, a norm the "
             "scheme wrote computes the unit-gain normalization (Gemma's x(1+w) included);",
             "4. **probe**: `probe_model` on a batch of the model's own input -- what its forward "
             "takes, built from its config and signature (token ids, images or flattened patches with "
             "their grid, log-mel frames, raw audio for a wav2vec2 encoder, the audio frames under "
             "each token, per-codebook decoder codes, a caption's image), the whole set of inputs "
             "when it needs more than one;",
             "5. **train**: `parametrize_(mu)`, `param_groups(mu)` + 2 AdamW steps: every trainable "
             "tensor in a group, finite losses, every trained tensor that gets a gradient moves;",
             "6. **persist**: `parametrize_(mu)`, `save_pretrained` -> `from_pretrained` (a temporary "
             "directory): the same logits.",
             "",
             "A type **passes** when every step is ok. *refused*: initlab raised its own error with "
             "the reason (in the table below); *wrong*: a check failed; *bug*: any other exception.",
             "", "Command (one thread" + (f"; {wall}" if wall else "") + "):", "", "```", command, "```", ""]
    import transformers
    lines += [f"transformers {transformers.__version__}, torch {torch.__version__}.", ""]
    lines += ["| head | types | buildable | no softmax attention (refused) | with softmax attention | "
              + " | ".join(STEPS) + " | **all steps** | refused | failing |",
              "|---" * (8 + len(STEPS)) + "|"]
    for head in heads + ["all"]:
        st = stats([r for r in results if head == "all" or r.head == head])
        lines.append(f"| {head} | {st['types']} | {st['buildable']} | {st['not_softmax']} | {st['attention']} | "
                     + " | ".join(str(st[s]) for s in STEPS) +
                     f" | {st['coverage']} | {st['refused']} | {st['failing']} |")
    lines += ["", "Step columns count the types with softmax attention whose step is ok (a step "
              "after a failed role map is not run); *all steps* is the share passing every step. "
              "*no softmax attention*: types whose attention-named modules are all state-space, "
              "linear or additive attention (Mamba, RWKV, MobileViT-v2, SwiftFormer), refused with "
              "that reason and left out of the share. *failing*: neither passing nor refused.", "",
              "## Why types do not pass (first failing step, by cause)", "",
              "| cause | types |", "|---|---|"]
    causes: dict = {}
    for r in results:
        if r.buildable and r.has_attention and not r.works:
            causes.setdefault(cause_of(r), []).append(r.model_type)
    for label, types in sorted(causes.items(), key=lambda kv: -len(kv[1])):
        names = ", ".join(sorted(set(types)))
        lines.append(f"| {_cell(label)} | {len(types)}: {names if len(types) < 40 else _cell(names)} |")
    lines += ["",
              "## Types that do not pass every step", "",
              "| head | type | first failing step |", "|---|---|---|"]
    for r in results:
        if r.buildable and r.has_attention and not r.works:
            lines.append(f"| {r.head} | {r.model_type} | {_cell(r.first_failure)} |")
    lines += ["", "A step that fails after an earlier one is in the per-type table below."]
    lines += ["", "## Every type", "",
              "| head | type | class | " + " | ".join(STEPS) + " | adapter | s | notes |",
              "|---" * (6 + len(STEPS)) + "|"]
    for r in results:
        if not r.buildable:
            continue
        lines.append("| " + " | ".join(_cell(x) for x in (
            r.head, r.model_type + ("" if r.has_attention else " (no attention)"), r.cls,
            *(_short(getattr(r, s)) for s in STEPS), r.adapter, f"{r.seconds:.0f}",
            "; ".join(r.notes))) + " |")
    lines += ["", "## Not buildable at tiny size", "",
              "| head | type | why |", "|---|---|---|"]
    for r in results:
        if not r.buildable:
            lines.append(f"| {r.head} | {r.model_type} | {_cell(r.build)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the markdown report here (e.g. docs/coverage.md)")
    ap.add_argument("--json", help="also write the raw results as JSON")
    ap.add_argument("--types", help="comma-separated model types to check (default: all)")
    ap.add_argument("--heads", default=",".join(HEADS), help="comma-separated: " + ",".join(HEADS))
    ap.add_argument("--steps", default=",".join(STEPS), help="comma-separated: " + ",".join(STEPS))
    ap.add_argument("--timeout", type=int, default=180)
    ap.add_argument("--vocab", type=int, default=512,
                    help="vocabulary size where the config's special token ids allow (0: the config's)")
    ap.add_argument("--merge", help="JSON of a full run: re-check only --types and keep the rest")
    ap.add_argument("--render", help="JSON of a run: write --out from it, checking nothing")
    ap.add_argument("--wall", help="with --render: the run's wall time, as text")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.render:
        with open(args.render) as f:
            results = [Result(**{k: v for k, v in r.items() if k in Result.__dataclass_fields__})
                       for r in json.load(f)]
        cmd = "OMP_NUM_THREADS=1 PYTHONPATH=src python tools/hf_coverage.py --json run.json --out docs/coverage.md"
        with open(args.out, "w") as f:
            f.write(render(results, cmd, args.wall or ""))
        return 0
    wanted = set(args.types.split(",")) if args.types else None
    steps = tuple(s for s in args.steps.split(",") if s)
    results = []
    t0 = time.perf_counter()
    for head in args.heads.split(","):
        for t in types_of(head):
            if wanted and t not in wanted:
                continue
            r = check(head, t, args.timeout, vocab=args.vocab or None, steps=steps)
            results.append(r)
            status = ("passes" if r.works else "not buildable" if not r.buildable else
                      "; ".join(f"{st}: {getattr(r, st)[:60]}" for st in STEPS if getattr(r, st) != "ok"))
            print(f"{head:14s} {t:28s} {r.seconds:6.1f}s  {status[:150]}", flush=True)
    wall = time.perf_counter() - t0
    if args.merge:
        with open(args.merge) as f:
            old = [Result(**{k: v for k, v in r.items() if k in Result.__dataclass_fields__})
                   for r in json.load(f)]
        new = {(r.head, r.model_type): r for r in results}
        results = [new.pop((r.head, r.model_type), r) for r in old] + list(new.values())
    for head in [h for h in HEADS if any(r.head == h for r in results)] + ["all"]:
        st = stats([r for r in results if head == "all" or r.head == head])
        print(f"{head}: all steps {st['coverage']}, " + ", ".join(f"{s} {st[s]}" for s in STEPS) +
              f", refused {st['refused']}, failing {st['failing']}")
    print(f"wall time {wall:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    if args.out:
        cmd = "OMP_NUM_THREADS=1 PYTHONPATH=src python tools/hf_coverage.py --out docs/coverage.md"
        with open(args.out, "w") as f:
            f.write(render(results, cmd, "" if args.merge else f"{wall / 60:.0f} min on a shared 2-core CPU"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
