"""Hugging Face coverage, like timm's test_models: a representative subset of the installed
transformers' auto mappings, built tiny from configs (never from_pretrained), through the same
journey as the full sweep (tools/hf_coverage.py, report in docs/coverage.md):

roles -> mimetic -> inits (trunc_normal, mu, small_init) -> probe_model -> param_groups + 2 AdamW
steps -> parametrize mu + save_pretrained/from_pretrained, every step checked for its semantics
(identities, untouched tensors, norm gains, frozen tensors, moving weights, same logits).

Types initlab cannot handle are refused with initlab's own error and the reason.
"""
import functools
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="Hugging Face transformers is not installed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import hf_coverage  # noqa: E402

import initlab  # noqa: E402
from initlab.errors import RoleMapError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# the sample: every step of the journey, each type in a few seconds
JOURNEY = [
    ("causal-lm", "gpt2"),  # Conv1D fused [q|k|v], tied head
    ("causal-lm", "llama"),  # GQA, RoPE, gate/up/down
    ("causal-lm", "gemma2"),  # x(1+w) norms, embedding scale, softcap
    ("causal-lm", "deepseek_v3"),  # multi-head latent attention, MoE
    ("causal-lm", "jamba"),  # hybrid: Mamba mixers beside softmax attention
    ("causal-lm", "qwen3_next"),  # hybrid: gated delta-net beside gated softmax attention
    ("seq2seq", "t5"),  # relative positions, EncDecAttention (cross)
    ("seq2seq", "bart"),  # encoder-decoder with cross-attention, tied head
    ("speech-seq2seq", "whisper"),  # frozen sinusoidal encoder positions
    ("image", "vit"),
    ("image", "deit"),  # two heads, distillation token
    ("masked-lm", "xlm"),  # sublayers in parallel lists (attentions.i, ffns.i): no block module
]
# steps that fail on this branch because the fix lives on another branch of issue 18 (owner in the
# reason). strict: once the fix is merged the test XPASSes and fails, so the entry must go.
PENDING: dict = {}  # (model_type, step) -> reason, for a step waiting on a fix elsewhere


@functools.lru_cache(maxsize=None)
def journey(head: str, model_type: str) -> hf_coverage.Result:
    return hf_coverage.check(head, model_type, timeout=120, vocab=512)


def _journey_cases():
    for head, t in JOURNEY:
        for step in hf_coverage.STEPS:
            marks = [pytest.mark.xfail(strict=True, reason=PENDING[(t, step)])] if (t, step) in PENDING else []
            yield pytest.param(head, t, step, marks=marks, id=f"{t}:{step}")


@pytest.mark.parametrize("head,model_type,step", list(_journey_cases()))
def test_journey_step(head, model_type, step):
    res = journey(head, model_type)
    if not res.buildable:
        pytest.skip(f"{model_type} does not build at tiny size in this transformers: {res.build}")
    assert res.has_attention
    assert getattr(res, step) == "ok", getattr(res, step)


# one or two of each layout family: the role map and mimetic identities (and mu training)
WORKS = [
    ("causal-lm", "mixtral"),  # MoE: 3-D experts [gate|up], router
    ("causal-lm", "gpt_oss"),  # MoE with interleaved gate/up and transposed experts, sinks
    ("causal-lm", "gpt_neox"),  # per-head interleaved [q_h|k_h|v_h]
    ("causal-lm", "codegen"),  # model-parallel blocks [q|v|k]
    ("causal-lm", "gpt_bigcode"),  # multi-query fused c_attn
    ("causal-lm", "phi3"),  # fused qkv_proj and gate_up_proj
    ("causal-lm", "opt"),  # out_proj naming, tied head
    ("causal-lm", "minimax"),  # hybrid: lightning (linear) attention beside softmax attention
    ("causal-lm", "falcon_h1"),  # hybrid: Mamba2 mixer in parallel with attention in every block
    ("masked-lm", "xlm-roberta"),  # tied alias lm_head.decoder
    ("masked-lm", "distilbert"),  # q_lin/k_lin/v_lin/out_lin
    ("masked-lm", "deberta"),  # per-head interleaved in_proj with separate q_bias/v_bias
    ("masked-lm", "modernbert"),  # Wqkv, Wi = [input|gate]
    ("image", "swin"),  # per-stage widths, window attention
    ("image", "siglip"),  # nn.MultiheadAttention pooling head (cross-attention)
]
REFUSED = [
    ("causal-lm", "mamba", "no softmax attention layer"),  # state-space only
    ("causal-lm", "rwkv", "no softmax attention layer"),
    ("causal-lm", "diffllama", "differential attention"),
]


@pytest.fixture(autouse=True)
def quiet_transformers():
    transformers.logging.set_verbosity_error()


@pytest.mark.parametrize("head,model_type", WORKS, ids=[f"{h}:{t}" for h, t in WORKS])
def test_type_works(head, model_type):
    res = hf_coverage.check(head, model_type, timeout=120, vocab=512, steps=("roles", "mimetic", "train"))
    if not res.buildable:
        pytest.skip(f"{model_type} does not build at tiny size in this transformers: {res.build}")
    assert res.roles == "ok", res.roles
    assert res.mimetic == "ok", res.mimetic
    assert res.train == "ok", res.train
    assert not any("not checked" in n for n in res.notes if "interface" not in n), res.notes


def build_or_skip(head: str, model_type: str):
    """The sweep's tiny model of ``model_type``, or a skip when this transformers cannot build it."""
    try:
        return hf_coverage.build(head, model_type, vocab=512)[0]
    except Exception as exc:  # noqa: BLE001 - many configs cannot be built tiny
        pytest.skip(f"{model_type} does not build at tiny size in this transformers: {exc}")


@pytest.mark.parametrize("head,model_type,why", REFUSED, ids=[t for _, t, _ in REFUSED])
def test_type_refused_with_reason(head, model_type, why):
    model = build_or_skip(head, model_type)
    with pytest.raises(RoleMapError, match=why):
        initlab.role_map(model)


def test_tied_head_mu_rescales_logits_without_untying():
    model, _ = hf_coverage.build("causal-lm", "opt", vocab=512)
    rm = initlab.role_map(model)
    assert rm.controls.tied_head
    emb = model.get_input_embeddings().weight
    initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(0))
    assert model.get_output_embeddings().weight is emb
    mult = initlab.role_map(model).controls.get_head_multiplier()
    assert mult == pytest.approx(rm.width ** -1.0)  # n^-(1+s)/2 with s = 1
    ids = torch.randint(3, 50, (1, 5))
    with torch.no_grad():
        scaled = model(ids).logits
        initlab.role_map(model).controls.set_head_multiplier(1.0)
        plain = model(ids).logits
    torch.testing.assert_close(scaled, mult * plain)


def test_unknown_layout_reasons_reach_the_user():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
    Odd.__module__ = "transformers.models.odd.modeling_odd"
    with pytest.raises(RoleMapError, match="found no attention module"):
        initlab.role_map(Odd())


def test_default_mimetic_preset_follows_causality():
    from initlab.mimetic import default_preset
    lm, _ = hf_coverage.build("causal-lm", "llama", vocab=512)
    enc, _ = hf_coverage.build("image", "vit")
    assert default_preset(initlab.role_map(lm)) == "language"
    assert default_preset(initlab.role_map(enc)) == "vision"


# hidden matrices the generic MLP pass does not name: each gets the role of the matrix of its side,
# and nothing hidden is left `other` (a scheme or mu group would miss it)
HIDDEN_ROLES = [
    ("causal-lm", "doge", {"model.layers.0.self_attn.dt_proj.weight": "mlp_gate"}),  # per-head gate
    ("speech-seq2seq", "canary", {  # conformer: relative-position key projection, pointwise convs
        "model.encoder.layers.0.self_attn.relative_k_proj.weight": "mlp_in",
        "model.encoder.layers.0.conv.pointwise_conv1.weight": "mlp_in",
        "model.encoder.layers.0.conv.pointwise_conv2.weight": "mlp_out",
        "model.encoder.layers.0.conv.depthwise_conv.weight": "other"}),  # like a Mamba conv1d
    ("masked-lm", "mobilebert", {"mobilebert.encoder.layer.0.bottleneck.input.dense.weight": "mlp_in",
                                 "mobilebert.encoder.layer.0.bottleneck.attention.dense.weight": "mlp_in"}),
    ("image", "hiera", {"hiera.encoder.stages.1.layers.0.proj.weight": "mlp_in",
                        "hiera.encoder.stages.1.layers.0.proj.bias": "mlp_in"}),
    ("speech-seq2seq", "seamless_m4t", {  # conformer speech encoder
        "speech_encoder.encoder.layers.0.self_attn.linear_q.weight": "q",
        "speech_encoder.encoder.layers.0.self_attn.linear_out.weight": "o",
        "speech_encoder.encoder.layers.0.self_attn.linear_pos.weight": "mlp_in",
        "speech_encoder.encoder.layers.0.ffn1.intermediate_dense.weight": "mlp_in",
        "speech_encoder.encoder.layers.0.ffn1.output_dense.weight": "mlp_out"}),
]


@pytest.mark.parametrize("head,model_type,roles", HIDDEN_ROLES, ids=[t for _, t, _ in HIDDEN_ROLES])
def test_hidden_matrices_get_the_role_of_their_side(head, model_type, roles):
    model = build_or_skip(head, model_type)
    rm = initlab.role_map(model)
    assert {name: rm.role_of(name) for name in roles} == roles
    assert hf_coverage.hidden_other(rm) == []
    assert not hf_coverage.uncovered_attention(model, rm)


@pytest.mark.parametrize("model_type", ["seamless_m4t", "seamless_m4t_v2"])
def test_seamless_conformer_per_head_views_are_the_modules_own_queries_keys_values(model_type):
    """x @ q_head(h) (+ bias) is head h of the query the conformer attention computes in a real
    forward pass of the speech encoder, likewise k and v; the head count and width are the module's."""
    model = build_or_skip("speech-seq2seq", model_type)
    rm = initlab.role_map(model)
    name = "speech_encoder.encoder.layers.0.self_attn"
    att = next(a for a in rm.attention if a.module_name == name)
    mod = model.get_submodule(name)
    assert (att.n_heads, att.head_dim, att.cross) == (mod.num_heads, mod.head_size, False)
    seen = {}

    def keep(p):
        def hook(m, args, out):
            seen.setdefault(p, (args[0].detach(), out.detach()))  # returns None: output unchanged
        return hook
    hooks = [getattr(mod, f"linear_{p}").register_forward_hook(keep(p)) for p in "qkv"]
    feats = torch.randn(2, 32, model.config.feature_projection_input_dim,
                        generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.speech_encoder(input_features=feats)
    for h in hooks:
        h.remove()
    for p, proj, head in (("q", att.q, att.q_head), ("k", att.k, att.k_head), ("v", att.v, att.v_head)):
        x, out = seen[p]
        own = out.reshape(*out.shape[:-1], mod.num_heads, mod.head_size)  # the module's own split
        for h in range(att.n_heads):
            bias = proj.bias_view()
            want = x @ head(h) + (0 if bias is None else bias[h * att.head_dim:(h + 1) * att.head_dim])
            torch.testing.assert_close(own[..., h, :], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head,model_type,why", [
    ("speech-seq2seq", "granite_speech", "Shaw relative-position term"),
    ("causal-lm", "inkling_text", "causal short convolution"),
    ("causal-lm", "zaya", "mixed across time and heads by causal convolutions"),
    ("masked-lm", "squeezebert", "groups=4.*block-diagonal"),
    ("image", "levit", "followed by batch normalization"),
    ("image", "cvt", "convolutional projections"),
    ("causal-lm", "inkling2_text", "convolution over time after its Linear"),
], ids=["granite_speech", "inkling_text", "zaya", "squeezebert", "levit", "cvt", "inkling2"])
def test_attention_initlab_cannot_express_is_refused_whole(head, model_type, why):
    model = build_or_skip(head, model_type)
    before = {n: p.clone() for n, p in model.named_parameters()}
    with pytest.raises(RoleMapError, match=why):
        initlab.role_map(model)
    with pytest.raises(RoleMapError, match=why):
        initlab.init_(model, "mimetic", generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # nothing written


@pytest.mark.parametrize("model_type", ["dory", "gpt_neo", "kolibri1_1", "bailing_hybrid"])
def test_tiny_configs_survive_save_and_reload(model_type, tmp_path):
    """The sweep's shrunk configs keep the per-layer lists and index settings consistent, so
    from_pretrained (which validates the config) reads back what save_pretrained wrote."""
    model, _ = hf_coverage.build("causal-lm", model_type, vocab=512)
    model.save_pretrained(tmp_path)
    again = type(model).from_pretrained(tmp_path)
    assert again.config.num_hidden_layers == model.config.num_hidden_layers
    for (n, p), (n2, p2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert n == n2 and torch.equal(p, p2)


def test_values_a_config_derives_follow_the_tiny_size():
    """The shrink keeps what a config derives in __post_init__ consistent with the shrunk values,
    as if it had been built tiny: Zamba2's Mamba head width, T5Gemma's cross-attention width, HRM's
    cache slots (stacks x cycles)."""
    z = build_or_skip("causal-lm", "zamba2").config
    assert z.mamba_headdim == z.mamba_expand * z.hidden_size // z.n_mamba_heads
    t = build_or_skip("seq2seq", "t5gemma").config
    assert t.decoder.cross_attention_hidden_size == t.encoder.hidden_size == hf_coverage.D
    model = build_or_skip("causal-lm", "hrm_text")
    c = model.config
    assert c.num_layers_per_stack == 1 and c.num_hidden_layers == c.H_cycles * (c.L_cycles + 1)
    rm = initlab.role_map(model)
    assert len(rm.attention) == 2  # one layer in each of the two stacks
    kw, labels = hf_coverage.make_batch(model, "causal-lm")
    assert torch.isfinite(model(**kw, labels=labels).loss)  # every cache slot its forward indexes exists


# the batch each model takes, built from its config and forward signature (not a weakened check)
BATCHES = [
    ("masked-lm", "xmod"),  # its default language set, as its docs tell a user
    ("image", "siglip2"),  # flattened patches, their grid and mask
    ("seq2seq", "voxtral_realtime"),  # text and the audio frames under each token
    ("speech-seq2seq", "dia"),  # per-codebook decoder codes
    ("speech-seq2seq", "speech-encoder-decoder"),  # its wav2vec2 encoder's raw audio
    ("causal-lm", "git"),  # a caption batch with its image
]


@pytest.mark.parametrize("head,model_type", BATCHES, ids=[t for _, t in BATCHES])
def test_sweep_batch_is_one_the_model_takes(head, model_type):
    model = build_or_skip(head, model_type)
    kw, labels = hf_coverage.make_batch(model, head)
    cfg = model.config
    if model_type == "xmod":
        assert cfg.default_language == list(cfg.languages)[0]
    elif model_type == "siglip2":
        p = cfg.vision_config.patch_size
        assert kw["pixel_values"].shape[1:] == (int(kw["spatial_shapes"].prod(-1)[0]), 3 * p * p)
    elif model_type == "voxtral_realtime":
        assert kw["input_features"].shape[-1] == kw["input_ids"].shape[1] * cfg.audio_length_per_tok
    elif model_type == "dia":
        c = cfg.decoder_config.num_channels
        assert kw["decoder_input_ids"].shape[-1] == c and labels.shape[0] == 2 * c
    elif model_type == "speech-encoder-decoder":
        assert kw["input_values"].is_floating_point() and kw["input_values"].dim() == 2
    elif model_type == "git":
        assert kw["pixel_values"].shape[-1] == cfg.vision_config.image_size
    model.train()
    out = model(**kw, labels=labels)
    loss = out.loss if out.loss is not None else out.logits.float().pow(2).mean()
    assert torch.isfinite(loss)
    assert hf_coverage.probe_check(lambda: model, head) == []
