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

from torch import nn

from ..errors import RoleMapError
from .core import RoleMap
from .mapping import roles_from_mapping
from .registry import register_adapter

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
    "head": ["**.pooler.dense", "cls.**", "classifier", "qa_outputs"],
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


def is_transformers_model(model: nn.Module) -> bool:
    return type(model).__module__.split(".")[0] == "transformers"


def hf_roles(model: nn.Module) -> RoleMap:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    candidates = [(model_type, spec) for spec in FAMILIES.get(model_type, [])]
    candidates += [(fam, spec) for fam, specs in FAMILIES.items() if fam != model_type for spec in specs]
    errors = []
    for fam, spec in candidates:
        try:
            return roles_from_mapping(model, {**spec, "strict": False},
                                      adapter=f"transformers.{fam}", require_matches=False)
        except RoleMapError as exc:
            errors.append(f"{fam}: {exc}")
    raise RoleMapError(
        f"initlab knows GPT-2, BERT, ViT and LLaMA-style layouts of transformers models; "
        f"{type(model).__name__} (model_type={model_type!r}) matches none of them. Pass an explicit "
        f"mapping to initlab.role_map(model, mapping=...) (see docs/adapters.md).")


register_adapter("transformers", is_transformers_model, hf_roles)
