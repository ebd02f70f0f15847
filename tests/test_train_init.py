"""The model's init and the optimizer groups must come from the same parametrization."""
import pytest
import torch

from initlab.models import create_model
from initlab.train import TrainConfig
from initlab.train.init import initialize_


def _model(cfg, **kw):
    return create_model(cfg.model, width=cfg.width, depth=1, heads=2, **kw)


@pytest.mark.parametrize("init,param", [("mu+mimetic", "standard"), ("mimetic", "mu")])
def test_spec_parametrization_uses_base_width_and_lm_style(init, param):
    cfg = TrainConfig(task="lm", model="gpt-micro", width=64, init=init, param=param, base_width=32,
                      data="unused.txt")
    torch.manual_seed(0)
    model = _model(cfg, vocab_size=40, block_size=16)
    p = initialize_(model, cfg)
    assert p.base_width == 32 and p.init_style == "lm" and p.s == 1.0
    # N_rescale with a base width: n^-1/2 (n/n_base)^-s/2
    assert model.head_multiplier == pytest.approx(p.head_multiplier(64, tied=True))
    assert model.head_multiplier == pytest.approx(64 ** -0.5 * 2 ** -0.5)
    # language style: MLP body weights drawn with std 0.02 (mimetic owns q/k/v/o)
    assert model.blocks[0].mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_model_attn_scale_option_survives_the_parametrization():
    cfg = TrainConfig(model="vit-micro", width=64, param="nt", model_options={"attn_scale": "linear"})
    model = _model(cfg, attn_scale="linear")
    initialize_(model, cfg)
    assert model.blocks[0].attn.scale == pytest.approx(1 / 32)
