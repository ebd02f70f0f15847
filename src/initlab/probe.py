"""Measure signal propagation through a Transformer at initialization: one forward, one backward.

``probe(model, batch)`` hooks the modules the role map names (each attention layer, the block that
holds it, the LayerNorms inside blocks and the final one), runs one forward and one backward pass,
and reports per block the quantities of the effective theory (arXiv 2304.02034 section 6, digest
§7): residual-stream second moment G, LayerNorm output second moment, token-token cosine
similarity (rank collapse), attention-logit mean/variance, attention entropy and mean attended
distance, output-logit variance, and per-role gradient RMS and norms.

The probe leaves no trace: hooks are removed in ``finally``, gradients already on the parameters
are put back, the RNG state is restored and nothing is written to a parameter, so a probed model
and a never-probed copy compute bit-identical outputs afterwards. With ``predict=True`` the report
also carries the leading-order prediction (:mod:`initlab.theory`) for the same batch.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .output import write_json
from .roles import roles
from .roles.core import is_norm
from .roles.registry import unwrap

BLOCK_FIELDS = ("G", "G_mid", "ln1_s2", "ln2_s2", "cosine", "attn_logit_mean", "attn_logit_var",
                "attn_entropy", "attn_distance")
GRAD_ROLES = ("q", "k", "v", "o", "mlp_in", "mlp_out")


@dataclass
class ProbeReport:
    """What :func:`probe` measured (and, optionally, what the theory predicts)."""

    model_class: str
    width: int
    depth: int
    batch: int
    tokens: int
    g_stem: float
    blocks: list[dict]  # per block: BLOCK_FIELDS (measured)
    ln_final_s2: float
    output_logit_var: float  # second moment mean(l²): the theory's variance over weight draws (mean 0)
    output_logit_mean: float
    grads: list[dict]  # per tensor region: name, role, kind, layer, numel, rms, norm
    objective: str  # what was differentiated
    loss: float | None = None
    predicted: dict | None = None  # {"blocks": [...], "g_stem", "output_logit_var", "grads": {...}}
    meta: dict = field(default_factory=dict)

    # -- views -----------------------------------------------------------------------------------
    def grad_rms(self, role: str, layer: int | None = None, kind: str = "weight") -> float | None:
        """RMS of the gradient over every region playing ``role`` (in ``layer`` if given)."""
        rows = [g for g in self.grads if g["role"] == role and g["kind"] == kind
                and (layer is None or g["layer"] == layer)]
        if not rows:
            return None
        n = sum(r["numel"] for r in rows)
        return math.sqrt(sum(r["norm"] ** 2 for r in rows) / n)

    def grad_norm(self, role: str, kind: str = "weight") -> float | None:
        rows = [g for g in self.grads if g["role"] == role and g["kind"] == kind]
        return math.sqrt(sum(r["norm"] ** 2 for r in rows)) if rows else None

    def comparison(self) -> list[dict]:
        """Rows (quantity, block, measured, predicted, rel_error) for everything predicted."""
        if not self.predicted:
            return []
        rows = [_cmp("G", -1, self.g_stem, self.predicted["g_stem"])]
        for i, (m, p) in enumerate(zip(self.blocks, self.predicted["blocks"])):
            for key in BLOCK_FIELDS:
                if key in p and key != "attn_logit_mean":
                    rows.append(_cmp(key, i, m[key], p[key]))
        rows.append(_cmp("output_logit_var", None, self.output_logit_var, self.predicted["output_logit_var"]))
        pg = self.predicted.get("grads") or {}
        for i, prow in enumerate(pg.get("blocks", [])):
            for role in GRAD_ROLES:
                if role in prow:
                    rows.append(_cmp(f"grad_rms.{role}", i, self.grad_rms(role, i), prow[role]))
        for key, role, kind in (("patch_embed", "patch_embed", "weight"), ("pos_embed", "pos_embed", "weight"),
                                ("head", "head", "weight"), ("head_bias", "head", "bias")):
            if key in pg and self.grad_rms(role, None, kind) is not None:
                rows.append(_cmp(f"grad_rms.{key}", None, self.grad_rms(role, None, kind), pg[key]))
        return rows

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("model_class", "width", "depth", "batch", "tokens", "g_stem",
                                           "blocks", "ln_final_s2", "output_logit_var",
                                           "output_logit_mean", "grads", "objective", "loss", "meta")}
        d["predicted"] = self.predicted
        d["comparison"] = self.comparison()
        return d

    # -- writers ---------------------------------------------------------------------------------
    def write_json(self, path) -> Path:
        return write_json(path, self.to_dict(), indent=1)

    def write_csv(self, path) -> Path:
        """One row per block: measured fields, predicted fields (``pred_*``) and gradient RMS."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pb = (self.predicted or {}).get("blocks") or []
        pg = ((self.predicted or {}).get("grads") or {}).get("blocks") or []
        cols = ["block", *BLOCK_FIELDS, *(f"grad_rms.{r}" for r in GRAD_ROLES)]
        if pb:
            cols += [f"pred_{k}" for k in BLOCK_FIELDS]
        if pg:
            cols += [f"pred_grad_rms.{r}" for r in GRAD_ROLES]
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for i, b in enumerate(self.blocks):
                row = {"block": i, **{k: b[k] for k in BLOCK_FIELDS}}
                row.update({f"grad_rms.{r}": self.grad_rms(r, i) for r in GRAD_ROLES})
                if pb:
                    row.update({f"pred_{k}": pb[i].get(k) for k in BLOCK_FIELDS})
                if pg:
                    row.update({f"pred_grad_rms.{r}": pg[i].get(r) for r in GRAD_ROLES})
                w.writerow(row)
        return path

    def table(self) -> str:
        """A text table, one line per block (predicted values in parentheses)."""
        pb = (self.predicted or {}).get("blocks") or []
        pg = ((self.predicted or {}).get("grads") or {}).get("blocks") or []
        head = f"{'block':>5} {'G':>16} {'LN s2':>7} {'cos':>6} {'logit var':>16} {'entropy':>7} " \
               f"{'dist':>6} {'grad mlp_out':>20}"
        lines = [f"{self.model_class} width {self.width} depth {self.depth}: batch {self.batch} x "
                 f"{self.tokens} tokens; backward of {self.objective}", head]

        def both(m, p, fmt):
            return f"{m:{fmt}}" + (f" ({p:{fmt}})" if p is not None else "")
        lines.append(f"{'stem':>5} {both(self.g_stem, (self.predicted or {}).get('g_stem'), '.3f'):>16}")
        for i, b in enumerate(self.blocks):
            p = pb[i] if pb else {}
            g = pg[i] if pg else {}
            lines.append(f"{i:>5} {both(b['G'], p.get('G'), '.3f'):>16} {b['ln1_s2']:7.4f} "
                         f"{b['cosine']:6.3f} {both(b['attn_logit_var'], p.get('attn_logit_var'), '.3f'):>16} "
                         f"{b['attn_entropy']:7.3f} {b['attn_distance']:6.2f} "
                         f"{both(self.grad_rms('mlp_out', i) or float('nan'), g.get('mlp_out'), '.2e'):>20}")
        po = (self.predicted or {}).get("output_logit_var")
        lines.append(f"output logits: mean {self.output_logit_mean:.4f}, mean square "
                     f"{both(self.output_logit_var, po, '.4f')}; final LN s2 {self.ln_final_s2:.4f}")
        return "\n".join(lines)

    def plot(self, path, *, title: str | None = None) -> Path:
        """PNG: measured (markers) vs predicted (lines) per block."""
        from .plotting import subplots

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pb = (self.predicted or {}).get("blocks") or []
        pg = ((self.predicted or {}).get("grads") or {}).get("blocks") or []
        x = list(range(1, len(self.blocks) + 1))
        fig, axes = subplots(2, 3, figsize=(13, 7))
        panels = (("G", "residual G per block"), ("ln1_s2", "LN output mean s²"),
                  ("cosine", "token-token cosine of z"), ("attn_logit_var", "attention-logit variance"),
                  ("attn_entropy", "attention entropy (nats)"))
        for ax, (key, label) in zip(axes.flat, panels):
            ax.plot(x, [b[key] for b in self.blocks], "o", ms=4, label="measured")
            if pb and key in pb[0]:
                ax.plot(x, [p[key] for p in pb], "-", label="theory")
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("block")
        axes.flat[0].legend(fontsize=8)
        ax = axes.flat[5]
        for j, role in enumerate(GRAD_ROLES):
            color = f"C{j}"
            ax.semilogy(x, [self.grad_rms(role, i) or float("nan") for i in range(len(x))], "o",
                        ms=3, color=color, label=role)
            if pg:
                ax.semilogy(x, [p.get(role, float("nan")) for p in pg], "-", color=color)
        ax.set_title("gradient RMS per role (lines: theory)", fontsize=10)
        ax.set_xlabel("block")
        ax.legend(fontsize=7, ncol=2)
        fig.suptitle(title or f"{self.model_class} n={self.width} L={self.depth}: measured vs leading order")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        return path


def _cmp(q, block, measured, predicted) -> dict:
    rel = (measured - predicted) / abs(predicted) if predicted not in (None, 0) and measured is not None else None
    return dict(quantity=q, block=block, measured=measured, predicted=predicted, rel_error=rel)


# ------------------------------------------------------------------------------------------------
def _block_of(model: nn.Module, att_name: str) -> str:
    """The module holding an attention layer (its parent): the residual block."""
    parent = att_name.rsplit(".", 1)[0] if "." in att_name else ""
    return parent


def _ms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean())


def _cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity between distinct tokens of the same input, (B, T, n)."""
    b, t, _ = z.shape
    if t < 2:
        return 1.0
    u = F.normalize(z.detach().double(), dim=-1)
    c = u @ u.transpose(1, 2)
    off = ~torch.eye(t, dtype=torch.bool, device=c.device)
    return float(c[:, off].mean())


@torch.no_grad()
def _attention_stats(att, module: nn.Module, s: torch.Tensor) -> dict:
    """Logits from the role map's per-head q/k views (never a second way to find Q)."""
    s = s.detach()
    scale = float(getattr(module, "scale", 1.0 / math.sqrt(att.head_dim)))
    causal = bool(getattr(module, "causal", False) or getattr(module, "is_causal", False))
    qb, kb = att.q.bias_view(), att.k.bias_view()
    hd = att.head_dim
    logits = []
    for h in range(att.n_heads):
        g = att.kv_group(h)
        q = s @ att.q_head(h).to(s.dtype)
        k = s @ att.k_head(g).to(s.dtype)
        if qb is not None:
            q = q + qb[h * hd:(h + 1) * hd]
        if kb is not None:
            k = k + kb[g * hd:(g + 1) * hd]
        logits.append(scale * (q @ k.transpose(-1, -2)))
    lg = torch.stack(logits, 1).double()  # (B, H, T, T)
    t = lg.shape[-1]
    vis = torch.ones(t, t, dtype=torch.bool, device=lg.device)
    if causal:
        vis = torch.tril(vis)
    vals = lg[..., vis]
    p = torch.softmax(lg.masked_fill(~vis, float("-inf")), -1)
    ent = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
    pos = torch.arange(t, device=lg.device)
    dist = (p * (pos[:, None] - pos[None, :]).abs().double()).sum(-1)
    return dict(attn_logit_mean=float(vals.mean()), attn_logit_var=float(vals.var(unbiased=False)),
                attn_entropy=float(ent.mean()), attn_distance=float(dist.mean()))


def _check_batch(model: nn.Module, batch: torch.Tensor, targets: torch.Tensor | None) -> None:
    """A batch the model cannot take is a ConfigError naming the shape it wants, not torch's error."""
    from .models import GPT, ViT
    shape = tuple(batch.shape)
    if isinstance(model, ViT):
        c = model.config["in_chans"]
        side = model.config["image_size"]
        if batch.ndim != 4 or shape[1:] != (c, side, side) or not batch.is_floating_point():
            raise ConfigError(f"probe(): this ViT takes float images of shape (B, {c}, {side}, {side}), "
                              f"got a {batch.dtype} batch of shape {shape}; pass images of that shape")
        if targets is not None and tuple(targets.shape) != shape[:1]:
            raise ConfigError(f"probe(): targets must be class labels of shape ({shape[0]},), got "
                              f"{tuple(targets.shape)}")
    elif isinstance(model, GPT):
        block, vocab = model.config.get("block_size"), model.config.get("vocab_size")
        if batch.ndim != 2 or batch.is_floating_point() or batch.is_complex():
            raise ConfigError(f"probe(): this GPT takes integer token ids of shape (B, T), got a "
                              f"{batch.dtype} batch of shape {shape}")
        if block is not None and shape[1] > block:
            raise ConfigError(f"probe(): sequence length {shape[1]} exceeds the model's block_size "
                              f"{block}; pass at most {block} tokens")
        if vocab is not None and batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= vocab):
            raise ConfigError(f"probe(): token ids must be in 0..{vocab - 1} (the model's vocabulary), "
                              f"got {int(batch.min())}..{int(batch.max())}")
        if targets is not None and tuple(targets.shape) != shape:
            raise ConfigError(f"probe(): targets must be next tokens of shape {shape}, got "
                              f"{tuple(targets.shape)}")


def probe(model: nn.Module, batch: torch.Tensor, targets: torch.Tensor | None = None, *,
          output_index: int = 0, predict: bool = False, constants=None, samples: int = 256,
          seed: int = 0, role_map=None) -> ProbeReport:
    """One forward and one backward pass through ``model`` on ``batch``, with measuring hooks.

    Args:
        model: an initlab ViT/GPT (pre-LN) or any model the role map knows with blocks holding
            an attention module and LayerNorms.
        batch: images (B, C, H, W) or token ids (B, T).
        targets: class labels (B,) or next tokens (B, T): the backward pass is the mean
            cross-entropy. Without targets it is f = Σ_batch logits[..., output_index] (summed
            over tokens for a language model), the quantity the theory predicts gradients of.
        predict: also compute the leading-order prediction (:func:`initlab.theory.predict_for`)
            with ``constants`` (default: read from the weights) and ``samples`` Monte Carlo draws.
    Returns:
        :class:`ProbeReport`.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"probe() measures a torch.nn.Module, got {type(model).__name__}; "
                          f"call probe(model, batch)")
    for name, t in (("batch", batch), ("targets", targets)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise ConfigError(f"probe(): {name} must be a torch.Tensor, got {type(t).__name__}")
    rm = role_map or roles(model)
    inner = unwrap(model)
    _check_batch(inner, batch, targets)
    rm.require_attention("probing")
    att_mods = [inner.get_submodule(a.module_name) for a in rm.attention]
    block_names = [_block_of(inner, a.module_name) for a in rm.attention]
    blocks = [inner.get_submodule(n) for n in block_names]
    depth = len(blocks)
    rec: dict = {"z": [None] * depth, "att": [None] * depth, "norms": {}, "stem": None}
    norm_owner = {}
    for mname, mod in inner.named_modules():
        if is_norm(mod):
            owner = next((i for i, bn in enumerate(block_names) if mname.startswith(bn + ".")), None)
            norm_owner.setdefault(owner, []).append(mod)
    hooks = []

    def block_hook(i):
        def fn(mod, inp, out):
            z = out[0] if isinstance(out, tuple) else out
            rec["z"][i] = (_ms(z), _cosine(z), z.shape)
        return fn

    def stem_hook(mod, inp):
        rec["stem"] = _ms(inp[0])

    from .roles.dtensor import full_tensors, full_view
    views = {}  # the q/k views the attention statistics read: full copies under FSDP2

    def att_hook(i):
        def fn(mod, inp, out):
            rec["att"][i] = _attention_stats(views["rm"].attention[i], mod, inp[0])
        return fn

    def norm_hook(key):
        def fn(mod, inp, out):
            rec["norms"].setdefault(key, []).append((_ms(inp[0]), _ms(out)))
        return fn

    params = [p for p in inner.parameters()]
    saved_grads = [p.grad for p in params]
    rng_devices = sorted({p.device.index for p in params if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=rng_devices), full_tensors(rm, write_back=False) as full:
            views["rm"] = full
            hooks.append(blocks[0].register_forward_pre_hook(stem_hook))
            for i, (b, a) in enumerate(zip(blocks, att_mods)):
                hooks.append(b.register_forward_hook(block_hook(i)))
                hooks.append(a.register_forward_hook(att_hook(i)))
            for owner, mods in norm_owner.items():
                for mod in mods:
                    hooks.append(mod.register_forward_hook(norm_hook(owner)))
            for p in params:
                p.grad = None
            with torch.enable_grad():
                try:
                    out = model(batch)
                except (RuntimeError, IndexError, TypeError) as exc:
                    if isinstance(exc, torch.cuda.OutOfMemoryError):
                        raise
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise ConfigError(f"probe(): the model cannot run on a {batch.dtype} batch of shape "
                                      f"{tuple(batch.shape)} ({first}); pass a batch of the shape "
                                      f"and type the model takes") from exc
                logits = out[0] if isinstance(out, tuple) else out
                if targets is not None:
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
                    objective = "mean cross-entropy"
                else:
                    loss = logits[..., output_index].sum()
                    objective = f"sum of output logit {output_index} over the batch"
                if loss.requires_grad:
                    loss.backward()
            grads = _grad_rows(rm)
    finally:
        for h in hooks:
            h.remove()
        for p, g in zip(params, saved_grads):
            p.grad = g
    if any(r is None for r in rec["z"]) or any(r is None for r in rec["att"]):
        raise ConfigError("the probe's hooks did not fire for every block; is the model's forward "
                          "going through the modules the role map names?")
    rows = []
    for i in range(depth):
        norms = rec["norms"].get(i, [])
        g_mid = norms[1][0] if len(norms) > 1 else float("nan")
        rows.append(dict(G=rec["z"][i][0], G_mid=g_mid, ln1_s2=norms[0][1] if norms else float("nan"),
                         ln2_s2=norms[1][1] if len(norms) > 1 else float("nan"), cosine=rec["z"][i][1],
                         **rec["att"][i]))
    final = rec["norms"].get(None, [])
    lg = logits.detach().double()
    report = ProbeReport(rm.model_class, rm.width, depth, int(batch.shape[0]), int(rec["z"][0][2][1]),
                         rec["stem"], rows, final[-1][1] if final else float("nan"),
                         float(lg.pow(2).mean()), float(lg.mean()), grads, objective,
                         float(loss.detach()) if targets is not None else None)
    if predict:
        from .theory import predict_for

        res = predict_for(model, batch, constants=constants, samples=samples, seed=seed,
                          gradients=targets is None, role_map=rm)
        pred = res["prediction"]
        g = res["gradients"]
        report.predicted = dict(
            g_stem=pred.g_stem, blocks=pred.per_block(), output_logit_var=pred.output_logit_var,
            ln_final_s2=pred.ln_final, samples=samples, seed=seed,
            constants=res["network"].constants.to_dict(),
            grads=None if g is None else {k: v for k, v in g.items() if k != "backward_kernel_stem"})
    return report


def _grad_rows(rm) -> list[dict]:
    from .roles.core import take
    from .roles.dtensor import full_view
    rows = []
    for info in rm:
        grad = info.param.grad
        if grad is not None:
            grad = full_view(grad)  # a DTensor gradient (FSDP2): gathered
        for slot in info.slots:
            if grad is None:
                continue
            region = take(grad, slot.index)
            r = region.detach().double()
            norm = float(r.norm())
            rows.append(dict(name=info.name, role=str(slot.role), kind=info.kind, layer=info.layer,
                             numel=r.numel(), norm=norm, rms=norm / math.sqrt(max(r.numel(), 1))))
    return rows


