import copy

import pytest
import torch
from torch import nn

import initlab
from initlab.errors import RoleMapError
from initlab.models import GPT, ViT
from initlab.roles import Role


def vit(**kw):
    return ViT(**{**dict(width=32, depth=2, heads=4, patch_size=7), **kw})


@pytest.mark.parametrize("fused", [True, False])
def test_every_parameter_has_exactly_one_entry(fused):
    m = vit(fused_qkv=fused)
    rm = initlab.role_map(m)
    assert list(rm.params) == [n for n, _ in m.named_parameters()]
    assert all(Role.OTHER not in info.roles for info in rm)
    assert rm.role_of("head.weight") == "head"
    assert rm.role_of("blocks.1.mlp.fc1.weight") == "mlp_in"
    assert rm.role_of("blocks.1.mlp.fc2.bias") == "mlp_out" and rm["blocks.1.mlp.fc2.bias"].is_bias
    assert rm.role_of("patch_embed.weight") == "patch_embed"
    assert rm["patch_embed.weight"].fan_in == 7 * 7 * 1
    assert rm.role_of("blocks.0.norm1.weight") == "norm"
    if fused:
        assert rm.role_of("blocks.0.attn.qkv.weight") == "q+k+v"
    else:
        assert rm.role_of("blocks.0.attn.k.weight") == "k"
    assert len(rm.attention) == 2 and rm.width == 32 and rm.depth == 2


def test_fused_slots_tile_the_tensor():
    rm = initlab.role_map(vit())
    info = rm["blocks.0.attn.qkv.weight"]
    covered = torch.zeros(info.param.shape, dtype=torch.int32)
    for slot in info.slots:
        covered[slot.index] += 1
    assert torch.equal(covered, torch.ones_like(covered))
    assert [s.role for s in info.slots] == [Role.Q, Role.K, Role.V]


@pytest.mark.parametrize("fused", [True, False])
def test_head_views_match_the_forward_pass(fused):
    """q of head h computed by the module equals x @ q_head(h) (+ bias): the views are the layout."""
    torch.manual_seed(0)
    m = vit(fused_qkv=fused)
    att = initlab.role_map(m).attention[1]
    mod = m.blocks[1].attn
    x = torch.randn(5, 32)
    q_all, k_all, v_all = (mod.qkv(x).split(32, -1) if fused else (mod.q(x), mod.k(x), mod.v(x)))
    bq, bk = att.q.bias_view(), att.k.bias_view()
    for h in range(4):
        sl = slice(h * 8, (h + 1) * 8)
        torch.testing.assert_close(q_all[:, sl], x @ att.q_head(h) + bq[sl])
        torch.testing.assert_close(k_all[:, sl], x @ att.k_head(h) + bk[sl])
    # output projection: proj(concat heads) = sum_h head_h @ o_head(h) + b
    heads = torch.randn(5, 32)
    expect = sum(heads[:, h * 8:(h + 1) * 8] @ att.o_head(h) for h in range(4)) + att.o.bias_view()
    torch.testing.assert_close(mod.proj(heads), expect)


def test_views_write_in_place_and_keep_identity():
    m = vit()
    rm = initlab.role_map(m)
    p = m.blocks[0].attn.qkv.weight
    with torch.no_grad():
        rm.attention[0].k_head(1).fill_(3.0)
    assert p is m.blocks[0].attn.qkv.weight
    assert torch.all(p[32 + 8:32 + 16] == 3.0)
    assert (p[:32] != 3.0).all()


def test_gpt_tied_embedding_is_token_embed_and_controls():
    m = GPT(vocab_size=30, block_size=8, width=16, depth=1, heads=2)
    rm = initlab.role_map(m)
    assert rm.role_of("tok_embed.weight") == "token_embed"
    assert not rm.by_role("head")
    rm.controls.set_head_multiplier(0.5)
    assert m.head_multiplier == 0.5 and rm.controls.get_head_multiplier() == 0.5
    untied = GPT(vocab_size=30, block_size=8, width=16, depth=1, heads=2, tie_head=False)
    assert initlab.role_map(untied).role_of("head.weight") == "head"


def test_logit_scale_and_skip_scale_controls():
    m = vit()
    rm = initlab.role_map(m)
    rm.attention[0].set_logit_scale(0.125)
    assert m.blocks[0].attn.scale == 0.125
    rm.controls.set_skip_scale(1.5)
    assert all(b.skip_scale == 1.5 for b in m.blocks)


def test_branch_gains_have_role_gain():
    rm = initlab.role_map(vit(branch_gain="layerscale"))
    assert rm.role_of("blocks.0.gain1.gain") == "gain"


def test_survives_deepcopy_and_compile_wrapper():
    m = vit()
    names = list(initlab.role_map(m).params)
    assert list(initlab.role_map(copy.deepcopy(m)).params) == names
    compiled = torch.compile(m)  # wrapper only; nothing is compiled until called
    rm = initlab.role_map(compiled)
    assert list(rm.params) == names
    assert rm["head.weight"].param is m.head.weight


def test_unknown_model_error_names_class_and_mapping():
    class Mystery(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

    with pytest.raises(RoleMapError, match=r"Mystery.*mapping="):
        initlab.role_map(Mystery())
    with pytest.raises(RoleMapError, match="needs a torch.nn.Module"):
        initlab.role_map("not a model")


def test_summary_lists_every_tensor():
    m = vit(depth=1)
    text = initlab.role_map(m).summary()
    assert len(text.splitlines()) == 1 + len(list(m.parameters()))
    assert "q+k+v" in text


def test_head_multiplier_survives_state_dict_round_trip():
    kw = dict(vocab_size=40, block_size=8, width=32, depth=1, heads=2, tie_head=True)
    m = GPT(**kw)
    initlab.parametrize_(m, "mu", generator=torch.Generator().manual_seed(0))
    assert m.head_multiplier == pytest.approx(32 ** -1.0)
    fresh = GPT(**kw)
    fresh.load_state_dict(m.state_dict())
    assert fresh.head_multiplier == m.head_multiplier
    ids = torch.randint(0, 40, (1, 8))
    torch.testing.assert_close(fresh(ids), m(ids))
    old = {k: v for k, v in m.state_dict().items() if k != "_extra_state"}  # saved before it existed
    GPT(**kw).load_state_dict(old)


class _Attn(nn.Module):
    def __init__(self, d=16, q_out=16):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, q_out), nn.Linear(d, 16), nn.Linear(d, 16),
                                          nn.Linear(16, d))


def test_mapping_head_dim_is_checked_for_separate_projections():
    net = nn.Module()
    net.attn = _Attn()
    spec = dict(q="q", k="k", v="v", o="o", heads=4)
    rm = initlab.role_map(net, mapping={"attention": {"attn": dict(spec, head_dim=4)}})
    assert rm.attention[0].head_dim == 4
    with pytest.raises(RoleMapError, match="head_dim 8"):
        initlab.role_map(net, mapping={"attention": {"attn": dict(spec, head_dim=8)}})


def test_interleaved_projection_views_write_through():
    from initlab.roles import Projection
    w = nn.Parameter(torch.zeros(2 * 3 * 4, 8))  # 2 heads of [q_h | k_h | v_h], head_dim 4
    k = Projection("w", w, "out_in", 8, 8, offset=4, groups=2, stride=12)
    value = torch.arange(64.).reshape(8, 8)
    k.write(value)
    torch.testing.assert_close(k.matrix(), value)
    torch.testing.assert_close(w.detach()[4:8].t(), value[:, :4])  # head 0's k rows
    torch.testing.assert_close(w.detach()[16:20].t(), value[:, 4:])  # head 1's k rows
    assert w.detach()[0:4].abs().sum() == 0 and w.detach()[8:12].abs().sum() == 0  # q, v untouched
    assert k.cols(4, 8).data_ptr() == w.detach()[16:20].data_ptr()  # a head is a view


def test_zero_size_weight_does_not_divide_by_zero():
    net = nn.Module()
    net.attn = _Attn()
    with pytest.warns(UserWarning, match="zero-element"):
        net.head = nn.Linear(16, 0)  # e.g. an empty output layer
    rm = initlab.role_map(net, mapping={"attention": {"attn": dict(q="q", k="k", v="v", o="o", heads=4)},
                                     "head": ["head"]})
    initlab.parametrize_(net, "mu", role_map=rm, generator=torch.Generator().manual_seed(0))
    groups = initlab.param_groups(net, "mu", lr=1e-3, role_map=rm)
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    initlab.init_(net, "torchtitan", role_map=rm, generator=torch.Generator().manual_seed(0))


def test_model_facts_of_initlab_models_come_from_the_role_map():
    from initlab.models import GPT, ViT
    vit = ViT(image_size=28, patch_size=7, in_chans=1, num_classes=10, width=32, depth=1, heads=2,
              pos="sincos", pool="mean")
    f = initlab.role_map(vit).facts
    assert (f.inputs.kind, f.inputs.image_size, f.inputs.in_chans) == ("image", (28, 28), 1)
    assert (f.positions.kind, f.positions.grid, f.positions.prefix_tokens) == ("fixed", (4, 4), 0)
    assert f.causal is False
    vit = ViT(image_size=28, patch_size=7, in_chans=1, num_classes=10, width=32, depth=1, heads=2)
    assert initlab.role_map(vit).facts.positions.kind == "learned"
    assert initlab.role_map(vit).facts.positions.prefix_tokens == 1
    gpt = GPT(vocab_size=50, block_size=16, width=32, depth=1, heads=2)
    f = initlab.role_map(gpt).facts
    assert (f.inputs.kind, f.inputs.vocab_size, f.inputs.max_positions, f.causal) == ("tokens", 50, 16, True)


def test_frozen_and_unit_gain_are_read_from_the_param_info():
    from initlab.models import GPT
    gpt = GPT(vocab_size=50, block_size=16, width=32, depth=1, heads=2)
    gpt.pos_embed.requires_grad_(False)
    rm = initlab.role_map(gpt)
    assert rm["pos_embed"].frozen and not rm["tok_embed.weight"].frozen
    assert all(i.unit_gain == 1.0 for i in rm.by_role("norm"))


def test_projection_over_part_of_the_inputs_reads_and_writes_only_those():
    """Projection(in_offset, d_in): the canonical matrix is the stored weight's columns
    [in_offset, in_offset + d_in) (nn.Linear), written in place; the other columns keep their
    values, and a matrix of another shape is refused with the projection's name."""
    from initlab.roles.core import Projection
    lin = nn.Linear(8, 4)
    p = Projection("o.weight", lin.weight, "out_in", 3, 4, 0, in_offset=2)
    assert p.index == (slice(0, 4), slice(2, 5))
    torch.testing.assert_close(p.matrix(), lin.weight.detach()[:, 2:5].t())
    keep = lin.weight.detach()[:, [0, 1, 5, 6, 7]].clone()
    value = torch.arange(12.0).reshape(3, 4)
    p.write(value)
    torch.testing.assert_close(lin.weight.detach()[:, 2:5], value.t())
    assert torch.equal(lin.weight.detach()[:, [0, 1, 5, 6, 7]], keep)
    with pytest.raises(RoleMapError, match=r"o\.weight: cannot write a \(4, 4\) matrix"):
        p.write(torch.zeros(4, 4))
    with pytest.raises(RoleMapError, match="cannot hold"):
        Projection("o.weight", lin.weight, "out_in", 7, 4, 0, in_offset=2)  # 2 + 7 > 8 inputs
