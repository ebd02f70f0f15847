"""Measure signal propagation through a Transformer at initialization: one forward, one backward.

``probe(model, batch)`` hooks the modules the role map names (each block that holds a
self-attention layer, the attention and MLP projections, every norm), runs one forward and one
backward pass, and reports per block the quantities of the effective theory (arXiv 2304.02034
section 6, digest §7): residual-stream second moment G, norm output second moment, token-token
cosine similarity (rank collapse), attention-logit mean/variance, attention entropy and mean
attended distance, output-logit variance, and per-role gradient RMS and norms.

Any layout the role map accepts: decoder-only, encoder, vision, and encoder-decoder models, whose
encoder and decoder stacks are probed one after the other (each block row says its ``stack``; the
decoder's blocks include their cross-attention). Pre-LN block fields: ``ln1_s2``/``ln2_s2`` are
the attention/MLP norm outputs and ``G_mid`` the stream after the attention branch; post-LN (BERT,
BART): ``ln1_s2`` the norm after attention, ``ln2_s2`` the block's last norm, ``G_mid`` the sum
entering that last norm. Attention logits are scale·q·k from the role map's projections: a
relative position bias (T5) or a rotary map (LLaMA) is not in them.

The probe leaves no trace: the model runs in eval mode (no dropout) and its modes are put back,
hooks are removed in ``finally``, gradients already on the parameters are put back, the RNG state
is restored and nothing is written to a parameter, so a probed model and a never-probed copy
compute bit-identical outputs afterwards. With ``predict=True`` the report also carries the
leading-order prediction (:mod:`initlab.theory`) for the same batch, and ``predicted["unavailable"]``
says which quantities the theory does not cover on this model, and why.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..output import atomic_write_text, write_json
from ..roles import roles
from ..roles.registry import unwrap
from .structure import (Recorder, batch_size_and_tokens, causal_of, check_batch, forward_inputs,
                        layout_of, logit_scale, output_tensor, reached, structure_of)

BLOCK_FIELDS = ("G", "G_mid", "ln1_s2", "ln2_s2", "cosine", "attn_logit_mean", "attn_logit_var",
                "attn_entropy", "attn_distance")
GRAD_ROLES = ("q", "k", "v", "o", "mlp_in", "mlp_out")


@dataclass
class ProbeReport:
    """What :func:`probe` measured (and, optionally, what the theory predicts)."""

    model_class: str
    width: int
    depth: int  # blocks, all stacks together
    batch: int
    tokens: int  # tokens of the first stack (each block row has its own ``tokens``)
    g_stem: float
    blocks: list[dict]  # per block: BLOCK_FIELDS (measured), stack, tokens
    ln_final_s2: float
    output_logit_var: float  # second moment mean(l²): the theory's variance over weight draws (mean 0)
    output_logit_mean: float
    grads: list[dict]  # per tensor region: name, role, kind, layer, block, numel, rms, norm
    objective: str  # what was differentiated
    loss: float | None = None
    predicted: dict | None = None  # {"blocks": [...], "g_stem", "output_logit_var", "grads", "unavailable"}
    meta: dict = field(default_factory=dict)
    stacks: list[dict] = field(default_factory=list)  # name, kind, blocks, tokens, g_stem

    # -- views -----------------------------------------------------------------------------------
    def grad_rms(self, role: str, layer: int | None = None, kind: str = "weight") -> float | None:
        """RMS of the gradient over every region playing ``role`` (in block ``layer`` if given)."""
        rows = [g for g in self.grads if g["role"] == role and g["kind"] == kind
                and (layer is None or g.get("block", g["layer"]) == layer)]
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
        rows = []
        stems = self.predicted.get("stems") or [self.predicted.get("g_stem")]
        for s, p in enumerate(stems):
            if p is not None:
                m = self.stacks[s]["g_stem"] if self.stacks else self.g_stem
                rows.append(_cmp("G", -1 - s, m, p))
        for i, (m, p) in enumerate(zip(self.blocks, self.predicted["blocks"])):
            for key in BLOCK_FIELDS:
                if p and p.get(key) is not None and key != "attn_logit_mean":
                    rows.append(_cmp(key, i, m[key], p[key]))
        if self.predicted.get("output_logit_var") is not None:
            rows.append(_cmp("output_logit_var", None, self.output_logit_var,
                             self.predicted["output_logit_var"]))
        pg = self.predicted.get("grads") or {}
        gate_role = any(g["role"] == "mlp_gate" for g in self.grads)  # the gate mapped on its own
        for i, prow in enumerate(pg.get("blocks", [])):
            for role in GRAD_ROLES + (("mlp_gate",) if gate_role else ()):
                key = "mlp_up" if role == "mlp_in" and gate_role and "mlp_up" in prow else role
                if key in prow:
                    rows.append(_cmp(f"grad_rms.{role}", i, self.grad_rms(role, i), prow[key]))
        for key, role, kind in (("patch_embed", "patch_embed", "weight"), ("pos_embed", "pos_embed", "weight"),
                                ("head", "head", "weight"), ("head_bias", "head", "bias")):
            if key in pg and self.grad_rms(role, None, kind) is not None:
                rows.append(_cmp(f"grad_rms.{key}", None, self.grad_rms(role, None, kind), pg[key]))
        return rows

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("model_class", "width", "depth", "batch", "tokens", "g_stem",
                                           "blocks", "ln_final_s2", "output_logit_var", "stacks",
                                           "output_logit_mean", "grads", "objective", "loss", "meta")}
        d["predicted"] = self.predicted
        d["comparison"] = self.comparison()
        return d

    # -- writers ---------------------------------------------------------------------------------
    def write_json(self, path) -> Path:
        return write_json(path, self.to_dict(), indent=1)

    def write_csv(self, path) -> Path:
        """One row per block: measured fields, predicted fields (``pred_*``) and gradient RMS."""
        pb = (self.predicted or {}).get("blocks") or []
        pg = ((self.predicted or {}).get("grads") or {}).get("blocks") or []
        cols = ["block", "stack", *BLOCK_FIELDS, *(f"grad_rms.{r}" for r in GRAD_ROLES)]
        if pb:
            cols += [f"pred_{k}" for k in BLOCK_FIELDS]
        if pg:
            cols += [f"pred_grad_rms.{r}" for r in GRAD_ROLES]
        rows = []
        for i, b in enumerate(self.blocks):
            row = {"block": i, "stack": b.get("stack", 0), **{k: b[k] for k in BLOCK_FIELDS}}
            row.update({f"grad_rms.{r}": self.grad_rms(r, i) for r in GRAD_ROLES})
            if pb:
                row.update({f"pred_{k}": (pb[i] or {}).get(k) for k in BLOCK_FIELDS})
            if pg:
                row.update({f"pred_grad_rms.{r}": pg[i].get(r) for r in GRAD_ROLES})
            rows.append(row)
        return atomic_write_text(path, csv_text(cols, rows))

    def table(self) -> str:
        """A text table, one line per block (predicted values in parentheses)."""
        pb = (self.predicted or {}).get("blocks") or []
        pg = ((self.predicted or {}).get("grads") or {}).get("blocks") or []
        head = f"{'block':>5} {'G':>16} {'LN s2':>7} {'cos':>6} {'logit var':>16} {'entropy':>7} " \
               f"{'dist':>6} {'grad mlp_out':>20}"
        lines = [f"{self.model_class} width {self.width} depth {self.depth}: batch {self.batch} x "
                 f"{self.tokens} tokens; backward of {self.objective}", head]

        def both(m, p, fmt):
            m = float("nan") if m is None else m
            return f"{m:{fmt}}" + (f" ({p:{fmt}})" if p is not None else "")
        stems = (self.predicted or {}).get("stems") or [(self.predicted or {}).get("g_stem")]
        for i, b in enumerate(self.blocks):
            s = b.get("stack", 0)
            if i == 0 or self.blocks[i - 1].get("stack", 0) != s:
                if len(self.stacks) > 1:
                    lines.append(f"-- {self.stacks[s]['kind']} stack {self.stacks[s]['name']} "
                                 f"({self.stacks[s]['tokens']} tokens)")
                gs = self.stacks[s]["g_stem"] if self.stacks else self.g_stem
                lines.append(f"{'stem':>5} {both(gs, stems[s] if s < len(stems) else None, '.3f'):>16}")
            p = (pb[i] if pb else None) or {}
            g = pg[i] if pg else {}
            lines.append(f"{i:>5} {both(b['G'], p.get('G'), '.3f'):>16} {b['ln1_s2']:7.4f} "
                         f"{b['cosine']:6.3f} {both(b['attn_logit_var'], p.get('attn_logit_var'), '.3f'):>16} "
                         f"{b['attn_entropy']:7.3f} {b['attn_distance']:6.2f} "
                         f"{both(self.grad_rms('mlp_out', i), g.get('mlp_out'), '.2e'):>20}")
        po = (self.predicted or {}).get("output_logit_var")
        lines.append(f"output: mean {self.output_logit_mean:.4f}, mean square "
                     f"{both(self.output_logit_var, po, '.4f')}; final norm s2 {self.ln_final_s2:.4f}")
        for s in self.meta.get("not_reached", []):
            lines.append(f"stack {s['name']} ({s['blocks']} blocks): {s['why']}")
        for name, layers in self.meta.get("layers_without_attention", {}).items():
            lines.append(f"stack {name}: {len(layers)} layers without attention run between the blocks "
                         f"above (not measured as blocks): {', '.join(layers[:4])}{' ...' if len(layers) > 4 else ''}")
        for name, why in self.meta.get("attention_logits_not_measured", {}).items():
            lines.append(f"attention logits of {name}: {why}")
        outside = self.meta.get("attention_outside_blocks", [])
        if outside:
            more = " ..." if len(outside) > 4 else ""
            lines.append(f"{len(outside)} attention layers outside any block (no norm or MLP in their "
                         f"layer) are not measured: {', '.join(outside[:4])}{more}")
        for what, why in ((self.predicted or {}).get("unavailable") or {}).items():
            lines.append(f"no prediction for {what}: {why}")
        return "\n".join(lines)

    def plot(self, path, *, title: str | None = None) -> Path:
        """PNG: measured (markers) vs predicted (lines) per block."""
        from ..plotting import save, subplots

        pb = (self.predicted or {}).get("blocks") or []
        pg = ((self.predicted or {}).get("grads") or {}).get("blocks") or []
        x = list(range(1, len(self.blocks) + 1))
        fig, axes = subplots(2, 3, figsize=(13, 7))
        panels = (("G", "residual G per block"), ("ln1_s2", "norm output mean s²"),
                  ("cosine", "token-token cosine of z"), ("attn_logit_var", "attention-logit variance"),
                  ("attn_entropy", "attention entropy (nats)"))
        for ax, (key, label) in zip(axes.flat, panels):
            ax.plot(x, [b[key] for b in self.blocks], "o", ms=4, label="measured")
            if pb and any(p and p.get(key) is not None for p in pb):
                ax.plot(x, [(p or {}).get(key, float("nan")) for p in pb], "-", label="theory")
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("block")
        axes.flat[0].legend(fontsize=8)
        ax = axes.flat[5]
        for j, role in enumerate(GRAD_ROLES):
            color = f"C{j}"
            vals = [self.grad_rms(role, i) for i in range(len(x))]
            ax.semilogy(x, [float("nan") if v is None else v for v in vals], "o", ms=3, color=color, label=role)
            if pg:
                ax.semilogy(x, [p.get(role, float("nan")) for p in pg], "-", color=color)
        ax.set_title("gradient RMS per role (lines: theory)", fontsize=10)
        ax.set_xlabel("block")
        ax.legend(fontsize=7, ncol=2)
        fig.suptitle(title or f"{self.model_class} n={self.width} L={self.depth}: measured vs leading order")
        return save(fig, path, dpi=110)


def csv_text(cols, rows) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _cmp(q, block, measured, predicted) -> dict:
    ok = predicted not in (None, 0) and measured is not None and math.isfinite(measured)
    rel = (measured - predicted) / abs(predicted) if ok else None
    return dict(quantity=q, block=block, measured=measured, predicted=predicted, rel_error=rel)


# ------------------------------------------------------------------------------------------------
def _ms(t: torch.Tensor | None) -> float:
    return float("nan") if t is None else float(t.detach().double().pow(2).mean())


def _cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity between distinct tokens of the same input, (B, T, n)."""
    if z.dim() != 3:
        return float("nan")
    b, t, _ = z.shape
    if t < 2:
        return 1.0
    u = F.normalize(z.detach().double(), dim=-1)
    c = u @ u.transpose(1, 2)
    off = ~torch.eye(t, dtype=torch.bool, device=c.device)
    return float(c[:, off].mean())


_ATT_FIELDS = ("attn_logit_mean", "attn_logit_var", "attn_entropy", "attn_distance")


@torch.no_grad()
def _attention_stats(att, s: torch.Tensor, scale: float, causal: bool) -> dict:
    """Logits from the role map's per-head q/k views (never a second way to find Q)."""
    s = s.detach()
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


def _positive_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"probe(): {name} must be an integer >= {minimum}, got {value!r}; "
                          f"pass e.g. {name}={max(minimum, 64) if name == 'samples' else minimum}")
    return value


def probe(model: nn.Module, batch, targets: torch.Tensor | None = None, *,
          output_index: int = 0, predict: bool = False, constants=None, samples: int = 256,
          seed: int = 0, role_map=None, decoder_tokens: int | None = None) -> ProbeReport:
    """One forward and one backward pass through ``model`` on ``batch``, with measuring hooks.

    Args:
        model: any model the role map accepts (decoder, encoder, encoder-decoder, vision).
        batch: what the model reads (``role_map(model).facts.inputs``): token ids (B, T), images
            (B, C, H, W), feature frames, embeddings ((T, B, d) for a sequence-first model); or a
            dict of forward keywords. An encoder-decoder gets random decoder token ids drawn from
            ``seed`` (``decoder_tokens`` of them; default as many as the batch's tokens, or 16).
        targets: class labels (B,) or next tokens (B, T): the backward pass is the mean
            cross-entropy. Without targets it is f = Σ_batch output[..., output_index] (summed
            over tokens for per-token outputs), the quantity the theory predicts gradients of.
        predict: also compute the leading-order prediction (:func:`initlab.theory.predict_for`)
            with ``constants`` (default: read from the weights) and ``samples`` Monte Carlo draws.
    Returns:
        :class:`ProbeReport`.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"probe() measures a torch.nn.Module, got {type(model).__name__}; "
                          f"call probe(model, batch)")
    if not isinstance(batch, (torch.Tensor, dict)):
        raise ConfigError(f"probe(): batch must be a torch.Tensor, got {type(batch).__name__}; pass "
                          f"the model's input tensor (or a dict of forward keywords)")
    if targets is not None and not isinstance(targets, torch.Tensor):
        raise ConfigError(f"probe(): targets must be a torch.Tensor, got {type(targets).__name__}")
    samples = _positive_int("samples", samples, 1)
    if isinstance(output_index, bool) or not isinstance(output_index, int):
        raise ConfigError(f"probe(): output_index must be an integer, got {output_index!r}")
    rm = role_map or roles(model)
    inner = unwrap(model)
    main = batch if isinstance(batch, torch.Tensor) else batch.get(rm.facts.inputs.name or "", None)
    if isinstance(batch, torch.Tensor):
        check_batch(rm, batch, targets)
    st = structure_of(inner, rm)
    args, kwargs = forward_inputs(rm, batch, decoder_tokens=decoder_tokens, seed=seed)
    from ..roles.dtensor import full_tensors
    att_pos = {id(a): i for i, a in enumerate(rm.attention)}
    params = list(inner.parameters())
    saved_grads = [p.grad for p in params]
    modes = [(m, m.training) for m in inner.modules()]
    rng_devices = sorted({p.device.index for p in params if p.device.type == "cuda"})
    rec = Recorder(inner, st, batch_first=rm.facts.inputs.batch_first)
    try:
        with torch.random.fork_rng(devices=rng_devices), full_tensors(rm, write_back=False) as full:
            inner.eval()
            for p in params:
                p.grad = None
            with torch.enable_grad():
                try:
                    with rec:
                        out = model(*args, **kwargs)
                except (RuntimeError, IndexError, TypeError, ValueError) as exc:
                    if isinstance(exc, torch.cuda.OutOfMemoryError):
                        raise
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    what = (f"a {batch.dtype} batch of shape {tuple(batch.shape)}"
                            if isinstance(batch, torch.Tensor) else f"inputs {sorted(batch)}")
                    raise ConfigError(f"probe(): the model cannot run on {what} ({first}); pass a "
                                      f"batch of the shape and type the model takes") from exc
                logits, out_kind = output_tensor(out)
                n_out = logits.shape[-1]
                if not -n_out <= output_index < n_out:
                    raise ConfigError(f"probe(): output_index {output_index} is out of range for "
                                      f"{n_out} outputs; pass 0..{n_out - 1}")
                if targets is not None:
                    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
                    objective = "mean cross-entropy"
                else:
                    loss = logits[..., output_index].sum()
                    what = "output logit" if out_kind == "logits" else "last-hidden-state feature"
                    objective = f"sum of {what} {output_index} over the batch"
                if loss.requires_grad:
                    loss.backward()
            st, tr, not_reached = reached(st, rec.trace)
            grads = _grad_rows(rm, st)
            att_stats, skipped = [], {}
            for b, r in zip(st.blocks, tr.blocks):
                a_in = next((e[2] for e in r.events if e[0] == "A"), None)
                if a_in is None:
                    att_stats.append(None)
                    continue
                view = full.attention[att_pos[id(b.attention)]]
                widths = {view.q.d_in, view.k.d_in}
                if widths != {a_in.shape[-1]}:  # keys read another sequence (Perceiver's latents
                    # attend to the inputs): its logits are not the block input's, not measured
                    skipped[b.attention.module_name] = (
                        f"queries and keys read {view.q.d_in} and {view.k.d_in} features, the attention's "
                        f"input has {a_in.shape[-1]}: keys of another sequence, logits not measured")
                    att_stats.append(dict.fromkeys(_ATT_FIELDS, float("nan")))
                    continue
                att_stats.append(_attention_stats(view, a_in, logit_scale(b.attention, inner.get_submodule(
                    b.attention.module_name)), causal_of(b.attention, rm)))
    finally:
        rec.__exit__(None, None, None)
        for p, g in zip(params, saved_grads):
            p.grad = g
        for m, mode in modes:
            m.training = mode
    if any(r.z_out is None for r in tr.blocks) or any(a is None for a in att_stats):
        raise ConfigError("the probe's hooks did not fire for every block; is the model's forward "
                          "going through the modules the role map names?")
    get_branch = rm.controls.get_branch_multiplier
    layout = layout_of(st, tr, 1.0 if get_branch is None else get_branch())
    rows = []
    for b, r, a in zip(st.blocks, tr.blocks, att_stats):
        norms = [e for e in r.events if e[0] == "N"]
        z = r.z_out
        rows.append(dict(G=_ms(z), G_mid=_ms(norms[-1][2]) if norms else float("nan"),
                         ln1_s2=_ms(norms[0][3]) if norms else float("nan"),
                         ln2_s2=_ms(norms[-1][3]) if len(norms) > 1 else float("nan"),
                         cosine=_cosine(z), **a, stack=b.stack,
                         tokens=int(z.shape[1]) if z.dim() == 3 else None))
    stacks = []
    for i, s in enumerate(st.stacks):
        stem = tr.stems.get(i)
        stacks.append(dict(name=s.name, kind="decoder" if s.decoder else (
            "encoder" if st.encoder_decoder else "stack"), blocks=len(s.blocks),
            tokens=rows[s.blocks[0]]["tokens"], g_stem=_ms(stem)))
    last = len(st.stacks) - 1
    fin = layout.final_norm.get(last)
    fin_out = next((e[3] for e in tr.outer if e[1] == fin), None) if fin else None
    lg = logits.detach().double()
    b_size, _ = batch_size_and_tokens(rm, main) if isinstance(main, torch.Tensor) else (int(lg.shape[0]), None)
    report = ProbeReport(rm.model_class, rm.width, len(rows), b_size, rows[0]["tokens"] or 0,
                         stacks[0]["g_stem"], rows, _ms(fin_out) if fin_out is not None else float("nan"),
                         float(lg.pow(2).mean()), float(lg.mean()), grads, objective,
                         float(loss.detach()) if targets is not None else None, stacks=stacks)
    if not_reached:
        report.meta["not_reached"] = not_reached
    if skipped:
        report.meta["attention_logits_not_measured"] = skipped
    if st.outside:  # attention layers in lists with nothing else of their layer: not blocks
        report.meta["attention_outside_blocks"] = list(st.outside)
    others = {s.name: s.others for s in st.stacks if s.others}
    if others:  # a hybrid: its blocks are the attention layers; the rest run between them, unmeasured
        report.meta["layers_without_attention"] = others
    report.meta["layout"] = dict(norm_position=layout.norm_position, activation=layout.activation,
                                 gated=layout.gate is not None, output=out_kind)
    if predict:
        from ..theory import predict_for

        res = predict_for(model, batch, constants=constants, samples=samples, seed=seed,
                          gradients=targets is None, role_map=rm, trace=(st, tr, layout),
                          output=(lg, out_kind, output_index), decoder_tokens=decoder_tokens)
        report.predicted = res.to_report(samples=samples, seed=seed)
    return report


def _grad_rows(rm, st) -> list[dict]:
    from ..roles.core import take
    from ..roles.dtensor import full_view
    rows = []
    for info in rm:
        grad = info.param.grad
        if grad is not None:
            grad = full_view(grad)  # a DTensor gradient (FSDP2): gathered
        block = st.block_of_param(info.name)
        for slot in info.slots:
            if grad is None:
                continue
            region = take(grad, slot.index)
            r = region.detach().double()
            norm = float(r.norm())
            rows.append(dict(name=info.name, role=str(slot.role), kind=info.kind, layer=info.layer,
                             block=block, numel=r.numel(), norm=norm,
                             rms=norm / math.sqrt(max(r.numel(), 1))))
    return rows
