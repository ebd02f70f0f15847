"""Shared test settings: deterministic, quiet, CPU-only, small thread count (CI has 2 cores)."""
import os

import matplotlib
import pytest
import torch

from initlab.threads import single_threaded

matplotlib.use("Agg")
torch.set_num_threads(min(2, os.cpu_count() or 1))

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def have_fashion_mnist() -> bool:
    return os.path.isdir(FASHION_DIR)


@pytest.fixture
def one_thread():
    """Tiny tensor ops run fastest on one thread: with two, OpenMP spin-waits on a busy 2-core box
    made such tests up to 10x slower. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    with single_threaded():
        yield


# Module-scoped synthetic data for the training-engine tests (test_train, test_resume).
@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    from test_train_support import write_fake_fashion
    return write_fake_fashion(tmp_path_factory.mktemp("fake-fashion"))


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    from test_train_support import write_text
    return write_text(tmp_path_factory.mktemp("text") / "corpus.txt")
