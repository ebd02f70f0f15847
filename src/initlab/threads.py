"""Thread-count control for small CPU linear algebra.

Measured on the project's 2-core machine under load: a 768x768 SVD took 27 s with 2 OpenMP
threads (barrier spinning while the other thread is descheduled) and 0.4 s with one. Small
decompositions and N×N theory matrices gain nothing from a second thread, so they run on one.
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def single_threaded(device: torch.device | str | None = None):
    """Run the block with one intra-op CPU thread (no-op for accelerator work), then restore."""
    if (device is not None and torch.device(device).type != "cpu") or torch.get_num_threads() == 1:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
