"""The bodies of ``initlab probe`` and ``initlab coordcheck``: models from a name, a Hugging Face
type or a config.json, batches from the role map's input facts, the probe across widths, the
agreement table and the coordinate check. The CLI parses flags, calls one function here and prints.

Models (:class:`ModelSpec`):

* ``model="vit"|"gpt"``: the paper's reference models (pre-LN, bias-free, frozen LN affine, mean
  pooling, head_dim 64 unless ``heads`` is given), on Fashion-MNIST test images normalized with
  their own channel statistics / Shakespeare bytes when present (``data="auto"``), else random;
* ``hf="gpt2"`` (any ``model_type`` transformers knows) or ``config="path/config.json"``: built from
  ``AutoConfig.for_model`` with the width, depth and heads given (an MLP of 4×width; ``set``
  overrides any config field, e.g. ``{"image_size": 64}``), as a causal LM, an encoder (the probe
  reads its last hidden state), an image classifier or a seq2seq model by the auto mappings, and
  fed random inputs built from the role map's facts. ``param="native"`` keeps the model's own
  initialization (the theory reads its constants from the weights).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..errors import ConfigError, InitlabError
from ..output import atomic_write_text, markdown_table, read_json, write_json
from ..roles import roles
from .measure import ProbeReport, probe
from .structure import forward_inputs, make_inputs, output_tensor

IMAGE, PATCH = 28, 7
NATIVE = "native"


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build: ``model`` ("vit"/"gpt"), or ``hf`` (a transformers model_type), or
    ``config`` (a config.json); ``heads`` default width // 64; ``tokens`` the sequence length."""

    model: str = "vit"
    hf: str | None = None
    config: str | None = None
    heads: int | None = None
    tokens: int = 16
    set: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.hf or (Path(self.config).name if self.config else self.model)


@dataclass
class ProbeSettings:
    spec: ModelSpec = field(default_factory=ModelSpec)
    param: str = "nt"
    init: str = "default"
    batch: int = 4
    data: str = "auto"
    targets: bool = False
    samples: int = 128
    theory: bool = True
    seed: int = 0


# ------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------
def hf_config(spec: ModelSpec, width: int | None, depth: int | None):
    """A transformers config from ``spec.hf`` or ``spec.config`` with width/depth/heads set."""
    try:
        from transformers import AutoConfig
    except ImportError as exc:  # pragma: no cover - transformers is an optional dependency
        raise ConfigError("--hf/--config need the transformers package; pip install transformers") from exc
    if spec.config:
        path = Path(spec.config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(f"--config {spec.config}: no such file; pass a config.json")
        d = dict(read_json(path))
        mt = d.pop("model_type", None)
        if not mt:
            raise ConfigError(f"{path} has no model_type; pass a config.json that transformers wrote")
    else:
        mt, d = spec.hf, {}
    d = {k: v for k, v in d.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
    try:
        cfg = AutoConfig.for_model(mt, **d)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"transformers knows no model type {mt!r}; pass a model_type such as gpt2, "
                          f"llama, bert, vit or t5") from exc
    heads = spec.heads
    if width is not None:
        heads = heads or max(1, width // 64)
        if width % heads:
            raise ConfigError(f"width {width} is not divisible by {heads} heads; pass --heads")
        cfg.hidden_size = width
        for name in ("intermediate_size", "d_ff", "encoder_ffn_dim", "decoder_ffn_dim", "n_inner"):
            if hasattr(cfg, name):
                setattr(cfg, name, 4 * width)
        if hasattr(cfg, "d_kv"):
            cfg.d_kv = width // heads
        if getattr(cfg, "head_dim", None) is not None:
            cfg.head_dim = width // heads
    if heads is not None:
        cfg.num_attention_heads = heads
        for name in ("decoder_attention_heads", "encoder_attention_heads"):
            if hasattr(cfg, name):
                setattr(cfg, name, heads)
        if getattr(cfg, "num_key_value_heads", None) is not None and cfg.num_key_value_heads > heads:
            cfg.num_key_value_heads = heads
    if depth is not None:
        cfg.num_hidden_layers = depth
        for name in ("num_decoder_layers", "decoder_layers", "encoder_layers"):
            if hasattr(cfg, name):
                setattr(cfg, name, depth)
    for k, v in spec.set.items():
        if not hasattr(cfg, k):
            raise ConfigError(f"--set {k}: {type(cfg).__name__} has no field {k!r}")
        setattr(cfg, k, v)
    return cfg


def hf_model_class(cfg):
    """The auto class for a probe: seq2seq / speech seq2seq for encoder-decoders, image
    classification for vision types, the bare encoder for masked-LM types (BERT: the probe reads
    its last hidden state), else the causal LM, else the bare model."""
    import transformers
    from transformers.models.auto import modeling_auto as ma

    mt = cfg.model_type
    if getattr(cfg, "is_encoder_decoder", False):
        for names, auto in ((ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES, transformers.AutoModelForSeq2SeqLM),
                            (ma.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES, transformers.AutoModelForSpeechSeq2Seq)):
            if mt in names:
                return auto
    if mt in ma.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return transformers.AutoModelForImageClassification
    if mt in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return transformers.AutoModel
    if mt in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModel


def build_model(spec: ModelSpec, width: int | None, depth: int | None, *, seed: int = 0):
    """A fresh model (its module defaults seeded by ``seed``, the global RNG restored)."""
    from ..schemes.plan import build_seeded

    if spec.hf or spec.config:
        cfg = hf_config(spec, width, depth)
        auto = hf_model_class(cfg)
        try:
            return build_seeded(lambda: auto.from_config(cfg), seed)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(f"transformers cannot build {cfg.model_type} from this config ({exc}); "
                              f"check --width/--heads/--set") from exc
    from ..models import GPT, ViT

    heads = spec.heads or max(1, width // 64)
    if width % heads:
        raise ConfigError(f"width {width} is not divisible by {heads} heads; pass --heads")
    common = dict(width=width, depth=depth, heads=heads, bias=False, ln_affine=False)
    if spec.model == "vit":
        return build_seeded(lambda: ViT(image_size=IMAGE, patch_size=PATCH, in_chans=1, num_classes=10,
                                        pool="mean", **common), seed)
    if spec.model == "gpt":
        return build_seeded(lambda: GPT(vocab_size=256, block_size=max(spec.tokens, 16), **common), seed)
    raise ConfigError(f"--model must be vit or gpt (or pass --hf TYPE / --config FILE), got {spec.model!r}")


def make_batch(spec: ModelSpec, model, batch: int, data: str, seed: int):
    """(inputs, targets, description). Reference models with ``data="auto"``: Fashion-MNIST test
    images (normalized with the split's own channel mean/std) or Shakespeare byte windows when
    present; everything else: random inputs from the role map's input facts, targets uniform over
    the model's outputs."""
    g = torch.Generator().manual_seed(seed)
    if not (spec.hf or spec.config) and data == "auto":
        try:
            if spec.model == "vit":
                from ..data import load_vision

                d = load_vision("fashion-mnist", split="test")
                idx = torch.randperm(len(d.labels), generator=g)[:batch]
                mean, std = d.channel_stats()
                x = (d.images[idx].float() / 255.0 - mean[None, :, None, None]) / std[None, :, None, None]
                return x, d.labels[idx], "Fashion-MNIST test images (normalized)"
            from ..data import load_text

            text = load_text("shakespeare").encode("latin-1", "replace")
            buf = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
            starts = torch.randint(0, len(buf) - spec.tokens - 1, (batch,), generator=g)
            win = torch.stack([buf[s:s + spec.tokens + 1] for s in starts.tolist()])
            return win[:, :-1], win[:, 1:], "Shakespeare byte windows"
        except InitlabError:  # the data is optional (missing or unreadable): random instead
            pass
    rm = roles(model)
    x = make_inputs(rm, model, batch=batch, tokens=spec.tokens, generator=g)
    args, kw = forward_inputs(rm, x, seed=seed)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        was = model.training
        model.eval()
        try:
            out, _ = output_tensor(model(*args, **kw))
        finally:
            model.train(was)
    y = torch.randint(0, out.shape[-1], tuple(out.shape[:-1]), generator=g)
    kind = rm.facts.inputs.kind
    what = {"tokens": "uniform random token ids", "image": "random N(0,1) images",
            "features": "random N(0,1) feature frames", "embeddings": "random N(0,1) embeddings", "audio": "random N(0,1) raw audio"}
    return x, y, what.get(kind, "random inputs")


def init_model(model, param: str, init: str, seed: int):
    """Every weight as ``param`` prescribes, then ``init`` on top: one plan, one generator.
    ``param="native"`` with init "default" keeps the model's own initialization (returns None)."""
    from ..schemes.plan import InitPlan

    if param == NATIVE:
        if init in ("default", "none", ""):
            return None
        plan = InitPlan.build(init)
    else:
        plan = InitPlan.build(init or "default", param=param, always_parametrize=True)
    plan.initialize_(model, seed)
    return plan.parametrization


def constants_for(spec: ModelSpec, model, p, init: str):
    """The declared constants of the parametrization on a reference model, else (after another
    scheme, or on a Hugging Face model) None: the theory reads them from the weights."""
    from ..theory import Constants

    if p is None or spec.hf or spec.config or init not in ("default", "none", ""):
        return None
    rm = roles(model)
    n_patch = rm.by_role("patch_embed")[0].fan_in if rm.by_role("patch_embed") else 1
    return Constants.from_parametrization(p, width=rm.width, mlp_ratio=4, n_patch=n_patch)


def probe_one(s: ProbeSettings, width: int | None, depth: int | None, param: str | None = None, *,
              predict: bool | None = None, seed: int | None = None) -> ProbeReport:
    """Build, initialize and probe one model (the theory next to it unless ``predict`` is False)."""
    param = s.param if param is None else param
    seed = s.seed if seed is None else seed
    predict = s.theory if predict is None else predict
    model = build_model(s.spec, width, depth, seed=seed)
    p = init_model(model, param, s.init, seed)
    x, y, source = make_batch(s.spec, model, s.batch, s.data, seed + 100)
    rep = probe(model, x, y if s.targets else None, predict=predict, output_index=live_output(model),
                constants=constants_for(s.spec, model, p, s.init) if predict else None,
                samples=s.samples, seed=seed)
    rep.meta.update(model=s.spec.label, param=param, init=s.init, data=source, seed=seed)
    return rep


def live_output(model) -> int:
    """0, or the first row of the token table that is not a padding row (all zeros): with a tied
    head, logit 0 of a model whose pad id is 0 is identically 0 and has no gradient."""
    tables = sorted((i for i in roles(model).by_role("token_embed") if i.param.dim() == 2),
                    key=lambda i: -i.param.shape[0])
    if not tables:
        return 0
    w = tables[0].param.detach()
    live = (w != 0).any(1).nonzero()
    return int(live[0]) if len(live) else 0


@dataclass
class ProbeRun:
    reports: list
    written: list = field(default_factory=list)


def run_probe(s: ProbeSettings, widths: list, depth: int | None, out: str | None = None) -> ProbeRun:
    """Probe at each width; with ``out`` write probe[_wN].{json,csv,png} (and widths.png)."""
    run = ProbeRun([])
    for w in widths:
        rep = probe_one(s, w, depth)
        run.reports.append(rep)
        if out:
            stem = "probe" if len(widths) == 1 else f"probe_w{w}"
            d = Path(out)
            run.written += [rep.write_json(d / f"{stem}.json"), rep.write_csv(d / f"{stem}.csv"),
                            rep.plot(d / f"{stem}.png", title=f"{s.spec.label} n={rep.width} "
                                     f"L={rep.depth} {s.param}/{s.init}")]
    if out and len(widths) > 1:
        run.written.append(plot_widths(run.reports, Path(out) / "widths.png"))
    return run


def plot_widths(reports, path: Path) -> Path:
    """G, cosine and mlp_out gradient RMS per block, one colour per width; theory dashed."""
    from ..plotting import save, subplots

    fig, axes = subplots(1, 3, figsize=(14, 4))
    for j, rep in enumerate(reports):
        c = f"C{j}"
        x = range(1, rep.depth + 1)
        pb = (rep.predicted or {}).get("blocks") or []
        pg = ((rep.predicted or {}).get("grads") or {}).get("blocks") or []
        axes[0].plot(x, [b["G"] for b in rep.blocks], "o", ms=4, color=c, label=f"n={rep.width}")
        axes[1].plot(x, [b["cosine"] for b in rep.blocks], "o", ms=4, color=c)
        axes[2].semilogy(x, [rep.grad_rms("mlp_out", i) or float("nan") for i in range(rep.depth)], "o",
                         ms=4, color=c)
        if pb:
            axes[0].plot(x, [(p or {}).get("G", float("nan")) for p in pb], "--", color=c)
            axes[1].plot(x, [(p or {}).get("cosine", float("nan")) for p in pb], "--", color=c)
        if pg:
            axes[2].semilogy(x, [p["mlp_out"] for p in pg], "--", color=c)
    for ax, t in zip(axes, ("residual G", "token-token cosine", "grad RMS mlp_out")):
        ax.set_title(t + " (dashed: theory)")
        ax.set_xlabel("block")
    axes[0].legend()
    return save(fig, path, dpi=110)


# ------------------------------------------------------------------------------------------------
# the agreement table
# ------------------------------------------------------------------------------------------------
def agreement_row(rep: ProbeReport) -> dict:
    """Relative errors of one probe report against its prediction (None where not predicted)."""
    cmp = rep.comparison()
    gs = [c["rel_error"] for c in cmp if c["quantity"] == "G" and c["block"] is not None
          and c["block"] >= 0 and c["rel_error"] is not None]
    grads = [c for c in cmp if c["quantity"].startswith("grad_rms") and c["rel_error"] is not None
             and c["quantity"] != "grad_rms.head_bias"]  # head bias: exactly N·B/√n_out
    qk = [c["rel_error"] for c in grads if c["quantity"] in ("grad_rms.q", "grad_rms.k")]
    gr = [abs(c["rel_error"]) for c in grads if c["quantity"] not in ("grad_rms.q", "grad_rms.k")]
    gm = [abs(c["rel_error"]) for c in cmp if c["quantity"] == "G_mid" and c["rel_error"] is not None]
    stem = next((c["rel_error"] for c in cmp if c["quantity"] == "G" and c["block"] == -1), None)
    pb = [p for p in (rep.predicted or {}).get("blocks") or [] if p]
    out = next((c["rel_error"] for c in cmp if c["quantity"] == "output_logit_var"), None)
    mean = (lambda v: sum(v) / len(v) if v else None)  # noqa: E731
    return dict(model=rep.meta.get("model", rep.model_class), param=rep.meta.get("param"), width=rep.width,
                depth=rep.depth, seed=rep.meta.get("seed"), G_final=rep.blocks[-1]["G"],
                G_final_pred=pb[-1]["G"] if pb and len(pb) == len(rep.blocks) else None,
                G_stem_rel=stem, G_signed_mean_rel=mean(gs), G_max_rel=max(map(abs, gs)) if gs else None,
                G_mean_rel=mean([abs(e) for e in gs]), G_mid_max_rel=max(gm) if gm else None, output_rel=out,
                grad_median_rel=sorted(gr)[len(gr) // 2] if gr else None, grad_max_rel=max(gr) if gr else None,
                grad_groups=len(gr), qk_signed_mean_rel=mean(qk),
                qk_max_rel=max(abs(e) for e in qk) if qk else None, G_rel_blocks=gs,
                unavailable="; ".join(sorted((rep.predicted or {}).get("unavailable") or {})))


def _pct(v, signed=False) -> str:
    return "n/a" if v is None else (f"{100 * v:+.1f}%" if signed else f"{100 * v:.1f}%")


def agreement_markdown(rows: list[dict]) -> str:
    head = ["model", "param", "width", "depth", "seed", "G last block (measured / theory)", "G stem",
            "max \\|err\\| G over blocks", "mean \\|err\\| G", "max \\|err\\| G_mid", "output var", "grad RMS median \\|err\\|",
            "grad RMS max \\|err\\| (groups)", "q,k grad: mean err / max \\|err\\|", "not predicted"]
    body = []
    for r in rows:
        pred = "n/a" if r["G_final_pred"] is None else f"{r['G_final_pred']:.4g}"
        body.append([r["model"], str(r["param"]), str(r["width"]), str(r["depth"]), str(r["seed"]),
                     f"{r['G_final']:.4g} / {pred}", _pct(r["G_stem_rel"], True), _pct(r["G_max_rel"]),
                     _pct(r["G_mean_rel"]), _pct(r["G_mid_max_rel"]), _pct(r["output_rel"], True), _pct(r["grad_median_rel"]),
                     f"{_pct(r['grad_max_rel'])} ({r['grad_groups']})",
                     f"{_pct(r['qk_signed_mean_rel'], True)} / {_pct(r['qk_max_rel'])}",
                     r["unavailable"] or "-"])
    return markdown_table(head, body)


def agreement_seed_means(rows: list[dict]) -> list[dict]:
    """Per (model, param, width, depth) with two or more seeds: the signed error of G per block
    averaged over the seeds (each seed a fresh draw of weights and batch), its largest magnitude
    over the blocks, and the standard error of that mean. The theory predicts the mean over draws;
    one draw scatters by O(1/sqrt(n)) around it (docs/theory.md), which the mean over S seeds
    shrinks by sqrt(S)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("G_rel_blocks"):
            groups.setdefault((r["model"], r["param"], r["width"], r["depth"]), []).append(r)
    out = []
    for (model, param, width, depth), rs in groups.items():
        n = min(len(r["G_rel_blocks"]) for r in rs)
        if len(rs) < 2 or n == 0:
            continue
        per_block = [[r["G_rel_blocks"][b] for r in rs] for b in range(n)]
        means = [sum(v) / len(v) for v in per_block]
        ses = [(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v)) ** 0.5 for v, m in zip(per_block, means)]
        worst = max(range(n), key=lambda b: abs(means[b]))
        stems = [r["G_stem_rel"] for r in rs if r["G_stem_rel"] is not None]
        stem_mean = sum(stems) / len(stems) if stems else None
        stem_std = ((sum((x - stem_mean) ** 2 for x in stems) / (len(stems) - 1)) ** 0.5
                    if len(stems) > 1 else None)
        out.append(dict(model=model, param=param, width=width, depth=depth, seeds=len(rs),
                        stem_mean_rel=stem_mean, stem_std_rel=stem_std, G_seed_mean_max_rel=abs(means[worst]),
                        G_seed_mean_max_block=worst + 1, G_seed_mean_se=ses[worst],
                        G_single_draw_max_rel=max(r["G_max_rel"] for r in rs)))
    return out


def seed_means_markdown(means: list[dict]) -> str:
    head = ["model", "param", "width", "depth", "seeds", "G stem: mean ± std over seeds",
            "max \\|seed-mean err\\| G over blocks (block)", "its standard error",
            "max \\|err\\| G of one draw (worst seed)"]
    body = [[m["model"], str(m["param"]), str(m["width"]), str(m["depth"]), str(m["seeds"]),
             "n/a" if m["stem_mean_rel"] is None else
             f"{100 * m['stem_mean_rel']:+.1f}% ± {100 * (m['stem_std_rel'] or 0):.1f}%",
             f"{100 * m['G_seed_mean_max_rel']:.1f}% ({m['G_seed_mean_max_block']})",
             f"{100 * m['G_seed_mean_se']:.1f}%", f"{100 * m['G_single_draw_max_rel']:.1f}%"] for m in means]
    return markdown_table(head, body)


@dataclass
class Agreement:
    rows: list
    markdown: str
    written: list = field(default_factory=list)


def run_agreement(s: ProbeSettings, widths: list, depths: list, params: list, seeds: list,
                  out: str | None = ".", progress=None) -> Agreement:
    """Relative error of G (every block), output variance and gradient RMS per width x depth x
    param x seed: one fresh draw of the weights per row, the prediction never fitted. Writes
    OUT/theory_agreement.{json,md,png} and the deepest reports' JSON. ``progress(row)`` is called
    after each row (the CLI prints it)."""
    rows, kept, written = [], {}, []
    d_out = Path(out) if out else None
    for param in params:
        for w in widths:
            for d in depths:
                for seed in seeds:
                    rep = probe_one(s, w, d, param, predict=True, seed=seed)
                    row = agreement_row(rep)
                    rows.append(row)
                    if progress:
                        progress(row)
                    if d == max(depths) and d_out is not None:
                        written.append(rep.write_json(d_out / f"theory_agreement_{param}_w{w}_d{d}_s{seed}.json"))
                        if seed == seeds[0]:
                            kept[(param, w)] = rep
    md = agreement_markdown(rows)
    means = agreement_seed_means(rows)
    if means:
        md += "\n\nMean over seeds (the theory predicts the mean over draws):\n\n" + seed_means_markdown(means)
    if d_out is not None:
        written.append(write_json(d_out / "theory_agreement.json", rows, indent=1))
        written.append(atomic_write_text(d_out / "theory_agreement.md", md + "\n"))
        if kept:
            written.append(plot_agreement(kept, d_out / "theory_agreement.png"))
    return Agreement(rows, md, written)


def plot_agreement(kept: dict, path: Path) -> Path:
    from ..plotting import save, subplots

    fig, axes = subplots(1, 2, figsize=(12, 4.5))
    for j, ((param, w), rep) in enumerate(sorted(kept.items())):
        c = f"C{j}"
        x = range(1, rep.depth + 1)
        pb = rep.predicted["blocks"]
        axes[0].plot(x, [b["G"] for b in rep.blocks], "o", ms=3, color=c, label=f"{param} n={w}")
        axes[0].plot(x, [(p or {}).get("G", float("nan")) for p in pb], "-", lw=0.8, color="k" if j == 0 else c)
        pg = (rep.predicted.get("grads") or {}).get("blocks") or []
        if pg:
            axes[1].semilogy(x, [rep.grad_rms("mlp_out", i) for i in range(rep.depth)], "o", ms=3, color=c)
            axes[1].semilogy(x, [p["mlp_out"] for p in pg], "-", lw=0.8, color=c)
            axes[1].semilogy(x, [rep.grad_rms("q", i) for i in range(rep.depth)], "^", ms=3, color=c)
            axes[1].semilogy(x, [p["q"] for p in pg], ":", lw=0.8, color=c)
    axes[0].set_title("residual-stream G per block: measured (dots) vs leading order (lines)")
    axes[1].set_title("gradient RMS of Σ logit_0: mlp_out (o, —) and q (^, ···)")
    for ax in axes:
        ax.set_xlabel("block")
    axes[0].legend(fontsize=8)
    return save(fig, path, dpi=110)


# ------------------------------------------------------------------------------------------------
# the coordinate check
# ------------------------------------------------------------------------------------------------
@dataclass
class CoordRun:
    check: object
    data: str
    written: list = field(default_factory=list)


def run_coordcheck(spec: ModelSpec, widths: list, depth: int, params: list, *, optimizer: str = "adamw",
                   lr: float = 2e-3, steps: int = 4, batch: int = 16, data: str = "auto", seed: int = 0,
                   head_dim: int = 32, out: str | None = None, depths: list | None = None) -> CoordRun:
    """:func:`initlab.coord_check.coord_check` on ``spec`` at ``widths`` (heads = width // head_dim),
    one fixed batch; with ``depths`` at each of them too (base depth the smallest); with ``out``
    writes coordcheck.csv, coordcheck.png and coordcheck_act.png."""
    from ..coord_check import coord_check

    if len(widths) < 2 and len(depths or ()) < 2:
        raise ConfigError("a coordinate check needs at least two widths or two depths; pass --widths 64,128 "
                          "or --depths 2,4,8")

    def make(w, d=depth):
        return build_model(replace(spec, heads=max(1, w // head_dim)), w, d, seed=seed)

    x, y, source = make_batch(spec, make(min(widths)), batch, data, seed)
    cc = coord_check(make, widths, x, y, params=params, optimizer=optimizer, lr=lr, steps=steps, seed=seed,
                     depths=depths)
    run = CoordRun(cc, source)
    if out:
        d = Path(out)
        run.written = [cc.write_csv(d / "coordcheck.csv"), cc.plot(d / "coordcheck.png", key="delta"),
                       cc.plot(d / "coordcheck_act.png", key="act")]
    return run


__all__ = ["ModelSpec", "ProbeSettings", "build_model", "make_batch", "init_model", "probe_one",
           "run_probe", "run_agreement", "agreement_row", "agreement_markdown", "agreement_seed_means", "run_coordcheck",
           "hf_config", "hf_model_class"]
