"""Shared test settings: deterministic, quiet, CPU-only, small thread count (CI has 2 cores)."""
import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(min(2, os.cpu_count() or 1))

FASHION_DIR = "/usr/share/datasets/fashion-mnist"


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def have_fashion_mnist() -> bool:
    return os.path.isdir(FASHION_DIR)
