"""The baseline zoo as declarative per-role rules (docs/schemes.md lists every scheme and its source).

Every scheme here is a tuple of :class:`~initlab.schemes.spec.Rule` over role names, with the
std a function of (fan_in, fan_out, width d, depth L, block index l, options). Notation:
L = number of blocks, l = block index from 0, d = width, σ = base std. "in-proj" = q, k, v,
mlp_in; "out-proj" = o, mlp_out (the residual-branch output matrices).
"""
from __future__ import annotations

import math

from ..errors import InitError
from ..roles import BIAS
from .spec import IN_PROJ, MATRIX_ROLES, OUT_PROJ, TABLES, Context, Rule, Scheme


def opt(key: str):
    return lambda c: c.opt[key]


def _sqrt_2L(c: Context) -> float:
    return math.sqrt(2.0 * c.depth)


def _layer(c: Context) -> int:
    if c.layer is None:
        raise InitError(f"{c.name}: role {c.role} has no block index in the role map, but this "
                        f"scheme's std depends on the layer")
    return c.layer


BIASES_ZERO = Rule(("patch_embed",) + MATRIX_ROLES, "zeros", kind=BIAS, note="biases 0")

DEFAULT = Scheme(
    "default", "leave the model as built: PyTorch module defaults; initlab's learned tables N(0, 0.02²)",
    "PyTorch nn.Linear/nn.Conv2d reset_parameters (kaiming_uniform, a=√5)",
    formula="no-op", models="any model")

TRUNC_NORMAL = Scheme(
    "trunc_normal", "timm/BERT/ViT style: Linear weights and learned tables trunc-N(0, σ²), biases 0",
    "huggingface/pytorch-image-models timm/models/vision_transformer.py (init_weights_vit_timm); "
    "BERT (arXiv 1810.04805) truncated_normal(0.02)",
    rules=(
        Rule(MATRIX_ROLES + ("token_embed", "pos_embed"), "trunc_normal", opt("std"), opt("truncate")),
        Rule(("cls_token",), "normal", opt("cls_std"), note="timm: cls N(0, 1e-6²)"),
        Rule(MATRIX_ROLES, "zeros", kind=BIAS),
    ),
    options=dict(std=0.02, truncate=2.0, cls_std=1e-6), primary="std",
    formula="W ~ trunc-N(0, σ²) cut at ±truncate·σ (σ=0.02, truncate=2); cls N(0, 1e-6²); biases 0; "
            "patch conv and norms untouched")

GPT2 = Scheme(
    "gpt2", "GPT-2/Megatron/nanoGPT: every weight N(0, σ²), out-proj σ/√(2L), biases 0",
    "arXiv 1909.08053; karpathy/nanoGPT model.py; transformers gpt2/modeling_gpt2.py",
    rules=(
        Rule(("patch_embed",) + MATRIX_ROLES + TABLES, "normal", opt("std")),
        Rule(OUT_PROJ, "normal", lambda c: c.opt["std"] / _sqrt_2L(c)),
        BIASES_ZERO,
    ),
    options=dict(std=0.02), primary="std",
    formula="W ~ N(0, σ²), σ=0.02; o, mlp_out: σ/√(2L); biases 0")


def _titan_out_std(c: Context) -> float:
    base = c.opt["std"]
    if c.opt["depth_init"]:
        return base / math.sqrt(2.0 * (_layer(c) + 1))
    return base / _sqrt_2L(c)


TORCHTITAN = Scheme(
    "torchtitan", "torchtitan Llama depth init: in-proj trunc-N(0.02), out-proj 0.02/√(2(l+1)), "
    "token embedding N(0,1), head trunc-N(d^-½) at ±3σ",
    "pytorch/torchtitan torchtitan/models/llama3 (init_weights, depth_init)",
    rules=(
        # nn.init.trunc_normal_ default bounds are absolute ±2, i.e. ±100σ at σ=0.02: kept as is
        Rule(IN_PROJ, "trunc_normal", opt("std"), lambda c: 2.0 / c.opt["std"]),
        Rule(OUT_PROJ, "trunc_normal", _titan_out_std, lambda c: 2.0 / _titan_out_std(c)),
        Rule(("token_embed",), "normal", 1.0),
        Rule(("head",), "trunc_normal", lambda c: c.width ** -0.5, 3.0),
        Rule(("norm",), "constant", 1.0),
        Rule(("norm",), "zeros", kind=BIAS),
        Rule(MATRIX_ROLES, "zeros", kind=BIAS),
    ),
    options=dict(std=0.02, depth_init=True),
    formula="q,k,v,mlp_in trunc-N(0.02²) (abs. cut ±2); o, mlp_out std 0.02/√(2(l+1)) "
            "(depth_init=False: 0.02/√(2L)); token_embed N(0,1); head trunc-N(1/d) cut ±3σ; norms 1/0")


def _mitchell_out(c: Context) -> float:
    return 1.0 / math.sqrt(2.0 * c.fan_in * (_layer(c) + 1))


MITCHELL = Scheme(
    "mitchell", "OLMo 'mitchell': std 1/√fan_in, out-proj 1/√(2·fan_in·(l+1)), embeddings 1/√d, "
    "truncated at 3σ",
    "allenai/OLMo olmo/initialization.py (InitFnType.mitchell), olmo/model.py",
    rules=(
        Rule(("patch_embed",) + IN_PROJ + ("head",), "trunc_normal", lambda c: c.fan_in ** -0.5, 3.0),
        Rule(OUT_PROJ, "trunc_normal", _mitchell_out, 3.0),
        Rule(TABLES, "trunc_normal", lambda c: c.width ** -0.5, 3.0),
        BIASES_ZERO,
    ),
    formula="q,k,v,mlp_in,head,patch: trunc-N(1/fan_in) ±3σ; o, mlp_out 1/√(2·fan_in·(l+1)); "
            "tables 1/√d")

FULL_MEGATRON = Scheme(
    "full_megatron", "OLMo 'full_megatron': in-proj and embeddings σ, out-proj σ/√(2L), head 1/√d, "
    "truncated at 3σ",
    "allenai/OLMo olmo/initialization.py (InitFnType.full_megatron)",
    rules=(
        Rule(("patch_embed",) + IN_PROJ + TABLES, "trunc_normal", opt("std"), opt("cutoff")),
        Rule(OUT_PROJ, "trunc_normal", lambda c: c.opt["std"] / _sqrt_2L(c), opt("cutoff")),
        Rule(("head",), "trunc_normal", lambda c: c.width ** -0.5, opt("cutoff")),
        BIASES_ZERO,
    ),
    options=dict(std=0.02, cutoff=3.0), primary="std",
    formula="in-proj, tables trunc-N(σ²) (σ=0.02); o, mlp_out σ/√(2L); head 1/√d; cut ±3σ")

SMALL_INIT = Scheme(
    "small_init", "Nguyen & Salazar small init: every weight N(0, 2/(5d))",
    "arXiv 1910.05895; EleutherAI/gpt-neox megatron/model/init_functions.py (small_init_init_method)",
    rules=(
        Rule(("patch_embed",) + MATRIX_ROLES + TABLES, "normal", lambda c: math.sqrt(2.0 / (5 * c.width))),
        BIASES_ZERO,
    ),
    formula="W ~ N(0, 2/(5d)); biases 0 (GPT-NeoX pairs it with wang_init: 'small_init+wang_init')")

WANG_INIT = Scheme(
    "wang_init", "GPT-J/NeoX wang init of the residual output matrices: N(0, (2/(L√d))²)",
    "EleutherAI/gpt-neox megatron/model/init_functions.py (wang_init_method); kingoflolz/mesh-transformer-jax",
    rules=(
        Rule(OUT_PROJ, "normal", lambda c: 2.0 / (c.depth * math.sqrt(c.width))),
        Rule(OUT_PROJ, "zeros", kind=BIAS),
    ),
    formula="o, mlp_out ~ N(0, (2/(L√d))²); biases 0; nothing else touched")


def _xavier(dist: str, name: str, formula: str) -> Scheme:
    return Scheme(
        name, f"Glorot & Bengio: {dist.split('_')[1]} with std gain·√(2/(fan_in+fan_out)) per role slot",
        "Glorot & Bengio, AISTATS 2010; torch.nn.init.xavier_*; timm 'moco' (per q/k/v fans)",
        rules=(Rule(("patch_embed",) + MATRIX_ROLES, dist, opt("gain")), BIASES_ZERO),
        options=dict(gain=1.0), primary="gain", formula=formula)


XAVIER = _xavier("xavier_uniform", "xavier",
                 "W ~ U(±gain·√(6/(fan_in+fan_out))), fans per q/k/v slot; biases 0; tables untouched")
XAVIER_NORMAL = _xavier("xavier_normal", "xavier_normal",
                        "W ~ N(0, gain²·2/(fan_in+fan_out)), fans per q/k/v slot; biases 0")


def _tfixup_scale(c: Context) -> float:
    if c.opt["stack"] == "encoder":
        return 0.67 * c.depth ** -0.25
    if c.opt["stack"] == "decoder":
        return (9.0 * c.depth) ** -0.25
    raise InitError(f"t_fixup stack must be 'encoder' or 'decoder', got {c.opt['stack']!r}")


TFIXUP = Scheme(
    "t_fixup", "T-Fixup: Xavier everywhere, embeddings N(0, d^-1), v, o, MLP × 0.67·L^-¼ "
    "(encoder) or (9L)^-¼ (decoder, embeddings too)",
    "Huang et al., ICML 2020 'Improving Transformer Optimization Through Better Initialization'; "
    "layer6ai-labs/T-Fixup",
    rules=(
        Rule(("patch_embed",) + MATRIX_ROLES, "xavier_uniform", 1.0),
        Rule(("v", "o", "mlp_in", "mlp_out"), "xavier_uniform", _tfixup_scale),
        Rule(("token_embed",), "normal",
             lambda c: c.width ** -0.5 * (1.0 if c.opt["stack"] == "encoder" else _tfixup_scale(c))),
        BIASES_ZERO,
    ),
    options=dict(stack="encoder"),
    formula="Xavier-uniform (gain 1); v, o, mlp_in, mlp_out gain 0.67·L^-¼ (stack=encoder) or "
            "(9L)^-¼ (decoder); token_embed N(0, 1/d) (decoder: × (9L)^-¼); LayerNorms are kept")


def _deepnorm_alpha(o: dict, depth: int) -> float:
    return o["alpha"] if o["alpha"] is not None else (2.0 * depth) ** 0.25


def _deepnorm_beta(c: Context) -> float:
    return c.opt["beta"] if c.opt["beta"] is not None else (8.0 * c.depth) ** -0.25


def _deepnorm_check(model, rmap, o) -> None:
    position = rmap.facts.norm_position
    if position == "pre" and not o["allow_pre_ln"]:
        raise InitError(
            f"deepnorm's x ← LN(α·x + G(x)) is a post-LN layout, but {rmap.model_class} is pre-LN "
            f"(its role map's facts.norm_position is 'pre'); build it post-LN (initlab ViT/GPT: "
            f"norm_position='post'), pass allow_pre_ln=True to scale a pre-LN skip anyway, or use "
            f"'deepnorm_init' for the weight part only")
    if rmap.controls.set_skip_scale is None:
        raise InitError(
            f"deepnorm needs to set the residual skip multiplier α = (2L)^¼, but {rmap.model_class} "
            f"exposes no skip-scale control in its role map (initlab's ViT/GPT do: "
            f"skip_scale + norm_position='post'); use 'deepnorm_init' for the weight part only")
    if position is None and not o["allow_pre_ln"]:
        raise InitError(
            f"deepnorm's x ← LN(α·x + G(x)) is a post-LN layout, and the role map of "
            f"{rmap.model_class} cannot tell where its norms sit (facts.norm_position is None); pass "
            f"allow_pre_ln=True if you know it is post-LN, or use 'deepnorm_init'")


def _deepnorm_setup(model, rmap, o) -> None:
    rmap.controls.set_skip_scale(_deepnorm_alpha(o, rmap.depth))


_DEEPNORM_RULES = (
    Rule(("q", "k"), "xavier_normal", 1.0),
    Rule(("v", "o", "mlp_in", "mlp_out"), "xavier_normal", _deepnorm_beta),
    Rule(("q", "k", "v", "o", "mlp_in", "mlp_out"), "zeros", kind=BIAS),
)

DEEPNORM = Scheme(
    "deepnorm", "DeepNorm: post-LN x ← LN(α·x + G(x)), α = (2L)^¼; Xavier-normal, gain β = (8L)^-¼ "
    "on v, o, mlp (q, k gain 1)",
    "arXiv 2203.00555 (DeepNet); microsoft/torchscale torchscale/architecture/encoder.py",
    rules=_DEEPNORM_RULES, check=_deepnorm_check, setup=_deepnorm_setup,
    options=dict(alpha=None, beta=None, allow_pre_ln=False),
    requires=("skip_scale",),
    models="models with a skip-scale control, post-LN (initlab ViT/GPT: norm_position='post')",
    formula="q,k Xavier-N(gain 1); v,o,mlp_in,mlp_out Xavier-N(gain (8L)^-¼); skip α=(2L)^¼ "
            "set through role_map.controls.set_skip_scale")

DEEPNORM_INIT = Scheme(
    "deepnorm_init", "DeepNorm's weight init only (β = (8L)^-¼), for models without a skip control",
    "arXiv 2203.00555 (DeepNet)",
    rules=_DEEPNORM_RULES, options=dict(beta=None),
    formula="as deepnorm, without α (the skip multiplier stays 1)")


def _gain_check(kind: str):
    def check(model, rmap, o) -> None:
        gains = rmap.by_role("gain")
        if not gains:
            raise InitError(
                f"{kind} sets residual-branch gains, but {rmap.model_class} has none in its role map; "
                f"build the model with branch_gain='{'layerscale' if kind == 'layerscale' else kind}' "
                f"(initlab ViT/GPT option)")
        vector = kind == "layerscale"
        for info in gains:
            if (info.param.numel() > 1) != vector:
                have = "per-channel" if info.param.numel() > 1 else "scalar"
                want = "per-channel (branch_gain='layerscale')" if vector else \
                    f"scalar (branch_gain='{kind}')"
                raise InitError(f"{kind} needs {want} gains, but {info.name} is {have}; rebuild "
                                f"the model with the matching branch_gain")
    return check


def _layerscale_value(c: Context) -> float:
    if c.opt["init"] is not None:
        return c.opt["init"]
    return 0.1 if c.depth <= 18 else (1e-5 if c.depth <= 24 else 1e-6)  # CaiT's schedule


REZERO = Scheme(
    "rezero", "ReZero: x + α_l·F(x), scalar α_l = 0 at init", "arXiv 2003.04887; majumderb/rezero",
    rules=(Rule(("gain",), "constant", 0.0),), requires=("gains",), check=_gain_check('rezero'),
    models="scalar branch gains (initlab ViT/GPT: branch_gain='rezero')",
    formula="every branch gain α = 0 (our models keep their LayerNorms)")

SKIPINIT = Scheme(
    "skipinit", "SkipInit: x + α·F(x), scalar α initialized to 0 (or small)", "arXiv 2002.10444",
    rules=(Rule(("gain",), "constant", opt("init")),), requires=("gains",), check=_gain_check('skipinit'),
    options=dict(init=0.0), primary="init",
    models="scalar branch gains (initlab ViT/GPT: branch_gain='skipinit')",
    formula="every branch gain α = init (default 0)")

LAYERSCALE = Scheme(
    "layerscale", "LayerScale: x + diag(λ)·F(x), λ = 0.1 (L ≤ 18), 1e-5 (L ≤ 24), 1e-6 (deeper)",
    "arXiv 2103.17239 (CaiT); timm vision_transformer.py Block(init_values=...)",
    rules=(Rule(("gain",), "constant", _layerscale_value),), requires=("gains",), check=_gain_check('layerscale'),
    options=dict(init=None), primary="init",
    models="per-channel branch gains (initlab ViT/GPT: branch_gain='layerscale')",
    formula="λ = init, else 0.1 if L ≤ 18, 1e-5 if L ≤ 24, 1e-6 beyond")

ZERO_OUT = Scheme(
    "zero_out", "zero-init residual output projections: every block starts as the identity",
    "KellerJordan/modded-nanogpt train_gpt.py (MLP down-projection, formerly attention W_o)",
    rules=(
        Rule(("o",), "zeros", lambda c: 0.0 if c.opt["attn"] else None, kind="both"),
        Rule(("mlp_out",), "zeros", lambda c: 0.0 if c.opt["mlp"] else None, kind="both"),
    ),
    options=dict(attn=True, mlp=True),
    formula="o (attn=True) and mlp_out (mlp=True) weights and biases = 0")

ZOO = (DEFAULT, TRUNC_NORMAL, GPT2, TORCHTITAN, MITCHELL, FULL_MEGATRON, SMALL_INIT, WANG_INIT,
       XAVIER, XAVIER_NORMAL, TFIXUP, DEEPNORM, DEEPNORM_INIT, REZERO, SKIPINIT, LAYERSCALE, ZERO_OUT)

