"""Grid syntax: log-spaced lr ranges, width/seed lists, and the sweep analysis arithmetic."""
import math

import pytest

from initlab.errors import ConfigError
from initlab.errors import InitlabError
from initlab.experiments.grid import lr_label, parse_inits, parse_ints, parse_lrs, parse_names, parse_seeds
from initlab.experiments.sweep import analyze


def test_lr_range_is_log_spaced_with_exact_ends():
    lrs = parse_lrs("1e-4..1e-1:4")
    assert lrs == [1e-4, 1e-3, 1e-2, 1e-1]
    lrs = parse_lrs("1e-4..1e-1:8")
    assert len(lrs) == 8 and lrs[0] == 1e-4 and lrs[-1] == 1e-1
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert all(math.isclose(r, 10 ** (3 / 7), rel_tol=1e-9) for r in ratios)


def test_lr_list_sorted_and_deduplicated():
    assert parse_lrs("3e-3, 1e-3,3e-3") == [1e-3, 3e-3]
    assert parse_lrs([0.01, 0.001]) == [0.001, 0.01]
    assert parse_lrs("2e-3..2e-3:5") == [2e-3]


@pytest.mark.parametrize("bad, words", [
    ("1e-4..1e-1", "missing ':N'"),
    ("1e-4..1e-1:x", "not an integer"),
    ("1e-4..1e-1:0", "N must be >= 1"),
    ("1e-1..1e-4:3", "LO must not exceed HI"),
    ("abc", "not a number"),
    ("-1e-3,1e-2", "positive"),
    ("0..1e-2:3", "positive"),
    ("", "empty"),
])
def test_bad_lr_specs_say_what_is_wrong(bad, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as info:
        parse_lrs(bad)
    assert "\n" not in str(info.value)


def test_ints_seeds_names():
    assert parse_ints("64,128, 256,64", "--widths") == [64, 128, 256]
    with pytest.raises(ConfigError, match="not an integer"):
        parse_ints("64,abc", "--widths")
    with pytest.raises(ConfigError, match="positive"):
        parse_ints("0", "--widths")
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("3", first=5) == [5, 6, 7]
    assert parse_seeds("0,7,9") == [0, 7, 9]
    assert parse_seeds(2) == [0, 1]
    with pytest.raises(ConfigError):
        parse_seeds("0")
    with pytest.raises(ConfigError):
        parse_seeds("x")
    assert parse_names("vision, lm,vision", "--only") == ["vision", "lm"]
    assert parse_inits("default, mimetic+nt,default") == ["default", "mimetic+nt"]
    # the spec grammar's splitter: commas inside parentheses belong to the options
    assert parse_inits("default,trunc_normal(std=0.01,truncate=3)") == [
        "default", "trunc_normal(std=0.01,truncate=3)"]
    assert parse_inits(["default", "mimetic"]) == ["default", "mimetic"]  # a config file's list
    with pytest.raises(InitlabError, match="unbalanced"):
        parse_inits("default,trunc_normal(std=0.01")
    assert lr_label(0.001) == "0.001" and lr_label(1e-4) == "0.0001"


def _rows(loss, widths, lrs):
    return [{"width": w, "lr": lr, "value": loss(w, lr)} for w in widths for lr in lrs]


def test_analysis_recovers_known_optimum_shift():
    # loss = (log2 lr - log2 lr*(w))^2 with lr*(w) = 1e-2 * (w/64)^-1: one octave down per doubling
    widths, lrs = [64, 128, 256], [1e-2 * 2.0 ** -k for k in range(-2, 6)]

    def loss(w, lr):
        return (math.log2(lr) - math.log2(1e-2 * 64 / w)) ** 2 + 0.1

    a = analyze(_rows(loss, widths, lrs), widths, lrs, "test_loss")
    for w in widths:
        assert math.isclose(a.optimum[w], 1e-2 * 64 / w, rel_tol=1e-9)
        assert math.isclose(a.optimum_fit[w], 1e-2 * 64 / w, rel_tol=1e-6)
    assert [round(s, 6) for _, _, s in a.shifts] == [-1.0, -1.0]
    assert math.isclose(a.slope, -1.0, rel_tol=1e-6)
    # lr tuned at 64 used at 256 is two octaves off: loss 4 + 0.1 vs 0.1
    assert math.isclose(a.transfer["loss"], 4.0, rel_tol=1e-9)
    assert a.transfer["from_width"] == 64 and a.transfer["to_width"] == 256


def test_analysis_perfect_transfer_and_divergence():
    widths, lrs = [64, 128], [1e-3, 3e-3, 1e-2, 3e-2]
    rows = _rows(lambda w, lr: abs(math.log(lr / 3e-3)) + 1.0 / w, widths, lrs)
    rows.append({"width": 128, "lr": 3e-2, "value": math.inf})  # diverged cell overrides
    rows = [r for r in rows if not (r["width"] == 128 and r["lr"] == 3e-2 and math.isfinite(r["value"]))]
    a = analyze(rows, widths, lrs, "val_loss")
    assert a.optimum == {64: 3e-3, 128: 3e-3}
    assert a.transfer["loss"] == 0.0
    assert a.table[128][3e-2] == math.inf
    assert "transfer" in a.report() and "lr*" in a.report()


def test_parabola_refines_between_grid_points():
    widths, lrs = [64], [2.0 ** -k for k in range(4, 12)]
    true = 2.0 ** -7.3
    a = analyze(_rows(lambda w, lr: (math.log2(lr) - math.log2(true)) ** 2, widths, lrs), widths, lrs, "m")
    assert a.optimum[64] == 2.0 ** -7
    assert math.isclose(math.log2(a.optimum_fit[64]), -7.3, abs_tol=1e-9)
    assert not a.edge[64]
