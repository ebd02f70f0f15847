"""initlab's Llama-style preset: the same function as Hugging Face's Llama/Qwen3 with the same weights,
a role map that reads it right, and the user's journey (init, optimizer groups, steps, reload)."""
import copy

import pytest
import torch

import initlab
from initlab.errors import ConfigError
from initlab.models import Llama, create_model
from initlab.models.llama import mlp_hidden_size

pytestmark = pytest.mark.usefixtures("one_thread")
transformers = pytest.importorskip("transformers")


def _tiny(**kw):
    args = dict(vocab_size=40, block_size=16, width=32, depth=2, heads=4, kv_heads=2)
    return Llama(**{**args, **kw})


def _hf_twin(model: Llama, cls_name: str = "LlamaForCausalLM"):
    """The Hugging Face model of the same shape, with ``model``'s weights copied in."""
    cfg = model.config
    common = dict(vocab_size=cfg["vocab_size"], hidden_size=cfg["width"],
                  intermediate_size=cfg["mlp_hidden"], num_hidden_layers=cfg["depth"],
                  num_attention_heads=cfg["heads"], num_key_value_heads=cfg["kv_heads"],
                  max_position_embeddings=cfg["block_size"], rms_norm_eps=cfg["norm_eps"],
                  tie_word_embeddings=cfg["tie_head"], attention_bias=False)
    if cls_name == "LlamaForCausalLM":
        hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, rope_theta=cfg["rope_theta"]))
    else:
        hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
            **common, head_dim=cfg["width"] // cfg["heads"], rope_theta=cfg["rope_theta"]))
    names = {"tok_embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
             "head.weight": "lm_head.weight"}
    for i in range(cfg["depth"]):
        for ours, theirs in (("attn.q_proj", "self_attn.q_proj"), ("attn.k_proj", "self_attn.k_proj"),
                             ("attn.v_proj", "self_attn.v_proj"), ("attn.o_proj", "self_attn.o_proj"),
                             ("attn.q_norm", "self_attn.q_norm"), ("attn.k_norm", "self_attn.k_norm"),
                             ("mlp.gate_proj", "mlp.gate_proj"), ("mlp.up_proj", "mlp.up_proj"),
                             ("mlp.down_proj", "mlp.down_proj"), ("norm1", "input_layernorm"),
                             ("norm2", "post_attention_layernorm")):
            names[f"blocks.{i}.{ours}.weight"] = f"model.layers.{i}.{theirs}.weight"
    theirs = dict(hf.named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            theirs[names[n]].copy_(p)
    return hf.eval()


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if p.dim() == 1 else 0.0))
    return model


@pytest.mark.parametrize("kw,cls_name", [
    (dict(), "LlamaForCausalLM"),
    (dict(kv_heads=4), "LlamaForCausalLM"),
    (dict(qk_norm=True), "Qwen3ForCausalLM"),
])
def test_same_logits_as_hugging_face_with_the_same_weights(kw, cls_name):
    model = _randomize(_tiny(**kw)).eval()
    hf = _hf_twin(model, cls_name)
    idx = torch.randint(0, 40, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(idx), hf(input_ids=idx).logits
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours - theirs).abs().max()


def test_role_map_per_head_views_compute_the_attention_logits():
    model = _randomize(_tiny()).eval()
    rm = initlab.role_map(model)
    assert rm.adapter == "initlab.Llama" and rm.width == 32 and rm.depth == 2
    assert {i.role for i in rm} >= {"token_embed", "q", "k", "v", "o", "mlp_gate", "mlp_in", "mlp_out",
                                    "norm", "head"}
    assert not [i.name for i in rm if i.role == "other"]
    att = rm.attention[0]
    assert (att.n_heads, att.n_kv_heads, att.head_dim, att.causal) == (4, 2, 8, True)
    f = rm.facts
    assert (f.inputs.kind, f.inputs.vocab_size, f.positions.kind, f.causal) == ("tokens", 40, "rope", True)
    # the view of head 3 and its key group 1 gives the model's own pre-RoPE projections
    x = torch.randn(5, 32)
    block = model.blocks[0].attn
    q = block.q_proj(x).view(5, 4, 8)[:, 3]
    k = block.k_proj(x).view(5, 2, 8)[:, 1]
    assert torch.allclose(x @ att.q_head(3), q, atol=1e-6)
    assert torch.allclose(x @ att.k_head(att.kv_group(3)), k, atol=1e-6)


def test_mimetic_identities_and_mu_journey_with_a_tied_head(tmp_path):
    model = _tiny(tie_head=True)
    plan = initlab.InitPlan.build("mu+mimetic", base_width=16)
    plan.initialize_(model, seed=0)
    rm = initlab.role_map(model)
    # N_rescale = n^-1/2 (n/n_base)^-s/2 with s = 1 under mu, for a tied head: 32^-1/2 · 2^-1/2
    assert model.head_multiplier == pytest.approx(0.125)
    # mimetic's QK ≈ α Z + β I: the diagonal dominates on average
    qk = rm.attention[0].qk_product(0)
    assert qk.diagonal().mean() > 3 * qk.fill_diagonal_(0).abs().mean()
    groups = initlab.param_groups(model, plan.parametrization, lr=1e-2, weight_decay=0.1)
    opt = torch.optim.AdamW(groups)
    idx = torch.randint(0, 40, (4, 17), generator=torch.Generator().manual_seed(0))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    # save and reload: the same function (the head multiplier travels with the state_dict)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = _tiny(tie_head=True)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh(idx[:, :-1]), model(idx[:, :-1]))
        assert torch.equal(copy.deepcopy(model)(idx[:, :-1]), model(idx[:, :-1]))


def test_meta_device_build_equals_a_direct_build_under_the_same_seed():
    torch.manual_seed(3)
    direct = _tiny()
    with torch.device("meta"):
        meta = _tiny()
    torch.manual_seed(3)
    initlab.materialize_(meta, "cpu")
    for (n, a), (_, b) in zip(direct.named_parameters(), meta.named_parameters()):
        assert torch.equal(a, b), n
    idx = torch.randint(0, 40, (2, 8))
    assert torch.equal(direct(idx), meta(idx))


def test_presets_shapes_and_refusals():
    m = create_model("llama-micro")
    assert isinstance(m, Llama) and m.width == 64 and m.head is not None
    assert mlp_hidden_size(128) == 352  # 2/3 * 512 = 341.3 -> next multiple of 32
    assert create_model("llama-mini", kv_heads=2).blocks[0].attn.n_kv_heads == 2
    with pytest.raises(ConfigError, match="kv_heads must divide heads"):
        _tiny(kv_heads=3)
    with pytest.raises(ConfigError, match="exceeds block_size"):
        _tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_init_std_is_hugging_faces():
    m = Llama(vocab_size=256, block_size=16, width=256, depth=2, heads=4)
    for name in ("tok_embed.weight", "blocks.0.attn.q_proj.weight", "blocks.1.mlp.down_proj.weight",
                 "head.weight"):
        assert dict(m.named_parameters())[name].std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(m.norm.weight, torch.ones(256))


def test_train_a_llama_preset_from_the_cli_and_resume_it(text_file, tmp_path, capsys):
    from initlab.cli import main
    out = tmp_path / "llama"
    args = ["train", "--task", "lm", "--data", str(text_file), "--model", "llama-micro", "--block-size", "16",
            "--batch-size", "4", "--eval-batches", "2", "--init", "mimetic", "--model-option", "kv_heads=1",
            "--out", str(out)]
    assert main([*args, "--steps", "4", "--eval-every", "4"]) == 0
    assert "val_bpc" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--steps", "6"]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[-1].split(",")[rows[0].split(",").index("step")] == "6"


def test_a_llama_preset_on_the_vision_task_is_refused_in_one_line(tmp_path, capsys):
    from initlab.cli import main
    assert main(["train", "--model", "llama-micro", "--data", "synthetic", "--steps", "1",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "does not fit task 'vision'" in err and err.count("\n") == 1


@pytest.mark.parametrize("pos", ["learned", "sincos", "none"])
def test_position_schemes_other_than_rope(pos):
    model = _tiny(pos=pos)
    rm = initlab.role_map(model)
    assert rm.facts.positions.kind == {"learned": "learned", "sincos": "fixed", "none": "none"}[pos]
    idx = torch.randint(0, 40, (2, 16), generator=torch.Generator().manual_seed(0))
    if pos == "sincos":  # the fixed table is a buffer whose RMS is the token embeddings' std
        assert model.pos_embed.pow(2).mean().sqrt().item() == pytest.approx(0.02, rel=1e-3)
        assert "pos_embed" not in dict(model.named_parameters())
    if pos == "learned":
        assert rm["pos_embed"].role == "pos_embed" and model.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)
    if pos == "none":  # no position signal: in one layer, the last token's output is a function of
        one = _tiny(pos=pos, depth=1)  # the set of earlier tokens, so reordering them changes nothing
        perm = idx.clone()
        perm[:, :15] = idx[:, :15].flip(1)
        with torch.no_grad():
            assert torch.allclose(one(idx)[:, -1], one(perm)[:, -1], atol=1e-5)
            rope = _randomize(_tiny(depth=1))  # with rotary positions the order matters
            assert not torch.allclose(rope(idx)[:, -1], rope(perm)[:, -1], atol=1e-5)
    with torch.no_grad():
        assert torch.isfinite(model(idx)).all()
    with pytest.raises(ConfigError, match="pos must be one of"):
        _tiny(pos="alibi")


def test_a_meta_build_recomputes_the_fixed_table():
    torch.manual_seed(0)
    direct = _tiny(pos="sincos")
    with torch.device("meta"):
        meta = _tiny(pos="sincos")
    torch.manual_seed(0)
    initlab.materialize_(meta, "cpu")
    assert torch.equal(meta.pos_embed, direct.pos_embed)


def test_pos_none_from_the_command_line_means_no_positions(tmp_path):
    """`--model-option pos=none` reaches the model as None (the option parser's "none"): no table,
    no rotation -- the same model as pos="none"."""
    from initlab.cli import main
    from initlab.models import create_model
    import initlab
    a = create_model("llama-micro", pos=None)
    b = create_model("llama-micro", pos="none")
    assert a.pos_embed is None and initlab.role_map(a).facts.positions.kind == "none"
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in b.named_parameters()]
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be " * 200)
    assert main(["train", "--task", "lm", "--data", str(text), "--model", "llama-micro", "--model-option",
                 "pos=none", "--steps", "2", "--eval-every", "2", "--eval-batches", "1", "--batch-size", "2",
                 "--block-size", "16", "--out", str(tmp_path / "run"), "--quiet"]) == 0


@pytest.mark.parametrize("pos", ["rope", "sincos", "none"])
def test_attention_at_init_tool_recomputes_the_models_own_attention(pos):
    """tools/lm_attention_at_init.py (docs/results.md section 8) reads block 0's attention
    probabilities off the projections: with the values they must give the module's own output."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from lm_attention_at_init import attention_at_init
    from initlab.models import create_model
    import initlab
    m = create_model("llama-micro", pos=pos, kv_heads=1)
    initlab.init_(m, "mimetic-language", generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 256, (2, 24), generator=torch.Generator().manual_seed(1))
    got = {}
    att = m.blocks[0].attn
    h1 = att.register_forward_pre_hook(lambda mod, args: got.update(x=args[0]))
    h2 = att.register_forward_hook(lambda mod, args, out: got.update(out=out))
    p = attention_at_init(m, ids)
    with torch.no_grad():
        m(ids)
    h1.remove(), h2.remove()
    assert torch.allclose(p.sum(-1), torch.ones(()), atol=1e-5) and float(p.triu(1).abs().max()) == 0
    b, t, _ = got["x"].shape
    with torch.no_grad():
        v = att.v_proj(got["x"]).view(b, t, att.n_kv_heads, att.head_dim).transpose(1, 2)
        v = v.repeat_interleave(att.n_heads // att.n_kv_heads, dim=1)
        out = att.o_proj((p @ v).transpose(1, 2).reshape(b, t, -1))
    torch.testing.assert_close(out, got["out"], rtol=1e-4, atol=1e-5)
