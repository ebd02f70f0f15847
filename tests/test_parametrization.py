"""The effective-theory family (arXiv 2304.02034) against the paper's tables, at two widths.

Expected values are written out here from the digest's tables (not recomputed with the library's
own helpers), and every width dependence is checked as an exponent between two widths.
"""
import copy
import io
import math

import pytest
import torch

import initlab
from initlab.errors import ConfigError, InitError
from initlab.models import GPT, ViT
from initlab.parametrization import Parametrization, describe, param_groups, parametrize_
from initlab.roles import ModelControls, roles

WIDTHS = (64, 256)
MEMBERS = {"standard": None, "nt": 0.0, "hybrid": 0.5, "mu": 1.0, "s=0.3": 0.3}
N_CLASSES = 100
PATCH, CHANS = 4, 3  # n_patch = 4*4*3 = 48


def vit(width, **kw):
    kw = {"image_size": 8, "patch_size": PATCH, "in_chans": CHANS, "num_classes": N_CLASSES,
          "width": width, "depth": 1, "heads": width // 32, **kw}
    return ViT(**kw)


def gpt(width, **kw):
    return GPT(**{"vocab_size": 512, "block_size": 16, "width": width, "depth": 1,
                  "heads": width // 32, **kw})


def slope(y1, y2, n1=WIDTHS[0], n2=WIDTHS[1]):
    """Width exponent e with y ∝ n^e, from two widths."""
    return math.log(y2 / y1) / math.log(n2 / n1)


# -- the paper's tables, written out ----------------------------------------------------------------
def table_variance(role, s, n, style="vit"):
    """Init variance (section 2 of the digest) for a weight of ``role`` in a width-n ViT."""
    m = 4
    if style == "lm" and role in ("patch_embed", "q", "k", "v", "o", "mlp_in", "mlp_out"):
        return 0.02 ** 2
    return {"patch_embed": 1.0 / (PATCH * PATCH * CHANS), "pos_embed": 0.02 ** 2,
            "cls_token": 0.02 ** 2, "q": 0.5 / n, "k": 0.5 / n, "v": 0.5 / n, "o": (1 / 3) / n,
            "mlp_in": 0.4 / n, "mlp_out": 1.6 / (m * n),
            "head": 1.0 / n ** (1 + (s or 0.0)),
            "token_embed": 0.02 ** 2 if s is None else 1.0}[role]


def table_adamw(role, n, n_patch, n_out, m, full=False):
    """λ̃_G of the NT member (s = 0), section 3 of the digest; head rows carry no n^(s/2)."""
    mi = (1 / (n * math.sqrt(m * n))) if full else n ** -1.5
    mo = (1 / (m * n * math.sqrt(n))) if full else n ** -1.5
    return {"patch_embed": 1 / (n_patch * math.sqrt(n)), "token_embed": n ** -0.5,
            "pos_embed": n ** -0.5, "q+k+v": n ** -1.5, "q": n ** -1.5, "k": n ** -1.5,
            "v": n ** -1.5, "o": n ** -1.5, "mlp_in": mi, "mlp_out": mo,
            "head": 1 / (n * math.sqrt(n_out)), "head.bias": 1 / math.sqrt(n_out)}.get(role, n ** -0.5)


def table_sgd(role, n, n_patch, n_out, m, full=False):
    return {"patch_embed": 1 / n_patch, "token_embed": 1.0, "pos_embed": 1.0, "q+k+v": 1 / n,
            "q": 1 / n, "k": 1 / n, "v": 1 / n, "o": 1 / n, "mlp_in": 1 / n,
            "mlp_out": 1 / (m * n) if full else 1 / n, "head": 1 / n, "head.bias": 1.0}.get(role, 1.0)


# width exponents of λ̃ (AdamW) / λ (SGD) at s = 0; biases, norms, cls: the digest's inference
ADAMW_EXP = {"patch_embed": -0.5, "pos_embed": -0.5, "token_embed": -0.5, "q+k+v": -1.5, "q": -1.5,
             "k": -1.5, "v": -1.5, "o": -1.5, "mlp_in": -1.5, "mlp_out": -1.5, "head": -1.0,
             "head.bias": 0.0}
SGD_EXP = {"patch_embed": 0.0, "pos_embed": 0.0, "token_embed": 0.0, "q+k+v": -1.0, "q": -1.0,
           "k": -1.0, "v": -1.0, "o": -1.0, "mlp_in": -1.0, "mlp_out": -1.0, "head": -1.0,
           "head.bias": 0.0}
HEAD_GROUPS = ("head", "head.bias")


def expected_exponent(group, s, optimizer):
    if s is None:
        return 0.0
    table = ADAMW_EXP if optimizer == "adamw" else SGD_EXP
    base = table.get(group, -0.5 if optimizer == "adamw" else 0.0)
    return base if group in HEAD_GROUPS else base + (s / 2 if optimizer == "adamw" else s)


# -- parsing ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,name,s", [("standard", "standard", None), ("SP", "standard", None),
                                         ("nt", "nt", 0.0), ("s=0", "nt", 0.0), ("ntk", "nt", 0.0),
                                         ("hybrid", "hybrid", 0.5), ("s=0.5", "hybrid", 0.5),
                                         ("mu", "mu", 1.0), ("muP", "mu", 1.0), ("s=1", "mu", 1.0),
                                         ("s=0.3", "s=0.3", 0.3), (" s = 0.25 ", "s=0.25", 0.25)])
def test_parse_names(spec, name, s):
    p = Parametrization.parse(spec, base_width=32)
    assert (p.name, p.s, p.base_width) == (name, s, 32)
    assert Parametrization.parse(p) is p
    assert Parametrization.parse(p, base_width=16).base_width == 16


def test_parametrization_is_a_hashable_value():
    overrides = {"q": 1.0}
    a = Parametrization.parse("mu", constants=overrides)
    overrides["q"] = 2.0  # the caller's dict is copied, not shared
    assert a.constant("q") == 1.0
    assert a == Parametrization.parse("mu", constants={"q": 1.0}) != Parametrization.parse("mu")
    assert len({a, Parametrization.parse("mu", constants={"q": 1.0})}) == 1
    assert str(Parametrization.parse("hybrid", base_width=32)) == "hybrid (base width 32)"


@pytest.mark.parametrize("spec", ["s=1.5", "s=-0.1", "foo", "s=x", "s=nan", "", "s="])
def test_parse_rejects_with_one_line_config_error(spec):
    with pytest.raises(ConfigError) as e:
        Parametrization.parse(spec)
    assert "\n" not in str(e.value) and str(e.value)


@pytest.mark.parametrize("kw", [dict(base_width=0), dict(base_width=1.5), dict(init_style="x"),
                                dict(mlp_factors="m"), dict(attn_scale="cube"),
                                dict(constants={"q": -1.0}), dict(constants={"nope": 1.0}),
                                dict(distributions={"q": "laplace"})])
def test_bad_fields_raise_config_error(kw):
    with pytest.raises(ConfigError):
        Parametrization.parse("nt", **kw)


# -- initialization ---------------------------------------------------------------------------------
def weight_regions(model):
    """(role, region) for every weight slot, via the role map."""
    rmap = roles(model)
    return [(str(slot.role), info.region(slot)) for info in rmap for slot in info.slots
            if info.kind == "weight" and str(slot.role) not in ("norm", "gain")]


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("spec", list(MEMBERS))
def test_init_variance_per_role_and_width_exponent(spec, fused):
    s = MEMBERS[spec]
    measured = {}
    for n in WIDTHS:
        m = vit(n, fused_qkv=fused)
        parametrize_(m, spec, generator=torch.Generator().manual_seed(n))
        for role, region in weight_regions(m):
            var = region.double().pow(2).mean().item()  # mean is 0 by construction
            want = table_variance(role, s, n)
            tol = 4 * math.sqrt(2 / region.numel()) + 0.02  # 4 sigma of the variance estimator
            assert abs(var / want - 1) < tol, (spec, n, role, var, want)
            measured.setdefault(role, []).append((var, tol))
    exps = {"patch_embed": 0, "pos_embed": 0, "cls_token": 0, "q": -1, "k": -1, "v": -1, "o": -1,
            "mlp_in": -1, "mlp_out": -1, "head": -(1 + (s or 0.0))}
    for role, ((v1, t1), (v2, t2)) in measured.items():
        tol = (t1 + t2) / math.log(WIDTHS[1] / WIDTHS[0])  # noise of the two estimates, as an exponent
        assert abs(slope(v1, v2) - exps[role]) < tol, (role, slope(v1, v2))


def test_distributions_uniform_and_normal():
    m = vit(128)
    parametrize_(m, "nt", generator=torch.Generator().manual_seed(0))
    uniform = {"q", "k", "v", "o", "mlp_in", "mlp_out"}
    for role, region in weight_regions(m):
        sd = region.double().pow(2).mean().sqrt().item()
        peak = region.abs().max().item() / sd
        if role in uniform:
            assert peak <= math.sqrt(3) * 1.02, role  # uniform on ±sqrt(3) sigma
        else:
            assert peak > math.sqrt(3) * 1.2, role  # a normal sample of this size exceeds it


def test_biases_zero_norms_one_and_gains_kept():
    m = vit(64, branch_gain="layerscale", branch_gain_init=0.1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    gains = {n: p.clone() for n, p in m.named_parameters() if ".gain" in n}
    parametrize_(m, "mu")
    rmap = roles(m)
    for info in rmap:
        if info.role == "gain":
            assert torch.equal(info.param, gains[info.name])
        elif info.role == "norm":
            assert torch.all(info.param == (0.0 if info.kind == "bias" else 1.0)), info.name
        elif info.kind == "bias":
            assert torch.all(info.param == 0), info.name


def test_head_multiplier_tied_untied_and_logit_scale():
    for spec, s in MEMBERS.items():
        vals = []
        for n in WIDTHS:
            g = gpt(n)
            parametrize_(g, spec)
            vals.append(g.head_multiplier)
            v = vit(n, head_multiplier=3.0)
            parametrize_(v, spec)
            assert v.head_multiplier == 1.0  # untied head: the variance carries n^-(1+s)
            hd = n // (n // 32)
            assert all(b.attn.scale == pytest.approx(hd ** -0.5) for b in g.blocks + v.blocks)
        want = 0.0 if s is None else -(1 + s) / 2  # N_rescale = n^-(1+s)/2, standard 1
        assert slope(*vals) == pytest.approx(want, abs=1e-9)
        assert vals[0] == pytest.approx(1.0 if s is None else WIDTHS[0] ** want)
    g = gpt(64)
    parametrize_(g, Parametrization.parse("mu", attn_scale="linear"))
    assert g.blocks[0].attn.scale == pytest.approx(1 / 32)
    parametrize_(g, Parametrization.parse("mu", attn_scale=None))
    assert g.blocks[0].attn.scale == pytest.approx(1 / 32)  # None leaves it alone


def test_token_embedding_variance_not_divided_by_width():
    for spec, want in (("nt", 1.0), ("mu", 1.0), ("standard", 0.02 ** 2)):
        for n in WIDTHS:
            g = gpt(n)
            parametrize_(g, spec, generator=torch.Generator().manual_seed(1))
            var = g.tok_embed.weight.double().pow(2).mean().item()
            assert var == pytest.approx(want, rel=0.05)


def test_language_style_keeps_std_002_bodies_and_stem_output_is_order_one():
    """The paper's language runs: every body weight std 0.02; NT changes only C_WE and N_rescale.
    Stem G = C_WE + C_PE (1.0004 at NT init, 8e-4 for std 0.02)."""
    for spec, g_stem in (("nt", 1.0004), ("standard", 8e-4)):
        g = gpt(128)
        parametrize_(g, Parametrization.parse(spec, init_style="lm"), generator=torch.Generator().manual_seed(2))
        for role, region in weight_regions(g):
            if role in ("q", "k", "v", "o", "mlp_in", "mlp_out"):
                assert region.double().std().item() == pytest.approx(0.02, rel=0.05)
        z = g.tok_embed.weight[:, None] + g.pos_embed[0][None]  # all (token, position) sums
        assert z.double().pow(2).mean().item() == pytest.approx(g_stem, rel=0.06)


def test_base_width_init_and_rescale_use_the_ratio():
    """With n_base: head var C/(n (n/n_base)^s), N_rescale n^-1/2 (n/n_base)^-s/2."""
    p = Parametrization.parse("mu", base_width=64)
    g = gpt(64)
    parametrize_(g, p)
    assert g.head_multiplier == pytest.approx(64 ** -0.5)  # the NT value at the base width
    g = gpt(256)
    parametrize_(g, p)
    assert g.head_multiplier == pytest.approx(256 ** -0.5 * 4 ** -0.5)
    v = vit(256)
    parametrize_(v, p, generator=torch.Generator().manual_seed(3))
    assert v.head.weight.double().pow(2).mean().item() == pytest.approx(1 / (256 * 4), rel=0.1)


def test_generator_determinism_and_dtype_kept():
    a, b = vit(64).double(), vit(64).double()
    parametrize_(a, "hybrid", generator=torch.Generator().manual_seed(5))
    parametrize_(b, "hybrid", generator=torch.Generator().manual_seed(5))
    for (n, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), n
        assert x.dtype == torch.float64 and x.requires_grad


def test_missing_head_control_and_meta_device_are_errors():
    g = gpt(64)
    rmap = roles(g)
    rmap.controls = ModelControls()
    with pytest.raises(InitError, match="head multiplier"):
        parametrize_(g, "nt", role_map=rmap)
    parametrize_(g, "standard", role_map=rmap)  # N_rescale = 1 needs no control
    m = vit(64).to("meta")
    with pytest.raises(InitError, match="meta"):
        parametrize_(m, "nt")


def test_mimetic_wins_on_qkvo_and_keep():
    m = vit(128, pool="mean")
    parametrize_(m, "nt", generator=torch.Generator().manual_seed(0), mimetic=True)
    ref = vit(128, pool="mean")  # the same thing in two calls: parametrize, then mimetic on top
    g = torch.Generator().manual_seed(0)
    parametrize_(ref, "nt", generator=g)
    initlab.mimetic_(ref, generator=g)
    for (n, a), b in zip(m.named_parameters(), ref.parameters()):
        assert torch.equal(a, b), n
    att = roles(m).attention[0]
    # mimetic: W_q W_k^T ≈ 0.7 Z + 0.7 I (rank head_dim), W_v W_o = 0.4 Z - 0.4 I: the identity
    # parts show on the diagonal, where the parametrization alone gives ~0
    assert att.qk_product(0).diagonal().mean().item() > 0.2
    assert att.vo_product().diagonal().mean().item() == pytest.approx(-0.4, abs=0.05)
    # everything else is the parametrization's: MLP variance and head
    assert m.blocks[0].mlp.fc1.weight.double().pow(2).mean().item() == pytest.approx(0.4 / 128, rel=0.05)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    parametrize_(m, "mu", keep=("q", "k", "v", "o"))
    after = m.state_dict()
    assert torch.equal(before["blocks.0.attn.qkv.weight"], after["blocks.0.attn.qkv.weight"])
    assert torch.equal(before["blocks.0.attn.proj.weight"], after["blocks.0.attn.proj.weight"])
    assert not torch.equal(before["head.weight"], after["head.weight"])


# -- learning rates and weight decay ----------------------------------------------------------------
def groups_by_role(model, spec, optimizer, **kw):
    gs = param_groups(model, spec, lr=1.0, weight_decay=0.1, optimizer=optimizer, **kw)
    out = {}
    for g in gs:
        assert g["role"] not in out
        out[g["role"]] = g
    return out


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
@pytest.mark.parametrize("spec", list(MEMBERS))
@pytest.mark.parametrize("full", [False, True])
def test_group_lr_against_tables_at_two_widths(spec, optimizer, full):
    s = MEMBERS[spec]
    p = Parametrization.parse(spec, mlp_factors="full" if full else "paper")
    table = table_adamw if optimizer == "adamw" else table_sgd
    lrs = {}
    for n in WIDTHS:
        groups = groups_by_role(vit(n, pool="cls"), p, optimizer)
        for role, g in groups.items():
            if s is None:
                want = 1.0
            else:
                mult = 1.0 if role in HEAD_GROUPS else n ** (s / 2 if optimizer == "adamw" else s)
                want = table(role, n, PATCH * PATCH * CHANS, N_CLASSES, 4, full) * mult
            assert g["lr"] == pytest.approx(want, rel=1e-12), (role, n)
            assert g["lr_factor"] == g["lr"]
            lrs.setdefault(role, []).append(g["lr"])
    assert set(lrs) >= {"patch_embed", "pos_embed", "cls_token", "q+k+v", "o", "mlp_in", "mlp_out",
                        "head", "head.bias", "norm", "norm.bias", "q+k+v.bias", "patch_embed.bias"}
    for role, (a, b) in lrs.items():
        assert slope(a, b) == pytest.approx(expected_exponent(role, s, optimizer), abs=1e-9), role


def test_paper_examples():
    """Numbers quoted in the digest: NT body lr 20·768^-3/2 ≈ 9.4e-4; hybrid 4·768^-5/4 ≈ 9.9e-4;
    BART: 32.768 = 1e-3·1024^{3/2}; MU reproduces μP's AdamW table (hidden 1/n, embeddings O(1))."""
    def lam(spec, role, n, **kw):
        return Parametrization.parse(spec, **kw).lr_factor(role, "weight", "adamw", width=n,
                                                           fan_in=n, fan_out=n)
    assert 20 * lam("nt", "q", 768) == pytest.approx(9.4e-4, rel=0.01)
    assert 4 * lam("hybrid", "q", 768) == pytest.approx(9.9e-4, rel=0.01)
    assert 32.768 * lam("nt", "o", 1024) == pytest.approx(1e-3, rel=1e-9)
    assert lam("mu", "q", 512) == pytest.approx(1 / 512)
    assert lam("mu", "pos_embed", 512) == pytest.approx(1.0)
    assert lam("mu", "q", 512, base_width=128) == pytest.approx(0.25)


def test_base_width_factors_are_one_at_base_and_ratio_powers_elsewhere():
    for optimizer in ("adamw", "sgd"):
        p = Parametrization.parse("hybrid", base_width=WIDTHS[0])
        base = groups_by_role(vit(WIDTHS[0]), p, optimizer)
        assert all(g["lr"] == pytest.approx(1.0) for g in base.values())
        big = groups_by_role(vit(WIDTHS[1]), p, optimizer)
        r = WIDTHS[1] / WIDTHS[0]
        for role, g in big.items():
            assert g["lr"] == pytest.approx(r ** expected_exponent(role, 0.5, optimizer)), role


@pytest.mark.parametrize("spec", ["standard", "nt", "mu"])
def test_weight_decay_compensation_and_no_decay_roles(spec):
    for n in WIDTHS:
        for g in param_groups(vit(n, branch_gain="layerscale"), spec, lr=2e-3, weight_decay=0.05):
            decayed = g["role"] in ("patch_embed", "q+k+v", "o", "mlp_in", "mlp_out", "head")
            # PyTorch's per-step decay is lr_G * wd_G; the paper's is lr * wd
            assert g["lr"] * g["weight_decay"] == pytest.approx(2e-3 * 0.05 if decayed else 0.0), g["role"]
    gs = param_groups(vit(64), "nt", lr=1.0, weight_decay=0.1, no_decay=("norm",))
    by = {g["role"]: g for g in gs}
    assert by["pos_embed"]["decay"] == 0.1 and by["o.bias"]["decay"] == 0.1 and by["norm"]["decay"] == 0.0


def test_groups_cover_every_trainable_parameter_once_and_skip_frozen():
    m = vit(64, ln_affine=False)
    m.cls_token.requires_grad_(False)
    gs = param_groups(m, "nt", lr=1e-3)
    ids = [id(p) for g in gs for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in m.parameters() if p.requires_grad}
    assert all(len(g["params"]) == len(g["param_names"]) for g in gs)


def test_tied_head_gpt_groups():
    for n in WIDTHS:
        by = groups_by_role(gpt(n), "mu", "adamw")
        assert "head" not in by
        assert by["token_embed"]["lr"] == pytest.approx(1.0)  # n^-1/2 · n^1/2 under MU
        assert by["q+k+v"]["lr"] == pytest.approx(1 / n)


def test_bad_optimizer_arguments():
    m = vit(64)
    with pytest.raises(ConfigError):
        param_groups(m, "nt", lr=1e-3, optimizer="adam")
    with pytest.raises(ConfigError):
        param_groups(m, "nt", lr=-1.0)
    with pytest.raises(ConfigError):
        param_groups(m, "nt", lr=1e-3, weight_decay=-0.1)
    with pytest.raises(ConfigError):
        param_groups(m, "s=2", lr=1e-3)


def _grads(model, seed=0):
    dtype = next(model.parameters()).dtype
    x = torch.randn(4, CHANS, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    y = torch.randint(0, N_CLASSES, (4,), generator=torch.Generator().manual_seed(seed + 1))
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("spec", ["nt", "mu", "standard"])
def test_one_adamw_step_matches_the_papers_update_rule(spec):
    """eq 1.94: θ ← (1 − η·wd)·θ − λ̃_G·η·m̂/(sqrt(v̂)+ε); after one step m̂ = g, v̂ = g²."""
    m = vit(64).double()
    parametrize_(m, spec, generator=torch.Generator().manual_seed(0))
    lr, wd, eps = 3e-3, 0.2, 1e-8
    groups = param_groups(m, spec, lr=lr, weight_decay=wd)
    factor = {id(p): (g["lr_factor"], g["decay"]) for g in groups for p in g["params"]}
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=eps)
    _grads(m)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in m.named_parameters()}
    opt.step()
    for n, p in m.named_parameters():
        theta, g = before[n]
        lam, decay = factor[id(p)]
        want = (1 - lr * decay) * theta - lam * lr * g / (g.abs() + eps)
        torch.testing.assert_close(p.detach(), want, rtol=1e-10, atol=1e-14, msg=n)
        if decay:
            assert decay == wd


def test_one_sgd_step_decays_by_base_lr_times_wd():
    """θ ← θ − η·λ_G·g − η·wd·θ (the decay not multiplied by λ_G, as for AdamW)."""
    m = vit(64).double()
    lr, wd = 0.1, 0.01
    groups = param_groups(m, "mu", lr=lr, weight_decay=wd, optimizer="sgd")
    factor = {id(p): (g["lr_factor"], g["decay"]) for g in groups for p in g["params"]}
    opt = torch.optim.SGD(groups)
    _grads(m, seed=3)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in m.named_parameters()}
    opt.step()
    for n, p in m.named_parameters():
        theta, g = before[n]
        lam, decay = factor[id(p)]
        torch.testing.assert_close(p.detach(), theta - lr * lam * g - lr * decay * theta,
                                   rtol=1e-10, atol=1e-14, msg=n)


# -- metadata that survives -------------------------------------------------------------------------
def _signature(model, spec="hybrid"):
    """Groups as (role, lr, wd, names): names from the module structure, not from the tensors."""
    out = []
    for g in param_groups(model, spec, lr=1e-3, weight_decay=0.1):
        out.append((g["role"], g["lr"], g["weight_decay"], tuple(g["param_names"])))
        owned = dict(initlab.roles.unwrap(model).named_parameters())
        assert all(owned[n] is p for n, p in zip(g["param_names"], g["params"]))
    return sorted(out)


def test_nothing_is_stored_on_parameters():
    m = vit(64)
    plain = {n: set(vars(p)) for n, p in m.named_parameters()}
    parametrize_(m, "mu")
    param_groups(m, "mu", lr=1e-3)
    assert {n: set(vars(p)) for n, p in m.named_parameters()} == plain


def test_groups_survive_deepcopy_and_state_dict_round_trip():
    m = vit(64)
    parametrize_(m, "hybrid", generator=torch.Generator().manual_seed(0))
    ref = _signature(m)
    assert _signature(copy.deepcopy(m)) == ref
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    fresh = vit(64)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert _signature(fresh) == ref
    # the loaded model trains with the same per-group update as the original
    for model in (m, fresh):
        opt = torch.optim.AdamW(param_groups(model, "hybrid", lr=1e-2, weight_decay=0.1))
        _grads(model)
        opt.step()
    for (n, a), b in zip(m.named_parameters(), fresh.parameters()):
        torch.testing.assert_close(a, b, msg=n)


def test_groups_built_before_and_after_torch_compile():
    m = vit(64)
    parametrize_(m, "mu", generator=torch.Generator().manual_seed(0))
    twin = copy.deepcopy(m)
    before = param_groups(m, "mu", lr=1e-2, weight_decay=0.1)
    compiled = torch.compile(m, backend="aot_eager")  # FakeTensor tracing, without a C++ toolchain
    after = param_groups(compiled, "mu", lr=1e-2, weight_decay=0.1)
    assert [(g["role"], g["lr"], [id(p) for p in g["params"]]) for g in before] == \
           [(g["role"], g["lr"], [id(p) for p in g["params"]]) for g in after]
    assert _signature(compiled, "mu") == _signature(m, "mu")
    parametrize_(compiled, "mu", generator=torch.Generator().manual_seed(0))  # roles through the wrapper
    for (n, a), b in zip(m.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), n
    opt, opt_twin = torch.optim.AdamW(before), torch.optim.AdamW(param_groups(twin, "mu", lr=1e-2, weight_decay=0.1))
    _grads(compiled)
    _grads(twin)
    opt.step()
    opt_twin.step()
    for (n, a), b in zip(m.named_parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=n)


def test_describe_lists_every_slot():
    text = describe(vit(64), "mu")
    assert "head.weight" in text and "blocks.0.attn.qkv.weight[q]" in text
    assert len(text.splitlines()) == 1 + sum(len(i.slots) for i in roles(vit(64)))


def test_top_level_exports():
    assert initlab.Parametrization is Parametrization
    assert initlab.parametrize_ is parametrize_ and initlab.param_groups is param_groups


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_agrees_with_the_theory_modules_independent_table(optimizer):
    """initlab.theory.lr_factor (F) derives λ̃ = λ·|g| from the same tables, written separately;
    the two must agree with the full M factors, for every group, member and width."""
    import initlab.theory as theory
    n_patch, n_out, m = 48, 100, 4
    slots = {"patch_embed": (n_patch, None), "token_embed": (1, None), "pos_embed": (1, None),
             "q": (None, None), "o": (None, None), "mlp_in": (None, m), "mlp_out": (m, 1),
             "head": (None, n_out), "head_bias": (None, n_out)}
    for s in (0.0, 0.5, 1.0):
        p = Parametrization(s=s, mlp_factors="full")
        for n in WIDTHS:
            for group, (fi, fo) in slots.items():
                fan_in = n * fi if group == "mlp_out" else (fi or n)
                fan_out = n * fo if group in ("mlp_in", "mlp_out") else (fo or n)
                role, kind = ("head", "bias") if group == "head_bias" else (group, "weight")
                ours = p.lr_factor(role, kind, optimizer, width=n, fan_in=fan_in, fan_out=fan_out)
                theirs = theory.lr_factor(group, n, optimizer=optimizer, s=s, n_patch=n_patch,
                                          mlp_ratio=m, n_out=n_out)
                assert ours == pytest.approx(theirs, rel=1e-12), (group, s, n)


def test_foreign_models_through_their_adapters():
    """Any model the role map covers: LLaMA (grouped-query k/v, RMSNorm, untied head) and GPT-2
    (fused Conv1D qkv, tied head without a head-multiplier control)."""
    transformers = pytest.importorskip("transformers", reason="transformers not installed")
    from transformers.utils import logging
    logging.set_verbosity_error()
    n = 64
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        hidden_size=n, intermediate_size=2 * n, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128))
    parametrize_(llama, "mu", generator=torch.Generator().manual_seed(0))
    attn = llama.model.layers[0].self_attn
    assert attn.k_proj.weight.double().pow(2).mean().item() == pytest.approx(0.5 / n, rel=0.1)
    assert llama.lm_head.weight.double().pow(2).mean().item() == pytest.approx(1 / n ** 2, rel=0.1)
    by = {g["role"]: g for g in param_groups(llama, "mu", lr=1.0)}
    assert by["k"]["lr"] == pytest.approx(1 / n) and by["head"]["lr"] == pytest.approx(1 / (n * 128 ** 0.5))
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_embd=n, n_layer=1, n_head=2, vocab_size=128, n_positions=16, bos_token_id=0, eos_token_id=0))
    gpt2.eval()  # no dropout: the logits are compared
    parametrize_(gpt2, "standard")  # N_rescale = 1
    ids = torch.arange(8)[None]
    plain = gpt2(ids).logits
    rm = initlab.role_map(gpt2)
    rm.controls.set_head_multiplier(0.25)  # through the role map: the tie stays, the logits scale
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    torch.testing.assert_close(gpt2(ids).logits, 0.25 * plain)
    parametrize_(gpt2, "nt")  # the tied head gets N_rescale = n^-1/2 without untying
    assert initlab.role_map(gpt2).controls.get_head_multiplier() == pytest.approx(n ** -0.5)
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    by = {g["role"]: g for g in param_groups(gpt2, "nt", lr=1.0)}
    assert by["q+k+v"]["lr"] == pytest.approx(n ** -1.5) and by["token_embed"]["lr"] == pytest.approx(n ** -0.5)
