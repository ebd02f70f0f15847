"""Never lose a run: a resumed run ends bit-for-bit where an uninterrupted one does (on CPU)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from initlab.errors import CheckpointError
from initlab.train import TrainConfig, run
from initlab.train.checkpoint import CHECKPOINT, LAST_GOOD
from test_train_support import lm_config, vision_config

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def _without_time(rows):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def _assert_same_run(a, b):
    assert _without_time(a.history) == _without_time(b.history)  # exact float equality
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _resume_from_midpoint(cfg: TrainConfig, tmp_path: Path):
    """Uninterrupted run with checkpoints at N/2 and N; then a second directory that holds only the
    N/2 checkpoint (what a run killed after N/2 leaves) is resumed to N."""
    full = run(cfg.replace(out=str(tmp_path / "full")), progress=False)
    half_state = torch.load(tmp_path / "full" / LAST_GOOD, weights_only=False)
    assert half_state["step"] == cfg.steps // 2
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    shutil.copy(tmp_path / "full" / LAST_GOOD, resumed_dir / CHECKPOINT)
    resumed = run(cfg.replace(out=str(resumed_dir), resume=True), progress=False)
    return full, resumed


def test_vision_resume_is_bit_exact(fake_root, tmp_path):
    # eval every 5 and checkpoint every 10: the resumed half starts between two evaluations'
    # loss windows only if the accumulator travels with the checkpoint
    cfg = vision_config(fake_root, None, steps=20, eval_every=6, checkpoint_every=10, lr=1e-2,
                        label_smoothing=0.1)
    full, resumed = _resume_from_midpoint(cfg, tmp_path)
    assert full.status == resumed.status == "completed"
    _assert_same_run(full, resumed)
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + len(full.history)  # header + every evaluation, none twice


def test_lm_resume_is_bit_exact(text_file, tmp_path):
    cfg = lm_config(text_file, None, steps=16, eval_every=5, checkpoint_every=8)
    full, resumed = _resume_from_midpoint(cfg, tmp_path)
    _assert_same_run(full, resumed)


def test_resume_after_crash_between_renames_uses_last_good(fake_root, tmp_path):
    out = tmp_path / "run"
    cfg = vision_config(fake_root, out, steps=8, eval_every=4, checkpoint_every=4)
    full = run(cfg, progress=False)
    (out / CHECKPOINT).unlink()  # as if killed after checkpoint.pt became last_good
    resumed = run(cfg.replace(resume=True), progress=False)
    assert resumed.status == "completed"
    assert _without_time(resumed.history) == _without_time(full.history)


def test_extending_a_finished_run(fake_root, tmp_path):
    out = tmp_path / "run"
    cfg = vision_config(fake_root, out, steps=8, eval_every=4)
    run(cfg, progress=False, command="initlab train --steps 8")
    longer = run(cfg.replace(resume=True, steps=12), progress=False,
                 command=["initlab", "train", "--resume", str(out), "--steps", "12"])
    assert [r["step"] for r in longer.history] == [4, 8, 12]
    assert (out / "command.txt").read_text().splitlines() == [
        "initlab train --steps 8", f"initlab train --resume {out} --steps 12"]
    with pytest.raises(CheckpointError, match="at least 12 steps"):
        run(cfg.replace(resume=True, steps=6), progress=False)


def _cli(args, env):
    return subprocess.Popen([sys.executable, "-m", "initlab", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_then_resume_matches_uninterrupted(fake_root, tmp_path):
    """A real process gets SIGTERM after its first checkpoint, saves and exits; `--resume` finishes
    the run with exactly the metrics and weights of an uninterrupted run."""
    out = tmp_path / "killed"
    steps, every = 120, 5
    flags = ["--data", "fashion-mnist", "--data-root", str(fake_root), "--model", "vit-micro",
             "--width", "16", "--depth", "1", "--heads", "2", "--batch-size", "16",
             "--steps", str(steps), "--eval-every", "60", "--checkpoint-every", str(every),
             "--lr", "0.003", "--device", "cpu", "--seed", "3", "--quiet", "--out", str(out)]
    # one thread everywhere: CPU kernels are deterministic for a fixed thread count
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = _cli(flags, env)
    deadline = time.time() + 120
    while not (out / CHECKPOINT).exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    stopped_at = torch.load(out / CHECKPOINT, weights_only=False)["step"]
    assert 0 < stopped_at < steps

    resume = _cli(["--resume", str(out), "--quiet"], env)
    stdout, stderr = resume.communicate(timeout=300)
    assert resume.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == steps

    saved = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    reference = run(saved.replace(out=str(tmp_path / "reference"), resume=False), progress=False)
    final = torch.load(out / CHECKPOINT, weights_only=False)
    assert _without_time(final["history"]) == _without_time(reference.history)
    for k, v in reference.model.state_dict().items():
        assert torch.equal(final["model"][k], v), k
