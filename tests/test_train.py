"""Training engine: schedule, a vision and a language-model run, the run directory, failure modes."""
from __future__ import annotations

import json
import math

import pytest
import torch

from initlab.errors import CheckpointError, ConfigError, TrainingError
from initlab.train import RunResult, TrainConfig, WarmupCosine, read_metrics, resolve_device, run
from initlab.train.schedule import warmup_steps
from test_train_support import lm_config, vision_config

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# schedule

def test_warmup_cosine_shape():
    s = WarmupCosine(total_steps=110, warmup=10, min_ratio=0.1)
    # linear warmup from 1/10 to 1, never 0
    assert [s(i) for i in range(10)] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert s(10) == pytest.approx(1.0)
    # cosine halfway is the midpoint between 1 and min_ratio; it ends at min_ratio
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(110) == pytest.approx(0.1)
    vals = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))  # monotone decay


def test_warmup_steps_fraction_or_count():
    assert warmup_steps(0.05, 200) == 10
    assert warmup_steps(25, 200) == 25
    assert warmup_steps(500, 200) == 200
    assert warmup_steps(0.0, 200) == 0
    with pytest.raises(ConfigError):
        WarmupCosine(0, 0)


def test_device_auto_is_cpu_here():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")
    with pytest.raises(ConfigError):
        resolve_device("tpu")


# ---------------------------------------------------------------------------------------------
# vision

def test_vision_run_learns_and_writes_run_dir(fake_root, tmp_path):
    out = tmp_path / "run"
    cfg = vision_config(fake_root, out, steps=48, eval_every=16, lr=1e-2, label_smoothing=0.1,
                        min_lr_ratio=0.1, checkpoint_every=16)
    result = run(cfg, progress=False, command=["initlab", "train", "--steps", "48"])
    assert isinstance(result, RunResult) and result.status == "completed" and result.error is None
    assert [r["step"] for r in result.history] == [16, 32, 48]
    first, final = result.history[0], result.final
    for key in ("step", "epoch", "train_loss", "lr", "test_loss", "test_acc", "elapsed_s"):
        assert key in final
    # 512 training images / batch 32 = 16 steps per epoch
    assert final["epoch"] == pytest.approx(3.0)
    # the schedule ended at lr * min_lr_ratio
    assert final["lr"] == pytest.approx(1e-2 * 0.1)
    # it learned the synthetic task (chance is 0.1)
    assert final["test_acc"] > 0.3 and final["test_loss"] < first["test_loss"]
    assert result.best["test_acc"] == max(r["test_acc"] for r in result.history)
    assert result.throughput > 0 and result.throughput_unit == "img/s"
    assert result.n_params == sum(p.numel() for p in result.model.parameters())
    # run directory
    assert json.loads((out / "config.json").read_text()) == json.loads(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_dict(json.loads((out / "config.json").read_text())) == cfg
    assert (out / "command.txt").read_text() == "initlab train --steps 48\n"
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == [16, 32, 48]
    assert rows[-1]["test_acc"] == pytest.approx(final["test_acc"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 48
    assert summary["final"]["test_acc"] == pytest.approx(final["test_acc"])
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 48
    assert torch.load(out / "checkpoint.last_good.pt", weights_only=False)["step"] == 32
    for k, v in result.model.state_dict().items():
        assert torch.equal(state["model"][k], v)


def test_epochs_and_default_eval_once_per_epoch(fake_root):
    result = run(vision_config(fake_root, None, steps=None, epochs=2, eval_every=None), progress=False)
    assert result.total_steps == 32
    assert [r["step"] for r in result.history] == [16, 32]


def test_bf16_autocast_and_sgd(fake_root):
    result = run(vision_config(fake_root, None, steps=8, eval_every=8, amp="bf16", optimizer="sgd",
                               lr=0.05), progress=False)
    assert result.status == "completed" and math.isfinite(result.final["test_loss"])


def test_mismatched_model_and_task(fake_root):
    with pytest.raises(ConfigError, match="gpt"):
        run(vision_config(fake_root, None, model="gpt-micro"), progress=False)


# ---------------------------------------------------------------------------------------------
# language modelling

@pytest.mark.parametrize("tokenizer, vocab", [("char", None), ("byte", 256)])
def test_lm_run_reports_nats_and_bits_per_character(text_file, tokenizer, vocab):
    result = run(lm_config(text_file, None, tokenizer=tokenizer, steps=32, lr=1e-2), progress=False)
    assert result.status == "completed" and result.throughput_unit == "tok/s"
    n_chars = len(set(text_file.read_text()))
    assert result.info["task"]["vocab_size"] == (vocab or n_chars)
    for row in result.history:
        assert row["val_bpc"] == pytest.approx(row["val_loss"] / math.log(2))
    first, final = result.history[0], result.final
    assert final["val_loss"] < first["val_loss"] < math.log(vocab or n_chars) + 0.5
    # contiguous split: the last 10% of the text is validation
    info = result.info["task"]
    assert info["train_tokens"] + info["val_tokens"] == len(text_file.read_bytes())
    assert info["val_tokens"] == round(0.1 * len(text_file.read_bytes()))


# ---------------------------------------------------------------------------------------------
# failure modes

def _nan_after(monkeypatch, n_steps: int):
    """Make the training loss NaN from the (n_steps+1)-th call on."""
    from initlab.train import tasks
    real = tasks.Task.loss
    calls = {"n": 0}

    def loss(self, model, x, y, label_smoothing):
        calls["n"] += 1
        value = real(self, model, x, y, label_smoothing)
        return value * float("nan") if calls["n"] > n_steps else value

    monkeypatch.setattr(tasks.Task, "loss", loss)


def test_nan_loss_stops_with_training_error_and_keeps_last_good(fake_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _nan_after(monkeypatch, 13)
    result = run(vision_config(fake_root, out, steps=40, eval_every=40, checkpoint_every=5),
                 progress=False)
    assert result.status == "diverged"
    assert isinstance(result.error, TrainingError)
    assert "NaN or inf" in str(result.error) and "step 10" in str(result.error)
    with pytest.raises(TrainingError, match="NaN or inf"):
        result.raise_for_status()
    # step 14 was the first NaN step: checkpoints at 5 and 10 are good, 15 was never written
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 10
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


@pytest.fixture(scope="module")
def finished_run(fake_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = vision_config(fake_root, out, steps=8, eval_every=4, checkpoint_every=4)
    run(cfg, progress=False)
    return cfg, out


def _copy_run(finished_run, tmp_path):
    import shutil
    cfg, out = finished_run
    shutil.copytree(out, tmp_path / "run")
    return cfg.replace(out=str(tmp_path / "run")), tmp_path / "run"


def test_existing_checkpoint_needs_resume(finished_run, tmp_path):
    cfg, out = _copy_run(finished_run, tmp_path)
    with pytest.raises(ConfigError, match="resume"):
        run(cfg, progress=False)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "not-a-checkpoint"])
def test_corrupt_checkpoint_is_a_clear_error(finished_run, tmp_path, damage):
    cfg, out = _copy_run(finished_run, tmp_path)
    path = out / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="checkpoint.pt") as info:
        run(cfg.replace(resume=True), progress=False)
    assert "checkpoint.last_good.pt" in str(info.value)  # the fix names the previous checkpoint


def test_resume_with_a_different_config_is_refused(finished_run, tmp_path):
    cfg, out = _copy_run(finished_run, tmp_path)
    with pytest.raises(CheckpointError, match="lr: checkpoint has 0.003, now 0.001"):
        run(cfg.replace(resume=True, lr=1e-3), progress=False)
    with pytest.raises(CheckpointError, match="seed"):
        run(cfg.replace(resume=True, seed=1), progress=False)
    # where outputs go or how fast it runs may change; the finished run just reports itself
    result = run(cfg.replace(resume=True, checkpoint_every=2, device="cpu"), progress=False)
    assert result.status == "completed" and result.step == 8 and len(result.history) == 2


# ---------------------------------------------------------------------------------------------
# no global side effects, progress lines

def test_a_run_leaves_the_global_random_state_as_it_found_it(fake_root, tmp_path):
    """The engine seeds the global RNGs for its own use (module defaults, dropout) and restores
    them: the caller's torch, numpy and random streams continue as if no run had happened."""
    import random

    import numpy as np

    torch.manual_seed(1234)
    random.seed(99)
    np.random.seed(7)
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(1234)
    random.seed(99)
    np.random.seed(7)
    result = run(vision_config(fake_root, tmp_path / "run", steps=4, eval_every=4, seed=5), progress=False)
    assert result.status == "completed"
    after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]
    # and the run itself is still reproducible: same seed, same weights
    again = run(vision_config(fake_root, tmp_path / "again", steps=4, eval_every=4, seed=5), progress=False)
    for a, b in zip(result.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)


def test_progress_plain_lines_off_a_terminal_and_a_live_line_on_one(fake_root, tmp_path, capsys):
    import io

    from initlab.progress import Progress

    plain = io.StringIO()  # not a TTY: one line per evaluation with step, steps/s, elapsed, ETA
    run(vision_config(fake_root, tmp_path / "plain", steps=8, eval_every=4),
        progress=Progress(stream=plain, label="[1/2] default s0"))
    lines = plain.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in plain.getvalue()
    for line, step in zip(lines, (4, 8)):
        assert line.startswith(f"[1/2] default s0 step {step}/8 ") and "steps/s" in line
        assert "elapsed 00:" in line and "ETA " in line and "test_acc" in line
    assert lines[-1].split("ETA ")[1].startswith("00:00")  # nothing left at the last step

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    live = Terminal()  # a terminal: a redrawn line (carriage returns) plus the evaluation lines
    run(vision_config(fake_root, tmp_path / "live", steps=8, eval_every=4), progress=Progress(stream=live))
    text = live.getvalue()
    assert "\r" in text and "8/8" in text and "ETA" in text and "steps/s" in text
    assert text.count("test_acc") == 2

    capsys.readouterr()
    run(vision_config(fake_root, tmp_path / "default", steps=8, eval_every=4))  # progress=True, stderr
    err = capsys.readouterr().err.splitlines()  # captured stderr is no terminal: plain lines
    assert len(err) == 2 and " step 4/8 " in err[0] and " step 8/8 " in err[1]
    assert err[0].startswith("vision vit-") and all("ETA" in line for line in err)
    run(vision_config(fake_root, tmp_path / "quiet", steps=8, eval_every=4), progress=False)  # --quiet
    assert capsys.readouterr() == ("", "")
