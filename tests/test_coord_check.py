"""Coordinate check: per-role activation and update sizes across widths after a few AdamW steps.

MU keeps activations and their updates flat in width; NT keeps activations and the output update
flat while hidden-feature updates shrink like n^{-1/2} (the lazy regime the paper describes); the
standard parametrization at one learning rate for all widths does not stay flat, so the test can fail.
"""
import pytest
import torch

from initlab.coord_check import CoordCheck, coord_check
from initlab.errors import ConfigError
from initlab.models import ViT

HIDDEN = ("q+k+v", "o", "mlp_in", "mlp_out")


@pytest.fixture(scope="module")
def cc():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds contention on a shared CPU
    try:
        return coord_check(lambda w: ViT(width=w, depth=1, heads=w // 32, bias=False, ln_affine=False,
                                         pool="mean"), [64, 128, 256], x, y, lr=2e-3, steps=4, optimizer="adamw")
    finally:
        torch.set_num_threads(threads)


def test_mu_is_flat(cc):
    for role in cc.roles():
        assert abs(cc.slope("mu", role)) < 0.15, role
        assert abs(cc.slope("mu", role, key="delta")) < 0.15, role


def test_nt_activations_and_output_flat_features_lazy(cc):
    for role in HIDDEN + ("logits",):
        assert abs(cc.slope("nt", role)) < 0.25, role
    assert abs(cc.slope("nt", "logits", key="delta")) < 0.2
    for role in HIDDEN:
        assert -0.75 < cc.slope("nt", role, key="delta") < -0.3, role  # ≈ n^{-1/2}


def test_standard_is_not_flat(cc):
    assert cc.slope("standard", "logits") > 0.4
    assert cc.slope("standard", "logits", key="delta") > 0.4
    assert max(cc.slope("standard", r, key="delta") for r in HIDDEN) > 0.4
    # at the base width all three take the same steps: the curves start from one point
    for role in cc.roles():
        a, b = cc.value("standard", 64, role), cc.value("mu", 64, role)
        assert a == pytest.approx(b, rel=1e-4), role


def test_writers(cc, tmp_path):
    rows = cc.write_csv(tmp_path / "cc.csv").read_text().splitlines()
    assert len(rows) == 1 + len(cc.records) and rows[0].startswith("param,width,depth,step")
    small = CoordCheck([r for r in cc.records if r["role"] in ("o", "logits") and r["param"] != "nt"])
    assert small.plot(tmp_path / "cc.png").read_bytes()[:4] == b"\x89PNG"
    assert "mu:" in cc.table()
    with pytest.raises(ConfigError):
        coord_check(lambda w: None, [64], torch.zeros(1), torch.zeros(1))
