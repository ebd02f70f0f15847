"""Model facts in the role map, checked on the real models users bring (tiny Hugging Face models
built from configs, hand-written PyTorch models): what each fact means for the function the model
computes, which tensors a scheme writes and which stay bit-identical.

* the norm gain convention (Gemma's x·(1 + w)): "unit gain" makes the norm output the normalized
  input, whatever the class;
* frozen tensors (Whisper's sinusoidal encoder positions) are never written unless asked;
* cross-attention (T5, BART, Whisper) is left alone by mimetic init; LED / BigBird-Pegasus encoder
  self-attention is mapped;
* positions, image grid and prefix tokens of HF vision models, read by ``structured``;
* hand-written models (nn.TransformerEncoder + head, nanoGPT, a Llama block with RoPE and GQA);
* bad inputs get initlab errors naming the problem and the fix.
"""
import logging
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initlab
from initlab.errors import ConfigError, InitError, RoleMapError
from initlab.roles import Role, roles

tf = pytest.importorskip("transformers", reason="Hugging Face transformers is not installed")
pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor")
logging.getLogger("transformers").setLevel(logging.ERROR)

D, H = 32, 4
_IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)


def build(cls, cfg):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(cfg).eval()


def gemma2():
    return build(tf.Gemma2ForCausalLM, tf.Gemma2Config(
        vocab_size=64, hidden_size=D, intermediate_size=64, num_hidden_layers=2, num_attention_heads=H,
        num_key_value_heads=2, head_dim=8))


def llama():
    return build(tf.LlamaForCausalLM, tf.LlamaConfig(
        vocab_size=64, hidden_size=D, intermediate_size=64, num_hidden_layers=2, num_attention_heads=H,
        num_key_value_heads=2))


def t5():
    return build(tf.T5ForConditionalGeneration, tf.T5Config(
        vocab_size=64, d_model=D, d_kv=8, d_ff=64, num_layers=2, num_heads=H, **_IDS))


def bart(**kw):
    return build(tf.BartForConditionalGeneration, tf.BartConfig(
        vocab_size=64, d_model=D, encoder_layers=1, decoder_layers=1, encoder_attention_heads=H,
        decoder_attention_heads=H, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
        **_IDS, **kw))


def whisper():
    return build(tf.WhisperForConditionalGeneration, tf.WhisperConfig(
        vocab_size=64, d_model=D, encoder_layers=1, decoder_layers=1, encoder_attention_heads=H,
        decoder_attention_heads=H, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=8,
        max_source_positions=16, max_target_positions=16, suppress_tokens=[],
        begin_suppress_tokens=[], **_IDS))


def vit_config(**kw):
    return dict(image_size=16, patch_size=4, hidden_size=D, num_hidden_layers=2, num_attention_heads=H,
                intermediate_size=64, **kw)


def hf_vit():
    return build(tf.ViTForImageClassification, tf.ViTConfig(**vit_config(), attn_implementation="eager"))


def hf_deit():
    return build(tf.DeiTForImageClassificationWithTeacher,
                 tf.DeiTConfig(**vit_config(), attn_implementation="eager"))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(model, before):
    return {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}


def norm_modules(model, rmap):
    out = []
    for info in rmap.by_role("norm"):
        if info.name.endswith(".weight"):
            out.append((info, model.get_submodule(info.name.rsplit(".", 1)[0])))
    return out


def rms_normalized(x, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


# ------------------------------------------------------------------------------------------------
# the norm's gain convention
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,offset", [(gemma2, 1.0), (llama, 0.0)])
def test_unit_gain_makes_the_norm_output_the_normalized_input(make, offset):
    model = make()
    rmap = roles(model)
    norms = norm_modules(model, rmap)
    assert norms and all(info.gain_offset == offset and info.unit_gain == 1.0 - offset for info, _ in norms)
    x = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for info, mod in norms:
            info.param.fill_(info.unit_gain)
            eps = getattr(mod, "eps", getattr(mod, "variance_epsilon", 1e-6))
            torch.testing.assert_close(mod(x), rms_normalized(x, eps), rtol=1e-5, atol=1e-5)


def test_nemotron_layernorm1p_is_measured_not_listed():
    # NemotronLayerNorm1P subclasses nn.LayerNorm and computes LN(x)·(1 + w): the probe finds it
    model = build(tf.NemotronForCausalLM, tf.NemotronConfig(
        vocab_size=64, hidden_size=D, intermediate_size=64, num_hidden_layers=1, num_attention_heads=H,
        num_key_value_heads=2))
    norms = norm_modules(model, roles(model))
    assert {type(m).__name__ for _, m in norms} == {"NemotronLayerNorm1P"}
    assert all(info.gain_offset == 1.0 for info, _ in norms)


@pytest.mark.parametrize("spec", ["mu", "nt", "torchtitan"])
def test_schemes_that_set_unit_gain_keep_gemma_norms_at_gain_one(spec):
    model = gemma2()
    initlab.init_(model, spec, generator=torch.Generator().manual_seed(0))
    rmap = roles(model)
    x = torch.randn(4, D, generator=torch.Generator().manual_seed(1))
    for info, mod in norm_modules(model, rmap):
        assert torch.equal(info.param.detach(), torch.zeros_like(info.param)), info.name  # not 1: gain 2
        torch.testing.assert_close(mod(x), rms_normalized(x, mod.eps), rtol=1e-5, atol=1e-5)


def test_describe_shows_the_stored_unit_gain():
    table = initlab.parametrization.describe(gemma2(), "mu")
    row = next(line for line in table.splitlines() if "input_layernorm.weight" in line)
    name, role, init = row.split()[:3]
    assert (role, init) == ("norm", "0")  # Gemma's unit gain is a stored 0


# ------------------------------------------------------------------------------------------------
# embedding scale, norm position, positions
# ------------------------------------------------------------------------------------------------
def test_embedding_scale_is_the_factor_the_model_applies():
    ids = torch.tensor([[3, 5, 7]])
    for model, expect in ((gemma2(), math.sqrt(D)), (bart(scale_embedding=True), math.sqrt(D)),
                          (bart(scale_embedding=False), 1.0), (llama(), 1.0)):
        rmap = roles(model)
        assert rmap.facts.embed_scale == pytest.approx(expect)
        emb = model.get_input_embeddings()
        got = emb(ids)
        if expect != 1.0 and type(emb).__name__.endswith("ScaledWordEmbedding"):
            torch.testing.assert_close(got, emb.weight[ids] * rmap.facts.embed_scale)


def test_norm_position_where_knowable():
    bert = build(tf.BertModel, tf.BertConfig(vocab_size=64, hidden_size=D, num_hidden_layers=1,
                                             num_attention_heads=H, intermediate_size=64))
    assert roles(bert).facts.norm_position == "post"
    assert roles(llama()).facts.norm_position == "pre"
    assert roles(bart()).facts.norm_position == "post"
    assert roles(whisper()).facts.norm_position == "pre"
    for first, where in ((True, "pre"), (False, "post")):
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, 64, batch_first=True, norm_first=first), 1)
        assert roles(enc).facts.norm_position == where


def test_position_facts_of_language_models():
    assert roles(llama()).facts.positions.kind == "rope"
    assert roles(t5()).facts.positions.kind == "relative"
    pos = roles(whisper()).facts.positions
    assert pos.kind == "fixed" and pos.table == "model.encoder.embed_positions.weight"
    assert pos.tables == ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")


@pytest.mark.parametrize("make,prefix,table_prefix", [
    (hf_vit, 1, 1), (hf_deit, 2, 2),
    (lambda: build(tf.Dinov2WithRegistersModel, tf.Dinov2WithRegistersConfig(
        image_size=16, patch_size=4, hidden_size=D, num_hidden_layers=1, num_attention_heads=H,
        mlp_ratio=2, num_register_tokens=2)), 3, 1),
])
def test_vision_position_facts_match_the_sequence_the_model_builds(make, prefix, table_prefix):
    model = make()
    pos = roles(model).facts.positions
    assert (pos.kind, pos.grid, pos.prefix_tokens, pos.table_prefix) == ("learned", (4, 4), prefix, table_prefix)
    table = model.get_parameter(pos.table)
    assert table.shape[-2] == pos.table_prefix + 16
    # the embedding output has prefix tokens + the 4x4 grid
    emb = next(m for n, m in model.named_modules() if n.endswith("embeddings") and hasattr(m, "patch_embeddings"))
    with torch.no_grad():
        assert emb(torch.zeros(1, 3, 16, 16)).shape[1] == pos.prefix_tokens + 16


def gpt2():
    return build(tf.GPT2LMHeadModel, tf.GPT2Config(vocab_size=64, n_embd=D, n_layer=2, n_head=H, n_positions=16))


def mistral():
    return build(tf.MistralForCausalLM, tf.MistralConfig(
        vocab_size=64, hidden_size=D, intermediate_size=64, num_hidden_layers=2, num_attention_heads=H,
        num_key_value_heads=2))


def qwen2_moe():
    return build(tf.Qwen2MoeForCausalLM, tf.Qwen2MoeConfig(
        vocab_size=64, hidden_size=D, intermediate_size=64, moe_intermediate_size=16,
        shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
        num_attention_heads=H, num_key_value_heads=2))


def normalized(mod, x):
    if isinstance(mod, nn.LayerNorm):
        return F.layer_norm(x, mod.normalized_shape, eps=mod.eps)
    return rms_normalized(x, getattr(mod, "eps", getattr(mod, "variance_epsilon", 1e-6)))


@pytest.mark.parametrize("make,pos_kind", [(gpt2, "learned"), (mistral, "rope"), (qwen2_moe, "rope"),
                                           (llama, "rope"), (gemma2, "rope")])
def test_causal_lm_facts_and_mu_keeps_every_norm_at_unit_gain(make, pos_kind):
    model = make()
    rmap = roles(model)
    f = rmap.facts
    assert (f.causal, f.norm_position, f.positions.kind, f.inputs.kind, f.inputs.vocab_size) == \
        (True, "pre", pos_kind, "tokens", 64)
    before = snapshot(model)
    initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 3, D, generator=torch.Generator().manual_seed(1))
    for info, mod in norm_modules(model, rmap):
        torch.testing.assert_close(mod(x), normalized(mod, x), rtol=1e-5, atol=1e-5)
    owned = {i.name for i in rmap if i.role not in ("norm", "other", "gain")}
    assert owned - {i.name for i in rmap if i.kind == "bias"} <= changed(model, before)


# ------------------------------------------------------------------------------------------------
# frozen tensors
# ------------------------------------------------------------------------------------------------
ENC_POS = "model.encoder.embed_positions.weight"
DEC_POS = "model.decoder.embed_positions.weight"


@pytest.mark.parametrize("spec", ["trunc_normal", "small_init", "mu", "nt", "gpt2", "mimetic"])
def test_whisper_fixed_encoder_positions_are_never_randomized(spec):
    model = whisper()
    assert not model.get_parameter(ENC_POS).requires_grad
    before = snapshot(model)
    initlab.init_(model, spec, generator=torch.Generator().manual_seed(0))
    moved = changed(model, before)
    assert ENC_POS not in moved
    assert moved  # the scheme did write the trainable tensors
    if spec in ("trunc_normal", "small_init", "mu", "nt", "gpt2"):
        assert DEC_POS in moved  # the learned decoder table is the scheme's to write


def test_include_frozen_writes_the_frozen_table_when_asked():
    model = whisper()
    before = snapshot(model)
    initlab.init_(model, "trunc_normal", include_frozen=True, generator=torch.Generator().manual_seed(0))
    assert ENC_POS in changed(model, before)
    assert not model.get_parameter(ENC_POS).requires_grad  # still frozen, as the user built it
    model = whisper()
    before = snapshot(model)
    initlab.parametrize_(model, "mu", include_frozen=True, generator=torch.Generator().manual_seed(0))
    assert ENC_POS in changed(model, before)


def test_frozen_layer_is_left_to_its_values_by_every_writer():
    model = llama()
    frozen = [n for n, p in model.named_parameters() if n.startswith("model.layers.0.")]
    for n in frozen:
        model.get_parameter(n).requires_grad_(False)
    before = snapshot(model)
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(0))
    initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(1))
    initlab.init_(model, "trunc_normal", generator=torch.Generator().manual_seed(2))
    moved = changed(model, before)
    assert not moved & set(frozen)
    assert "model.layers.1.self_attn.q_proj.weight" in moved
    assert roles(model).frozen() == frozen


def test_all_frozen_attention_is_refused_with_the_way_out():
    model = llama()
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(RoleMapError, match="include_frozen=True"):
        initlab.mimetic_(model)
    before = snapshot(model)
    initlab.mimetic_(model, include_frozen=True, generator=torch.Generator().manual_seed(0))
    assert "model.layers.0.self_attn.q_proj.weight" in changed(model, before)


# ------------------------------------------------------------------------------------------------
# cross vs self attention
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,cross_name", [(t5, "EncDecAttention"), (bart, "encoder_attn"),
                                             (whisper, "encoder_attn")])
def test_mimetic_leaves_cross_attention_bit_identical(make, cross_name):
    model = make()
    rmap = roles(model)
    cross = [a for a in rmap.attention if a.cross]
    assert cross and all(cross_name in a.module_name for a in cross)
    assert all(cross_name not in a.module_name for a in rmap.attention if not a.cross)
    cross_tensors = {p.name for a in cross for p in a.projections().values()}
    self_q = {a.q.name for a in rmap.attention if not a.cross}
    before = snapshot(model)
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(0))
    moved = changed(model, before)
    assert not moved & cross_tensors
    assert self_q <= moved


def test_nn_transformer_decoder_cross_attention_is_left_alone():
    model = nn.Transformer(D, H, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64,
                           batch_first=True)
    rmap = roles(model)
    assert [a.module_name for a in rmap.attention if a.cross] == ["decoder.layers.0.multihead_attn"]
    before = snapshot(model)
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(0))
    moved = changed(model, before)
    assert not {n for n in moved if ".multihead_attn." in n}
    assert {"encoder.layers.0.self_attn.in_proj_weight", "decoder.layers.0.self_attn.in_proj_weight"} <= moved


@pytest.mark.parametrize("make", [
    lambda: build(tf.LEDForConditionalGeneration, tf.LEDConfig(
        vocab_size=64, d_model=D, encoder_layers=1, decoder_layers=1, encoder_attention_heads=H,
        decoder_attention_heads=H, encoder_ffn_dim=64, decoder_ffn_dim=64, attention_window=4,
        max_encoder_position_embeddings=32, max_decoder_position_embeddings=32, **_IDS)),
    lambda: build(tf.BigBirdPegasusForConditionalGeneration, tf.BigBirdPegasusConfig(
        vocab_size=64, d_model=D, encoder_layers=1, decoder_layers=1, encoder_attention_heads=H,
        decoder_attention_heads=H, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        block_size=4, num_random_blocks=2, attention_type="original_full", **_IDS)),
])
def test_led_and_bigbird_pegasus_encoder_self_attention_is_mapped(make):
    model = make()
    rmap = roles(model)
    enc = [a for a in rmap.attention if ".encoder." in a.module_name]
    assert len(enc) == 1 and not enc[0].cross
    assert not [i.name for i in rmap.by_role("other") if ".encoder.layers." in i.name]
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(0))
    att = enc[0]
    # the QK product of head 0 is the rank-head_dim truncation of 0.7Z + 0.7I: its trace ≈ 0.7·d
    # fraction kept (d=32, k=8: the identity part is spread over k of d directions)
    assert float(att.qk_product(0).trace()) > 0.7 * att.head_dim * 0.5
    vo = att.vo_product()
    assert float(vo.trace()) == pytest.approx(-0.4 * D, abs=0.4 * D * 0.3)


# ------------------------------------------------------------------------------------------------
# structured and deepnorm read the facts
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [hf_vit, hf_deit])
def test_structured_on_hf_vision_models_writes_per_head_impulse_maps(make):
    model = make()
    rmap = roles(model)
    pos = rmap.facts.positions
    if make is hf_deit:  # DeiT builds its table as zeros: structured says to draw it first
        with pytest.raises(InitError, match="all zeros"):
            initlab.init_(model, "structured")
    spec = "trunc_normal+structured" if make is hf_deit else "structured"
    initlab.init_(model, spec, content=0.0, generator=torch.Generator().manual_seed(0))
    for proj in ("q", "k"):
        for a in rmap.attention:
            assert torch.count_nonzero(getattr(a, proj).bias_view()) == 0
    # tokens = positions only: zero pixels, zero patch bias, zero class/distillation tokens
    with torch.no_grad():
        for info in rmap.by_role("patch_embed", kind="bias") + rmap.by_role("cls_token"):
            info.param.zero_()
        out = model(pixel_values=torch.zeros(1, 3, 16, 16), output_attentions=True)
    probs = out.attentions[0][0].double()  # (heads, n, n) of the first layer
    from initlab.schemes.structured import kernel_offsets, target_mass
    for h in range(probs.shape[0]):
        masses = [float(target_mass(probs[h].log(), pos.grid, pos.table_prefix, o))
                  for o in kernel_offsets(3)]
        assert max(masses) == pytest.approx(0.9, abs=0.02), (h, masses)  # focus on one 3x3 offset
        assert sorted(masses)[-2] < 0.2


def test_structured_refuses_a_language_model_for_its_missing_grid():
    with pytest.raises(InitError, match="no patch grid"):
        initlab.init_(llama(), "structured")


def test_deepnorm_refuses_hf_models_for_the_right_reason():
    bert = build(tf.BertModel, tf.BertConfig(vocab_size=64, hidden_size=D, num_hidden_layers=1,
                                             num_attention_heads=H, intermediate_size=64))
    with pytest.raises(InitError, match="skip-scale control"):  # post-LN, but no α knob
        initlab.init_(bert, "deepnorm")
    with pytest.raises(InitError, match="pre-LN"):  # HF ViT is pre-LN
        initlab.init_(hf_vit(), "deepnorm")
    vit = initlab.create_model("vit-micro", norm_position="post") if hasattr(initlab, "create_model") else None
    if vit is not None:
        initlab.init_(vit, "deepnorm")
        assert all(b.skip_scale == pytest.approx((2 * len(vit.blocks)) ** 0.25) for b in vit.blocks)
        assert vit.config["skip_scale"] == pytest.approx((2 * len(vit.blocks)) ** 0.25)


# ------------------------------------------------------------------------------------------------
# hand-written models
# ------------------------------------------------------------------------------------------------
class EncoderClassifier(nn.Module):
    def __init__(self, batch_first=True):
        super().__init__()
        self.embed = nn.Embedding(50, D)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, H, 64, batch_first=batch_first), 2)
        self.head = nn.Linear(D, 10)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)).mean(1))


def test_transformer_encoder_head_is_mapped_and_mu_works():
    model = EncoderClassifier()
    rmap = roles(model)
    assert rmap.role_of("head.weight") == "head" and rmap.role_of("head.bias") == "head"
    assert rmap.controls.tied_head is False
    initlab.parametrize_(model, "mu", generator=torch.Generator().manual_seed(0))
    # untied μP head: variance C_head / (n · n^s) = 1/32², i.e. std 1/32
    assert float(model.head.weight.detach().std()) == pytest.approx(1 / D, rel=0.2)
    groups = initlab.param_groups(model, "mu", lr=1e-3)
    assert "head" in {g["role"] for g in groups}


def test_explicit_mapping_describes_packed_multihead_attention():
    model = EncoderClassifier()
    mapping = {"attention": {"encoder.layers.*.self_attn": dict(qkv="in_proj_weight", o="out_proj",
                                                               heads="num_heads")},
               "token_embed": ["embed"], "mlp_in": ["**.linear1"], "mlp_out": ["**.linear2"],
               "head": ["head"]}
    explicit = initlab.role_map(model, mapping=mapping)
    inferred = roles(model)
    assert {n: i.role for n, i in explicit.params.items()} == {n: i.role for n, i in inferred.params.items()}
    assert explicit.attention[0].q.bias is model.encoder.layers[0].self_attn.in_proj_bias
    initlab.mimetic_(model, role_map=explicit, generator=torch.Generator().manual_seed(0))
    a = explicit.attention[1]
    assert float(a.vo_product().trace()) == pytest.approx(-0.4 * D, abs=0.4 * D * 0.3)


class LayerNorm(nn.Module):  # nanoGPT's own LayerNorm with an optional bias
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.n_head, self.n_embd = n_head, n_embd

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c))


class MLP(nn.Module):
    def __init__(self, n_embd):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * n_embd, n_embd)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class NanoBlock(nn.Module):
    def __init__(self, n_embd, n_head):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, True)
        self.attn = CausalSelfAttention(n_embd, n_head)
        self.ln_2 = LayerNorm(n_embd, True)
        self.mlp = MLP(n_embd)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):  # karpathy/nanoGPT model.py layout
    def __init__(self, vocab=64, block_size=16, n_layer=2, n_head=H, n_embd=D):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, n_embd), wpe=nn.Embedding(block_size, n_embd), drop=nn.Dropout(0.0),
            h=nn.ModuleList([NanoBlock(n_embd, n_head) for _ in range(n_layer)]),
            ln_f=LayerNorm(n_embd, True)))
        self.lm_head = nn.Linear(n_embd, vocab, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.shape[1]))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def test_nanogpt_is_inferred_with_gpt2_layout():
    model = NanoGPT()
    rmap = roles(model)
    assert rmap.adapter == "torch.structural"
    assert rmap.role_of("transformer.h.0.attn.c_attn.weight") == "q+k+v"
    assert rmap.role_of("transformer.h.0.attn.c_proj.weight") == "o"
    assert rmap.role_of("transformer.h.0.mlp.c_fc.weight") == "mlp_in"
    assert rmap.role_of("transformer.h.1.mlp.c_proj.weight") == "mlp_out"
    assert rmap.role_of("transformer.wte.weight") == "token_embed"
    assert rmap.role_of("transformer.wpe.weight") == "pos_embed"
    assert not rmap.by_role("other")
    assert rmap.controls.tied_head is True
    f = rmap.facts
    assert (f.causal, f.norm_position, f.positions.kind, f.inputs.vocab_size, f.inputs.max_positions) == \
        (True, "pre", "learned", 64, 16)
    # mimetic through the fused c_attn rows: the layer's VO map is −0.4 I + noise
    initlab.mimetic_(model, generator=torch.Generator().manual_seed(0))
    a = rmap.attention[0]
    w = model.transformer.h[0].attn.c_attn.weight.detach().double()
    q0, k0 = w[:8].t(), w[D:D + 8].t()  # head 0 read back from the raw (3d, d) storage
    torch.testing.assert_close(q0 @ k0.t(), a.qk_product(0))
    assert float(a.vo_product().trace()) == pytest.approx(-0.2 * D, abs=0.2 * D * 0.5)  # language preset
    with pytest.raises(InitError, match="tied to its token embedding"):  # no logit multiplier to set
        initlab.parametrize_(model, "mu")


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, base=10000.0):
    t, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.outer(torch.arange(t).float(), inv)
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, dim, n_heads, n_kv_heads):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        b, t, _ = x.shape
        q = rope(self.q_proj(x).view(b, t, self.n_heads, -1).transpose(1, 2))
        k = rope(self.k_proj(x).view(b, t, self.n_kv_heads, -1).transpose(1, 2))
        v = self.v_proj(x).view(b, t, self.n_kv_heads, -1).transpose(1, 2)
        r = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(r, 1), v.repeat_interleave(r, 1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1, self.w2, self.w3 = nn.Linear(dim, hidden, bias=False), nn.Linear(hidden, dim, bias=False), \
            nn.Linear(dim, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LlamaBlock(nn.Module):
    def __init__(self, dim=D, n_heads=H, n_kv_heads=2):
        super().__init__()
        self.attention_norm = RMSNorm(dim)
        self.attention = Attention(dim, n_heads, n_kv_heads)
        self.ffn_norm = RMSNorm(dim)
        self.feed_forward = FeedForward(dim, 64)

    def forward(self, x):
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class TinyLlama(nn.Module):
    def __init__(self, vocab=64, n_layers=2):
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab, D)
        self.layers = nn.ModuleList([LlamaBlock() for _ in range(n_layers)])
        self.norm = RMSNorm(D)
        self.output = nn.Linear(D, vocab, bias=False)

    def forward(self, ids):
        x = self.tok_embeddings(ids)
        for layer in self.layers:
            x = layer(x)
        return self.output(self.norm(x))


def test_hand_written_llama_with_rope_and_gqa_is_inferred():
    model = TinyLlama()
    rmap = roles(model)
    assert rmap.adapter == "torch.structural"
    assert [(a.n_heads, a.n_kv_heads, a.head_dim) for a in rmap.attention] == [(4, 2, 8)] * 2
    roles_of = {n: i.role for n, i in rmap.params.items()}
    assert roles_of["layers.0.feed_forward.w1.weight"] == "mlp_gate"
    assert roles_of["layers.0.feed_forward.w3.weight"] == "mlp_in"
    assert roles_of["layers.0.feed_forward.w2.weight"] == "mlp_out"
    assert roles_of["output.weight"] == "head" and roles_of["tok_embeddings.weight"] == "token_embed"
    assert rmap.controls.tied_head is False and rmap.facts.norm_position == "pre"
    assert rmap.facts.positions.kind == "none"  # rope computed in forward, no table or buffer
    before = snapshot(model)
    initlab.init_(model, "mu+mimetic", generator=torch.Generator().manual_seed(0))
    norms = {i.name for i in rmap.by_role("norm")}
    assert changed(model, before) == set(before) - norms  # norms: gain 1, as built
    assert all(torch.equal(model.get_parameter(n), torch.ones(D)) for n in norms)
    y = model(torch.tensor([[1, 2, 3]]))
    assert torch.isfinite(y).all()


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------
def test_bad_inputs_get_initlab_errors_naming_the_fix():
    with pytest.raises(InitError, match="pass the model first"):
        initlab.init_("model", "mimetic")
    with pytest.raises(InitError, match="pass the model"):
        initlab.parametrize_("model", "mu")
    m = llama()
    with pytest.raises(InitError, match="oversample must be a non-negative int"):
        initlab.mimetic_(m, svd="randomized", oversample=-3)
    with pytest.raises(InitError, match="pos_grid must be"):
        initlab.mimetic_(hf_vit(), pos_embed="sincos", pos_grid=(-4, 4))
    with pytest.raises(InitError, match="qk must be True or False"):
        initlab.mimetic_(m, qk="maybe")


def test_mimetic_qk_no_reads_as_false():
    model = llama()
    rmap = roles(model)
    before = snapshot(model)
    initlab.mimetic_(model, qk="no", generator=torch.Generator().manual_seed(0))
    moved = changed(model, before)
    assert not moved & ({a.q.name for a in rmap.attention} | {a.k.name for a in rmap.attention})
    assert {a.v.name for a in rmap.attention} <= moved


def test_param_groups_refuses_unknown_role_names_and_all_frozen_models():
    model = llama()
    with pytest.raises(ConfigError, match="'nrom'.*norm"):
        initlab.param_groups(model, "mu", lr=1e-3, no_decay=["nrom"])
    groups = initlab.param_groups(model, "mu", lr=1e-3, weight_decay=0.1, no_decay=["norm", "bias"])
    assert all(g["decay"] == 0.0 for g in groups if g["role"] == "norm")
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="every parameter .* is frozen"):
        initlab.param_groups(model, "mu", lr=1e-3)


def test_unknown_hand_written_attention_points_to_an_explicit_mapping():
    class Attention(nn.Module):  # an attention module whose projections have unguessable names
        def __init__(self):
            super().__init__()
            self.alpha, self.beta = nn.Linear(D, 3 * D), nn.Linear(D, D)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Attention()])

    with pytest.raises(RoleMapError, match="explicit mapping"):
        roles(Net())


def test_mimetic_sincos_positions_use_the_grid_the_facts_give():
    """DINOv2 with registers: 3 prefix tokens but 1 table row before the 4x4 grid. Counting prefix
    tokens (the old guess) found no square grid; the facts' grid writes the table the model reads."""
    from initlab.models.layers import sincos_2d
    model = build(tf.Dinov2WithRegistersModel, tf.Dinov2WithRegistersConfig(
        image_size=16, patch_size=4, hidden_size=D, num_hidden_layers=1, num_attention_heads=H,
        mlp_ratio=2, num_register_tokens=2))
    initlab.mimetic_(model, pos_embed="sincos", generator=torch.Generator().manual_seed(0))
    table = model.get_parameter(roles(model).facts.positions.table).detach()[0]
    assert torch.equal(table[0], torch.zeros(D))  # the class token's row
    assert torch.allclose(table[1:], sincos_2d(4, 4, D), atol=1e-6)
