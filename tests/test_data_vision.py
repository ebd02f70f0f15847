"""Vision loaders on small files written in the exact original formats, discovery order, errors,
and (when installed) the real Fashion-MNIST."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from initlab.data import DATASETS, ENV_VAR, load_vision, read_idx
from initlab.data.synthetic import (cifar10_members, cifar100_members, random_images, write_folder,
                                    write_idx, write_idx_dataset, write_tarball)
from initlab.errors import ConfigError, DataError

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def make_idx(directory, n_train=40, n_test=20, seed=0):
    tr = random_images(n_train, 1, 28, 10, seed)
    te = random_images(n_test, 1, 28, 10, seed + 1)
    write_idx_dataset(directory, "train", *tr)
    write_idx_dataset(directory, "test", *te)
    return tr, te


@pytest.fixture
def no_standard_places(tmp_path, monkeypatch):
    """Discovery sees only what a test puts in place: empty HOME and cwd, no INITLAB_DATA, no
    system directories."""
    home = tmp_path / "home"
    work = tmp_path / "cwd"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.delenv(ENV_VAR, raising=False)
    for name, spec in list(DATASETS.items()):
        monkeypatch.setitem(DATASETS, name, spec.__class__(**{**spec.__dict__, "system_dirs": ()}))
    return home, work


def test_idx_header_is_the_documented_one(tmp_path):
    path = write_idx(tmp_path / "x-images-idx3-ubyte.gz", np.zeros((3, 28, 28), np.uint8))
    raw = gzip.decompress(path.read_bytes())
    assert raw[:4] == b"\x00\x00\x08\x03" and raw[4:8] == (3).to_bytes(4, "big")
    assert len(raw) == 16 + 3 * 784
    labels = write_idx(tmp_path / "y-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
    assert gzip.decompress(labels.read_bytes())[:8] == b"\x00\x00\x08\x01\x00\x00\x00\x05"


def test_idx_loader_returns_the_written_pixels_and_labels(tmp_path):
    (tri, trl), (tei, tel) = make_idx(tmp_path)
    train = load_vision("fashion-mnist", root=tmp_path)
    test = load_vision("fashion-mnist", root=tmp_path, split="test")
    assert train.images.dtype == torch.uint8 and train.images.shape == (40, 1, 28, 28)
    assert train.labels.dtype == torch.int64
    assert torch.equal(train.images, torch.from_numpy(tri)) and torch.equal(train.labels, torch.from_numpy(trl))
    assert torch.equal(test.images, torch.from_numpy(tei)) and torch.equal(test.labels, torch.from_numpy(tel))
    assert train.classes[0] == "T-shirt/top" and train.num_classes == 10
    assert (train.name, train.split, len(test)) == ("fashion-mnist", "train", 20)


def test_plain_uncompressed_idx_files_are_read_too(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3], np.uint8))
    data = load_vision("mnist", root=tmp_path)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))


@pytest.mark.parametrize("damage", ["truncate_gzip", "truncate_payload", "bad_magic", "count_mismatch"])
def test_broken_idx_files_raise_dataerror_naming_the_file(tmp_path, damage):
    make_idx(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    if damage == "truncate_gzip":
        images.write_bytes(images.read_bytes()[:-200])
        target = images
    elif damage == "truncate_payload":
        raw = gzip.decompress(images.read_bytes())
        images.write_bytes(gzip.compress(raw[:-100]))
        target = images
    elif damage == "bad_magic":
        raw = gzip.decompress(labels.read_bytes())
        labels.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + raw[4:]))  # float type code
        target = labels
    else:
        write_idx(labels, np.zeros(39, np.uint8))
        target = labels
    with pytest.raises(DataError) as err:
        load_vision("fashion-mnist", root=tmp_path)
    assert str(target) in str(err.value)
    if damage != "count_mismatch":
        assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_missing_label_file_is_named_with_how_to_get_it(tmp_path):
    make_idx(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is missing") as err:
        load_vision("fashion-mnist", root=tmp_path, split="test")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "initlab download fashion-mnist" in str(err.value)


def test_read_idx_rejects_trailing_garbage(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.zeros((2, 3), np.uint8))
    path.write_bytes(path.read_bytes() + b"xx")
    with pytest.raises(DataError, match="trailing"):
        read_idx(path)


# ---------------------------------------------------------------------------------------------
# CIFAR

def cifar10_arrays(n_train=50, n_test=10, seed=0):
    return random_images(n_train, 3, 32, 10, seed), random_images(n_test, 3, 32, 10, seed + 1)


def test_cifar10_directory_loads_planar_rgb(tmp_path):
    (tri, trl), (tei, tel) = cifar10_arrays()
    folder = write_folder(tmp_path / "cifar-10-batches-py", cifar10_members((tri, trl), (tei, tel)))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    train = load_vision("cifar10", root=tmp_path)
    assert train.images.shape == (50, 3, 32, 32) and train.images.dtype == torch.uint8
    assert torch.equal(train.images, torch.from_numpy(tri)) and torch.equal(train.labels, torch.from_numpy(trl))
    assert train.classes[:2] == ["airplane", "automobile"]
    # planar layout: the first 1024 values of a row are the red plane, row-major
    import pickle
    row = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")[b"data"][0]
    assert np.array_equal(train.images[0, 0].numpy().reshape(-1), row[:1024])
    assert np.array_equal(train.images[0, 2, 0].numpy(), row[2048:2048 + 32])
    test = load_vision("cifar10", root=folder, split="test")  # the batches dir itself works too
    assert torch.equal(test.images, torch.from_numpy(tei))


def test_cifar10_tarball_equals_directory(tmp_path):
    members = cifar10_members(*cifar10_arrays(seed=3))
    write_folder(tmp_path / "dir" / "cifar-10-batches-py", members)
    tarball = write_tarball(tmp_path / "tar" / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    for split in ("train", "test"):
        a = load_vision("cifar10", root=tmp_path / "dir", split=split)
        b = load_vision("cifar10", root=tmp_path / "tar", split=split)  # finds the tarball
        c = load_vision("cifar10", root=tarball, split=split)  # the tarball path itself
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, c.labels)
        assert b.source == str(tarball)


def test_cifar100_fine_labels_and_meta(tmp_path):
    train = random_images(200, 3, 32, 100, seed=5)
    test = random_images(100, 3, 32, 100, seed=6)
    names = [f"thing{i}" for i in range(100)]
    write_tarball(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python",
                  cifar100_members(train, test, names))
    data = load_vision("cifar100", root=tmp_path)
    assert data.num_classes == 100 and data.classes[7] == "thing7"
    assert torch.equal(data.labels, torch.from_numpy(train[1]))
    assert torch.equal(data.images, torch.from_numpy(train[0]))


def test_truncated_cifar_pickle_and_missing_batch(tmp_path):
    folder = write_folder(tmp_path / "cifar-10-batches-py", cifar10_members(*cifar10_arrays()))
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="data_batch_3 is truncated") as err:
        load_vision("cifar10", root=tmp_path)
    assert "initlab download cifar10 --root DIR" in str(err.value)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3 is missing"):
        load_vision("cifar10", root=tmp_path)
    # test split does not need the training batches
    assert len(load_vision("cifar10", root=tmp_path, split="test")) == 10


def test_truncated_tarball_is_a_dataerror(tmp_path):
    tarball = write_tarball(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py",
                            cifar10_members(*cifar10_arrays()))
    tarball.write_bytes(tarball.read_bytes()[:2000])
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        load_vision("cifar10", root=tmp_path)


# ---------------------------------------------------------------------------------------------
# discovery

def test_discovery_order_root_then_env_then_standard(tmp_path, no_standard_places, monkeypatch):
    home, work = no_standard_places
    make_idx(home / ".cache" / "initlab" / "mnist", seed=10)
    make_idx(work / "data" / "mnist", seed=20)
    env = tmp_path / "env"
    make_idx(env / "mnist", seed=30)
    explicit = tmp_path / "explicit"
    make_idx(explicit, seed=40)
    assert load_vision("mnist").source == str(home / ".cache" / "initlab" / "mnist")
    import shutil
    shutil.rmtree(home / ".cache")
    assert load_vision("mnist").source == str(work / "data" / "mnist")
    monkeypatch.setenv(ENV_VAR, str(env))
    assert load_vision("mnist").source == str(env / "mnist")
    assert load_vision("mnist", root=explicit).source == str(explicit)
    # an explicit root is authoritative: no fallback to the copies elsewhere
    with pytest.raises(DataError, match="no MNIST files"):
        load_vision("mnist", root=tmp_path / "nowhere")


def test_env_base_dir_is_searched_by_name_only_for_idx(tmp_path, no_standard_places, monkeypatch):
    """MNIST and Fashion-MNIST share file names: files lying directly in $INITLAB_DATA must not be
    mistaken for either."""
    make_idx(tmp_path / "env")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError, match="MNIST not found") as err:
        load_vision("mnist")
    assert str(tmp_path / "env") in str(err.value) and "initlab download mnist" in str(err.value)


def test_cifar_found_in_torchvision_layout_under_data(no_standard_places):
    home, work = no_standard_places
    write_folder(work / "data" / "cifar-10-batches-py", cifar10_members(*cifar10_arrays()))
    assert load_vision("cifar-10").source == str(work / "data" / "cifar-10-batches-py")


def test_nothing_anywhere_says_where_it_looked_and_how_to_get_it(no_standard_places):
    with pytest.raises(DataError) as err:
        load_vision("cifar10")
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and ".cache/initlab" in msg
    assert "initlab download cifar10 --root DIR" in msg


def test_unknown_dataset_and_split():
    with pytest.raises(ConfigError, match="unknown vision dataset"):
        load_vision("imagenet")
    with pytest.raises(ConfigError, match="split"):
        load_vision("mnist", split="val")


def test_subset_and_channel_stats(tmp_path):
    make_idx(tmp_path)
    data = load_vision("mnist", root=tmp_path)
    sub = data.subset([3, 1])
    assert torch.equal(sub.images[0], data.images[3]) and len(sub) == 2
    mean, std = data.channel_stats()
    x = data.images.double() / 255
    assert torch.allclose(mean.double(), x.mean().reshape(1), atol=1e-6)
    assert torch.allclose(std.double(), x.std(unbiased=False).reshape(1), atol=1e-6)


@pytest.mark.skipif(not FMNIST_DIR.is_dir(), reason="Fashion-MNIST not installed "
                    "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    train = load_vision("fashion-mnist", root=FMNIST_DIR)
    test = load_vision("fashion-mnist", root=FMNIST_DIR, split="test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.class_counts().tolist() == [6000] * 10
    assert test.class_counts().tolist() == [1000] * 10
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    mean, std = train.channel_stats()  # the widely quoted 0.2860 / 0.3530
    assert abs(mean.item() - 0.2860) < 5e-4 and abs(std.item() - 0.3530) < 5e-4
