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


class Tasks:
    """Independent tasks run on worker threads, each task single-threaded; their results are
    delivered to the submitting thread in submission order (see :func:`worker_pool`).

    ``submit(fn, *args, then=cb)`` queues ``fn(*args)``; ``cb(result)`` runs later on the caller's
    thread, after every earlier callback. ``after(cb)`` queues a callback with no task.
    ``drain()`` delivers everything. Without an executor (one thread) or with ``inline=True``
    (work on an accelerator) a task runs at once on the caller's thread, in the same order, with
    the same result.

    Memory: ``reserve(cost)`` (called before making a task's inputs, e.g. drawing them) waits until
    the unfinished tasks' costs plus ``cost`` fit ``max_cost`` and fewer than ``max_pending`` tasks
    are unfinished, or until fewer than ``min_parallel`` are: so at most a few tasks' inputs exist at
    once, and at least ``min_parallel`` tasks can run side by side however large they are.

    Results do not depend on timing: a task is a function of its arguments (draw any random numbers
    it needs on the caller's thread, in order, before submitting), every CPU task runs with one
    intra-op thread, and callbacks run in submission order.
    """

    def __init__(self, executor=None, *, max_pending: int = 1, max_cost: float = float("inf"),
                 min_parallel: int = 1):
        self._executor = executor
        self._max_pending = max(1, max_pending)
        self._max_cost = max_cost
        self._min_parallel = max(1, min_parallel)
        self._queue: list = []  # (future or None, result, callback), in submission order
        self._running: dict = {}  # unfinished futures -> cost
        self._reserved = None

    def reserve(self, cost: float = 0.0) -> None:
        """Wait until a task of ``cost`` may be made (see the class docstring)."""
        if self._executor is None:
            return
        from concurrent.futures import FIRST_COMPLETED, wait

        def fits() -> bool:
            n = len(self._running)
            if n < self._min_parallel:
                return True
            return n < self._max_pending and sum(self._running.values()) + cost <= self._max_cost
        while not fits():
            done, _ = wait(list(self._running), return_when=FIRST_COMPLETED)
            for fut in done:
                self._running.pop(fut, None)
        self._reserved = cost
        self._deliver_done()

    def submit(self, fn, *args, then=None, inline: bool = False) -> None:
        """Queue ``fn(*args)`` (after :meth:`reserve`, or with cost 0); ``inline=True`` runs it
        now on this thread (e.g. accelerator work, queued there already)."""
        if self._executor is None or inline:
            self._reserved = None
            self._queue.append((None, fn(*args), then))
            self._deliver_done()
            return
        if self._reserved is None:
            self.reserve(0.0)
        fut = self._executor.submit(fn, *args)
        self._running[fut] = self._reserved
        self._reserved = None
        self._queue.append((fut, None, then))
        self._deliver_done()

    def after(self, then) -> None:
        """Run ``then()`` on this thread once every earlier result has been delivered."""
        self._queue.append((None, None, lambda _: then()))
        self._deliver_done()

    def drain(self) -> None:
        while self._queue:
            self._deliver_one()

    def _deliver_one(self) -> None:
        fut, result, then = self._queue.pop(0)
        if fut is not None:
            self._running.pop(fut, None)
            result = fut.result()  # re-raises a task's exception here
        if then is not None:
            then(result)

    def _deliver_done(self) -> None:
        while self._queue and (self._queue[0][0] is None or self._queue[0][0].done()):
            self._deliver_one()


@contextlib.contextmanager
def worker_pool(workers: int | None = None, *, max_pending: int | None = None,
                max_cost: float = float("inf")):
    """A :class:`Tasks` pool of ``workers`` threads (default: torch's intra-op thread count).

    For the duration, torch runs one intra-op thread (restored after): tasks get the cores as
    whole tasks, with no barrier waits between threads (the cost measured above on a shared
    machine), and every CPU kernel runs single-threaded, so results are bitwise the same for any
    number of workers. One worker (or ``torch.get_num_threads() == 1``): tasks run inline.
    ``max_pending`` (default: workers + 1) and ``max_cost`` bound the unfinished tasks, and so
    the memory their inputs hold; ``workers`` tasks may always run side by side.
    """
    n = torch.get_num_threads() if workers is None else workers
    if n <= 1:
        tasks = Tasks()
        with single_threaded():
            yield tasks
            tasks.drain()
        return
    from concurrent.futures import ThreadPoolExecutor
    with single_threaded():
        # each worker sets its own OpenMP thread count (a new thread starts from the default)
        executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="initlab-worker",
                                      initializer=torch.set_num_threads, initargs=(1,))
        tasks = Tasks(executor, max_pending=max_pending if max_pending is not None else n + 1,
                      max_cost=max_cost, min_parallel=n)
        try:
            yield tasks
            tasks.drain()
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
