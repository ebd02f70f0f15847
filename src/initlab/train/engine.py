"""The training loop: :func:`run` turns a :class:`TrainConfig` into a trained model and a run directory.

One process or many (torchrun), CPU or GPU, the loop is the same:

    for step in range(start, total):
        x, y = stream.batch(step)              # pure function of the step (see batches.py)
        loss = task.loss(model, x, y)          # bf16 autocast optional
        loss.backward(); clip; opt.step(); sched.step()
        running_loss += loss.detach()          # stays on the device: no host sync per step

Host synchronizations happen only at sync points (every ``SYNC_EVERY`` steps, evaluations,
checkpoints): that is where the progress bar is refreshed, a NaN/inf loss is detected, and, with
several processes, a stop signal received by any rank is agreed on.
"""
from __future__ import annotations

import math
import os
import random
import shlex
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, TrainingError
from ..progress import as_progress
from . import checkpoint as ckpt
from . import distributed
from .config import TrainConfig
from ..schemes.plan import InitPlan
from .init import initialize_, plan_for
from .lock import hold_directory
from .rundir import RunDir, new_run_id
from .schedule import WarmupCosine, warmup_steps
from .tasks import Task, build_task

STATUSES = ("completed", "interrupted", "diverged")


@dataclass
class RunResult:
    """What :func:`run` returns (and ``summary.json`` holds).

    ``history``: one row per evaluation (step, epoch, train_loss, lr, elapsed_s and the task's
    metrics: test_loss/test_acc for vision, val_loss (nats/token) and val_bpc for lm).
    ``final``: the last row; ``best``: the row with the best test_acc / lowest val_loss.
    ``status``: "completed", "interrupted" (a signal, named by ``signal``; resume with
    ``resume=True``) or "diverged" (NaN/inf loss; ``error`` holds the :class:`TrainingError`,
    ``raise_for_status()`` raises it; the last history row is the step where it was detected,
    with NaN metrics).
    """

    history: list[dict]
    final: dict
    best: dict
    wall_time_s: float
    run_dir: str | None
    status: str
    step: int = 0
    total_steps: int = 0
    throughput: float | None = None  # items (images or tokens) per second while training
    throughput_unit: str = ""
    n_params: int = 0
    error: TrainingError | None = None
    signal: int | None = None  # the signal that interrupted the run (signal.SIGINT / SIGTERM)
    model: nn.Module | None = field(default=None, repr=False)  # the trained model (unwrapped)
    info: dict = field(default_factory=dict)

    def raise_for_status(self) -> "RunResult":
        if self.error is not None:
            raise self.error
        return self

    def to_dict(self) -> dict:
        return dict(status=self.status, step=self.step, total_steps=self.total_steps,
                    final=self.final, best=self.best, wall_time_s=self.wall_time_s,
                    throughput=self.throughput, throughput_unit=self.throughput_unit,
                    n_params=self.n_params, run_dir=self.run_dir,
                    error=None if self.error is None else str(self.error),
                    signal=None if self.signal is None else signal.Signals(self.signal).name,
                    info=self.info)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError(f"device {name!r} requested but MPS is not available; use --device cpu or auto")
    return device


def total_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    if config.steps is not None:
        n = int(config.steps)
    else:
        n = round((1.0 if config.epochs is None else config.epochs) * steps_per_epoch)
    if n <= 0:
        raise ConfigError(f"the run has {n} steps; give steps >= 1 or more epochs")
    return n


def eval_interval(config: TrainConfig, total: int, steps_per_epoch: int) -> int:
    if config.eval_every is not None:
        if config.eval_every <= 0:
            raise ConfigError(f"eval_every must be positive, got {config.eval_every}")
        return int(config.eval_every)
    if config.task == "vision" and config.steps is None and steps_per_epoch <= total:
        return steps_per_epoch  # once per epoch
    return max(1, total // 10)  # ten evaluations


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy as np
        np.random.seed(seed % 2**32)
    except ImportError:
        pass


@contextmanager
def global_rng_kept():
    """Run the body with the global RNGs (torch CPU and CUDA, ``random``, numpy) restored after it,
    so a library call that seeds them (a training run does) leaves the caller's streams as they were."""
    import numpy as np
    py, npy = random.getstate(), np.random.get_state()
    # the process's own GPU only: under torchrun each rank owns one, and reading the others'
    # states would create a CUDA context on every GPU in every process
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def rng_state() -> dict:
    """Every RNG the run draws from, as tensors and plain Python values only, so a checkpoint
    loads with ``torch.load(..., weights_only=True)`` (see :mod:`initlab.train.checkpoint`)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np
        name, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                          "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    except ImportError:
        pass
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))


def effective_weight_decay(config: TrainConfig, steps_per_epoch: int | None = None) -> float:
    """``config.weight_decay``, or the decay ``config.wd_tau`` implies (1/(lr·τ in steps))."""
    if config.wd_tau is None:
        return config.weight_decay
    from ..parametrization import weight_decay_from_timescale
    return weight_decay_from_timescale(config.wd_tau, lr=config.lr, steps_per_epoch=steps_per_epoch,
                                       tokens_per_step=config.batch_size * config.block_size,
                                       unit=config.wd_tau_unit or "epochs")


def optimizer_config(config: TrainConfig, steps_per_epoch: int | None = None) -> TrainConfig:
    """``config`` with ``--wd-tau`` turned into the weight decay it implies (unchanged without one)."""
    if config.wd_tau is None:
        return config
    return config.replace(weight_decay=effective_weight_decay(config, steps_per_epoch), wd_tau=None)


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device, parametrization):
    from ..parametrization import param_groups
    groups = param_groups(model, parametrization, lr=config.lr, weight_decay=effective_weight_decay(config),
                          optimizer=config.optimizer, eps=config.eps)
    if config.optimizer == "adamw":
        # the fused kernel: one pass over all tensors (on CPU ~5x faster than the foreach path for
        # a 2.7M-parameter ViT; benchmarks/bench_throughput.py)
        kwargs = {"fused": True} if device.type in ("cuda", "cpu") and not config.fsdp else {}
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, **kwargs)
    # SGD with heavy-ball momentum betas[0] (0.9 by default), the paper's SGD runs
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.betas[0])


class _Signals:
    """SIGINT/SIGTERM set a flag the loop checks; a second SIGINT interrupts at once."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


SYNC_EVERY = 10  # steps between host syncs (progress bar, NaN check, agreeing on a stop signal)


def _default_command() -> str | None:
    argv0 = os.path.basename(sys.argv[0]) if sys.argv else ""
    if argv0 in ("initlab", "torchrun") or sys.argv[0].endswith(os.path.join("initlab", "__main__.py")):
        return shlex.join(sys.argv)
    return None


def run(config: TrainConfig, *, plan: InitPlan | None = None, progress: bool = True,
        command: str | list[str] | None = None) -> RunResult:
    """Train one model as ``config`` says; see docs/training.md.

    Args:
        config: the run (``config.out`` is the run directory; None keeps nothing on disk).
        plan: the run's :class:`~initlab.schemes.InitPlan`, built once from ``config`` when it was
            checked (:func:`initlab.train.init.init_plan`); built here when omitted. Its one
            parametrization draws the weights and sets the optimizer groups.
        progress: True for a live line on a terminal and plain lines per evaluation otherwise,
            False for neither, or a :class:`~initlab.progress.Progress` (rank 0 only).
        command: the command line to record in ``command.txt`` (str or argv list); by default
            the process's own argv when it was started as ``initlab``/``python -m initlab``.

    While it runs, the process holds the run directory's lock (:mod:`initlab.train.lock`): another
    process asking for the same ``out`` gets a :class:`~initlab.errors.LockedError` naming this one.

    Returns a :class:`RunResult`. Errors a user can fix raise :class:`~initlab.errors.InitlabError`
    subclasses (``ConfigError``, ``CheckpointError``, ``DataError``, ``LockedError``; a full disk
    while checkpointing is a ``CheckpointError`` that keeps the previous checkpoint); a NaN/inf loss returns
    ``status="diverged"`` with ``result.error`` set (``result.raise_for_status()`` raises it).

    The global random state (torch, CUDA, ``random``, numpy) is the same after the call as before:
    the run seeds it for itself and restores it on the way out.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"run() takes a TrainConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    dist_info = distributed.setup(device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    if command is None:
        command = _default_command()
    elif not isinstance(command, str):
        command = shlex.join(command)
    try:
        # one writer per run directory: a second process gets a LockedError naming this one
        with hold_directory(config.out, flag="out", what="run directory", command=command,
                            enabled=bool(config.out) and dist_info.is_main), global_rng_kept():
            return _Trainer(config, device, dist_info, progress, command, plan).run()
    finally:
        distributed.teardown(dist_info)


class _Trainer:
    def __init__(self, config: TrainConfig, device, dist_info, progress: bool, command: str | None,
                 plan: InitPlan | None = None):
        self.config, self.device, self.dist, self.command = config, device, dist_info, command
        self.plan = plan_for(config, plan)  # a plan of another config: one line, before any work
        self.progress = as_progress(progress) if dist_info.is_main else None
        self.run_dir = RunDir(config.out, main=dist_info.is_main) if config.out else None

    # -- setup ------------------------------------------------------------------------------
    def _resume_state(self) -> dict | None:
        self.run_id = None
        if self.run_dir is None:
            if self.config.resume:
                raise ConfigError("resume=True needs a run directory (out) to resume from")
            return None
        dir_id = self.run_dir.run_id()
        self.run_id = dir_id or new_run_id()
        path = ckpt.find_checkpoint(self.run_dir.path)
        if path is None:
            return None  # resume of a run that never checkpointed: start it (nothing to lose)
        if not self.config.resume:
            raise ConfigError(f"run directory {self.run_dir.path} already holds a checkpoint; pass "
                              f"resume=True (--resume) to continue that run, or choose another out")
        state = ckpt.load_checkpoint(path)
        diffs = ckpt.config_differences(state["config"], self.config.to_dict())
        if diffs:
            raise CheckpointError(f"cannot resume {path}: the config differs from the checkpoint's "
                                  f"in what the run computes ({'; '.join(diffs)}); use the original "
                                  f"settings, or a new out directory for a new run")
        ck_id = state.get("run_id")
        if dir_id is not None and ck_id is not None and ck_id != dir_id:
            origin = (state.get("config") or {}).get("out")
            raise CheckpointError(f"cannot resume {path}: it belongs to run {ck_id}"
                                  + (f" (started in {origin})" if origin else "")
                                  + f", not to run {dir_id} of {self.run_dir.path} (its run.json); "
                                  f"put the checkpoint back into its own run directory and resume "
                                  f"that, or restore this directory's own checkpoint")
        self.run_id = ck_id or self.run_id
        return state

    def _setup(self):
        cfg = self.config
        state = self._resume_state()
        seed_everything(cfg.seed)
        self.task: Task = build_task(cfg, self.device, self.dist)
        model = self.task.model
        self.parametrization = initialize_(model, cfg, self.plan)
        model.to(self.device)
        self.checksum = distributed.check_same_init(model, self.dist, self.device)
        self.total = total_steps(cfg, self.task.steps_per_epoch)
        self.eval_every = eval_interval(cfg, self.total, self.task.steps_per_epoch)
        if cfg.fsdp:
            if state is not None:
                raise ConfigError("resuming an --fsdp run is not supported yet; start a new run")
            distributed.fully_shard_model(model, self.dist, self.device)
        self.opt = build_optimizer(model, optimizer_config(cfg, self.task.steps_per_epoch), self.device,
                                   self.parametrization)
        self.schedule = WarmupCosine(self.total, warmup_steps(cfg.warmup, self.total), cfg.min_lr_ratio)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, self.schedule)
        self.step = 0
        self.history: list[dict] = []
        self.elapsed_before = 0.0
        self.train_time_before, self.items_before = 0.0, 0
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_count = 0
        if state is not None:
            self._restore(state)
        self.model = model
        self.n_params = sum(p.numel() for p in model.parameters())
        net = model
        if self.dist.enabled and not cfg.fsdp:
            from torch.nn.parallel import DistributedDataParallel as DDP
            net = DDP(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            net = torch.compile(net)
        self.net = net
        if self.run_dir is not None:
            self.run_dir.write_run_id(self.run_id)
            self.run_dir.start(cfg, self.command, self.history, resumed=state is not None)

    def _restore(self, state: dict) -> None:
        try:
            self.task.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            # LambdaLR.load_state_dict would copy the saved schedule's attributes (its old
            # total_steps) into our WarmupCosine object: an extended run then trained at lr 0.
            # The schedule comes from the config alone; only the step counter is restored.
            sched_state = {**state["scheduler"], "lr_lambdas": [None] * len(self.sched.lr_lambdas)}
            self.sched.load_state_dict(sched_state)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not fit the model/optimizer this config builds "
                                  f"({exc}); was it written by another initlab version?") from exc
        self.step = int(state["step"])
        self.history = list(state.get("history", []))
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        self.train_time_before = float(state.get("train_time_s", 0.0))
        self.items_before = int(state.get("items", 0))
        acc = state.get("accumulator", {})
        self.loss_sum = torch.as_tensor(acc.get("loss_sum", 0.0), dtype=torch.float32).to(self.device)
        self.loss_count = int(acc.get("loss_count", 0))
        if "rng" in state:
            set_rng_state(state["rng"])
        if self.step > self.total:
            raise CheckpointError(f"checkpoint is at step {self.step} but the run now has {self.total} "
                                  f"steps; give at least {self.step} steps to resume it")
        # a run extended (or shortened) on resume follows the schedule of its new length from the
        # resumed step on: lr(step) = base lr * WarmupCosine(new total)(step)
        self.schedule = WarmupCosine(self.total, warmup_steps(self.config.warmup, self.total),
                                     self.config.min_lr_ratio)
        self.sched.lr_lambdas = [self.schedule] * len(self.opt.param_groups)
        for group, base in zip(self.opt.param_groups, self.sched.base_lrs):
            group["lr"] = base * self.schedule(self.step)

    # -- checkpoints -------------------------------------------------------------------------
    def _state(self, model_state: dict | None = None, opt_state: dict | None = None) -> dict:
        """The checkpoint; ``model_state``/``opt_state``: full (gathered) states under FSDP2."""
        return dict(step=self.step, run_id=self.run_id,
                    model=model_state if model_state is not None else self.task.model.state_dict(),
                    optimizer=opt_state if opt_state is not None else self.opt.state_dict(),
                    scheduler=self.sched.state_dict(),
                    rng=rng_state(), config=self.config.to_dict(), history=self.history,
                    accumulator=dict(loss_sum=self.loss_sum.detach().cpu(), loss_count=self.loss_count),
                    data=dict(position=self.step, seed=self.config.seed,
                              scheme="counter-based: every batch is a function of (seed, step)"),
                    elapsed_s=self._elapsed(), train_time_s=self._train_time(), items=self._items(),
                    model_config=getattr(self.task.model, "config", None), task=self.task.info,
                    world_size=self.dist.world_size)

    def _finite_state(self) -> bool:
        # a checkpoint must never hold NaN/inf weights: check the loss so far and the weights
        ok = bool(torch.isfinite(self.loss_sum))
        if ok:
            ok = all(bool(torch.isfinite(p).all()) for p in self.task.model.parameters())
        return ok

    def _save(self) -> None:
        # FSDP2: every rank gathers the full weights (a collective) before rank 0 writes them
        model_state = opt_state = None
        if self.config.fsdp:
            model_state = distributed.full_state_dict(self.task.model)
            opt_state = distributed.gather_tree(self.opt.state_dict())
        if self.run_dir is None or not self.dist.is_main:
            return
        ckpt.save_checkpoint(self._state(model_state, opt_state), self.run_dir.path)

    # -- bookkeeping ---------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return self.elapsed_before + (time.perf_counter() - self.t_start)

    def _train_time(self) -> float:
        return self.train_time_before + self.train_time

    def _items(self) -> int:
        return self.items_before + self.items

    def _lr(self) -> float:
        """The scheduled base lr of the next step (per-group parametrization factors not applied)."""
        return self.config.lr * self.schedule(self.step)

    def _sync(self, signalled: bool) -> tuple[bool, float]:
        """(stop?, mean training loss since the last evaluation), agreed on by all ranks.

        With several processes the per-rank loss sums are replaced by their average, so every
        rank (and rank 0's checkpoint) holds the loss of the global batch."""
        if self.dist.enabled:
            buf = torch.stack([self.loss_sum.detach().float(),
                               torch.tensor(1.0 if signalled else 0.0, device=self.device)])
            distributed.all_reduce_(buf, self.dist)
            self.loss_sum.copy_(buf[0] / self.dist.world_size)
            stop = bool(buf[1] > 0)
        else:
            stop = signalled
        return stop, float(self.loss_sum) / max(1, self.loss_count)

    def _evaluate(self, train_loss: float) -> dict:
        self.net.eval()
        metrics = self.task.evaluate(self.net)
        self.net.train()
        row = dict(step=self.step, epoch=self.step / self.task.steps_per_epoch, train_loss=train_loss,
                   lr=self._lr(), **metrics, elapsed_s=self._elapsed())
        self.loss_sum.zero_()
        self.loss_count = 0
        self.history.append(row)
        if self.run_dir is not None:
            self.run_dir.append_metrics(row)
        return row

    def _result(self, status: str, error: TrainingError | None = None,
                signum: int | None = None) -> RunResult:
        final = self.history[-1] if self.history else {}
        best = None
        for row in self.history:
            if math.isfinite(row.get(self.task.primary, math.nan)) and self.task.better(row, best):
                best = row
        tt = self._train_time()
        result = RunResult(history=list(self.history), final=dict(final), best=dict(best or {}),
                           wall_time_s=self._elapsed(), run_dir=None if self.run_dir is None else str(self.run_dir.path),
                           status=status, step=self.step, total_steps=self.total, signal=signum,
                           throughput=self._items() / tt if tt > 0 else None,
                           throughput_unit=f"{self.task.unit}/s", n_params=self.n_params, error=error,
                           model=self.task.model,
                           info=dict(task=self.task.info, device=str(self.device),
                                     world_size=self.dist.world_size, init_checksum=self.checksum,
                                     parametrization=str(getattr(self.parametrization, "name", self.parametrization))))
        if self.run_dir is not None:
            self.run_dir.write_summary(result)
        return result

    @contextmanager
    def _line(self):
        """The run's progress line (:mod:`initlab.progress`), or None when quiet or not rank 0."""
        if self.progress is None:
            yield None
            return
        progress = self.progress if self.progress.label else self.progress.labelled(
            f"{self.config.task} {self.config.model}")
        with progress.steps(self.total, self.step) as line:
            yield line

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        self.t_start = time.perf_counter()
        self.train_time, self.items = 0.0, 0
        self._setup()
        cfg, task, dev = self.config, self.task, self.device
        amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16")
        params = [p for p in self.task.model.parameters() if p.requires_grad]
        ckpt_every = cfg.checkpoint_every or 0
        self.net.train()
        last_good_step = self.step if self.step > 0 else None
        with _Signals() as signals, self._line() as bar:
            t0 = time.perf_counter()
            steps_since_sync = 0
            while self.step < self.total:
                x, y = task.stream.batch(self.step)
                with amp:
                    loss = task.loss(self.net, x, y, cfg.label_smoothing)
                loss.backward()
                if cfg.clip is not None and cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                self.opt.step()
                self.sched.step()
                self.opt.zero_grad(set_to_none=True)
                self.loss_sum += loss.detach().float()
                self.loss_count += 1
                self.step += 1
                steps_since_sync += 1
                self.items += task.items_per_step

                do_eval = self.step % self.eval_every == 0 or self.step == self.total
                do_ckpt = ckpt_every > 0 and self.step % ckpt_every == 0
                sync = (do_eval or do_ckpt or self.step % SYNC_EVERY == 0 or self.step == self.total
                        or (signals.received is not None and not self.dist.enabled))
                if not sync:
                    continue
                # ---- sync point: host reads device values here and only here ----
                stop, running = self._sync(signals.received is not None)
                now = time.perf_counter()
                self.train_time += now - t0
                if not math.isfinite(running):
                    return self._diverged(last_good_step, running)
                if bar is not None:
                    rate = task.items_per_step * steps_since_sync / max(now - t0, 1e-9)
                    bar.update(self.step, f"loss {running:.4f} lr {self._lr():.2e} "
                                          f"{rate:,.0f} {task.unit}/s")
                if do_eval:
                    row = self._evaluate(running)
                    if bar is not None:
                        bar.report(self._describe(row))
                if do_ckpt or self.step == self.total:
                    if not self._finite_state():
                        return self._diverged(last_good_step, running)
                    self._save()
                    last_good_step = self.step
                steps_since_sync = 0
                if stop and self.step < self.total:
                    if self._finite_state():
                        self._save()
                    return self._result("interrupted", signum=signals.received or signal.SIGTERM)
                t0 = time.perf_counter()
        return self._result("completed")

    def _describe(self, row: dict) -> str:
        metrics = " ".join(f"{k} {v:.4f}" for k, v in row.items()
                           if k not in ("step", "epoch", "lr", "elapsed_s"))
        return f"epoch {row['epoch']:.2f} {metrics}"

    def _diverged(self, last_good_step: int | None, train_loss: float) -> RunResult:
        # the step where it was detected becomes the last row (NaN metrics: nothing to evaluate),
        # so metrics.csv and the history say where the run went, not only where it still was fine
        if not self.history or self.history[-1]["step"] != self.step:
            row = dict(step=self.step, epoch=self.step / self.task.steps_per_epoch,
                       train_loss=train_loss, lr=self._lr(),
                       **{k: math.nan for k in self.task.metric_keys}, elapsed_s=self._elapsed())
            self.history.append(row)
            if self.run_dir is not None:
                self.run_dir.append_metrics(row)
        where = (f"the last good checkpoint (step {last_good_step}) is kept in {self.run_dir.path}"
                 if self.run_dir is not None and last_good_step is not None else "no checkpoint was written")
        error = TrainingError(
            f"loss became NaN or inf by step {self.step} of {self.total} (lr {self._lr():.3g}, "
            f"init {self.config.init!r}, param {self.config.param!r}); {where}. Lower lr, raise "
            f"warmup, set clip, or try amp='none'")
        if self.dist.is_main:
            print(f"initlab train: {error}", file=sys.stderr)
        return self._result("diverged", error)
