"""Running a profile's steps: in this process through the experiments layer (the same code path as
``initlab compare``/``initlab sweep``), or with ``jobs > 1`` as ``python -m initlab ...`` processes;
finished steps are skipped, and each invocation's wall clock is recorded for the report."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..errors import ConfigError, InitlabError
from ..output import atomic_write_bytes, read_json, write_json
from ..progress import as_progress
from .profiles import SECTIONS, Step, plan, profile_settings, sweep_test_size
from .page import write_report


def prepare_sweep_data(out: Path, data_root: str | None, test_size: int | None) -> str | None:
    """A Fashion-MNIST folder whose train files are links to the real ones and whose test split is
    a class-balanced ``test_size`` subset: every sweep cell ends with a test evaluation the sweep
    never reads (it minimizes the training loss), and on a CPU the full 10k-image evaluation of a
    width-512 model costs more than its training steps."""
    if not test_size:
        return data_root
    from ..data import balanced_subset, dataset_spec, load_vision, locate
    from ..data.synthetic import write_idx_dataset
    from ..data.vision import IDX_FILES
    target = out / "data" / f"fashion-mnist-test{test_size}"
    marker = target / "done.json"
    if marker.exists():
        return str(target)
    spec = dataset_spec("fashion-mnist")
    source = locate(spec, root=data_root, split="train")
    target.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES["train"]:
        link = target / f"{stem}.gz"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to((Path(source) / f"{stem}.gz").resolve())
    test = load_vision("fashion-mnist", root=data_root, split="test")
    idx = balanced_subset(test.labels, test_size, seed=0)
    write_idx_dataset(target, "test", test.images[idx].numpy(), test.labels[idx].numpy())
    write_json(marker, {"test_size": test_size, "source": str(source)})
    return str(target)


def run_suite(profile: str, out: str | Path, *, only: list[str] | None = None, data_root: str | None = None,
              text: str | None = None, doc: str | Path, img_dir: str | Path,
              log: Callable[[str], None] = print,
              run: bool = True, jobs: int = 1, progress=False) -> Path:
    """Run (or resume) every step of ``profile`` in ``only``'s sections, then write the report.

    ``progress`` (a :class:`~initlab.progress.Progress` or a bool): with ``jobs=1`` the live line of
    each run, labelled with its step (``[2/5] vision-table [3/6] mimetic s1``: steps and runs done
    of total); with ``jobs > 1`` one line counting the steps done.

    ``jobs > 1`` runs that many steps at once, each as its own ``python -m initlab`` process with
    ``cpu_count // jobs`` torch threads (unless ``OMP_NUM_THREADS`` is set): on a small CPU, one
    thread per step wastes far less than several steps fighting over every core.
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    only = list(only or SECTIONS)
    planned = plan(profile)  # unknown profile: one-line error before anything is made
    keys = {s.key for s in planned}
    bad = [s for s in only if s not in SECTIONS and s not in keys]
    if bad:
        raise ConfigError(f"unknown results section(s) or step(s) {', '.join(bad)}; choose from "
                          f"{', '.join(SECTIONS)} or a step key ({', '.join(sorted(keys))})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    small = None
    test_size = sweep_test_size(profile_settings(profile))
    sweeps = [s.key for s in planned if s.command == "sweep"]
    if run and test_size and any(s in ("transfer", "depth") or s in sweeps for s in only):
        small = prepare_sweep_data(out, data_root, test_size)
    elif (out / "data").exists():
        found = sorted((out / "data").glob("fashion-mnist-test*"))
        small = str(found[0]) if found else None
    steps = plan(profile, data_root=data_root, text=text, small_test_root=small)
    if run:
        lock = threading.Lock()  # parallel steps: one whole line at a time
        say = log

        def log(message: str) -> None:
            with lock:
                say(message)
        todo = [s for s in steps if s.section in only or s.key in only]
        pending = []
        for i, step in enumerate(todo, 1):
            marker = out / step.key / "step.json"
            if marker.exists() and read_json(marker).get("args") == list(step.args):
                log(f"[{i}/{len(todo)}] {step.key}: done earlier, skipped")
            else:
                pending.append((i, step))
        if pending:
            t0 = time.time()
            run_one = _run_in_process if jobs == 1 else _run_in_subprocess(jobs)
            live = as_progress(progress)

            def go(item):
                i, step = item
                log(f"[{i}/{len(todo)}] {step.key}: {step.display(out)}")
                inner = live.labelled(f"[{i}/{len(todo)}] {step.key}") if live and jobs == 1 else False
                wall, rc = run_one(step, out, inner)
                if rc in (128 + 2, 128 + 15):  # the step was stopped by SIGINT/SIGTERM: so is the suite
                    from ..errors import Interrupted
                    raise Interrupted(rc - 128)
                if rc not in (0, 1):  # 1: a diverged run, which is a result
                    raise ConfigError(f"step {step.key} failed with exit code {rc}: {step.display(out)}"
                                      + (f" (its output: {out / step.key / 'output.txt'})" if jobs > 1 else ""))
                write_json(out / step.key / "step.json",
                           {"args": list(step.args), "wall_s": wall, "rc": rc, "finished": _utc_now()})
                log(f"[{i}/{len(todo)}] {step.key}: finished in {wall:.0f} s")

            if jobs == 1:
                for item in pending:
                    go(item)
            else:
                with _steps_line(live, len(pending)) as line, ThreadPoolExecutor(max_workers=jobs) as pool:
                    futures = [pool.submit(go, item) for item in pending]
                    for done, f in enumerate(as_completed(futures), 1):
                        f.result()
                        if line is not None:
                            line.update(done)
            _record_session(out, profile, time.time() - t0, jobs, [s.key for _, s in pending])
    return write_report(profile, steps, out, doc=doc, img_dir=img_dir)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


@contextmanager
def _steps_line(progress, total: int):
    """A live line of steps done (``jobs > 1``: the runs' own lines go to their output.txt)."""
    if progress is None or not progress.is_live():
        yield None
        return
    with progress.labelled("results steps").steps(total) as line:
        yield line


def _run_in_process(step: Step, out: Path, progress=False) -> tuple[float, int]:
    """The step through the experiments layer, as its displayed command would run it."""
    from ..experiments import invoke
    t0 = time.time()
    try:
        args = invoke.parse_command(step.command, step.argv(out)[1:])
        result = getattr(invoke, step.command)(args, progress=progress)
        # train returns its record instead of raising: its exit code (130/143 when interrupted:
        # the suite stops and the step is not done; 1 when diverged, a result)
        rc = result[0].exit_code() if step.command == "train" else 0
    except InitlabError as exc:
        print(f"initlab {step.command}: error: {exc}", file=sys.stderr)
        rc = 2
    return time.time() - t0, rc


def _run_in_subprocess(jobs: int):
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads}

    def run(step: Step, out: Path, progress=False) -> tuple[float, int]:
        t0 = time.time()
        # the step runs with --quiet: its output is a few lines, kept and written once it ends
        done = subprocess.run([sys.executable, "-m", "initlab", *step.argv(out)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        atomic_write_bytes(out / step.key / "output.txt", done.stdout)
        return time.time() - t0, done.returncode
    return run


def _record_session(out: Path, profile: str, wall: float, jobs: int, keys: list[str]) -> None:
    """Append this invocation's wall clock to ``out/sessions.json``: the report states how long
    the steps took end to end, not only the sum of their own times."""
    path = out / "sessions.json"
    sessions = read_json(path) if path.exists() else []
    sessions.append({"profile": profile, "wall_s": wall, "jobs": jobs, "steps": keys,
                     "threads": os.environ.get("OMP_NUM_THREADS"),
                     "finished": _utc_now()})
    write_json(path, sessions, indent=1)
