"""The depth family (depth-mup, completep): checked against the reference code, and the
residual-branch multiplier as a role-map control that survives every save/reload path.

Reference: EleutherAI/nanoGPT-mup, branch ``completep`` (commit 6f8bc3b), ``model.py``:

* L113  ``self.residual_scaling = 1/(config.depth_multiplier ** config.depth_alpha_exp)``
* L117-118  ``x = x + self.residual_scaling * self.attn(self.ln_1(x))`` (and the MLP)
* L168-174  μP init: c_attn, c_fc, c_proj ``std = init_std / sqrt(mup_width_multiplier)``
  (no 1/sqrt(2·n_layer) under μP: L176-177 is the non-μP branch)
* L63-66  μP attention scale ``1.0 / k.size(-1)`` (1/d_head)
* L223-226  tied output: ``x *= mup_output_alpha / mup_width_multiplier`` before ``lm_head``
* L318-329  groups: wte/wpe = emb; '.ln_' except ln_f = hidden LN; c_attn/c_fc/c_proj weights =
  hidden weights, their biases = hidden biases; ln_f = final LN
* L331-332  ``depth_lr_scaling = depth_multiplier ** (depth_alpha_exp - 1)``,
  ``width_lr_scaling = 1 / mup_width_multiplier``
* L335  ``adam_eps *= (1 / mup_width_multiplier) * (depth_multiplier ** (-1 * depth_alpha_exp))``:
  ONE ε for every group (the optimizer's, L409). The split ε of arXiv 2512.22382 (embeddings
  ε/m_w, hidden ε/m_w·m_L^-α) is not in the code: we follow the code by default
  (``eps_scaling="completep"``) and offer the paper's as ``eps_scaling="split"``.
* L336-363  emb: lr_scale 1, weight_decay wd; hidden LN: lr_scale depth_lr_scaling, wd 0; hidden
  weights: lr_scale width_lr_scaling * depth_lr_scaling, weight_decay ``wd / width_lr_scaling``;
  hidden biases: depth_lr_scaling, wd 0; final LN: 1, wd 0. The decay compensates the WIDTH lr
  factor only (the papers speak of a decay independent of the lr scale; the code keeps the
  depth factor m_L^(α-1) in the per-step decay): we follow the code.
* train.py L299  ``param_group['lr'] = lr * param_group.get('lr_scale', 1.0)``
"""
from __future__ import annotations

import copy
import math
import tempfile

import pytest
import torch

import initlab
from initlab.errors import ConfigError, InitError
from initlab.models import GPT, ViT
from initlab.parametrization import Parametrization, param_groups, parametrize_
from initlab.probe.runs import agreement_seed_means

LR, WD, EPS = 3e-3, 0.1, 1e-8
BASE_WIDTH, BASE_DEPTH = 64, 2


def _gpt(width, depth, **kw):
    torch.manual_seed(0)
    return GPT(vocab_size=64, block_size=16, width=width, depth=depth, heads=width // 32, **kw)


def _reference_category(name: str) -> str:
    """The group model.py L318-329 puts our GPT's tensor in (names mapped: tok_embed = wte,
    pos_embed = wpe, blocks.i.norm1/2 = h.i.ln_1/2, attn.qkv/attn.proj/mlp.fc1/mlp.fc2 =
    c_attn/attn.c_proj/c_fc/mlp.c_proj, norm = ln_f)."""
    if name in ("tok_embed.weight", "pos_embed"):
        return "emb"
    if name.startswith("blocks.") and ".norm" in name:
        return "hidden_ln"
    if name.startswith("blocks."):
        return "hidden_weight" if name.endswith(".weight") else "hidden_bias"
    if name.startswith("norm."):
        return "final_ln"
    raise AssertionError(f"unhandled parameter {name}")


def _reference(width, depth, alpha, *, eps_rule="completep"):
    """Every group's (lr, weight_decay, eps) and the branch multiplier, written out from model.py."""
    m_w, m_l = width / BASE_WIDTH, depth / BASE_DEPTH
    depth_lr_scaling = m_l ** (alpha - 1)  # L331
    width_lr_scaling = 1 / m_w  # L332
    eps_code = EPS * (1 / m_w) * m_l ** (-alpha)  # L335
    eps_split = {"emb": EPS / m_w, "final_ln": EPS / m_w}  # arXiv 2512.22382 (not in the code)
    table = {  # L336-363: (lr_scale, weight_decay)
        "emb": (1.0, WD),
        "hidden_ln": (depth_lr_scaling, 0.0),
        "hidden_weight": (width_lr_scaling * depth_lr_scaling, WD / width_lr_scaling),
        "hidden_bias": (depth_lr_scaling, 0.0),
        "final_ln": (1.0, 0.0),
    }
    out = {}
    for cat, (scale, wd) in table.items():
        eps = eps_code if eps_rule == "completep" else eps_split.get(cat, eps_code)
        out[cat] = (LR * scale, wd, eps)  # train.py L299: lr * lr_scale
    return out, 1 / (m_l ** alpha)  # L113


@pytest.mark.parametrize("member,alpha", [("completep", 1.0), ("depth-mup", 0.5)])
@pytest.mark.parametrize("eps_rule", ["completep", "split"])
def test_groups_and_branch_multiplier_match_the_reference_code(member, alpha, eps_rule):
    for width in (64, 128):
        for depth in (2, 8):
            model = _gpt(width, depth)
            p = Parametrization.parse(member, base_width=BASE_WIDTH, base_depth=BASE_DEPTH,
                                      eps_scaling=eps_rule)
            parametrize_(model, p, generator=torch.Generator().manual_seed(0))
            # the code decays wte and wpe (emb group) and no norm or bias
            groups = param_groups(model, p, lr=LR, weight_decay=WD, eps=EPS, no_decay=("norm", "bias"))
            want, branch = _reference(width, depth, alpha, eps_rule=eps_rule)
            seen = set()
            for g in groups:
                for name in g["param_names"]:
                    lr, wd, eps = want[_reference_category(name)]
                    assert g["lr"] == pytest.approx(lr, rel=1e-12), (name, width, depth)
                    assert g["weight_decay"] == pytest.approx(wd, rel=1e-12), (name, width, depth)
                    assert g["eps"] == pytest.approx(eps, rel=1e-12), (name, width, depth)
                    seen.add(name)
            assert seen == {n for n, _ in model.named_parameters()}
            rm = initlab.role_map(model)
            assert rm.controls.get_branch_multiplier() == pytest.approx(branch, rel=1e-12)
            assert all(b.branch_scale == pytest.approx(branch) for b in model.blocks)


def test_init_and_head_scale_like_the_reference_code():
    """model.py L168-174: hidden std ∝ 1/sqrt(m_w), independent of depth; L223-226: the tied
    output multiplier ∝ 1/m_w (we store N = n^-1/2·m_w^-1/2 on a unit-variance table: the logit
    variance N²·n = 1/m_w, as the code's 0.02²·n_base/m_w up to the constant); L63-66: 1/d_head."""
    stds, heads = {}, {}
    for width in (64, 128):
        for depth in (2, 8):
            model = _gpt(width, depth)
            p = Parametrization.parse("completep", base_width=BASE_WIDTH, base_depth=BASE_DEPTH,
                                      attn_scale="linear")
            parametrize_(model, p, generator=torch.Generator().manual_seed(1))
            w = torch.cat([b.mlp.fc1.weight.flatten() for b in model.blocks])
            stds[width, depth] = float(w.detach().std())
            rm = initlab.role_map(model)
            heads[width, depth] = rm.controls.get_head_multiplier()
            for att in rm.attention:
                assert att.logit_scale() == pytest.approx(1 / att.head_dim)
    for depth in (2, 8):
        assert stds[128, depth] / stds[64, depth] == pytest.approx(2 ** -0.5, rel=0.03)
        assert heads[128, depth] / heads[64, depth] == pytest.approx(0.5, rel=1e-12)  # 1/m_w
    for width in (64, 128):
        assert stds[width, 8] == pytest.approx(stds[width, 2], rel=0.03)  # no depth in the init
        assert heads[width, 8] == heads[width, 2]


def test_family_composes_names_and_refusals():
    p = Parametrization.parse("nt,depth=0.5", base_depth=4)
    assert (p.s, p.depth_alpha, p.name) == (0.0, 0.5, "nt,depth=0.5")
    assert Parametrization.parse("mu", depth_alpha=1.0).name == "completep"
    assert Parametrization.parse("depth-μp").depth_alpha == 0.5
    assert Parametrization.parse("s=0.3,depth=0.7").name == "s=0.3,depth=0.7"
    assert Parametrization.parse("standard,depth=1").branch_multiplier(16) == pytest.approx(1 / 16)
    assert Parametrization.parse("completep", base_depth=4).branch_multiplier(16) == 0.25
    assert Parametrization.parse("mu").branch_multiplier(16) == 1.0
    for bad in ("completep,depth=0.5", "mu,depth=2", "mu,width=3", "mu,depth=x"):
        with pytest.raises(ConfigError):
            Parametrization.parse(bad)
    with pytest.raises(ConfigError):
        Parametrization("completep", depth_alpha=0.5)
    with pytest.raises(ConfigError):
        Parametrization.parse("mu", base_depth=0)
    with pytest.raises(ConfigError):
        Parametrization.parse("mu", eps_scaling="sometimes")
    # SGD: hidden lr × m_L^(2α-1) (our inference); width-only members carry no eps
    p = Parametrization.parse("depth-mup", base_depth=2)
    assert p.depth_lr_factor("sgd", depth=8, hidden=True) == 1.0
    assert p.depth_lr_factor("adamw", depth=8, hidden=True) == 0.5
    assert all("eps" not in g for g in param_groups(_gpt(64, 2), "mu", lr=1e-3))


def test_plan_and_scheme_names_carry_the_depth_exponent():
    from initlab.schemes import InitPlan

    assert InitPlan.build("default", param="completep").parametrization.depth_alpha == 1.0
    plan = InitPlan.build("completep+mimetic", base_width=64, param_options={"base_depth": 2})
    assert (plan.parametrization.name, plan.parametrization.base_depth) == ("completep", 2)
    with pytest.raises(InitError):
        InitPlan.build("completep", param="mu,depth=0.5")


def _scaled_copy(model, m):
    """The same function written into the weights: every branch output's weight and bias × m."""
    twin = copy.deepcopy(model)
    rm = initlab.role_map(twin)
    rm.controls.set_branch_multiplier(1.0)
    with torch.no_grad():
        for _, name in rm.branch_outputs():
            mod = twin.get_submodule(name)
            for t in (mod.weight, getattr(mod, "bias", None)):
                if t is not None:
                    t.mul_(m)
    return twin


def _hf(kind):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = transformers.GPT2Config(n_embd=64, n_layer=4, n_head=2, vocab_size=128, n_positions=32,
                                      bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg).eval()
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                                   max_position_embeddings=32, tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(cfg).eval()


def _logits(model, ids):
    out = model(ids)
    return out.logits if hasattr(out, "logits") else out


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_hf_branch_multiplier_is_applied_and_survives_every_path(kind):
    import transformers  # noqa: F401

    model = _hf(kind)
    p = Parametrization.parse("completep", base_depth=1)  # m_L = 4: branches × 1/4
    parametrize_(model, p, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(1, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = _logits(model, ids)
        # the multiplier multiplies each residual branch: same as scaling its output weights
        torch.testing.assert_close(_logits(_scaled_copy(model, 0.25), ids), logits, rtol=1e-4, atol=1e-5)
        unscaled = copy.deepcopy(model)
        initlab.role_map(unscaled).controls.set_branch_multiplier(1.0)
        assert (_logits(unscaled, ids) - logits).abs().max() > 1e-3
    assert model.config.initlab_branch_multiplier == 0.25
    cls = type(model)
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        model.save_pretrained(folder)
        reloaded = initlab.restore_(cls.from_pretrained(folder).eval())
        torch.testing.assert_close(_logits(reloaded, ids), logits, rtol=1e-5, atol=1e-6)
        fresh = cls(model.config).eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(_logits(initlab.restore_(fresh), ids), logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(_logits(copy.deepcopy(model), ids), logits, rtol=1e-5, atol=1e-6)
        # forgot restore_: the next initlab verb puts the hooks back, and says so
        forgot = cls.from_pretrained(folder).eval()
        with pytest.warns(initlab.roles.persist.HeadMultiplierWarning, match="residual-branch"):
            initlab.role_map(forgot)
        torch.testing.assert_close(_logits(forgot, ids), logits, rtol=1e-5, atol=1e-6)
    # back to a width-only member: the multiplier is 1 and the record is gone
    parametrize_(model, "mu", generator=torch.Generator().manual_seed(0))
    assert getattr(model.config, "initlab_branch_multiplier", None) is None
    assert initlab.role_map(model).controls.get_branch_multiplier() == 1.0


@pytest.mark.parametrize("make", [
    lambda: _gpt(64, 4),
    lambda: ViT(image_size=16, patch_size=4, in_chans=1, num_classes=5, width=64, depth=4, heads=2),
    lambda: initlab.create_model("llama-micro"),
], ids=["gpt", "vit", "llama"])
def test_initlab_models_keep_the_multiplier_in_their_state_dict(make):
    model = make().eval()
    rm = initlab.role_map(model)
    p = Parametrization.parse("depth-mup", base_depth=1)
    parametrize_(model, p, generator=torch.Generator().manual_seed(0))
    m = p.branch_multiplier(rm.depth)
    assert m < 1.0 and rm.controls.get_branch_multiplier() == pytest.approx(m)
    facts = rm.facts.inputs
    x = (torch.randn(2, facts.in_chans, *facts.image_size) if facts.kind == "image"
         else torch.randint(0, facts.vocab_size, (2, 8)))
    with torch.no_grad():
        y = _logits(model, x)
        torch.testing.assert_close(_logits(_scaled_copy(model, m), x), y, rtol=1e-4, atol=1e-5)
        fresh = make().eval()
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(_logits(fresh, x), y, rtol=0, atol=0)
        with tempfile.TemporaryDirectory() as folder:
            torch.save(model.state_dict(), f"{folder}/sd.pt")
            again = make().eval()
            again.load_state_dict(torch.load(f"{folder}/sd.pt", weights_only=True))
        torch.testing.assert_close(_logits(again, x), y, rtol=0, atol=0)
    # an old-style state dict (head multiplier only) loads with branch multiplier 1
    sd = model.state_dict()
    sd["_extra_state"] = torch.tensor(1.0, dtype=torch.float64)
    fresh.load_state_dict(sd)
    assert initlab.role_map(fresh).controls.get_branch_multiplier() == 1.0


def test_model_without_branch_outputs_is_refused_with_a_depth_member():
    from initlab.roles import Role, RoleMapBuilder

    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    b = RoleMapBuilder(model)
    b.add_module("0", Role.MLP_IN)
    rm = b.build(width=8, depth=4, adapter="test")  # an adapter naming no attention and no MLP output
    assert rm.branch_outputs() == [] and rm.controls.set_branch_multiplier is None
    with pytest.raises(InitError, match="residual-branch outputs"):
        parametrize_(model, Parametrization.parse("completep"), role_map=rm)


def test_one_adamw_step_uses_each_groups_eps():
    """ε matters where gradients are tiny: a group whose ε is 1/4 of another's takes the step
    the hand-written AdamW gives with that ε."""
    model = _gpt(128, 8)
    p = Parametrization.parse("completep", base_width=64, base_depth=2)
    parametrize_(model, p, generator=torch.Generator().manual_seed(0))
    groups = param_groups(model, p, lr=1e-3, eps=1e-3)
    assert all(g["eps"] == pytest.approx(1e-3 / 2 / 4) for g in groups)  # m_w = 2, m_L = 4
    opt = torch.optim.AdamW(groups, lr=1e-3, eps=1.0)  # the groups' own eps win over the default
    w = model.blocks[0].mlp.fc1.weight
    before = w.detach().clone()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    _, loss = model(ids, ids)
    loss.backward()
    g = w.grad.detach().clone()
    opt.step()
    group = next(gr for gr in groups if any(q is w for q in gr["params"]))
    lr_g, eps_g, wd_g = group["lr"], group["eps"], group["weight_decay"]
    expected = before * (1 - lr_g * wd_g) - lr_g * g / (g.abs() + eps_g)  # step 1: m̂ = g, √v̂ = |g|
    torch.testing.assert_close(w.detach(), expected, rtol=1e-5, atol=1e-9)
    assert math.isclose(eps_g, 1e-3 / 8)


# -- theory, probe and coordinate check over depth --------------------------------------------------
def test_theory_includes_the_branch_multiplier_and_matches_the_probe():
    """The leading-order G per block with m = L^-1 (completep, base depth 1) next to the measured
    one, on one draw at width 128: the same agreement as a width-only member, while the prediction
    without the multiplier would be far off (G grows with depth there)."""
    from initlab.probe.runs import ModelSpec, ProbeSettings, agreement_row, probe_one
    from initlab.theory import Network, propagate, stem_kernel_tokens

    s = ProbeSettings(spec=ModelSpec(model="gpt", tokens=8), data="synthetic", samples=32, batch=2)
    rep = probe_one(s, 128, 6, "completep", predict=True)
    row = agreement_row(rep)
    assert row["G_max_rel"] is not None and row["G_max_rel"] < 0.1, row
    assert rep.predicted["blocks"][-1]["G"] == pytest.approx(rep.blocks[-1]["G"], rel=0.1)
    # the recursion itself: each block's increment × m²
    ids = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(0))
    k0 = stem_kernel_tokens(ids, Network(64, 2, 4).constants)
    plain = propagate(k0, Network(64, 2, 4), batch=1, tokens=6, samples=64)
    scaled = propagate(k0, Network(64, 2, 4, branch_multiplier=0.25), batch=1, tokens=6, samples=64)
    assert scaled.mhsa_increment[0] == pytest.approx(plain.mhsa_increment[0] / 16, rel=1e-9)
    assert scaled.g[-1] - scaled.g_stem < (plain.g[-1] - plain.g_stem) / 10
    with pytest.raises(ConfigError):
        Network(64, 2, 4, branch_multiplier=0.0)


def test_probe_agreement_over_depths_with_completep(tmp_path, capsys):
    from initlab.cli import main

    assert main(["probe", "--agreement", "--model", "gpt", "--widths", "64", "--depths", "2,4",
                 "--params", "completep", "--samples", "8", "--batch", "2", "--tokens", "8",
                 "--data", "synthetic", "--out", str(tmp_path)]) == 0
    rows = __import__("json").loads((tmp_path / "theory_agreement.json").read_text())
    assert [(r["param"], r["depth"]) for r in rows] == [("completep", 2), ("completep", 4)]
    assert all(r["G_max_rel"] is not None and r["G_max_rel"] < 0.15 for r in rows), rows


def test_coordcheck_over_depth_is_flat_under_completep():
    """The blocks' sum (what they add to the stream) and its change after 2 AdamW steps: flat
    across depth 2-8 under completep, growing (≈ L^1/2 at init, faster after steps) under mu."""
    from initlab.coord_check import coord_check

    g = torch.Generator().manual_seed(0)
    x, y = torch.randint(0, 64, (4, 16), generator=g), torch.randint(0, 64, (4, 16), generator=g)
    make = lambda w, d: GPT(vocab_size=64, block_size=16, width=w, depth=d, heads=2,  # noqa: E731
                            bias=False, ln_affine=False)
    cc = coord_check(make, [64], x, y, params=("mu", "completep"), depths=[2, 4, 8], lr=1e-2, steps=2)
    assert cc.axis() == "depth" and cc.meta["base_depth"] == 2
    assert abs(cc.slope("completep", "residual", axis="depth")) < 0.15
    assert abs(cc.slope("completep", "residual", key="delta", axis="depth")) < 0.15
    assert cc.slope("mu", "residual", axis="depth") > 0.35
    assert cc.slope("mu", "residual", key="delta", axis="depth") > 0.45
    # at the base depth both members take the same steps
    assert cc.value("mu", 64, "residual", key="delta", depth=2) == pytest.approx(
        cc.value("completep", 64, "residual", key="delta", depth=2), rel=1e-5)
    assert "depth exponent" in cc.table()


def test_coordcheck_command_sweeps_depth(tmp_path, capsys):
    from initlab.cli import main

    assert main(["coordcheck", "--model", "gpt", "--widths", "32", "--depths", "1,2", "--params", "completep",
                 "--steps", "1", "--batch", "2", "--data", "synthetic", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "depth exponent" in out and "base depth 1" in out
    header = (tmp_path / "coordcheck.csv").read_text().splitlines()[0]
    assert header == "param,width,depth,step,role,act,delta"


# -- weight decay as a timescale (Wang & Aitchison, arXiv 2405.13698) --------------------------------
def test_weight_decay_from_a_timescale():
    from initlab.parametrization import weight_decay_from_timescale as wd_of

    # τ = 2 epochs of 50 steps = 100 steps: lr·wd = 1/100
    assert wd_of(2.0, lr=1e-3, steps_per_epoch=50) == pytest.approx(10.0)
    # τ = 102400 tokens at 512 tokens per step = 200 steps
    assert wd_of(102400, lr=2e-3, tokens_per_step=512, unit="tokens") == pytest.approx(1 / (2e-3 * 200))
    # the data grows 1k -> 5k images at batch 100: same τ in epochs, wd / 5, and the fraction of a
    # weight left after one epoch of decay alone is the same, (1 - lr·wd)^steps ≈ exp(-1/τ)
    small, big = wd_of(5.0, lr=1e-3, steps_per_epoch=10), wd_of(5.0, lr=1e-3, steps_per_epoch=50)
    assert big == pytest.approx(small / 5)
    assert (1 - 1e-3 * big) ** 50 == pytest.approx((1 - 1e-3 * small) ** 10, rel=5e-3)
    assert (1 - 1e-3 * big) ** 50 == pytest.approx(math.exp(-1 / 5.0), rel=5e-3)
    for bad in (dict(unit="steps", steps_per_epoch=1), dict(steps_per_epoch=None), dict(steps_per_epoch=0)):
        with pytest.raises(ConfigError):
            wd_of(1.0, lr=1e-3, **bad)
    with pytest.raises(ConfigError):
        wd_of(-1.0, lr=1e-3, steps_per_epoch=5)


def test_train_option_sets_every_groups_decay_from_tau(tmp_path):
    from initlab.train import TrainConfig
    from initlab.train.engine import build_optimizer, optimizer_config
    from initlab.train.init import initialize_

    with pytest.raises(ConfigError):
        TrainConfig(wd_tau=0.0)
    with pytest.raises(ConfigError):
        TrainConfig(task="vision", wd_tau=1.0, wd_tau_unit="tokens")
    cfg = TrainConfig(model="gpt-micro", task="lm", param="completep", base_width=32, base_depth=1,
                      lr=2e-3, wd_tau=4.0, batch_size=8, block_size=16)
    for steps_per_epoch in (10, 50):  # the same τ in epochs on 5x the data
        model = initlab.create_model("gpt-micro")
        p = initialize_(model, cfg)
        opt = build_optimizer(model, optimizer_config(cfg, steps_per_epoch), torch.device("cpu"), p)
        tau_steps = 4.0 * steps_per_epoch
        depth = initlab.role_map(model).depth
        for g in opt.param_groups:
            if g["decay"] == 0:
                continue
            # per-step decay lr_G·wd_G = 1/τ_steps (× m_L^(α-1) = 1 inside the blocks for completep)
            assert g["lr"] * g["weight_decay"] == pytest.approx(1 / tau_steps, rel=1e-9), g["role"]
        assert p.depth_lr_factor("adamw", depth=depth, hidden=True) == 1.0
    # in tokens: batch 8 x block 16 = 128 tokens per step
    tok = cfg.replace(wd_tau=128 * 40.0, wd_tau_unit="tokens")
    assert optimizer_config(tok).weight_decay == pytest.approx(1 / (2e-3 * 40))


def test_train_command_runs_with_a_depth_member_and_a_timescale(tmp_path):
    from initlab.cli import main

    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question " * 30)
    assert main(["train", "--task", "lm", "--data", str(text), "--model", "gpt-micro", "--width", "32",
                 "--depth", "4", "--heads", "2", "--block-size", "8", "--batch-size", "4", "--steps", "2",
                 "--eval-batches", "1", "--param", "completep", "--base-width", "32", "--base-depth", "2",
                 "--wd-tau", "0.5", "--device", "cpu", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    cfg = __import__("json").loads((tmp_path / "run" / "config.json").read_text())
    assert (cfg["param"], cfg["base_depth"], cfg["wd_tau"]) == ("completep", 2, 0.5)


# -- the depth sweep (item 4 of issue 19): the exact commands, at tiny size ---------------------------
def test_sweep_across_depth_runs_and_reports_per_depth(tmp_path, capsys):
    from initlab.cli import main

    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question " * 30)
    out = tmp_path / "sweep"
    assert main(["sweep", "--task", "lm", "--data", str(text), "--model", "gpt-micro", "--widths", "32",
                 "--depths", "1,2", "--heads", "2", "--lrs", "1e-3,4e-3", "--param", "completep",
                 "--steps", "2", "--batch-size", "4", "--block-size", "8", "--eval-batches", "1",
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 depths × 2 lrs" in printed and "shift per depth doubling" in printed
    analysis = __import__("json").loads((out / "analysis.json").read_text())
    assert analysis["axis"] == "depth" and analysis["widths"] == [1, 2]
    assert set(analysis["transfer"]) >= {"from_depth", "to_depth", "loss"}
    assert (out / "cells" / "d2" / "lr0.004").is_dir()
    assert (out / "sweep.csv").read_text().startswith("depth,lr,")
    config = __import__("json").loads((out / "sweep.json").read_text())["config"]
    assert (config["width"], config["base_width"], config["base_depth"]) == (32, 32, 1)
    assert main(["sweep", "--widths", "32,64", "--depths", "1,2", "--lrs", "1e-3"]) == 2
    assert "one axis at a time" in capsys.readouterr().err


def test_runs_saved_before_the_new_fields_keep_their_identity():
    """A record or checkpoint written before base_depth/wd_tau/wd_tau_unit existed is the same run
    (finished cells are reused, checkpoints resume); setting one of them makes another run."""
    from initlab.experiments.runner import identity
    from initlab.train import TrainConfig
    from initlab.train.checkpoint import config_differences

    cfg = TrainConfig(model="vit-micro")
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("base_depth", "wd_tau", "wd_tau_unit")}
    assert identity(old) == identity(cfg)
    assert config_differences(old, cfg.to_dict()) == []
    assert identity(cfg.replace(base_depth=2)) != identity(old)
    assert identity(cfg.replace(wd_tau=3.0)) != identity(old)


@pytest.mark.parametrize("arch", ["gemma2", "olmo2"])
def test_depth_member_is_refused_where_a_norm_follows_each_branch_and_nothing_is_written(arch):
    """Gemma 2 and OLMo-2 normalize each branch's output before the residual sum: a multiplier on
    o_proj/down_proj would be undone by the norm (silently, before). A depth member is refused
    before any tensor changes; a width-only member still runs."""
    transformers = pytest.importorskip("transformers")
    from initlab.errors import RoleMapError
    cfg_cls, model_cls = {"gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
                          "olmo2": ("Olmo2Config", "Olmo2ForCausalLM")}[arch]
    if not hasattr(transformers, model_cls):
        pytest.skip(f"transformers has no {model_cls}")
    extra = dict(head_dim=16) if arch == "gemma2" else {}
    model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, **extra))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for call in (lambda: parametrize_(model, "completep", generator=torch.Generator().manual_seed(0)),
                 lambda: initlab.init_(model, "depth-mup+mimetic", generator=torch.Generator().manual_seed(0))):
        with pytest.raises(RoleMapError, match="post_feedforward_layernorm.*undone by that norm"):
            call()
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    parametrize_(model, "mu", generator=torch.Generator().manual_seed(0))  # no branch multiplier: fine


# the agreement table's mean over seeds: the theory predicts the mean over draws of the weights,
# so the per-block errors are averaged over seeds before the largest one is taken
def _agreement_row(seed, errors, stem, param="completep"):
    return dict(model="vit", param=param, width=512, depth=len(errors), seed=seed, G_rel_blocks=errors,
                G_stem_rel=stem, G_max_rel=max(abs(e) for e in errors))


def test_seed_mean_cancels_the_draws_scatter_and_keeps_a_bias():
    rows = [_agreement_row(0, [0.05, 0.04, 0.06], 0.05), _agreement_row(1, [-0.05, -0.04, -0.02], -0.05),
            _agreement_row(2, [0.01, 0.02, 0.01], 0.0, param="mu")]  # one seed of mu: no mean
    (m,) = agreement_seed_means(rows)
    assert (m["param"], m["seeds"], m["depth"]) == ("completep", 2, 3)
    assert m["G_seed_mean_max_rel"] == pytest.approx(0.02) and m["G_seed_mean_max_block"] == 3
    assert m["G_seed_mean_se"] == pytest.approx(0.04)  # std 0.0566 of (0.06, -0.02) / sqrt(2)
    assert m["G_single_draw_max_rel"] == pytest.approx(0.06)
    assert m["stem_mean_rel"] == pytest.approx(0.0) and m["stem_std_rel"] == pytest.approx(0.05 * math.sqrt(2))
