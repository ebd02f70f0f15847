"""initlab.threads: the worker pool behind mimetic_'s factorizations delivers results in
submission order whatever finishes first, bounds the tasks in flight, re-raises task errors,
and restores torch's thread count."""
import threading

import pytest
import torch

from initlab.threads import single_threaded, worker_pool


def test_results_arrive_in_submission_order_when_a_later_task_finishes_first():
    first_may_finish = threading.Event()
    order = []

    def slow(x):
        assert first_may_finish.wait(10)
        return x * 10

    def fast(x):
        first_may_finish.set()  # the first task can only finish after this one ran
        return x * 10
    with worker_pool(2) as tasks:
        tasks.submit(slow, 1, then=order.append)
        tasks.submit(fast, 2, then=order.append)
        tasks.after(lambda: order.append("done"))
    assert order == [10, 20, "done"]


def test_inputs_in_flight_stay_within_the_budget_and_every_worker_gets_one():
    lock, made, peak = threading.Lock(), [0], [0]

    def task(_):
        total = float(torch.ones(1000, 1000).sum())  # some work, GIL released
        with lock:
            made[0] -= 1  # this task's input is consumed
        return total

    def run(workers, cost, **budget):
        results = []
        peak[0] = 0
        with worker_pool(workers, **budget) as tasks:
            for i in range(10):
                tasks.reserve(cost)
                with lock:  # the input is made after reserve(), e.g. drawn
                    made[0] += 1
                    peak[0] = max(peak[0], made[0])
                tasks.submit(task, i, then=results.append)
        assert results == [1e6] * 10 and made[0] == 0
        return peak[0]
    assert run(2, 5, max_pending=10, max_cost=25) <= 5       # the budget: 25 / 5
    assert run(2, 5, max_pending=3, max_cost=25) <= 3        # the count
    assert run(2, 10, max_pending=10, max_cost=5) <= 2       # too large: still one per worker


def test_a_task_error_is_raised_on_the_callers_thread_and_threads_are_restored():
    before = torch.get_num_threads()

    def bad():
        raise ValueError("broken task")
    with pytest.raises(ValueError, match="broken task"):
        with worker_pool(2) as tasks:
            assert torch.get_num_threads() == 1  # kernels run single-threaded meanwhile
            tasks.submit(bad)
    assert torch.get_num_threads() == before


def test_one_worker_runs_inline_in_order():
    seen = []
    with single_threaded(), worker_pool() as tasks:
        tasks.submit(lambda: threading.current_thread().name, then=seen.append)
    assert seen == [threading.main_thread().name]
