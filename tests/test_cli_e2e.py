"""End-to-end: the real engine behind initlab compare/sweep/train, on tiny datasets in tmp_path.

A 2-layer width-16 ViT on 240 synthetic 28x28 images (a class-specific bright square: learnable),
a character GPT on a short text file. Seconds each; they check that the commands drive the real
training loop and leave the files and tables they promise.
"""
import json
import math

import numpy as np
import pytest

import initlab.train as engine
from initlab.cli import main
from initlab.data.synthetic import write_idx_dataset
from initlab.experiments.records import read_csv

SMALL = ["--heads", "2", "--depth", "1", "--batch-size", "32", "--device", "cpu", "--quiet"]
TINY = ["--width", "16", *SMALL]


def _images(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):  # class c lights a 7x7 square at a class-specific place
        r, k = divmod(int(c), 4)
        images[i, 7 * r:7 * r + 7, 7 * k:7 * k + 7] = 255
    return images, labels


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    write_idx_dataset(root, "train", *_images(240, 0))
    write_idx_dataset(root, "test", *_images(100, 1))
    return root


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = engine.run

    def counting_run(config, **kwargs):
        calls.append(config)
        return real(config, **kwargs)

    monkeypatch.setattr(engine, "run", counting_run)
    return calls


def test_compare_real_engine(data_root, tmp_path, capsys, spy):
    out = tmp_path / "cmp"
    code = main(["compare", "--data", "fashion-mnist", "--data-root", str(data_root), "--train-size", "200",
                 "--inits", "default,mimetic", "--seeds", "2", "--steps", "8", "--eval-every", "4",
                 "--lr", "3e-3", "--out", str(out), *TINY])
    assert code == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("init "):]
    lines = [l for l in table.splitlines() if l.startswith(("default", "mimetic"))]
    assert len(lines) == 2 and all("±" in l for l in lines)
    assert len(spy) == 4 and {c.init for c in spy} == {"default", "mimetic"}
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["rows"]:
        assert row["seeds"] == 2 and row["status"] == "completed"
        assert 0.0 <= row["final_test_acc_mean"] <= 1.0 and math.isfinite(row["final_test_acc_std"])
    rows = read_csv(out / "metrics.csv")
    assert sorted({(r["init"], r["seed"], r["step"]) for r in rows}) == sorted(
        (i, str(s), str(t)) for i in ("default", "mimetic") for s in (0, 1) for t in (4, 8))
    assert len(json.loads((out / "metrics.json").read_text())) == 4
    assert (out / "curves.png").stat().st_size > 1000
    for run in ("default-s0", "mimetic-s1"):
        run_dir = out / "runs" / run
        assert {"config.json", "metrics.csv", "result.json", "summary.json"} <= {p.name for p in run_dir.iterdir()}
        assert json.loads((run_dir / "config.json").read_text())["init"] == run.split("-s")[0]


def test_sweep_real_engine_resumes(data_root, tmp_path, capsys, spy):
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", "fashion-mnist", "--data-root", str(data_root), "--widths", "16,32",
            "--lrs", "1e-3,1e-2", "--steps", "4", "--metric", "train_loss", "--out", str(out), *SMALL]
    assert main(argv) == 0
    assert len(spy) == 4 and sorted((c.width, c.lr) for c in spy) == [(16, 1e-3), (16, 1e-2), (32, 1e-3), (32, 1e-2)]
    before = {r["run_dir"]: r["wall_time_s"] for r in read_csv(out / "sweep.csv")}
    # one more lr: only its two cells train; the four finished ones are read back
    assert main(argv[:8] + ["1e-3..1e-1:3"] + argv[9:]) == 0
    assert len(spy) == 6 and all(c.lr == 1e-1 for c in spy[4:])
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 6 and all(r["status"] in ("completed", "diverged") for r in rows)
    assert all(before[r["run_dir"]] == r["wall_time_s"] for r in rows if r["run_dir"] in before)
    printed = capsys.readouterr().out
    assert "2 cells run now, 4 finished earlier" in printed and "transfer: lr" in printed
    analysis = json.loads((out / "analysis.json").read_text())
    assert set(analysis["optimal_lr"]) == {"16", "32"}
    assert analysis["transfer"]["loss"] >= 0.0
    assert (out / "transfer.png").stat().st_size > 1000


def test_train_and_resume_real_engine(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data-root", str(data_root), "--init", "mimetic", "--steps", "6", "--eval-every", "3",
                 "--checkpoint-every", "3", "--out", str(out), *TINY]) == 0
    assert "completed: final test_acc" in capsys.readouterr().out
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "command.txt", "metrics.csv", "checkpoint.pt", "result.json"} <= files
    assert json.loads((out / "config.json").read_text())["checkpoint_every"] == 3
    assert "initlab train" in (out / "command.txt").read_text()
    # resuming a finished run continues from its last checkpoint: nothing left to train
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert [row["step"] for row in result["history"]] == [3, 6]
    # changing what the run computes is refused in one line
    assert main(["train", "--resume", str(out), "--lr", "0.5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr" in err


def test_compare_lm_real_engine(tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("to be or not to be, that is the question. " * 80)
    out = tmp_path / "lm"
    assert main(["compare", "--task", "lm", "--data", str(text), "--model", "gpt-micro", "--block-size", "16",
                 "--inits", "default,mimetic", "--steps", "4", "--eval-batches", "2", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "val bpc" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "val_bpc" and not summary["higher_is_better"]
    for row in summary["rows"]:
        assert 0 < row["final_val_bpc_mean"] < 8  # bits per character of a small alphabet


def test_compare_rerun_with_a_longer_budget_really_trains(data_root, tmp_path, capsys):
    """Issue 15: rerunning compare with more steps resumed each run at lr 0 (frozen weights) while
    its table claimed the longer budget. Now the extension trains on the schedule of its new length."""
    import torch

    out = tmp_path / "cmp"
    argv = ["compare", "--data", "fashion-mnist", "--data-root", str(data_root), "--train-size", "200",
            "--inits", "default", "--steps", "6", "--eval-every", "3", "--lr", "3e-3", "--out", str(out), *TINY]
    assert main(argv) == 0
    run_dir = out / "runs" / "default-s0"
    before = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    longer = list(argv)
    longer[longer.index("--steps") + 1] = "12"
    assert main(longer) == 0
    rows = read_csv(run_dir / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12]
    assert float(rows[2]["lr"]) > 1e-4  # step 9 of 12: the cosine of the new length, not lr 0
    after = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert after["step"] == 12
    weights = [k for k in after["model"] if not k.endswith("_extra_state")]  # head_multiplier etc.
    changed = [k for k in weights if not torch.equal(after["model"][k], before["model"][k])]
    assert len(changed) == len(weights)  # every tensor of this model trains
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"][0]["epochs"] == 2.0  # 12 steps of 6 per epoch, and they really ran
