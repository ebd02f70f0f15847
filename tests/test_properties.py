"""Property tests where they pay: the spec grammar, the role map's invariants, the base-width law."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from initlab.models import GPT, ViT
from initlab.parametrization import Parametrization
from initlab.roles import roles
from initlab.schemes import get_scheme, parse, schemes
from initlab.values import parse_value

NAMES = [s.name for s in schemes()]
WORDS = st.from_regex(r"[a-z][a-z_]{0,7}", fullmatch=True).filter(lambda w: parse_value(w) == w)
VALUES = st.one_of(st.booleans(), st.integers(-10 ** 6, 10 ** 6),
                   st.floats(allow_nan=False, allow_infinity=False, width=64), WORDS, st.none())


def render(value) -> str:
    return "none" if value is None else repr(value) if isinstance(value, float) else str(value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.dictionaries(WORDS, VALUES, max_size=3)),
                min_size=1, max_size=4))
def test_spec_grammar_round_trips(chain):
    text = "+".join(name + (f"({'; '.join(f'{k}={render(v)}' for k, v in opts.items())})" if opts else "")
                    for name, opts in chain)
    parsed = parse(text)
    assert [n for n, _ in parsed] == [n for n, _ in chain]
    for (_, got), (_, want) in zip(parsed, chain):
        assert got == want
    # names resolve to the registered schemes, whatever the case and -/_ spelling
    for name, _ in chain:
        assert get_scheme(name.upper().replace("_", "-")).name == name


MODELS = st.one_of(
    st.builds(lambda w, h, d, f, b: ViT(image_size=28, patch_size=7, in_chans=1, num_classes=10, width=w * h,
                                        depth=d, heads=h, fused_qkv=f, bias=b),
              st.integers(2, 8), st.sampled_from([1, 2, 4]), st.integers(1, 3), st.booleans(), st.booleans()),
    st.builds(lambda w, h, d, f, t: GPT(vocab_size=17, block_size=8, width=w * h, depth=d, heads=h,
                                        fused_qkv=f, tie_head=t),
              st.integers(2, 8), st.sampled_from([1, 2, 4]), st.integers(1, 3), st.booleans(), st.booleans()),
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MODELS)
def test_role_map_covers_each_parameter_once_with_disjoint_covering_slots(model):
    rmap = roles(model)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(info.name for info in rmap) == sorted(names)  # each parameter in exactly one entry
    for info in rmap:
        cover = torch.zeros(info.param.shape, dtype=torch.int32)
        for slot in info.slots:
            view = cover[slot.index] if slot.index else cover
            view += 1
        assert torch.all(cover == 1), f"{info.name}: slots overlap or leave a gap"


ROLES = [("q", "weight"), ("o", "weight"), ("mlp_in", "weight"), ("mlp_out", "weight"),
         ("head", "weight"), ("head", "bias"), ("token_embed", "weight"), ("norm", "weight"),
         ("patch_embed", "weight"), ("q", "bias")]


def fans(role: str, n: int) -> tuple[int, int]:
    return {"mlp_in": (n, 4 * n), "mlp_out": (4 * n, n), "head": (n, 10), "patch_embed": (49, n)}.get(role, (n, n))


@settings(max_examples=100, deadline=None)
@given(s=st.floats(0, 1), base=st.sampled_from([16, 32, 64, 96]), k=st.integers(-2, 4),
       role=st.sampled_from(ROLES), optimizer=st.sampled_from(["adamw", "sgd"]))
def test_base_width_law_of_lr_factor(s, base, k, role, optimizer):
    """With a base width every factor is 1 there and scales as (n/n_base)^e, e from lr_rule."""
    p = Parametrization(s=s, base_width=base)
    name, kind = role
    n = int(base * 2.0 ** k)
    fi, fo = fans(name, n)
    _, e = p.lr_rule(name, kind, optimizer, fan_in=fi, fan_out=fo)
    bi, bo = fans(name, base)
    assert p.lr_factor(name, kind, optimizer, width=base, fan_in=bi, fan_out=bo) == pytest.approx(1.0)
    got = p.lr_factor(name, kind, optimizer, width=n, fan_in=fi, fan_out=fo)
    assert got == pytest.approx((n / base) ** e, rel=1e-12)
    # without a base width the same exponent governs doubling the width
    q = Parametrization(s=s)
    f1 = q.lr_factor(name, kind, optimizer, width=n, fan_in=fi, fan_out=fo)
    f2 = q.lr_factor(name, kind, optimizer, width=2 * n, fan_in=fans(name, 2 * n)[0], fan_out=fans(name, 2 * n)[1])
    if name == "patch_embed" or (name == "head"):
        return  # their constants depend on n_patch / n_out, which stay fixed here
    assert f2 / f1 == pytest.approx(2.0 ** e, rel=1e-9)
    assert math.isfinite(got) and got > 0
