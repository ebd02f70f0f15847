"""Every failure a user can cause or meet: exit 2 and one line naming the problem and the fix
(issue 15, items 4 and 5), plus the exit codes of interrupted and diverged runs.

Each case runs the real command in-process (`initlab.cli.main`) on a tiny synthetic dataset.
"""
from __future__ import annotations

import errno
import gzip
import math
import os
import signal
import struct
import types

import pytest
import torch

import initlab.train as engine
from initlab.cli import main
from initlab.errors import ConfigError, InitError
from initlab.train import read_metrics
from test_train_support import write_fake_fashion

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(root) -> list[str]:
    return ["--data", "fashion-mnist", "--data-root", str(root), "--model", "vit-micro", "--width", "16",
            "--depth", "1", "--heads", "2", "--batch-size", "16", "--device", "cpu", "--quiet"]


def _one_line_exit_2(capsys, argv, *words) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"initlab {argv[0]}: error: "), err
    for w in words:
        assert w in err, err
    return err


def test_out_that_is_a_file_or_lies_under_one(fake_root, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    for cmd in (["train", "--steps", "2"], ["compare", "--inits", "default", "--steps", "2"]):
        _one_line_exit_2(capsys, [*cmd, *_tiny(fake_root), "--out", str(a_file)],
                         f"--out {a_file} is a file, not a directory", "pass a directory path")
        _one_line_exit_2(capsys, [*cmd, *_tiny(fake_root), "--out", str(a_file / "run")],
                         f"lies under {a_file}, which is a file")
    assert a_file.read_text() == "x"


def test_read_only_out(fake_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:
        # root writes through permission bits; make the file system refuse as a read-only one does
        real_open = os.open

        def read_only(path, flags, *args, **kwargs):
            if str(path).startswith(str(out)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
    else:
        out.chmod(0o555)
    try:
        _one_line_exit_2(capsys, ["train", *_tiny(fake_root), "--steps", "2", "--out", str(out)],
                         f"cannot write to --out {out} (permission denied)", "pick a directory you can write to")
    finally:
        out.chmod(0o755)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("flags, words", [
    (["--betas", "1.5,0.9"], "betas must be two numbers in [0, 1), got (1.5, 0.9)"),
    (["--model-option", "bogus=1"], "unknown model option 'bogus' for vit-micro (ViT); valid: image_size"),
    (["--clip", "-1"], "clip must be a positive gradient norm, got -1.0; to turn clipping off use"),
    (["--warmup", "-1"], "warmup must be >= 0"),
])
def test_bad_optimizer_and_model_flags(fake_root, tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    _one_line_exit_2(capsys, ["train", *_tiny(fake_root), "--steps", "2", *flags, "--out", str(out)], words)
    assert not out.exists()  # refused before anything was written


def test_labels_file_with_the_images_magic_number(tmp_path, capsys):
    root = write_fake_fashion(tmp_path / "data", n_train=64, n_test=20)
    labels = root / "train-labels-idx1-ubyte.gz"
    with gzip.open(labels, "rb") as f:
        body = f.read()[8:]
    with gzip.open(labels, "wb") as f:  # the images' magic (0x803: 3 dimensions) on a labels file
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">I", len(body)) + body)
    _one_line_exit_2(capsys, ["train", *_tiny(root), "--steps", "2", "--out", str(tmp_path / "run")],
                     "has the IDX magic number of images (0x00000803) where labels (0x00000801) are expected")


def test_disk_full_while_writing_config_is_one_line(fake_root, tmp_path, capsys, monkeypatch):
    """ENOSPC outside the checkpoint (config.json, metrics.csv...) is one line too, not a traceback
    (the checkpoint case: tests/test_resume.py::test_disk_full_says_so_and_keeps_the_previous_checkpoint)."""
    real_write = os.write

    def full_disk(fd, data):
        if ".config.json." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    _one_line_exit_2(capsys, ["train", *_tiny(fake_root), "--steps", "2", "--out", str(tmp_path / "run")],
                     "no space left on the device")


def _fake_result(config, status, signum=None):
    row = dict(step=3, epoch=0.1, train_loss=1.0, lr=1e-3, test_loss=2.0, test_acc=0.2)
    return types.SimpleNamespace(history=[row], final=row, best=row, wall_time_s=0.1, run_dir=config.out,
                                 status=status, signal=signum, step=3, total_steps=10)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_run_exits_128_plus_the_signal(fake_root, tmp_path, capsys, monkeypatch, signum, code):
    monkeypatch.setattr(engine, "run", lambda config, **kw: _fake_result(config, "interrupted", signum))
    assert main(["train", *_tiny(fake_root), "--steps", "10", "--out", str(tmp_path / "t")]) == code
    err = capsys.readouterr().err
    assert f"interrupted by {signal.Signals(signum).name} at step 3 of 10" in err
    assert f"initlab train --resume {tmp_path / 't'}" in err
    assert main(["compare", *_tiny(fake_root), "--inits", "default,mimetic", "--steps", "10",
                 "--out", str(tmp_path / "c")]) == code
    assert "rerun the same command to continue" in capsys.readouterr().err


def test_a_diverged_run_says_so_and_leaves_a_useful_metrics_csv(fake_root, tmp_path, capsys, monkeypatch):
    from initlab.train import tasks
    real = tasks.Task.loss
    monkeypatch.setattr(tasks.Task, "loss", lambda self, *a: real(self, *a) * float("nan"))
    out = tmp_path / "run"
    assert main(["train", *_tiny(fake_root), "--steps", "20", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "nan%" not in captured.out + captured.err
    # the first sync point is the first evaluation (every 20 // 10 = 2 steps)
    assert captured.out.startswith("diverged: the loss became NaN or inf by step 2 of 20")
    assert "no finite test_acc was measured" in captured.out
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == [2]
    assert set(rows[0]) >= {"step", "epoch", "train_loss", "lr", "test_loss", "test_acc"}
    assert math.isnan(rows[0]["train_loss"]) and rows[0]["lr"] > 0
    # compare's per-run line has no "nan%" either
    loud = [a for a in _tiny(fake_root) if a != "--quiet"]
    assert main(["compare", *loud, "--inits", "default", "--steps", "20", "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "nan%" not in out and "test_acc=— " in out and "[diverged]" in out
    table = out[out.index("init "):]
    assert "nan" not in table and "diverged" in table


def test_library_refuses_wrong_types_and_shapes_with_its_own_errors():
    from initlab import mimetic_
    from initlab.models import create_model
    from initlab.probe import probe

    with pytest.raises(InitError, match="mimetic_\\(\\) initializes a torch.nn.Module in place, got str"):
        mimetic_("not a model")
    vit = create_model("vit-micro", width=16, depth=1, heads=2)
    for bad, words in ((torch.randn(2, 3, 28, 28), "takes float images of shape \\(B, 1, 28, 28\\)"),
                       (torch.randn(2, 1, 32, 32), "got a torch.float32 batch of shape \\(2, 1, 32, 32\\)"),
                       ("images", "batch must be a torch.Tensor, got str")):
        with pytest.raises(ConfigError, match=words):
            probe(vit, bad)
    with pytest.raises(ConfigError, match="targets must be class labels of shape \\(2,\\)"):
        probe(vit, torch.randn(2, 1, 28, 28), torch.zeros(3, dtype=torch.long))
    gpt = create_model("gpt-micro", width=16, depth=1, heads=2, vocab_size=50, block_size=16)
    for bad, words in ((torch.randn(2, 8), "integer token ids"), (torch.randint(0, 90, (2, 8)), "in 0..49"),
                       (torch.randint(0, 50, (2, 40)), "exceeds the model's block_size 16")):
        with pytest.raises(ConfigError, match=words):
            probe(gpt, bad)
    with pytest.raises(ConfigError, match="probe\\(\\) measures a torch.nn.Module"):
        probe("model", torch.zeros(1))


def test_a_reader_that_goes_away_stops_the_cli_quietly():
    """`initlab results --list | head -1`: the closed pipe ends the command with 128 + SIGPIPE and
    no traceback, whether it is met while printing or at the final flush."""
    import subprocess
    import sys
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "initlab", "results", "--profile", "regime", "--list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # gone before the first byte
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 128 + signal.SIGPIPE
    assert "Traceback" not in err and "Exception ignored" not in err, err
