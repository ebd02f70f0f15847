"""Never lose a run: a resumed run ends bit-for-bit where an uninterrupted one does (on CPU)."""
from __future__ import annotations

import errno
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
from initlab.train import TrainConfig, WarmupCosine, run
from initlab.train.checkpoint import CHECKPOINT, LAST_GOOD
from initlab.train.schedule import warmup_steps
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
    half_state = torch.load(tmp_path / "full" / LAST_GOOD, weights_only=True)
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


def _train_from(state: dict, cfg: TrainConfig, first: int, last: int):
    """Reference for the documented semantics of an extension: the checkpoint's model and optimizer,
    then steps first..last-1, each at base lr x WarmupCosine(cfg's length)(step), written out by
    hand (no LambdaLR, no engine loop)."""
    from initlab.train.distributed import DistInfo
    from initlab.train.engine import build_optimizer
    from initlab.train.init import initialize_
    from initlab.train.tasks import build_task

    torch.manual_seed(cfg.seed)
    task = build_task(cfg, torch.device("cpu"), DistInfo())
    parametrization = initialize_(task.model, cfg)
    task.model.load_state_dict(state["model"])
    opt = build_optimizer(task.model, cfg, torch.device("cpu"), parametrization)
    opt.load_state_dict(state["optimizer"])
    schedule = WarmupCosine(cfg.steps, warmup_steps(cfg.warmup, cfg.steps), cfg.min_lr_ratio)
    params = [p for p in task.model.parameters() if p.requires_grad]
    lrs = []
    for step in range(first, last):
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * schedule(step)
        lrs.append(cfg.lr * schedule(step))
        x, y = task.stream.batch(step)
        loss = task.loss(task.model, x, y, cfg.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return task.model.state_dict(), lrs


@pytest.mark.parametrize("how", ["finished", "interrupted"])
def test_an_extended_run_really_trains_on_the_schedule_of_its_new_length(fake_root, tmp_path, how):
    """Issue 15: `--resume --steps 2N` used to finish at lr 0 with frozen weights (LambdaLR's
    load_state_dict wrote the old total_steps into the shared schedule object)."""
    out = tmp_path / "run"
    cfg = vision_config(fake_root, out, steps=8, eval_every=4, checkpoint_every=4, lr=1e-2)
    if how == "finished":
        run(cfg, progress=False)
    else:  # a 12-step run stopped at its step-8 checkpoint, then extended to 16
        run(cfg.replace(steps=12), progress=False)
        (out / CHECKPOINT).unlink()
        shutil.copy(out / LAST_GOOD, out / CHECKPOINT)
        assert torch.load(out / CHECKPOINT, weights_only=True)["step"] == 8
    before = torch.load(out / CHECKPOINT, weights_only=True)
    longer = run(cfg.replace(resume=True, steps=16), progress=False)
    assert longer.status == "completed" and [r["step"] for r in longer.history][-2:] == [12, 16]
    after = torch.load(out / CHECKPOINT, weights_only=True)
    assert after["step"] == 16
    assert after["scheduler"]["lr_lambdas"][0]["total_steps"] == 16
    # the extension trained: positive lr at every step 8..15, and every trained weight moved
    expected, lrs = _train_from(before, cfg.replace(steps=16, out=None), 8, 16)
    assert min(lrs) > 0
    row12 = next(r for r in longer.history if r["step"] == 12)
    assert row12["lr"] == pytest.approx(lrs[12 - 8])  # the scheduled lr of step 12, new length
    assert row12["lr"] > 1e-3
    trained = [n for n, p in longer.model.named_parameters() if p.requires_grad]
    moved = [n for n in trained if not torch.equal(before["model"][n], after["model"][n])]
    assert moved == trained
    # ... and it is exactly the documented semantics: from the resumed step on, the schedule of
    # the new length (same weights, bit for bit, as the hand-written loop)
    for k, v in expected.items():
        assert torch.equal(after["model"][k], v), k


def test_a_checkpoint_of_another_run_is_refused(fake_root, tmp_path):
    """A shorter run's checkpoint dropped into another run's directory is not continued as if it
    were that run's (it used to "complete" at lr 0)."""
    short, other = tmp_path / "short", tmp_path / "other"
    run(vision_config(fake_root, short, steps=4, eval_every=4), progress=False)
    cfg = vision_config(fake_root, other, steps=8, eval_every=4, checkpoint_every=4)
    run(cfg, progress=False)
    mine = (other / CHECKPOINT).read_bytes()
    shutil.copy(short / CHECKPOINT, other / CHECKPOINT)
    with pytest.raises(CheckpointError, match="belongs to run .* not to run .* put the checkpoint back"):
        run(cfg.replace(resume=True, steps=8), progress=False)
    (other / CHECKPOINT).write_bytes(mine)  # its own checkpoint resumes
    assert run(cfg.replace(resume=True), progress=False).status == "completed"
    # a whole run directory copied elsewhere is the same run: it resumes there
    shutil.copytree(other, tmp_path / "copy")
    assert run(cfg.replace(out=str(tmp_path / "copy"), resume=True, steps=12),
               progress=False).status == "completed"


def test_orphan_temp_files_are_removed_and_files_follow_the_umask(fake_root, tmp_path):
    out = tmp_path / "run"
    cfg = vision_config(fake_root, out, steps=4, eval_every=4)
    old = os.umask(0o027)
    try:
        run(cfg, progress=False, command="initlab train")
        # what a writer killed mid-write leaves behind
        orphans = [out / ".checkpoint.pt.1a2b3c.tmp", out / ".config.json.4d5e6f.tmp"]
        for p in orphans:
            p.write_bytes(b"partial")
        run(cfg.replace(resume=True, steps=8), progress=False, command="initlab train --resume")
    finally:
        os.umask(old)
    assert not any(p.exists() for p in orphans)
    assert not list(out.glob(".*.tmp"))
    for name in ("config.json", "command.txt", "metrics.csv", "summary.json", "run.json",
                 CHECKPOINT, LAST_GOOD):
        assert (out / name).stat().st_mode & 0o777 == 0o640, name  # 0666 & ~umask, not mkstemp's 0600


def test_disk_full_says_so_and_keeps_the_previous_checkpoint(fake_root, tmp_path, monkeypatch, capsys):
    """ENOSPC while the step-8 checkpoint is written (simulated: os.write into the checkpoint's
    temporary file fails as on a full disk): one line, exit 2, the step-4 checkpoint intact."""
    from initlab.cli import main

    out = tmp_path / "run"
    real_write = os.write

    def full_disk(fd, data):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(target).startswith(".checkpoint.pt.") and (out / CHECKPOINT).exists():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    code = main(["train", "--data-root", str(fake_root), "--model", "vit-micro", "--width", "16",
                 "--depth", "1", "--heads", "2", "--batch-size", "32", "--steps", "8",
                 "--eval-every", "4", "--checkpoint-every", "4", "--device", "cpu", "--quiet",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "cannot write the checkpoint: no space left" in err and "(step 4) is kept" in err
    assert torch.load(out / CHECKPOINT, weights_only=True)["step"] == 4
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    # once there is space again the run resumes from step 4 and completes
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert torch.load(out / CHECKPOINT, weights_only=True)["step"] == 8


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
    # 143 = 128 + SIGTERM, what a scheduler expects of a job stopped by SIGTERM: not "completed"
    assert proc.returncode == 143, stderr
    assert stderr.startswith("interrupted by SIGTERM at step ") and "--resume" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    stopped_at = torch.load(out / CHECKPOINT, weights_only=True)["step"]
    assert 0 < stopped_at < steps

    resume = _cli(["--resume", str(out), "--quiet"], env)
    stdout, stderr = resume.communicate(timeout=300)
    assert resume.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == steps

    saved = TrainConfig.from_dict(json.loads((out / "config.json").read_text()))
    reference = run(saved.replace(out=str(tmp_path / "reference"), resume=False), progress=False)
    final = torch.load(out / CHECKPOINT, weights_only=True)
    assert _without_time(final["history"]) == _without_time(reference.history)
    for k, v in reference.model.state_dict().items():
        assert torch.equal(final["model"][k], v), k


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    """Every RNG the engine restores (torch, Python, numpy) comes back from a weights_only load."""
    import random

    import numpy as np

    from initlab.train.engine import rng_state, set_rng_state
    saved = rng_state()
    torch.save(saved, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random(), np.random.rand(3), np.random.randn())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), random.random(), np.random.rand(3), np.random.randn())
    assert torch.equal(expected[0], again[0]) and expected[1] == again[1]
    assert np.array_equal(expected[2], again[2]) and expected[3] == again[3]


def _as_format_1(path: Path) -> None:
    """Rewrite a checkpoint the way initlab wrote format 1: numpy's RNG state pickled as a tuple."""
    import numpy as np
    state = torch.load(path, weights_only=True)
    s = state["rng"]["numpy"]
    state["rng"]["numpy"] = (s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"])
    torch.save({**state, "format_version": 1}, path)


def test_an_old_checkpoint_is_refused_until_upgraded_then_resumes_bit_exact(text_file, tmp_path, capsys):
    from initlab.train.upgrade import main as upgrade
    cfg = lm_config(text_file, None, steps=8, eval_every=4, checkpoint_every=4)
    full = run(cfg.replace(out=str(tmp_path / "full")), progress=False)
    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(tmp_path / "full" / LAST_GOOD, old / CHECKPOINT)
    _as_format_1(old / CHECKPOINT)
    with pytest.raises(CheckpointError, match=r"could run code .* python -m initlab.train.upgrade"):
        run(cfg.replace(out=str(old), resume=True), progress=False)
    assert upgrade([str(old)]) == 0 and "upgraded" in capsys.readouterr().out
    assert torch.load(old / CHECKPOINT, weights_only=True)["format_version"] == 2
    assert upgrade([str(old)]) == 0 and "nothing to upgrade" in capsys.readouterr().out
    _assert_same_run(full, run(cfg.replace(out=str(old), resume=True), progress=False))
    assert upgrade([str(tmp_path / "nowhere")]) == 2
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    assert upgrade([str(tmp_path / "garbage.pt")]) == 2
    assert "corrupt" in capsys.readouterr().err
