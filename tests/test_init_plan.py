"""The init plan: one parse, one Parametrization, every option validated before the first write."""
import copy

import numpy as np
import pytest
import torch

import initlab
from initlab.cli import main
from initlab.data.synthetic import write_idx_dataset
from initlab.errors import ConfigError, InitError, InitlabError
from initlab.models import ViT
from initlab.parametrization import NAMED_S, Parametrization
from initlab.schemes import InitPlan, init_
from initlab.train import TrainConfig, materialize_
from initlab.train.init import init_plan, initialize_


def vit(**kw):
    return ViT(image_size=28, patch_size=7, in_chans=1, num_classes=10,
               **{"width": 32, "depth": 2, "heads": 2, **kw})


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k


@pytest.mark.parametrize("spec,words", [
    ("trunc_normal+mimetic(alpha_qk=-5)", "alpha_qk must be >= 0"),
    ("mimetic(svd=bogus)", "svd must be one of"),
    ("mimetic(vo_sign=3)", "vo_sign must be -1"),
    ("mimetic(pos_embed=bogus)", "pos_embed must be one of"),
    ("nt+mimetic(alpha_qk=-1)", "alpha_qk must be >= 0"),
    ("trunc_normal(std=-1)", "std of role"),
    ("trunc_normal(truncate=0)", "truncation of role"),
    ("gpt2(std=nan)", "must be finite"),
    ("structured(vo=bogus)", "vo must be 'mimetic' or 'keep'"),
    ("structured(kernel_size=2)", "kernel_size must be a positive odd integer"),
    ("mimetic(qk=maybe)", "must be true or false"),
    ("gpt2(stdd=0.1)", "has no option 'stdd'"),
    ("mimetic+gpt2", "would overwrite"),
])
def test_a_refused_plan_leaves_the_model_untouched(spec, words):
    model = vit()
    before = snapshot(model)
    with pytest.raises(InitError, match=words):
        init_(model, spec, generator=torch.Generator().manual_seed(0))
    assert_untouched(model, before)
    with pytest.raises(InitError, match=words):  # without any model: the plan alone refuses
        InitPlan.build(spec)


def test_refused_parametrization_options_leave_the_model_untouched():
    model = vit()
    before = snapshot(model)
    with pytest.raises(ConfigError, match="mlp_factors='full' has no effect with a base_width"):
        init_(model, "nt(mlp_factors=full; base_width=16)")
    with pytest.raises(InitError, match="implies parametrization 'nt'"):
        InitPlan.build("nt+mimetic", param="mu")
    assert_untouched(model, before)


def test_model_checks_run_before_any_write():
    """rezero needs branch gains: the check fails after trunc_normal would have written."""
    model = vit()
    before = snapshot(model)
    with pytest.raises(InitError, match="branch gains|residual-branch gains"):
        init_(model, "trunc_normal+rezero")
    assert_untouched(model, before)


def test_materialize_validates_the_spec_before_allocating():
    with torch.device("meta"):
        model = vit()
    with pytest.raises(InitError, match="vo_sign"):
        materialize_(model, "cpu", init="mimetic(vo_sign=3)")
    assert all(p.is_meta for p in model.parameters())  # nothing allocated


def test_value_grammar_is_the_same_in_specs_and_flags():
    """`--init-option qk=yes` always worked; `mimetic(qk=yes)` now does too."""
    a = vit()
    b = copy.deepcopy(a)
    init_(a, "mimetic(qk=yes; vo=no)", generator=torch.Generator().manual_seed(0))
    init_(b, "mimetic", generator=torch.Generator().manual_seed(0), qk="yes", vo="off")
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("name", ["standard", "nt", "hybrid", "mu", "s=0.25"])
def test_parametrization_constructor_means_what_it_says(name):
    direct, parsed = Parametrization(name), Parametrization.parse(name)
    assert direct == parsed and direct.s == parsed.s and direct.name == parsed.name
    assert direct.lr_factor("q", "weight", "adamw", width=256) == parsed.lr_factor("q", "weight", "adamw", width=256)
    if name in NAMED_S:
        assert Parametrization(s=NAMED_S[name]).name == name
    if not direct.is_standard:  # a name that contradicts s is refused
        with pytest.raises(ConfigError, match="means s="):
            Parametrization(name, s=0.75)


def test_nt_hidden_weights_get_the_nt_width_exponent():
    """The reported bug: Parametrization("nt") gave every group factor 1 (exponent 0)."""
    p = Parametrization("nt")
    assert p.lr_rule("q", "weight", "adamw", fan_in=64, fan_out=64)[1] == -1.5


def test_one_plan_for_the_engine_and_the_optimizer(monkeypatch):
    cfg = TrainConfig(task="lm", model="gpt-micro", width=32, init="mu+mimetic", base_width=16,
                      init_options={"mlp_factors": "paper"}, data="unused.txt")
    plan = init_plan(cfg)
    assert init_plan(cfg) is not plan  # no cache: a plan travels with its config
    model = initlab.create_model("gpt-micro", width=32, depth=1, heads=2, vocab_size=40, block_size=16)
    p = initialize_(model, cfg, plan)
    assert p is plan.parametrization and p.s == 1.0 and p.base_width == 16 and p.init_style == "lm"


def test_train_parses_its_spec_once_and_builds_one_parametrization(tmp_path, monkeypatch):
    """`initlab train --init nt+mimetic --param nt`: check_config and the engine share the plan."""
    from initlab.parametrization import Parametrization as P
    from initlab.schemes import plan as plan_module

    parses, built = [], []
    real_parse, real_post = plan_module.parse, P.__post_init__
    monkeypatch.setattr(plan_module, "parse", lambda spec: parses.append(spec) or real_parse(spec))
    monkeypatch.setattr(P, "__post_init__", lambda self: built.append(1) or real_post(self))
    groups = []
    import initlab.train.engine as engine
    real_build = engine.build_optimizer
    monkeypatch.setattr(engine, "build_optimizer",
                        lambda model, cfg, device, p: groups.append(p) or real_build(model, cfg, device, p))
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be " * 40)
    assert main(["train", "--task", "lm", "--data", str(text), "--model", "gpt-micro", "--width", "16",
                 "--depth", "1", "--heads", "2", "--block-size", "8", "--batch-size", "4", "--steps", "1",
                 "--eval-batches", "1", "--init", "nt+mimetic", "--param", "nt", "--device", "cpu",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert parses == ["nt+mimetic"]
    assert len(built) == 1 and len(groups) == 1 and groups[0].name == "nt"


def _tiny_images(root):
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 20)):
        write_idx_dataset(root, split, rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), np.arange(n) % 10)


@pytest.mark.parametrize("command,flags", [
    ("compare", ["--inits", "default,mimetic(alpha_qk=-5)"]),
    ("compare", ["--inits", "default,trunc_normal(std=-1)"]),
    ("sweep", ["--init", "mimetic(svd=bogus)", "--widths", "16,32", "--lrs", "1e-3,1e-2"]),
])
def test_compare_and_sweep_validate_every_init_before_the_first_run(command, flags, tmp_path, capsys,
                                                                     monkeypatch):
    import initlab.train as engine
    calls = []
    monkeypatch.setattr(engine, "run", lambda *a, **k: calls.append(a), raising=False)
    _tiny_images(tmp_path / "fm")
    width = ["--width", "16"] if command == "compare" else []
    code = main([command, "--data-root", str(tmp_path / "fm"), *width, "--depth", "1", "--heads", "2",
                 "--steps", "1", "--out", str(tmp_path / "out"), "--quiet", *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert not calls and not (tmp_path / "out" / "runs").exists()


def test_seeding_rule_has_no_global_effect():
    from initlab.coord_check import coord_check
    from initlab.models import GPT

    x, y = torch.randint(0, 16, (2, 8)), torch.randint(0, 16, (2, 8))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    coord_check(lambda w: GPT(vocab_size=16, block_size=8, width=w, depth=1, heads=2),
                [16, 32], x, y, params=("nt",), steps=1)
    assert torch.equal(torch.rand(3), expected)


def test_plots_do_not_switch_the_backend(tmp_path):
    import matplotlib
    before = matplotlib.get_backend()
    from initlab.plotting import save, subplots
    fig, ax = subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    assert save(fig, tmp_path / "x.png").stat().st_size > 0
    assert matplotlib.get_backend() == before


def test_errors_are_initlab_errors():
    with pytest.raises(InitlabError, match="unknown role"):
        initlab.Role("qq")


def test_schemes_check_validates_options_too(capsys):
    assert main(["schemes", "--check", "nt+mimetic"]) == 0
    assert "ok (parametrization nt)" in capsys.readouterr().out
    assert main(["schemes", "--check", "nt+mimetic(alpha_qk=-5)"]) == 2
    err = capsys.readouterr().err
    assert "alpha_qk must be >= 0" in err and err.count("\n") == 1
