"""Coverage sweep: initlab on every model type of the installed transformers' auto mappings.

For each type of the causal-LM, masked-LM and image-classification auto mappings, build the model
from its (shrunk) config -- d=64, 2 layers, 4 heads, 2 KV heads where the config has GQA -- never
``from_pretrained``, then check:

* **roles**: ``initlab.role_map(model)`` builds, and every attention-like module of the model lies
  inside (or around) a mapped attention layer (no silently skipped tower/layer);
* **mimetic**: ``mimetic_`` runs, the product identities hold through the role map's views
  (W_q^h W_k^gᵀ = A_h P_g, Σ W_v W_o = B or its best low-rank truncation, float64 targets re-drawn
  from the same generator) and every tensor outside Q/K/V/O (and their biases) is bit-identical;
* **mu**: ``parametrize_(model, "mu")`` and ``param_groups(model, "mu")`` run, and no hidden
  matrix (MLP/expert/router/projection by name) was left with role ``other``.

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
}
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
    "embedding_size": D, "max_window_layers": LAYERS, "emb_dim": D, "input_embedding_size": D,
    "output_embedding_size": D, "rotary_dim": 8, "window_size": 4,
}
_KV = ("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num",
       "n_head_kv", "num_key_value_groups_heads")


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
    if getattr(cfg, "vocab_size", None) and cfg.vocab_size > 4096 and "pad_token_id" in cfg.__dict__:
        pass  # vocabularies keep their size: special token ids index into them
    for name, sub in list(cfg.__dict__.items()):
        if _is_config(sub):
            shrink(sub)


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
        if isinstance(cfg.__dict__.get("hybrid_layer_ids"), list):  # zamba2
            _set(cfg, "hybrid_layer_ids", [i for i, k in enumerate(cfg.layers_block_type) if k == "hybrid"])
    else:
        for key, old in lists.items():
            if len(old) > LAYERS:
                new = old[:LAYERS]
                if "heads" in key and all(isinstance(v, int) for v in new):
                    new = [N_HEADS] * LAYERS
                _set(cfg, key, new)
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
    roles: str = ""  # ok | refused: msg | bug: msg
    mimetic: str = ""
    mu: str = ""
    adapter: str = ""
    attention: int = 0
    notes: list = field(default_factory=list)
    seconds: float = 0.0
    has_attention: bool = True

    @property
    def not_softmax(self) -> bool:
        return "not a softmax-attention Transformer" in self.roles

    @property
    def buildable(self) -> bool:
        return self.build == "ok"

    @property
    def works(self) -> bool:
        return self.roles == "ok" and self.mimetic == "ok" and self.mu == "ok"


_HIDDEN = re.compile(r"(mlp|expert|router|gate|ffn|feed_forward|fc\d|dense|proj|wi|wo|c_fc|linear)",
                     re.I)


def build(head: str, model_type: str, *, vocab: int | None = None):
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    cls_name = getattr(modeling_auto, HEADS[head])[model_type]
    cfg = CONFIG_MAPPING[model_type]()
    shrink(cfg)
    if vocab is not None:  # tests: a small vocabulary when the config's special tokens allow it
        for c in [cfg] + [v for v in cfg.__dict__.values() if _is_config(v)]:
            ids = [getattr(c, k, None) for k in ("pad_token_id", "bos_token_id", "eos_token_id",
                                                  "decoder_start_token_id", "sep_token_id")]
            flat = [i for x in ids for i in (x if isinstance(x, (list, tuple)) else [x])
                    if isinstance(i, int)]
            if isinstance(c.__dict__.get("vocab_size"), int) and all(i < vocab for i in flat):
                _set(c, "vocab_size", vocab)
    auto = {"causal-lm": "AutoModelForCausalLM", "masked-lm": "AutoModelForMaskedLM",
            "image": "AutoModelForImageClassification"}[head]
    import transformers
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(transformers, auto).from_config(cfg)
    return model.eval(), cls_name


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

    names = attention_modules(model)
    return [n for n in names if not any(related(n, m) for m in mapped)
            and not any(n.startswith(o + ".") for o in names if o != n and any(related(o, m) for m in mapped))]


def _targets(rmap, cfg: dict, seed: int):
    from initlab.mimetic import draw_targets
    g = torch.Generator().manual_seed(seed)
    out = []
    for att in rmap.attention:  # drawn in the order mimetic_ draws: self-attention layers only
        out.append(None if att.cross else draw_targets(att, **cfg, dist="uniform", generator=g))
    return out


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
    for att, drawn in zip(rmap.attention, targets):
        if att.cross:  # mimetic_ leaves cross-attention alone (checked below: bit-identical)
            continue
        a, b = drawn
        k, d = att.head_dim, att.d_model
        expect = ([_truncate(a[h], min(k, d)) for h in range(att.n_heads)]
                  if att.n_kv_heads == att.n_heads else _group_projected(a, min(k, d), att.n_kv_heads))
        for h in range(att.n_heads):
            err = (att.qk_product(h) - expect[h]).abs().max().item()
            if not err < 1e-5:
                problems.append(f"{att.module_name} head {h}: QK off by {err:.2g}")
                break
        m = att.n_kv_heads * k
        want = b if m >= d else _truncate(b, m)
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
        if att.cross:
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
        if att.cross or any(n not in inputs for n in names):
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
        hd = att.head_dim
        for name, proj, got, n in (("v", att.v, v, att.n_kv_heads), ("q", att.q, q, att.n_heads),
                                   ("k", att.k, k, att.n_kv_heads)):
            if name != "v" and qk_norm:
                continue
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
                c = 1.0
            err = float((have - c * want).abs().max() / want.abs().max().clamp_min(1e-12))
            if not err < 1e-4:
                problems.append(f"{att.module_name}: the kernel's {name} is not the role map's "
                                f"(relative error {err:.2g})")
                break
        checked += 1
    if not checked:
        return None
    return problems


def mu_check(model, rmap) -> list[str]:
    from initlab.parametrization import param_groups, parametrize_
    parametrize_(model, "mu", generator=torch.Generator().manual_seed(3), role_map=rmap)
    groups = param_groups(model, "mu", lr=1e-3, role_map=rmap)
    n_group = sum(len(g["params"]) for g in groups)
    n_train = sum(1 for info in rmap if info.param.requires_grad)
    problems = []
    if n_group != n_train:
        problems.append(f"param_groups lists {n_group} of {n_train} trainable tensors")
    others = [info.name for info in rmap if str(info.roles[0]) == "other" and info.param.dim() >= 2
              and _HIDDEN.search(info.name.split(".")[-2] if "." in info.name else info.name)]
    if others:
        problems.append(f"hidden matrices with role other: {', '.join(others[:3])}"
                        f"{' ...' if len(others) > 3 else ''}")
    for n, p in model.named_parameters():
        if p.is_floating_point() and not torch.isfinite(p).all():
            problems.append(f"{n} not finite after parametrize_")
            break
    return problems


def check(head: str, model_type: str, timeout: int = 120, vocab: int | None = None) -> Result:
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
        res.has_attention = bool(attention_modules(model)) or any(
            isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
        stage = "roles"
        try:
            rmap = initlab.role_map(model)
            res.adapter, res.attention = rmap.adapter, len(rmap.attention)
            missing = uncovered_attention(model, rmap)
            if missing:
                res.roles = f"partial: attention not mapped: {', '.join(missing[:3])}"
                return res
            res.roles = "ok"
            stage = "mimetic"
            probs = forward_check(model, rmap, head)
            if probs is None:
                res.notes.append("q/k/v not checked against the forward (no attention interface)")
                probs = []
            res.notes += [p[5:] for p in probs if p.startswith("NOTE ")]
            probs = [p for p in probs if not p.startswith("NOTE ")]
            probs += mimetic_check(model, rmap, head)
            res.mimetic = "ok" if not probs else "wrong: " + "; ".join(probs[:2])
            stage = "mu"
            probs = mu_check(model, rmap)
            res.mu = "ok" if not probs else "incomplete: " + "; ".join(probs[:2])
        except _Timeout:
            raise
        except InitlabError as exc:
            setattr(res, stage, "refused: " + str(exc).splitlines()[0][:300])
        except Exception as exc:  # noqa: BLE001
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            setattr(res, stage, f"bug: {type(exc).__name__}: {str(exc)[:160]} "
                                f"({tb.filename.split('/')[-1]}:{tb.lineno})")
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


def stats(rs: list[Result]) -> dict:
    b = [r for r in rs if r.buildable]
    att = [r for r in b if r.has_attention]
    ns = [r for r in att if r.not_softmax]
    pool = [r for r in att if not r.not_softmax]
    works = [r for r in pool if r.works]
    refused = [r for r in pool if not r.works and "refused" in (r.roles + r.mimetic + r.mu)]
    rm = [r for r in pool if r.roles == "ok" and r.mimetic == "ok"]
    return dict(types=len(rs), buildable=len(b), attention=len(att), not_softmax=len(ns),
                works=len(works), roles_mimetic=len(rm), refused=len(refused),
                failing=len(pool) - len(works) - len(refused),
                coverage=f"{len(works)}/{len(pool)} = {100 * len(works) / max(len(pool), 1):.0f}%")


def render(results: list[Result], command: str, before: dict | None = None) -> str:
    lines = ["# Hugging Face coverage", "",
             "Every model type of the installed transformers' causal-LM, masked-LM and "
             "image-classification auto mappings, built from its config at tiny size "
             f"(d={D}, {LAYERS} layers, {N_HEADS} heads, {N_KV} KV heads where the config uses GQA), "
             "never `from_pretrained`. A type **works** when `initlab.role_map` maps every attention "
             "layer, `mimetic_` gives the product identities (checked against re-drawn targets, "
             "1e-5, float64) without touching anything else, and `parametrize_`/`param_groups` "
             "for mu run with no hidden matrix left as role `other`. **Refused** types raise "
             "initlab's own error with the reason (linear attention, state-space layers, ...).",
             "", "Command (one thread; a few minutes):", "", "```", command, "```", ""]
    import transformers
    lines += [f"transformers {transformers.__version__}, torch {torch.__version__}.", ""]
    lines += ["| head | types | buildable | with attention | not softmax (refused) | **works** | "
              "coverage | roles+mimetic | refused otherwise | failing |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for head in list(HEADS) + ["all"]:
        st = stats([r for r in results if head == "all" or r.head == head])
        lines.append(f"| {head} | {st['types']} | {st['buildable']} | {st['attention']} | "
                     f"{st['not_softmax']} | {st['works']} | {st['coverage']} | "
                     f"{st['roles_mimetic']} | {st['refused']} | {st['failing']} |")
    lines += ["", "*coverage* = works / (buildable types with attention, less those refused as not "
              "softmax attention). *roles+mimetic*: the role map and the mimetic identities alone "
              "(the criterion of the issue that started this table). *failing*: mapped partly or "
              "wrongly, or a hidden matrix left as `other`, or a bug: see the notes."]
    if before:
        lines += ["", "Before the adapter work of issue 14 (same sweep on the branch point, "
                  "`--json` of that run): " + "; ".join(
                      f"{h}: works {v['works']}, coverage {v['coverage']}, roles+mimetic "
                      f"{v['roles_mimetic']}" for h, v in before.items()) + "."]
    lines += ["", "| head | type | class | roles | mimetic | mu | adapter | notes |",
              "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if not r.buildable:
            continue
        lines.append("| " + " | ".join(_cell(x) for x in (
            r.head, r.model_type, r.cls, r.roles or "-", r.mimetic or "-", r.mu or "-", r.adapter,
            "; ".join(r.notes))) + " |")
    lines += ["", "## Not buildable at tiny size", "",
              "| head | type | why |", "|---|---|---|"]
    for r in results:
        if not r.buildable:
            lines.append(f"| {r.head} | {r.model_type} | {_cell(r.build)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="write the markdown table here (e.g. docs/coverage.md)")
    ap.add_argument("--json", help="also write the raw results as JSON")
    ap.add_argument("--types", help="comma-separated model types to check (default: all)")
    ap.add_argument("--heads", default=",".join(HEADS), help="comma-separated: " + ",".join(HEADS))
    ap.add_argument("--before", help="JSON of a previous run, for the before/after line")
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--merge", help="JSON of a full run: re-check only --types and keep the rest")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import transformers
    transformers.logging.set_verbosity_error()
    wanted = set(args.types.split(",")) if args.types else None
    results = []
    for head in args.heads.split(","):
        for t in types_of(head):
            if wanted and t not in wanted:
                continue
            r = check(head, t, args.timeout)
            results.append(r)
            status = ("works" if r.works else "not buildable" if not r.buildable
                      else (r.roles if r.roles != "ok" else r.mimetic if r.mimetic != "ok" else r.mu))
            print(f"{head:10s} {t:28s} {r.seconds:6.1f}s  {status[:150]}", flush=True)
    for head in list(HEADS) + ["all"]:
        st = stats([r for r in results if head == "all" or r.head == head])
        print(f"{head}: coverage {st['coverage']}, roles+mimetic {st['roles_mimetic']}, "
              f"not softmax {st['not_softmax']}, refused {st['refused']}, failing {st['failing']}")
    if args.merge:
        with open(args.merge) as f:
            old = [Result(**{k: v for k, v in r.items() if k in Result.__dataclass_fields__})
                   for r in json.load(f)]
        new = {(r.head, r.model_type): r for r in results}
        results = [new.pop((r.head, r.model_type), r) for r in old] + list(new.values())
        for head in list(HEADS) + ["all"]:
            st = stats([r for r in results if head == "all" or r.head == head])
            print(f"merged {head}: coverage {st['coverage']}, roles+mimetic {st['roles_mimetic']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    if args.out:
        before = None
        if args.before:
            with open(args.before) as f:
                old = [Result(**{k: v for k, v in r.items() if k in Result.__dataclass_fields__})
                       for r in json.load(f)]
            attn = {(r.head, r.model_type): r.has_attention for r in results}
            for r in old:  # the old run did not record it; a type's modules did not change
                r.has_attention = attn.get((r.head, r.model_type), r.has_attention)
                if (r.head, r.model_type) in attn and not any(
                        x.not_softmax for x in results if (x.head, x.model_type) == (r.head, r.model_type)):
                    continue
                if r.roles.startswith("refused") and any(
                        x.not_softmax for x in results if (x.head, x.model_type) == (r.head, r.model_type)):
                    r.roles = "refused: not a softmax-attention Transformer (as classified now)"
            before = {h: stats([r for r in old if r.head == h]) for h in HEADS}
        cmd = "OMP_NUM_THREADS=1 PYTHONPATH=src python tools/hf_coverage.py --out docs/coverage.md"
        with open(args.out, "w") as f:
            f.write(render(results, cmd, before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
