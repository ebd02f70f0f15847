"""See the attention weights: per layer, W_q W_kᵀ per head and W_v W_o, as numbers and heatmaps.

The paper's Figure 1 observation (arXiv 2305.09828): in a pre-trained ViT, W_q^h W_k^hᵀ has a
clearly positive diagonal and W_v W_o a negative one. :func:`attention_stats` measures that for
any model the role map knows; :func:`load_for_weights` loads a freshly built initlab preset or a
local checkpoint (safetensors file, ``torch.save`` state dict, Hugging Face model folder).

Numbers per product P (d x d, in the x ↦ x·P convention, computed in float64):

* ``diag``: mean of the diagonal, tr(P)/d;
* ``ratio``: mean diagonal over the root-mean-square of the off-diagonal entries (≈ 0 for
  random init; mimetic at d=192: QK ≈ +8, VO ≈ −14);
* ``sign``: ``+`` or ``-`` of the mean diagonal (for QK, also how many heads are positive).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import CheckpointError, InitlabError
from .output import text_table
from .roles import RoleMap, roles, roles_from_mapping
from .roles.persist import restore_


@dataclass
class ProductStats:
    diag: float
    ratio: float

    @property
    def sign(self) -> str:
        return "+" if self.diag > 0 else "-" if self.diag < 0 else "0"


@dataclass
class LayerStats:
    layer: int
    name: str
    qk: list[ProductStats] = field(default_factory=list)  # per query head
    vo: ProductStats | None = None

    @property
    def qk_diag(self) -> float:
        return sum(s.diag for s in self.qk) / len(self.qk)

    @property
    def qk_ratio(self) -> float:
        return sum(s.ratio for s in self.qk) / len(self.qk)

    @property
    def qk_positive(self) -> int:
        return sum(s.diag > 0 for s in self.qk)


def product_stats(p: torch.Tensor) -> ProductStats:
    p = p.double()
    d = p.shape[0]
    diag = p.diagonal()
    off = p[~torch.eye(d, dtype=torch.bool, device=p.device)]
    rms = off.pow(2).mean().sqrt().item() if off.numel() else 0.0
    mean = diag.mean().item()
    return ProductStats(mean, mean / rms if rms > 0 else math.copysign(math.inf, mean) if mean else 0.0)


@torch.no_grad()
def attention_stats(rmap: RoleMap) -> list[LayerStats]:
    """Per attention layer: QK statistics per head and the layer's VO statistics."""
    out = []
    for att in rmap.attention:
        if att.q.d_in != att.k.d_in or att.o.d_out != att.d_model or att.v.d_in != att.d_model:
            continue  # cross-attention between different widths: products are not square
        ls = LayerStats(att.index, att.module_name)
        ls.qk = [product_stats(att.qk_product(h)) for h in range(att.n_heads)]
        ls.vo = product_stats(att.vo_product())
        out.append(ls)
    return out


def format_table(stats: list[LayerStats]) -> str:
    rows = [("layer", "module", "QK diag", "QK diag/off", "QK sign (+heads)", "VO diag",
             "VO diag/off", "VO sign")]
    for s in stats:
        rows.append((str(s.layer), s.name, f"{s.qk_diag:+.4f}", f"{s.qk_ratio:+.2f}",
                     f"{'+' if s.qk_diag > 0 else '-'} ({s.qk_positive}/{len(s.qk)})",
                     f"{s.vo.diag:+.4f}", f"{s.vo.ratio:+.2f}", s.vo.sign))
    return text_table(rows, align="ll" + "r" * (len(rows[0]) - 2), rule=True)


@torch.no_grad()
def plot_products(rmap: RoleMap, path: str, *, layers: list[int] | None = None, max_heads: int = 4,
                  max_dim: int = 64, title: str = "") -> str:
    """Heatmaps like the paper's Figure 1: per layer (row), W_q^h W_k^hᵀ for the first
    ``max_heads`` heads and W_v W_o, each cropped to the top-left ``max_dim`` x ``max_dim``."""
    from .plotting import save, subplots

    atts = [a for a in rmap.attention if layers is None or a.index in layers]
    if not atts:
        raise InitlabError(f"no attention layer selected (model has {len(rmap.attention)}; "
                           f"--layers takes 0-based indices)")
    n_heads = min(max_heads, max(a.n_heads for a in atts))
    fig, axes = subplots(len(atts), n_heads + 1, squeeze=False,
                             figsize=(1.9 * (n_heads + 1), 1.9 * len(atts) + 0.5))
    for row, att in zip(axes, atts):
        mats = [(f"L{att.index} QK h{h}", att.qk_product(h)) for h in range(min(n_heads, att.n_heads))]
        mats += [(f"L{att.index} VO", att.vo_product())]
        for ax in row:
            ax.axis("off")
        for ax, (label, m) in zip(list(row[:len(mats) - 1]) + [row[-1]], mats):
            diag = m.diagonal().mean().item()  # of the whole product, not the crop
            m = m[:max_dim, :max_dim].float().cpu()
            vmax = float(m.abs().flatten().quantile(0.99)) or 1.0
            ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{label}\ndiag {diag:+.2f}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    save(fig, path, dpi=110)
    return path


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def _skeleton(state: dict[str, torch.Tensor]) -> nn.Module:
    """An nn.Module tree whose parameters are the state dict's floating tensors, by name."""
    root = nn.Module()
    for name, t in state.items():
        if not torch.is_tensor(t) or not t.is_floating_point():
            continue
        *path, leaf = name.split(".")
        mod = root
        for part in path:
            if not hasattr(mod, part) or not isinstance(getattr(mod, part), nn.Module):
                mod.add_module(part, nn.Module())
            mod = getattr(mod, part)
        mod.register_parameter(leaf, nn.Parameter(t.detach(), requires_grad=False))
    return root


def _state_families(heads: int, kv_heads: int | None) -> list[tuple[str, dict]]:
    kv = kv_heads or heads
    return [
        ("initlab/timm fused qkv", {"**.blocks.*.attn": dict(qkv="qkv", o="proj", heads=heads)}),
        ("initlab separate q/k/v", {"**.blocks.*.attn": dict(q="q", k="k", v="v", o="proj", heads=heads)}),
        ("gpt2 Conv1D", {"**.h.*.attn": dict(qkv="c_attn", o="c_proj", heads=heads, layout="in_out")}),
        ("llama", {"**.layers.*.self_attn": dict(q="q_proj", k="k_proj", v="v_proj", o="o_proj",
                                                 heads=heads, kv_heads=kv)}),
        ("vit (transformers>=5)", {"**.layers.*.attention": dict(q="q_proj", k="k_proj", v="v_proj",
                                                                 o="o_proj", heads=heads)}),
        ("bert", {"**.layer.*.attention": dict(q="self.query", k="self.key", v="self.value",
                                               o="output.dense", heads=heads)}),
        ("vit (transformers<5)", {"**.layer.*.attention": dict(q="attention.query", k="attention.key",
                                                               v="attention.value", o="output.dense",
                                                               heads=heads)}),
    ]


def roles_from_state_dict(state: dict[str, torch.Tensor], *, heads: int,
                          kv_heads: int | None = None) -> RoleMap:
    """Role map of a bare state dict (initlab, timm, GPT-2, LLaMA, ViT, BERT key layouts)."""
    if kv_heads is None:  # grouped K/V: infer from the first q/k projection pair
        q = next((k for k in state if k.endswith("q_proj.weight")), None)
        k = q and q[:-len("q_proj.weight")] + "k_proj.weight"
        if k in state and state[q].dim() == 2 and state[k].shape[0] < state[q].shape[0]:
            kv_heads = heads * state[k].shape[0] // state[q].shape[0]
    model = _skeleton(state)
    tried = []
    for label, attention in _state_families(heads, kv_heads):
        try:
            return roles_from_mapping(model, {"attention": attention, "strict": False},
                                      adapter=f"state_dict:{label}", require_matches=False)
        except InitlabError as exc:
            tried.append(f"{label}: {exc}")
    raise CheckpointError("no known attention layout in this state dict (looked for initlab/timm "
                          "blocks.*.attn, GPT-2 h.*.attn.c_attn, LLaMA layers.*.self_attn, BERT/ViT "
                          "layer(s).*.attention); pass a model preset instead. Details: "
                          + "; ".join(tried[:3]))


def _read(path: str):
    """``torch.load`` with ``weights_only=True``: a file is never unpickled beyond tensors."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "unsupported global" in str(exc).lower():
            raise CheckpointError(
                f"{path} holds pickled Python objects besides tensors, so it is not read (unpickling "
                f"could run code from the file); an initlab training checkpoint of format 1 can be "
                f"upgraded, if you trust it, with: python -m initlab.train.upgrade {path}") from None
        why = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
        raise CheckpointError(f"cannot read {path} as a safetensors file or torch.save state dict: "
                              f"{type(exc).__name__}: {why}") from None


def _training_checkpoint(path: str, obj) -> tuple[nn.Module, RoleMap, str] | None:
    """The model of a checkpoint ``initlab train`` wrote, rebuilt from the checkpoint's own model
    config (so its role map is the model's, with no --heads), or None for any other file."""
    from .models import PRESETS
    if not (isinstance(obj, dict) and "format_version" in obj and isinstance(obj.get("model"), dict)):
        return None
    config, model_config = obj.get("config") or {}, obj.get("model_config")
    preset = config.get("model") if isinstance(config, dict) else None
    if preset not in PRESETS or not isinstance(model_config, dict):
        return None
    model = PRESETS[preset][0](**model_config)
    try:
        model.load_state_dict(obj["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: its weights do not fit the {preset} its config describes "
                              f"({str(exc).splitlines()[0]})") from None
    return model, roles(model), f"{path} ({preset} checkpoint, step {obj.get('step', '?')})"


def _load_state(path: str, obj=None) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``obj``: the file already read with :func:`_read`)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    obj = _read(path) if obj is None else obj
    for key in ("model", "state_dict", "model_state_dict", "module"):  # training checkpoints
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not any(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return obj


def _hf_folder(path: str) -> tuple[nn.Module, RoleMap]:
    try:
        import transformers
    except ImportError:
        raise CheckpointError(f"{path} looks like a Hugging Face model folder but transformers is "
                              f"not installed") from None
    from transformers.utils import logging
    before = logging.get_verbosity()
    logging.set_verbosity_error()  # for this load only: the caller's logging is restored below
    try:
        return _load_hf_folder(transformers, path)
    finally:
        logging.set_verbosity(before)


def _load_hf_folder(transformers, path: str) -> tuple[nn.Module, RoleMap]:
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    cls = cls or transformers.AutoModel
    model = restore_(cls.from_pretrained(path, local_files_only=True))  # a tied head's N_rescale
    return model, roles(model)


def load_for_weights(source: str, *, init: str | None = None, heads: int | None = None,
                     kv_heads: int | None = None, seed: int = 0,
                     model_options: dict | None = None) -> tuple[nn.Module, RoleMap, str]:
    """(model, role map, description) for an initlab preset name or a local checkpoint path."""
    if os.path.isdir(source):  # a run directory of initlab train: its newest checkpoint
        source = next((os.path.join(source, n) for n in ("checkpoint.pt", "checkpoint.last_good.pt")
                       if os.path.isfile(os.path.join(source, n))), source)
    if os.path.isdir(source):
        if not os.path.exists(os.path.join(source, "config.json")):
            raise CheckpointError(f"{source} is a folder without config.json; expected a Hugging Face "
                                  f"model folder (save_pretrained)")
        model, rmap = _hf_folder(source)
        return model, rmap, f"{source} ({type(model).__name__})"
    if os.path.isfile(source):
        obj = None if source.endswith(".safetensors") else _read(source)
        trained = _training_checkpoint(source, obj)
        if trained is not None:
            return trained
        state = _load_state(source, obj)
        if heads is None:
            meta = os.path.join(os.path.dirname(source), "config.json")
            if os.path.exists(meta):
                with open(meta) as f:
                    cfg = json.load(f)
                heads = cfg.get("heads") or cfg.get("num_attention_heads") or cfg.get("n_head")
                kv_heads = kv_heads or cfg.get("num_key_value_heads")
        if heads is None:
            raise CheckpointError(f"{source}: a bare state dict does not say how many heads it has; "
                                  f"pass --heads N")
        model = _skeleton(state)
        rmap = roles_from_state_dict(state, heads=int(heads), kv_heads=kv_heads)
        return model, rmap, f"{source} ({rmap.adapter})"
    if source.startswith((".", "/", "~")) or source.endswith((".pt", ".pth", ".bin", ".safetensors")):
        raise CheckpointError(f"no such file or folder: {source}")
    from .models import create_model
    from .schemes.plan import InitPlan, build_seeded
    spec = init or "default"
    plan = InitPlan.build(spec)  # validated before the model is built
    model = build_seeded(lambda: create_model(source, **(model_options or {})), seed)
    plan.initialize_(model, seed)
    return model, roles(model), f"{source} (fresh, init={spec}, seed={seed})"
