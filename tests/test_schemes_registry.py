"""The scheme registry: names, spec strings, options, composition rules, model cooperation,
delegation to mimetic_ and to the parametrization module, and the ``initlab schemes`` command."""
import math
import sys
import types

import pytest
import torch

import initlab
from initlab.cli import main
from initlab.errors import InitError, InitlabError, RoleMapError
from initlab.models import GPT, ViT
from initlab.schemes import InitPlan, get_scheme, init_, parse, register_scheme, schemes, split_specs
from initlab.schemes.spec import Rule, Scheme


pytestmark = pytest.mark.usefixtures("one_thread")


def vit(**kw):
    return ViT(**{**dict(width=64, depth=2, heads=2, patch_size=7), **kw})


ISSUE_NAMES = ("default", "trunc_normal", "gpt2", "torchtitan", "mitchell", "full_megatron", "small_init",
               "wang_init", "xavier", "t_fixup", "deepnorm", "rezero", "skipinit", "layerscale", "zero_out",
               "mu", "nt", "hybrid", "standard", "mimetic", "mimetic-vision", "mimetic-language", "structured")


def test_listing_has_every_scheme_of_the_issue_with_a_citation():
    infos = {s.name: s for s in schemes()}
    for name in ISSUE_NAMES:
        assert name in infos, name
        assert infos[name].citation and infos[name].description
    assert infos["nt"].parametrization == "nt" and infos["mu"].parametrization == "mu"
    assert infos["mimetic"].parametrization is None
    assert set(infos["mimetic"].roles) == {"q", "k", "v", "o"}
    assert infos["default"].roles == ()


@pytest.mark.parametrize("name", [s.name for s in schemes()])
def test_every_scheme_runs_or_refuses_cleanly_on_both_reference_models(name):
    """Each scheme either initializes (finite outputs) or raises InitError — never anything else."""
    for model in (vit(), GPT(width=64, depth=2, heads=2, vocab_size=50, block_size=16)):
        try:
            init_(model, name, generator=torch.Generator().manual_seed(0))
        except InitError as exc:
            assert len(str(exc)) > 20
            continue
        x = torch.randn(2, 1, 28, 28) if isinstance(model, ViT) else torch.randint(0, 50, (2, 8))
        assert torch.isfinite(model(x)).all(), name


def test_list_schemes_is_the_registry_listing():
    import initlab.schemes as mod
    assert [s.name for s in initlab.list_schemes()] == [s.name for s in mod.schemes()]
    assert initlab.init_ is mod.init_


def test_aliases_case_and_unknown_names():
    assert get_scheme("Timm").name == "trunc_normal"
    assert get_scheme("olmo-mitchell").name == "mitchell"
    assert get_scheme("muP").name == "mu"
    assert get_scheme("s=0.25").parametrization == "s=0.25"
    with pytest.raises(InitError, match="unknown init scheme 'gpt3'.*known:"):
        get_scheme("gpt3")


def test_spec_parsing_and_splitting():
    assert parse("trunc_normal(0.01)+mimetic(beta_vo=0.2;qk=false)") == [
        ("trunc_normal", {None: 0.01}), ("mimetic", {"beta_vo": 0.2, "qk": False})]
    assert split_specs("default,trunc_normal(std=0.01,truncate=3),nt+mimetic") == [
        "default", "trunc_normal(std=0.01,truncate=3)", "nt+mimetic"]
    for bad in ("gpt2(", "gpt2)", "", "a++b"):
        with pytest.raises(InitError):
            init_(vit(), bad)


REFUSED = {
    "nt+mu": "two parametrizations",
    "mimetic+nt": "must come first",
    "mimetic+trunc_normal": "put mimetic last",
    "mimetic+zero_out": "put mimetic last",
    "structured+gpt2": "put structured last",
    "mimetic+structured": "both build",
    "trunc_normal+gpt2": "dead",
    "gpt2+gpt2": "dead",
    "rezero+skipinit": "dead",
}
ALLOWED = ("trunc_normal+mimetic", "nt+mimetic", "gpt2+zero_out", "small_init+wang_init",
           "mu+mimetic-qk", "zero_out+mimetic", "default+mimetic", "xavier+mimetic-vo", "mimetic-qk+mimetic-vo")


@pytest.mark.parametrize("spec", sorted(REFUSED))
def test_refused_combinations_say_why_and_write_nothing(spec):
    with pytest.raises(InitError, match=REFUSED[spec]):  # the plan refuses it without a model
        InitPlan.build(spec)
    model = vit(branch_gain="rezero")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(InitError, match=REFUSED[spec]):
        init_(model, spec)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.parametrize("spec", ALLOWED)
def test_allowed_combinations_compose(spec):
    assert [st.scheme.name for st in InitPlan.build(spec).steps] == [get_scheme(n).name for n, _ in parse(spec)]
    init_(vit(), spec, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("width,heads", [(64, 2), (128, 4)])
def test_mimetic_after_trunc_normal_keeps_both(width, heads):
    """trunc_normal owns the MLP and tables, mimetic then owns the attention products."""
    model = vit(width=width, heads=heads)
    init_(model, "trunc_normal+mimetic", generator=torch.Generator().manual_seed(0))
    fc1 = model.blocks[1].mlp.fc1.weight
    assert abs(fc1.std().item() / (0.02 * 0.8796) - 1) < 0.05
    att = initlab.role_map(model).attention[0]
    vo = att.vo_product()
    assert abs(vo.diagonal().mean().item() + 0.4) < 0.05  # −β₂
    assert vo.diagonal().mean().item() < 0 < att.qk_product(0).diagonal().mean().item()


def test_mimetic_presets_delegate_and_options_reach_mimetic():
    model = vit()
    before_qk = model.blocks[0].attn.qkv.weight[:128].detach().clone()
    init_(model, "mimetic-vo", beta_vo=0.8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.blocks[0].attn.qkv.weight[:128], before_qk)  # q, k untouched
    assert abs(initlab.role_map(model).attention[0].vo_product().diagonal().mean().item() + 0.8) < 0.05
    # same draws as calling mimetic_ directly with the same generator
    a, b = vit(), vit()
    b.load_state_dict(a.state_dict())
    init_(a, "mimetic", generator=torch.Generator().manual_seed(5))
    initlab.mimetic_(b, generator=torch.Generator().manual_seed(5))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def test_options_routing_errors_and_dotted_keys():
    with pytest.raises(InitError, match="option 'stdd' is not accepted.*accepted: cls_std, std, truncate"):
        init_(vit(), "trunc_normal", stdd=0.1)
    with pytest.raises(InitError, match="mimetic takes no positional option"):
        init_(vit(), "mimetic(0.3)")
    with pytest.raises(InitError, match="has no option 'sd'"):
        init_(vit(), "gpt2(sd=0.3)")
    model = vit()
    init_(model, "gpt2+wang_init", **{"gpt2.std": 0.05})
    assert abs(model.blocks[0].mlp.fc1.weight.std().item() / 0.05 - 1) < 0.05
    init_(vit(), "gpt2", **{"structured.focus": 0.5})  # targets a scheme not in the chain: ignored
    with pytest.raises(InitError, match="unknown init scheme 'strctured'"):
        init_(vit(), "gpt2", **{"strctured.focus": 0.5})
    with pytest.raises(InitError, match="has no option 'focs'"):
        init_(vit(), "structured", **{"structured.focs": 0.5})
    with pytest.raises(InitError, match="option std must be a number"):
        init_(vit(), "gpt2", std="big")
    with pytest.raises(InitError, match="option attn must be true or false"):
        init_(vit(), "zero_out", attn=2)
    model = vit()
    init_(model, "gpt2", std="0.05")  # a string from a config file is parsed
    assert abs(model.blocks[0].mlp.fc1.weight.std().item() / 0.05 - 1) < 0.05
    with pytest.raises(InitError, match="must be finite"):
        init_(vit(), "gpt2", std=float("nan"))


def test_model_cooperation_refusals():
    with pytest.raises(InitError, match="branch_gain='rezero'"):
        init_(vit(), "rezero")
    with pytest.raises(InitError, match="per-channel"):
        init_(vit(branch_gain="rezero"), "layerscale")
    with pytest.raises(InitError, match="norm_position='post'"):
        init_(vit(), "deepnorm")
    init_(vit(), "deepnorm", allow_pre_ln=True)
    model = vit(norm_position="post")
    rmap = initlab.role_map(model)
    rmap.controls.set_skip_scale = None  # a model whose adapter exposes no skip control
    with pytest.raises(InitError, match="skip"):
        init_(model, "deepnorm", role_map=rmap)
    init_(model, "deepnorm_init", role_map=rmap)  # the weight part alone still works
    meta = vit()
    meta.head.weight = torch.nn.Parameter(torch.empty(10, 64, device="meta"))
    with pytest.raises(InitError, match="meta"):
        init_(meta, "gpt2")


def test_parametrizations_run_parametrize_with_the_plans_one_object(monkeypatch):
    from initlab.schemes import plan as plan_module
    calls = []
    real = plan_module.parametrize_

    def spy(model, p, *, generator=None, role_map=None):
        calls.append((p, generator, role_map is not None))
        return real(model, p, generator=generator, role_map=role_map)

    monkeypatch.setattr(plan_module, "parametrize_", spy)
    g = torch.Generator()
    plan = plan_module.InitPlan.build("nt(base_width=32)+mimetic")
    plan.apply_(vit(), generator=g)
    assert len(calls) == 1 and calls[0][0] is plan.parametrization and calls[0][1:] == (g, True)
    assert plan.parametrization.s == 0.0 and plan.parametrization.base_width == 32
    # the parametrization a spec implies is the plan's (no side door beside it)
    assert InitPlan.build("nt+mimetic").parametrization.s == 0.0
    assert InitPlan.build("s=0.3").parametrization.s == 0.3
    assert InitPlan.build("trunc_normal+mimetic").parametrization.is_standard
    with pytest.raises(InitError):
        InitPlan.build("nt+mu")


def test_real_parametrization_is_what_the_scheme_writes():
    import initlab.parametrization as mod
    a, b = vit(width=128, heads=4), vit(width=128, heads=4)
    init_(a, "mu", generator=torch.Generator().manual_seed(1))
    mod.parametrize_(b, mod.Parametrization.parse("mu"), generator=torch.Generator().manual_seed(1))
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


def test_register_a_user_scheme(monkeypatch):
    from initlab.schemes import registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # leave no trace
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))
    s = Scheme("test-half-mlp", "MLP weights N(0, 1/(4·fan_in))", "test",
               rules=(Rule(("mlp_in", "mlp_out"), "normal", lambda c: 0.5 / math.sqrt(c.fan_in)),))
    register_scheme(s, replace=True)
    model = vit(width=128)
    init_(model, "test-half-mlp", generator=torch.Generator().manual_seed(0))
    assert abs(model.blocks[0].mlp.fc2.weight.std().item() / (0.5 / math.sqrt(512)) - 1) < 0.05
    with pytest.raises(InitError, match="already registered"):
        register_scheme(Scheme("x", "", "", ), aliases=("gpt2",))
    with pytest.raises(InitError, match="unknown"):  # nothing half-registered
        get_scheme("x")
    with pytest.raises(RoleMapError, match="unknown role 'not_a_role'"):
        Rule(("not_a_role",))
    with pytest.raises(InitError, match="unknown requirement"):
        Scheme("y", "", "", requires=("grids",))


def test_cli_lists_and_checks(capsys):
    assert main(["schemes"]) == 0
    out = capsys.readouterr().out
    for name in ("structured", "mimetic", "gpt2", "deepnorm", "nt"):
        assert f"\n{name} " in out
    assert main(["schemes", "--long"]) == 0
    assert "arXiv 2401.12511" in capsys.readouterr().out
    assert main(["schemes", "--check", "nt+mimetic"]) == 0
    assert "parametrization nt" in capsys.readouterr().out
    assert main(["schemes", "--check", "mimetic+nt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must come first" in err
    assert issubclass(InitError, InitlabError)
    assert main(["schemes", "--show", "gpt2", "--model", "vit-micro"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("blocks.0.mlp.fc1.weight"))
    assert "mlp_in" in line and "changed" in line
    assert abs(float(line.split()[6]) / 0.02 - 1) < 0.05  # std after
    assert main(["schemes", "--show", "rezero", "--model", "vit-micro"]) == 2
    assert "branch_gain='rezero'" in capsys.readouterr().err
    assert main(["schemes", "--show", "rezero", "--model", "vit-micro", "--model-option",
                 "branch_gain=rezero"]) == 0


def test_default_is_a_no_op():
    model = vit()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    init_(model, "default", generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
