"""The training engine: ``initlab.train.run(TrainConfig(...)) -> RunResult``.

* :func:`run` -- one training run (vision or language modelling), single process or torchrun DDP,
  with checkpoints, exact resumption, signal handling and a run directory; see docs/training.md.
* :class:`TrainConfig` -- everything a run needs (the contract with the experiment commands).
* :class:`RunResult` -- history, final/best metrics, status, wall time.
* :func:`materialize_` -- meta-device model -> real tensors + initialization (the FSDP2 flow).
"""
from __future__ import annotations

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .engine import RunResult, resolve_device, run
from .meta import materialize_
from .rundir import read_metrics
from .schedule import WarmupCosine

__all__ = ["TrainConfig", "RunResult", "run", "resolve_device", "load_checkpoint",
           "save_checkpoint", "WarmupCosine", "materialize_", "read_metrics"]
