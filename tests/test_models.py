import copy

import pytest
import torch

from initlab.errors import ConfigError
from initlab.models import GPT, PRESETS, ViT, create_model, sincos_1d, sincos_2d


def tiny_vit(**kw):
    base = dict(image_size=28, patch_size=7, in_chans=1, num_classes=10, width=32, depth=2, heads=2)
    return ViT(**{**base, **kw})


@pytest.mark.parametrize("pool", ["cls", "mean"])
@pytest.mark.parametrize("pos", ["learned", "sincos"])
def test_vit_shapes(pool, pos):
    m = tiny_vit(pool=pool, pos=pos)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    n_tokens = 16 + (pool == "cls")
    assert m.tokens(torch.randn(1, 1, 28, 28)).shape == (1, n_tokens, 32)
    # a fixed table is not trainable, a learned one is
    assert isinstance(m.pos_embed, torch.nn.Parameter) == (pos == "learned")


def test_fused_and_separate_qkv_compute_the_same_function():
    torch.manual_seed(0)
    fused = tiny_vit(fused_qkv=True)
    sep = tiny_vit(fused_qkv=False)
    sd = fused.state_dict()
    for i in range(2):
        w = sd.pop(f"blocks.{i}.attn.qkv.weight")
        b = sd.pop(f"blocks.{i}.attn.qkv.bias")
        for j, name in enumerate("qkv"):
            sd[f"blocks.{i}.attn.{name}.weight"] = w[j * 32:(j + 1) * 32]
            sd[f"blocks.{i}.attn.{name}.bias"] = b[j * 32:(j + 1) * 32]
    sep.load_state_dict(sd)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(fused(x), sep(x))


def test_attention_scale_options():
    m = tiny_vit(attn_scale="linear")
    assert m.blocks[0].attn.scale == pytest.approx(1 / 16)
    assert tiny_vit().blocks[0].attn.scale == pytest.approx(16 ** -0.5)
    with pytest.raises(ConfigError):
        tiny_vit(attn_scale="cubic")


def test_width_not_divisible_by_heads_is_a_clear_error():
    with pytest.raises(ConfigError, match="not divisible by heads 3"):
        tiny_vit(width=32, heads=3)


def test_gpt_is_causal_and_tied():
    torch.manual_seed(0)
    m = GPT(vocab_size=50, block_size=16, width=32, depth=2, heads=2)
    idx = torch.randint(0, 50, (2, 12))
    out = m(idx)
    idx2 = idx.clone()
    idx2[:, 8:] = (idx2[:, 8:] + 1) % 50  # change the future
    out2 = m(idx2)
    torch.testing.assert_close(out[:, :8], out2[:, :8])
    assert not torch.allclose(out[:, 8:], out2[:, 8:])
    assert m.head is None  # tied: the token table is the head
    logits, loss = m(idx, idx)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_head_multiplier_scales_logits():
    torch.manual_seed(0)
    m = GPT(vocab_size=20, block_size=8, width=16, depth=1, heads=2)
    idx = torch.randint(0, 20, (1, 8))
    a = m(idx)
    m.head_multiplier = 0.25
    torch.testing.assert_close(m(idx), a * 0.25)


def test_rezero_blocks_start_as_identity():
    m = tiny_vit(branch_gain="rezero")
    z = torch.randn(2, 17, 32)
    torch.testing.assert_close(m.blocks[0](z), z)


def test_layerscale_gain_shape_and_post_ln():
    m = tiny_vit(branch_gain="layerscale", branch_gain_init=1e-5, norm_position="post", skip_scale=2.0)
    assert m.blocks[0].gain1.gain.shape == (32,)
    assert torch.isfinite(m(torch.randn(2, 1, 28, 28))).all()


def test_sincos_tables():
    t = sincos_1d(10, 8)
    assert t.shape == (10, 8)
    torch.testing.assert_close(t[0, 4:], torch.ones(4))  # cos(0) = 1
    t2 = sincos_2d(4, 4, 16)
    assert t2.shape == (16, 16)
    # tokens in the same row share the row half of the code
    torch.testing.assert_close(t2[0, :8], t2[3, :8])
    with pytest.raises(ConfigError):
        sincos_2d(4, 4, 18)


def test_presets_and_unknown_name():
    m = create_model("vit-tiny", depth=1)
    assert (m.width, m.heads, m.blocks[0].attn.head_dim) == (192, 3, 64)
    assert PRESETS["vit-tiny"][1]["depth"] == 12
    with pytest.raises(ConfigError, match="unknown model preset"):
        create_model("vit-huge")


def test_deepcopy_keeps_function():
    m = tiny_vit()
    x = torch.randn(1, 1, 28, 28)
    torch.testing.assert_close(copy.deepcopy(m)(x), m(x))
