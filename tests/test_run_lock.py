"""One writer per run directory and per --out, with real second processes (issue 15, item 2).

Two `initlab compare` on one --out used to both exit 0 while mixing configs, checkpoints and metrics
rows on disk; two `initlab results` doubled the recorded wall time. Now the second writer exits 2
with one line naming the first, and a lock left by a killed process is taken over.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from initlab.cli import main
from initlab.errors import LockedError
from initlab.train.checkpoint import CHECKPOINT, find_checkpoint
from initlab.train.lock import LOCK_FILE, acquire, hold_directory, is_held, release

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
HOLDER = ("import sys, time\n"
          "from initlab.train.lock import acquire\n"
          "acquire(sys.argv[1], command='initlab compare --out X (the test holder)')\n"
          "print('ready', flush=True)\n"
          "time.sleep(300)\n")


def _tiny(root) -> list[str]:
    return ["--data", "fashion-mnist", "--data-root", str(root), "--model", "vit-micro", "--width", "16",
            "--depth", "1", "--heads", "2", "--batch-size", "16", "--device", "cpu", "--quiet"]


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/out."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield out, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_writer_is_refused_in_one_line_naming_the_holder(holder, fake_root, capsys):
    out, proc = holder
    tiny = _tiny(fake_root)
    no_width = tiny[:6] + tiny[8:]  # sweep takes --widths
    for argv in (["train", *tiny, "--steps", "2"],
                 ["compare", *tiny, "--inits", "default", "--steps", "2"],
                 ["sweep", *no_width, "--widths", "16", "--lrs", "1e-3", "--steps", "2"],
                 ["results", "--profile", "smoke", "--data-root", str(fake_root)]):
        assert main([*argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(f"initlab {argv[0]}: error: ")
        assert f"is in use by process {proc.pid}" in err and "the test holder" in err
        assert "pass another --out" in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # the refused command wrote nothing
    with pytest.raises(LockedError, match=f"process {proc.pid}"):  # the library's own error type
        acquire(out)


def test_two_real_train_processes_and_a_killed_holder(fake_root, tmp_path):
    """A real `initlab train` holds its run directory; a second real one is refused (exit 2, one
    line with the first's pid); after `kill -9` of the first, its stale lock is taken over and the
    run resumes."""
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "initlab", "train", *_tiny(fake_root), "--steps", "100000",
                              "--eval-every", "100000", "--checkpoint-every", "5", "--out", str(out)],
                             cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while find_checkpoint(out) is None:
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "initlab", "train", "--resume", str(out), "--quiet"],
                                cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
        assert first.poll() is None  # still training: the second one really met a live holder
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 2, second.stderr
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    assert f"run directory {out} is in use by process {first.pid}" in second.stderr
    assert "initlab train" in second.stderr  # the holder's command
    # the dead holder's lock file still names it; the next writer takes the directory over
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == first.pid
    step = torch.load(find_checkpoint(out), weights_only=False)["step"]
    assert main(["train", "--resume", str(out), "--steps", str(step + 2), "--quiet"]) == 0
    assert torch.load(out / CHECKPOINT, weights_only=False)["step"] == step + 2
    assert (out / LOCK_FILE).read_text() == ""  # released
    assert not list(out.glob(".*.tmp"))


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    d = tmp_path / "d"
    with hold_directory(d):
        with hold_directory(d):  # compare holds --out, run_cell/engine lock their own dirs again
            assert is_held(d)
        assert is_held(d)
        info = json.loads((d / LOCK_FILE).read_text())
        assert info["pid"] == os.getpid()
    assert not is_held(d)
    acquire(d)
    release(d)
    release(d)  # an extra release is harmless
    assert not is_held(d)
