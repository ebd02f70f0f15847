"""Hugging Face coverage, like timm's test_models: a representative subset of the installed
transformers' auto mappings, built tiny from configs (never from_pretrained), through the same
checks as the full sweep (tools/hf_coverage.py, table in docs/coverage.md):

* the role map covers every attention module; the q/k/v the role map names are the ones the model
  hands to its attention kernel (values exactly, queries/keys at position 0 up to one scale);
* mimetic_ gives the product identities against re-drawn targets and touches nothing else;
* parametrize_/param_groups for mu run and leave no hidden matrix as role ``other``.

Types initlab cannot map correctly are refused with initlab's own error and the reason.
"""
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

# one or two of each layout family; each builds and checks in about a second
WORKS = [
    ("causal-lm", "gpt2"),  # Conv1D fused [q|k|v], tied head (N_rescale through the role map)
    ("causal-lm", "llama"),  # separate q/k/v/o, grouped-query attention, gate/up/down
    ("causal-lm", "mixtral"),  # MoE: 3-D experts [gate|up], router
    ("causal-lm", "gpt_oss"),  # MoE with interleaved gate/up and transposed experts, sinks
    ("causal-lm", "gpt_neox"),  # per-head interleaved [q_h|k_h|v_h]
    ("causal-lm", "codegen"),  # model-parallel blocks [q|v|k]
    ("causal-lm", "gpt_bigcode"),  # multi-query fused c_attn
    ("causal-lm", "phi3"),  # fused qkv_proj and gate_up_proj
    ("causal-lm", "opt"),  # out_proj naming, tied head
    ("causal-lm", "bart"),  # decoder with cross-attention (left alone by mimetic)
    ("masked-lm", "xlm-roberta"),  # tied alias lm_head.decoder
    ("masked-lm", "distilbert"),  # q_lin/k_lin/v_lin/out_lin
    ("masked-lm", "deberta"),  # per-head interleaved in_proj with separate q_bias/v_bias
    ("masked-lm", "modernbert"),  # Wqkv, Wi = [input|gate]
    ("image", "vit"),
    ("image", "swin"),  # per-stage widths, window attention
    ("image", "siglip"),  # nn.MultiheadAttention pooling head (cross-attention)
]
REFUSED = [
    ("causal-lm", "mamba", "state-space"),
    ("causal-lm", "jamba", "state-space"),  # hybrid: a partial map would be wrong
    ("causal-lm", "deepseek_v2", "multi-head latent attention"),
    ("causal-lm", "kimi_linear", "linear"),
]


@pytest.fixture(autouse=True)
def quiet_transformers():
    transformers.logging.set_verbosity_error()


@pytest.mark.parametrize("head,model_type", WORKS, ids=[f"{h}:{t}" for h, t in WORKS])
def test_type_works(head, model_type):
    res = hf_coverage.check(head, model_type, timeout=120, vocab=512)
    if not res.buildable:
        pytest.skip(f"{model_type} does not build at tiny size in this transformers: {res.build}")
    assert res.roles == "ok", res.roles
    assert res.mimetic == "ok", res.mimetic
    assert res.mu == "ok", res.mu
    assert not any("not checked" in n for n in res.notes if "interface" not in n), res.notes


@pytest.mark.parametrize("head,model_type,why", REFUSED, ids=[t for _, t, _ in REFUSED])
def test_type_refused_with_reason(head, model_type, why):
    try:
        model, _ = hf_coverage.build(head, model_type, vocab=512)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"{model_type} does not build at tiny size in this transformers: {exc}")
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
