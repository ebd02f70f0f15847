"""``initlab download`` against a loopback HTTP server serving files this test wrote."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading

import numpy as np
import pytest
import torch

from initlab.cli import ArgumentParser
from initlab.cli import download as download_cmd
from initlab.data import load_vision
from initlab.data import download as dl
from initlab.data.synthetic import cifar10_members, random_images, write_idx_dataset, write_tarball
from initlab.errors import ConfigError, DataError


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """(directory served, base URL) on 127.0.0.1, an ephemeral port."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cli(argv) -> int:
    """Dispatch like initlab.cli.main does, with only the download command registered."""
    parser = ArgumentParser(prog="initlab")
    download_cmd.add_parser(parser.add_subparsers(dest="command", parser_class=ArgumentParser))
    args = parser.parse_args(argv)
    return args.run(args)


def test_download_is_registered_as_a_command():
    import initlab.cli
    assert "download" in initlab.cli.COMMANDS


def test_fashion_mnist_download_verifies_md5_and_loads(server, tmp_path, capsys):
    served, url = server
    (tri, trl) = random_images(30, 1, 28, 10, seed=1)
    write_idx_dataset(served, "train", tri, trl)
    write_idx_dataset(served, "test", *random_images(10, 1, 28, 10, seed=2))
    root = tmp_path / "root"
    md5s = [f"--md5={p.name}={md5(p)}" for p in sorted(served.iterdir())]
    assert cli(["download", "fashion-mnist", "--root", str(root), "--url", url, *md5s]) == 0
    out = capsys.readouterr().out
    assert f"--data-root {root}" in out
    data = load_vision("fashion-mnist", root=root)
    assert torch.equal(data.images, torch.from_numpy(tri)) and torch.equal(data.labels, torch.from_numpy(trl))
    assert not [p for p in (root / "fashion-mnist").iterdir() if p.name.startswith(".")]  # no temp files
    # second run: everything present with the right checksum, nothing fetched (server gone too)
    served_files = list(served.iterdir())
    for p in served_files:
        p.unlink()
    assert cli(["download", "fashion-mnist", "--root", str(root), "--url", url, *md5s]) == 0
    assert "already there (MD5 ok)" in capsys.readouterr().err


def test_wrong_md5_saves_nothing(server, tmp_path, monkeypatch):
    served, url = server
    write_idx_dataset(served, "train", *random_images(10, 1, 28, 10))
    write_idx_dataset(served, "test", *random_images(10, 1, 28, 10))
    table = {p.name: md5(p) for p in served.iterdir()}
    table["train-labels-idx1-ubyte.gz"] = "0" * 32
    monkeypatch.setitem(dl.SOURCES, "fashion-mnist", dl.Source((url,), table))  # as if official
    root = tmp_path / "root"
    with pytest.raises(DataError, match="does not match the expected 0{32}"):
        dl.download("fashion-mnist", root, log=lambda m: None)
    leftovers = sorted(p.name for p in (root / "fashion-mnist").iterdir())
    assert "train-labels-idx1-ubyte.gz" not in leftovers and not [n for n in leftovers if n.endswith((".part", ".tmp"))]


def test_cifar10_tarball_is_downloaded_and_extracted(server, tmp_path):
    served, url = server
    train, test = random_images(20, 3, 32, 10, seed=4), random_images(10, 3, 32, 10, seed=5)
    tarball = write_tarball(served / "cifar-10-python.tar.gz", "cifar-10-batches-py",
                            cifar10_members(train, test))
    root = tmp_path / "root"
    assert cli(["download", "cifar10", "--root", str(root), "--url", url,
                "--md5", f"cifar-10-python.tar.gz={md5(tarball)}"]) == 0
    assert (root / "cifar10" / "cifar-10-batches-py" / "data_batch_5").is_file()
    data = load_vision("cifar10", root=root, split="test")
    assert data.source == str(root / "cifar10" / "cifar-10-batches-py")
    assert torch.equal(data.images, torch.from_numpy(test[0]))


def test_unreachable_server_and_missing_file_are_dataerrors(server, tmp_path):
    served, url = server
    with pytest.raises(DataError, match="could not download cifar-10-python.tar.gz.*404"):
        dl.download("cifar10", tmp_path, base_url=url, log=lambda m: None)
    with pytest.raises(DataError, match="Are you online"):
        dl.download("mnist", tmp_path, base_url="http://127.0.0.1:9/", timeout=2, log=lambda m: None)


def test_bad_options():
    with pytest.raises(ConfigError, match="FILE=HEX32"):
        cli(["download", "mnist", "--md5", "nonsense"])
    with pytest.raises(ConfigError, match="not a file of mnist"):
        dl.download("mnist", "/tmp", md5={"other.gz": "0" * 32}, log=lambda m: None)
    with pytest.raises(SystemExit) as exc:
        cli(["download", "imagenet"])
    assert exc.value.code == 2


def test_known_checksums_are_md5_hex():
    for source in dl.SOURCES.values():
        for name, value in source.files.items():
            assert len(value) == 32 and int(value, 16) >= 0, name
