"""Our MU member (s = 1) against microsoft/mup 1.0.0 on the same small ViT, tensor by tensor.

Both libraries get the same architecture (bias-free body, as in the paper). mup's model has its
head replaced by ``MuReadout`` and its base shapes set from a width-32 base and a width-48 delta;
ours is re-initialized with ``parametrize_(model, mu)`` and trained with ``param_groups``.

Measured, at widths 64 and 256, for every tensor:

* the width exponent of the *effective* init variance (mup's readout counts its 1/width_mult
  output multiplier: W_eff = W·output_mult/width_mult);
* the width exponent of the *effective* learning rate, from one real optimizer step: for Adam the
  RMS change of the effective weight (the first Adam step moves every entry by lr), for SGD
  -<ΔW_eff, g_eff>/|g_eff|² with g_eff = ∂L/∂W_eff.

They agree on every tensor (and with ``base_width`` equal to mup's base, even the absolute
effective learning rates agree). They differ by design in the attention logit scale (1/sqrt(d) vs
1/d) and in how the readout is stored (variance n^-2 and lr n^-1 on the weight itself, vs
variance n^0, lr n^0 and a 1/width_mult multiplier) - asserted below as differences.
"""
import math

import pytest
import torch

from initlab.models import ViT
from initlab.parametrization import Parametrization, param_groups, parametrize_

mup = pytest.importorskip("mup", reason="mup not installed (pip install --no-deps mup==1.0.0)")

BASE, DELTA, WIDTHS = 32, 48, (64, 256)
N_CLASSES = 100


def make(width, attn_scale="sqrt"):
    return ViT(image_size=8, patch_size=4, in_chans=3, num_classes=N_CLASSES, width=width, depth=1,
               heads=2, bias=False, pool="mean", attn_scale=attn_scale)


def make_mup(width, seed):
    torch.manual_seed(seed)
    model = make(width, attn_scale="linear")  # mup requires 1/d attention
    model.head = mup.MuReadout(width, N_CLASSES)
    base, delta = make(BASE, "linear"), make(DELTA, "linear")
    base.head, delta.head = mup.MuReadout(BASE, N_CLASSES), mup.MuReadout(DELTA, N_CLASSES)
    mup.set_base_shapes(model, base, delta=delta)
    return model


def make_ours(width, seed, base_width=None):
    model = make(width)
    parametrize_(model, Parametrization.parse("mu", base_width=base_width),
                 generator=torch.Generator().manual_seed(seed))
    return model


def multiplier(model, name):
    """What the forward pass multiplies the stored tensor by (mup's readout: output_mult/width_mult)."""
    if name == "head.weight" and isinstance(model.head, mup.MuReadout):
        return model.head.output_mult / model.head.width_mult()
    return model.head_multiplier if name.startswith("head.weight") else 1.0


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, N_CLASSES, (8,), generator=g)


def effective_lrs(model, optimizer):
    """Effective lr of every tensor from one optimizer step (see the module docstring)."""
    x, y = batch()
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    optimizer.step()
    out = {}
    for n, p in model.named_parameters():
        theta, grad = before[n]
        m = multiplier(model, n)
        d_eff = (p.detach() - theta) * m
        if isinstance(optimizer, torch.optim.SGD):
            g_eff = grad / m  # W_eff = m·W  =>  dL/dW = m·dL/dW_eff
            out[n] = -(d_eff * g_eff).sum().item() / g_eff.pow(2).sum().item()
        else:
            out[n] = d_eff.pow(2).mean().sqrt().item()
    return out


def exponent(a, b):
    return math.log(b / a) / math.log(WIDTHS[1] / WIDTHS[0])


def effective_variances(model):
    return {n: (p.detach().double() * multiplier(model, n)).pow(2).mean().item()
            for n, p in model.named_parameters() if p.dim() > 1}


def test_init_variance_exponents_agree_tensor_by_tensor():
    ours = [effective_variances(make_ours(n, seed=n)) for n in WIDTHS]
    theirs = [effective_variances(make_mup(n, seed=n)) for n in WIDTHS]
    assert set(ours[0]) == set(theirs[0])
    expected = {"patch_embed.weight": 0, "pos_embed": 0, "head.weight": -2}  # hidden matrices: -1
    for name in ours[0]:
        e_ours, e_mup = exponent(ours[0][name], ours[1][name]), exponent(theirs[0][name], theirs[1][name])
        want = expected.get(name, -1)
        assert e_ours == pytest.approx(want, abs=0.15), name
        assert e_mup == pytest.approx(want, abs=0.15), name


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_effective_lr_exponents_agree_and_absolute_values_with_base_width(kind):
    lr = 1e-3 if kind == "adamw" else 1e-2
    ours, ours_base, theirs = [], [], []
    for n in WIDTHS:
        m = make_ours(n, seed=1)
        opt = (torch.optim.AdamW(param_groups(m, "mu", lr=lr, optimizer="adamw"), eps=1e-30)
               if kind == "adamw" else torch.optim.SGD(param_groups(m, "mu", lr=lr, optimizer="sgd")))
        ours.append(effective_lrs(m, opt))
        p = Parametrization.parse("mu", base_width=BASE)
        m = make_ours(n, seed=1, base_width=BASE)
        opt = (torch.optim.AdamW(param_groups(m, p, lr=lr, optimizer="adamw"), eps=1e-30)
               if kind == "adamw" else torch.optim.SGD(param_groups(m, p, lr=lr, optimizer="sgd")))
        ours_base.append(effective_lrs(m, opt))
        m = make_mup(n, seed=1)
        opt = (mup.MuAdamW(m.parameters(), lr=lr, eps=1e-30, weight_decay=0.0) if kind == "adamw"
               else mup.MuSGD(m.parameters(), lr=lr))
        theirs.append(effective_lrs(m, opt))
    # μP's table: Adam hidden 1/n, vector-like (embeddings, tables, norms) O(1), readout 1/n,
    # readout bias O(1); SGD hidden O(1), vector-like n, readout 1/n, readout bias O(1)
    adam = {"head.weight": -1, "head.bias": 0}
    sgd = {"head.weight": -1, "head.bias": 0}
    for name in ours[0]:
        matrix = name.startswith("blocks.") and name.endswith("weight") and ".norm" not in name
        if kind == "adamw":
            want = adam.get(name, -1 if matrix else 0)
        else:
            want = sgd.get(name, 0 if matrix else 1)
        e_ours, e_mup = exponent(ours[0][name], ours[1][name]), exponent(theirs[0][name], theirs[1][name])
        assert e_ours == pytest.approx(want, abs=0.02), (name, e_ours)
        assert e_mup == pytest.approx(want, abs=0.02), (name, e_mup)
        # with base_width = mup's base width the effective learning rates coincide in value
        for i in range(2):
            assert ours_base[i][name] == pytest.approx(theirs[i][name], rel=0.02), (name, WIDTHS[i])


def test_differences_by_design_logit_scale_and_readout_storage():
    ours = [make_ours(n, seed=0) for n in WIDTHS]
    theirs = [make_mup(n, seed=0) for n in WIDTHS]
    # attention logits: 1/sqrt(head_dim) (the paper's MU) vs 1/head_dim (μP); head_dim ∝ n here
    assert exponent(ours[0].blocks[0].attn.scale, ours[1].blocks[0].attn.scale) == pytest.approx(-0.5)
    assert exponent(theirs[0].blocks[0].attn.scale, theirs[1].blocks[0].attn.scale) == pytest.approx(-1.0)
    # readout as stored: ours carries n^-2 in the variance and no multiplier; mup stores n^0 and
    # multiplies the output by 1/width_mult
    var = [[m.head.weight.double().pow(2).mean().item() for m in ms] for ms in (ours, theirs)]
    assert exponent(*var[0]) == pytest.approx(-2, abs=0.15)
    assert exponent(*var[1]) == pytest.approx(0, abs=0.15)
    assert [m.head_multiplier for m in ours] == [1.0, 1.0]
    assert theirs[1].head.width_mult() == WIDTHS[1] / BASE
    # ... so the stored readout lr differs (n^-1 vs n^0) while the effective one agrees (tested above)
    lr_ours = [next(g["lr"] for g in param_groups(m, "mu", lr=1.0) if g["role"] == "head") for m in ours]
    assert exponent(*lr_ours) == pytest.approx(-1)
    lr_mup = [next(g["lr"] for g in mup.MuAdamW(m.parameters(), lr=1.0).param_groups
                   if any(p is m.head.weight for p in g["params"])) for m in theirs]
    assert lr_mup == [1.0, 1.0]


def test_weight_decay_per_step_matches_mups_compensation_on_matrices():
    """mup's MuAdamW multiplies a matrix group's weight_decay by width_mult so lr_G·wd_G stays
    lr·wd; ours does the same (wd/λ̃). We differ on biases, norms and tables: mup decays every
    tensor of the groups it is given, we leave biases, norms, position tables and cls out."""
    n, lr, wd = WIDTHS[1], 1e-3, 0.1
    m = make_mup(n, seed=0)
    mup_groups = mup.MuAdamW(m.parameters(), lr=lr, weight_decay=wd).param_groups
    assert all(g["lr"] * g["weight_decay"] == pytest.approx(lr * wd) for g in mup_groups)
    ours = param_groups(make_ours(n, seed=0), "mu", lr=lr, weight_decay=wd)
    for g in ours:
        decayed = g["role"] in ("patch_embed", "q+k+v", "o", "mlp_in", "mlp_out", "head")
        assert g["lr"] * g["weight_decay"] == pytest.approx(lr * wd if decayed else 0.0), g["role"]
