"""``initlab results``: the measured answers behind ``docs/results.md``.

The suite is a declared list of ``initlab compare`` / ``initlab sweep`` invocations (:func:`plan`),
one list per *profile*:

* ``smoke`` — seconds; tiny models on whatever data you point it at (the test uses synthetic IDX
  files and a small text file);
* ``cpu``   — the scaled-down proxies that finish in under an hour on a 2-core CPU;
* ``long``  — the small-data regime of the mimetic paper at CPU size: the same ViT trained for
  many epochs on 1k/5k images (and the same number of steps on 60k), evaluated often, and the
  language table at 3.3× the tokens; about 80 minutes on 2 cores (``--jobs 2``). Its tables go into
  their own ``long_*`` blocks;
* ``full``  — the GPU-sized version (declared here, run it on a GPU machine).

Each step runs through :func:`initlab.cli.main` (in this process, or with ``jobs > 1`` as
``python -m initlab ...`` subprocesses, one torch thread per core each), so every number in the
report was produced by a command a user can paste. A step whose outputs exist for the same arguments is skipped
(``step.json`` records them); compare/sweep themselves also resume half-finished steps. Then
:func:`write_report` turns the outputs into Markdown tables (mean ± sample std over seeds, the
exact command above each table) inside ``<!-- results:KEY -->`` blocks of the results page (the
prose around the blocks is kept) and PNGs under the image directory.

Model selection never looks at the test split: the vision sweeps minimize the *training* loss
(the engine's vision task has no validation split), the language sweeps the validation loss.
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ConfigError
from .output import markdown_table, write_json

SECTIONS = ("vision", "lm", "transfer")
PROFILES = ("smoke", "cpu", "long", "full")
# trunc_normal+mimetic is the paper's own setup: timm's ViT init everywhere, mimetic attention
VISION_INITS = ("default", "trunc_normal", "mimetic", "trunc_normal+mimetic", "structured", "nt", "nt+mimetic")
LM_INITS = ("default", "mimetic-language", "mimetic-language(vo_sign=1)", "nt")


@dataclass(frozen=True)
class Step:
    """One ``initlab compare`` or ``initlab sweep`` invocation of the suite."""
    key: str  # unique, also the output folder name under --out
    section: str  # vision | lm | transfer
    command: str  # compare | sweep
    args: tuple[str, ...]  # CLI arguments, without --out and --quiet
    labels: dict = field(default_factory=dict, hash=False, compare=False)

    def argv(self, out: Path) -> list[str]:
        return [self.command, *self.args, "--out", str(out / self.key), "--quiet"]

    def display(self, out: Path) -> str:
        return "initlab " + " ".join(shlex.quote(a) for a in [self.command, *self.args, "--out",
                                                                  str(out / self.key)])


# ---------------------------------------------------------------------------------------------
# profiles

def _profile(name: str) -> dict:
    if name == "smoke":
        return dict(
            vision=dict(model="vit-micro", width=16, depth=1, heads=2, batch=16, lr=3e-3, seeds=2,
                        inits=("default", "mimetic"),
                        settings=[(64, 7, 2, 2)]),  # (train size, patch, epochs, evaluations)
            lm=dict(model="gpt-mini", width=16, depth=1, heads=2, block=16, batch=8, steps=4, evals=2,
                    eval_batches=1, lr=3e-3, seeds=2, inits=("default", "mimetic-language")),
            transfer=dict(widths=(16, 32), lrs="1e-3..1e-2:2", params=("mu",), seeds=1,
                          vision=dict(depth=1, heads=2, batch=16, steps=2, train_size=64, test_size=20),
                          lm=dict(depth=1, heads=2, block=16, batch=8, steps=2, eval_batches=1)),
        )
    if name == "cpu":
        # Sized for the shared 2-core box: ~40 CPU-minutes without the 60k row (single-threaded
        # steps, OMP_NUM_THREADS=1; run the vision section and the rest as two processes).
        return dict(
            # vit-micro: width 64, depth 4, 2 heads; patch 7 -> 16 tokens, patch 4 -> 49 tokens
            vision=dict(model="vit-micro", width=64, depth=4, heads=2, batch=128, lr=1e-3, seeds=3,
                        inits=VISION_INITS,
                        settings=[(1000, 7, 15, 3), (5000, 7, 3, 3), (60000, 7, 0.25, 3),
                                  (1000, 4, 8, 2), (5000, 4, 3, 3), (60000, 4, 0.25, 3)]),
            lm=dict(model="gpt-mini", width=128, depth=4, heads=4, block=128, batch=16, steps=150, evals=3,
                    eval_batches=8, lr=1e-3, seeds=3, inits=LM_INITS),
            # 1e-3..3e-2:4 (log-spaced) plus one step lower, written out so the cells' names match
            transfer=dict(widths=(64, 128, 256, 512), lrs="0.000321829,0.001,0.00310723,0.00965489,0.03",
                          params=("standard", "nt", "mu"),
                          seeds=3,
                          vision=dict(depth=2, heads=2, batch=64, steps=30, train_size=5000, test_size=1000),
                          lm=dict(depth=2, heads=4, block=64, batch=16, steps=30, eval_batches=4)),
        )
    if name == "long":
        # The regime behind the mimetic paper's small-data claim, at CPU size: the cpu profile's
        # ViT trained until 1k images are fit many times over (100 epochs), with the same number
        # of steps (~700-780) for 5k and 60k images, so the rows differ in data only. Ten
        # evaluations per run make "epochs to default's final" a real curve read-out.
        # ~155 CPU-minutes (84 vision runs of ~90 s and 12 language runs of ~150 s, single-threaded);
        # `--jobs 2` runs it in about 80 minutes.
        return dict(
            prefix="long",
            vision=dict(model="vit-micro", width=64, depth=4, heads=2, batch=128, lr=1e-3, seeds=3,
                        inits=VISION_INITS,
                        settings=[(1000, 7, 100, 10), (5000, 7, 20, 10), (1000, 4, 30, 6), (60000, 7, 1.5, 10)]),
            # the cpu profile's language table at 3.3x the tokens (1.0M), to see whether the early
            # mimetic gain survives past the bigram level
            lm=dict(model="gpt-mini", width=128, depth=4, heads=4, block=128, batch=16, steps=500, evals=5,
                    eval_batches=8, lr=1e-3, seeds=3, inits=LM_INITS),
        )
    if name == "full":
        return dict(
            vision=dict(model="vit-tiny", width=192, depth=12, heads=3, batch=128, lr=1e-3, seeds=3,
                        inits=VISION_INITS,
                        settings=[(1000, 7, 200, 20), (5000, 7, 100, 20), (60000, 7, 50, 25),
                                  (1000, 4, 200, 20), (5000, 4, 100, 20), (60000, 4, 50, 25),
                                  (1000, 2, 200, 20), (5000, 2, 100, 20)]),
            lm=dict(model="gpt-char", width=384, depth=6, heads=6, block=256, batch=64, steps=5000, evals=20,
                    eval_batches=50, lr=1e-3, seeds=3, inits=LM_INITS),
            transfer=dict(widths=(64, 128, 256, 512, 1024), lrs="1e-4..1e-1:10", params=("standard", "nt", "mu"),
                          seeds=3,
                          vision=dict(depth=6, heads=4, batch=128, steps=2000, train_size=None, test_size=None),
                          lm=dict(depth=6, heads=4, block=256, batch=64, steps=2000, eval_batches=20)),
        )
    raise ConfigError(f"unknown results profile {name!r}; choose one of {', '.join(PROFILES)}")


def _tokens(patch: int, image: int = 28) -> int:
    return (image // patch) ** 2


def plan(profile: str, *, data_root: str | None = None, text: str | None = None,
         small_test_root: str | None = None) -> list[Step]:
    """The suite's steps for ``profile``, in running order (headline tables first).

    ``data_root``: Fashion-MNIST location (else the standard places); ``text``: the LM corpus
    (else Shakespeare); ``small_test_root``: where :func:`prepare_sweep_data` wrote the copy with
    a small test split for the vision sweeps (which never read the test metrics).
    """
    p = _profile(profile)
    pre = p["prefix"] + "-" if p.get("prefix") else ""
    steps: list[Step] = []
    v = p["vision"]
    root = ["--data-root", data_root] if data_root else []
    for size, patch, epochs, evals in v["settings"]:
        per_epoch = size // v["batch"]
        eval_every = max(1, int(per_epoch * epochs) // evals)
        args = ["--data", "fashion-mnist", *root, "--train-size", str(size), "--model", v["model"],
                "--width", str(v["width"]), "--depth", str(v["depth"]), "--heads", str(v["heads"]),
                "--patch-size", str(patch), "--inits", ",".join(v["inits"]), "--seeds", str(v["seeds"]),
                "--epochs", str(epochs), "--eval-every", str(eval_every), "--batch-size", str(v["batch"]),
                "--lr", f"{v['lr']:g}", "--base-width", str(v["width"])]
        steps.append(Step(f"{pre}vision-n{size}-p{patch}", "vision", "compare", tuple(args),
                          dict(train_size=size, patch=patch, tokens=_tokens(patch), epochs=epochs)))
    # running order: the small-data vision rows and the language table first, the full-data rows
    # (the most expensive, and the first to drop when time runs short) last
    def priority(step: Step) -> int:
        if step.section == "vision":
            return 3 if step.labels["train_size"] >= 60000 else 0
        return 1 if step.section == "lm" else 2
    if "lm" not in p:
        return sorted(steps, key=priority)
    l = p["lm"]
    args = ["--task", "lm", *(["--data", text] if text else []), "--model", l["model"],
            "--width", str(l["width"]), "--depth", str(l["depth"]), "--heads", str(l["heads"]),
            "--block-size", str(l["block"]), "--batch-size", str(l["batch"]), "--steps", str(l["steps"]),
            "--eval-every", str(max(1, l["steps"] // l["evals"])), "--eval-batches", str(l["eval_batches"]),
            "--lr", f"{l['lr']:g}", "--base-width", str(l["width"]),
            "--inits", ",".join(l["inits"]), "--seeds", str(l["seeds"])]
    steps.append(Step(f"{pre}lm", "lm", "compare", tuple(args),
                      dict(steps=l["steps"], tokens_per_step=l["batch"] * l["block"])))
    if "transfer" not in p:
        return sorted(steps, key=priority)
    t = p["transfer"]
    widths = ",".join(str(w) for w in t["widths"])
    for task in ("vision", "lm"):
        s = t[task]
        for param in t["params"]:
            for seed in range(t["seeds"]):
                if task == "vision":
                    troot = small_test_root or data_root
                    args = ["--data", "fashion-mnist", *(["--data-root", troot] if troot else []),
                            *(["--train-size", str(s["train_size"])] if s["train_size"] else []),
                            "--model", "vit-micro", "--patch-size", "7"]
                else:
                    args = ["--task", "lm", *(["--data", text] if text else []), "--model", "gpt-mini",
                            "--block-size", str(s["block"]), "--eval-batches", str(s["eval_batches"])]
                args += ["--depth", str(s["depth"]), "--heads", str(s["heads"]), "--batch-size", str(s["batch"]),
                         "--steps", str(s["steps"]), "--eval-every", str(s["steps"]),
                         "--widths", widths, "--lrs", t["lrs"], "--param", param, "--seed", str(seed)]
                steps.append(Step(f"transfer-{task}-{param}-s{seed}", "transfer", "sweep", tuple(args),
                                  dict(task=task, param=param, seed=seed)))
    return sorted(steps, key=priority)


def prepare_sweep_data(out: Path, data_root: str | None, test_size: int | None) -> str | None:
    """A Fashion-MNIST folder whose train files are links to the real ones and whose test split is
    a class-balanced ``test_size`` subset: every sweep cell ends with a test evaluation the sweep
    never reads (it minimizes the training loss), and on a CPU the full 10k-image evaluation of a
    width-512 model costs more than its training steps."""
    if not test_size:
        return data_root
    from .data import balanced_subset, dataset_spec, load_vision, locate
    from .data.synthetic import write_idx_dataset
    from .data.vision import IDX_FILES
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


# ---------------------------------------------------------------------------------------------
# running

def run_suite(profile: str, out: str | Path, *, only: list[str] | None = None, data_root: str | None = None,
              text: str | None = None, doc: str | Path = "docs/results.md",
              img_dir: str | Path = "docs/img/results", log: Callable[[str], None] = print,
              run: bool = True, jobs: int = 1) -> Path:
    """Run (or resume) every step of ``profile`` in ``only``'s sections, then write the report.

    ``jobs > 1`` runs that many steps at once, each as its own ``python -m initlab`` process with
    ``cpu_count // jobs`` torch threads (unless ``OMP_NUM_THREADS`` is set): on a small CPU, one
    thread per step wastes far less than several steps fighting over every core.
    """
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, got {jobs}")
    only = list(only or SECTIONS)
    keys = {s.key for s in plan(profile)}  # unknown profile: one-line error before anything is made
    bad = [s for s in only if s not in SECTIONS and s not in keys]
    if bad:
        raise ConfigError(f"unknown results section(s) or step(s) {', '.join(bad)}; choose from "
                          f"{', '.join(SECTIONS)} or a step key ({', '.join(sorted(keys))})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    small = None
    transfer = _profile(profile).get("transfer")
    if run and transfer and any(s == "transfer" or s.startswith("transfer-") for s in only):
        small = prepare_sweep_data(out, data_root, transfer["vision"]["test_size"])
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
            if marker.exists() and json.loads(marker.read_text()).get("args") == list(step.args):
                log(f"[{i}/{len(todo)}] {step.key}: done earlier, skipped")
            else:
                pending.append((i, step))
        if pending:
            t0 = time.time()
            run_one = _run_in_process if jobs == 1 else _run_in_subprocess(jobs)

            def go(item):
                i, step = item
                log(f"[{i}/{len(todo)}] {step.key}: {step.display(out)}")
                wall, rc = run_one(step, out)
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
                with ThreadPoolExecutor(max_workers=jobs) as pool:
                    for f in [pool.submit(go, item) for item in pending]:
                        f.result()
            _record_session(out, profile, time.time() - t0, jobs, [s.key for _, s in pending])
    return write_report(profile, steps, out, doc=doc, img_dir=img_dir)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def _run_in_process(step: Step, out: Path) -> tuple[float, int]:
    from .cli import main as cli_main
    t0 = time.time()
    rc = cli_main(step.argv(out))
    return time.time() - t0, rc


def _run_in_subprocess(jobs: int):
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // jobs))
    env = {**os.environ, "OMP_NUM_THREADS": threads}

    def run(step: Step, out: Path) -> tuple[float, int]:
        (out / step.key).mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(out / step.key / "output.txt", "w") as sink:
            rc = subprocess.call([sys.executable, "-m", "initlab", *step.argv(out)], env=env,
                                 stdout=sink, stderr=subprocess.STDOUT)
        return time.time() - t0, rc
    return run


def _record_session(out: Path, profile: str, wall: float, jobs: int, keys: list[str]) -> None:
    """Append this invocation's wall clock to ``out/sessions.json``: the report states how long
    the steps took end to end, not only the sum of their own times."""
    path = out / "sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    sessions.append({"profile": profile, "wall_s": wall, "jobs": jobs, "steps": keys,
                     "threads": os.environ.get("OMP_NUM_THREADS"),
                     "finished": _utc_now()})
    write_json(path, sessions, indent=1)


# ---------------------------------------------------------------------------------------------
# numbers

def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def fmt(mean: float, std: float, digits: int = 2, scale: float = 1.0) -> str:
    if not math.isfinite(mean):
        return "—"
    s = f"{mean * scale:.{digits}f}"
    return s + (f" ± {std * scale:.{digits}f}" if math.isfinite(std) else "")


def _fmt_g(mean: float, std: float) -> str:
    """Epoch counts: 3 significant digits (0.25 epochs stays 0.25)."""
    if not math.isfinite(mean):
        return "—"
    return f"{mean:.3g}" + (f" ± {std:.2g}" if math.isfinite(std) else "")


def _records(step_out: Path) -> list[dict]:
    """The step's run records: compare's metrics.json, or (step still running or cut short) the
    finished runs' own result.json files."""
    path = step_out / "metrics.json"
    if path.exists():
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else data.get("runs", data.get("records", []))
    records = []
    for result in sorted(step_out.glob("runs/*/result.json")):
        r = json.loads(result.read_text())
        if r.get("status") in ("completed", "diverged"):
            records.append(r)
    return records


def first_reach(history: list[dict], key: str, target: float, higher: bool = True) -> float:
    """Epoch of the first evaluation whose ``key`` reaches ``target`` (nan if never)."""
    for row in history:
        v = row.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and (v >= target if higher else v <= target):
            return float(row.get("epoch", math.nan))
    return math.nan


def vision_rows(records: list[dict]) -> list[dict]:
    """Per init: final/best accuracy (%) mean ± std, and epochs to reach default's mean final acc."""
    by_init: dict[str, list[dict]] = {}
    for r in records:
        by_init.setdefault(r["labels"]["init"], []).append(r)

    def final(r):
        return _metric(r, "final", "test_acc")

    base = [final(r) for r in by_init.get("default", [])]
    target = mean_std(base)[0]
    rows = []
    for init, runs in by_init.items():
        finals = [final(r) for r in runs]
        bests = [_best(r, "test_acc", True) for r in runs]
        reach = [first_reach(r["history"], "test_acc", target) for r in runs] if math.isfinite(target) else []
        reached = [e for e in reach if math.isfinite(e)]
        rows.append(dict(init=init, seeds=len(runs), final=mean_std(finals), best=mean_std(bests),
                         train_loss=mean_std([_metric(r, "final", "train_loss") for r in runs]),
                         delta=(mean_std(finals)[0] - target) if math.isfinite(target) else math.nan,
                         reach=mean_std(reached), reached=len(reached),
                         epochs=max((r["history"][-1].get("epoch", math.nan) for r in runs if r["history"]),
                                    default=math.nan),
                         wall=statistics.fmean(r.get("wall_time_s", 0.0) for r in runs),
                         status=",".join(sorted({r.get("status", "?") for r in runs}))))
    return rows


def lm_rows(records: list[dict]) -> list[dict]:
    by_init: dict[str, list[dict]] = {}
    for r in records:
        by_init.setdefault(r["labels"]["init"], []).append(r)
    base = mean_std([_metric(r, "final", "val_bpc") for r in by_init.get("default", [])])[0]
    rows = []
    for init, runs in by_init.items():
        finals = [_metric(r, "final", "val_bpc") for r in runs]
        rows.append(dict(init=init, seeds=len(runs), final=mean_std(finals),
                         best=mean_std([_best(r, "val_bpc", False) for r in runs]),
                         delta=mean_std(finals)[0] - base if math.isfinite(base) else math.nan,
                         wall=statistics.fmean(r.get("wall_time_s", 0.0) for r in runs),
                         status=",".join(sorted({r.get("status", "?") for r in runs}))))
    return rows


def _metric(r: dict, where: str, key: str) -> float:
    v = (r.get(where) or {}).get(key)
    if isinstance(v, (int, float)):
        return float(v)
    for row in reversed(r.get("history") or []):
        if isinstance(row.get(key), (int, float)):
            return float(row[key])
    return math.nan


def _best(r: dict, key: str, higher: bool) -> float:
    vals = [float(row[key]) for row in r.get("history") or []
            if isinstance(row.get(key), (int, float)) and math.isfinite(row[key])]
    if not vals:
        return math.nan
    return max(vals) if higher else min(vals)


def transfer_summary(step_outs: list[Path]) -> dict | None:
    """Average the cells of one (task, param) over seeds, then the sweep analysis on the mean."""
    from .experiments.sweep import analyze
    tables = []
    for d in step_outs:
        path = d / "analysis.json"
        if path.exists():
            tables.append(json.loads(path.read_text()))
    if not tables:
        return None
    widths = [int(w) for w in tables[0]["widths"]]
    lrs = [float(x) for x in tables[0]["lrs"]]
    cells: dict[tuple[int, str], list[float]] = {}
    for t in tables:
        for w, row in t["table"].items():
            for label, v in row.items():
                cells.setdefault((int(w), label), []).append(math.inf if v is None else float(v))
    rows = []
    for (w, label), vals in cells.items():
        finite = [v for v in vals if math.isfinite(v)]
        rows.append({"width": w, "lr": float(label), "value": statistics.fmean(finite) if len(finite) == len(vals)
                     else math.inf})
    a = analyze(rows, widths, lrs, tables[0]["metric"])
    # the spread over seeds: each seed's sweep analysed on its own
    per_seed = [analyze([{"width": int(w), "lr": float(label), "value": v}
                         for w, row in t["table"].items() for label, v in row.items()],
                        widths, lrs, t["metric"]) for t in tables]
    slopes = [b.slope for b in per_seed if b.slope is not None]
    lost = [b.transfer["loss"] for b in per_seed if b.transfer]
    return dict(analysis=a, seeds=len(tables), slope=mean_std(slopes), lost=mean_std(lost))


# ---------------------------------------------------------------------------------------------
# report

def _wall(out: Path, steps: list[Step]) -> float:
    """Seconds of training behind the tables: every compare run's and sweep cell's own wall time.
    (A step's ``step.json`` holds only its last invocation, which may have added a few runs.)"""
    total = 0.0
    for s in steps:
        if s.command == "sweep":
            path = out / s.key / "sweep.csv"
            if path.exists():
                with open(path, newline="") as f:
                    total += sum(float(row.get("wall_time_s") or 0.0) for row in csv.DictReader(f))
        else:
            total += sum(float(r.get("wall_time_s") or 0.0) for r in _records(out / s.key))
    return total


def vision_block(out: Path, steps: list[Step], img_dir: Path, doc_dir: Path,
                 datasize_png: str = "vision-datasize.png") -> str:
    parts = []
    summary = []
    for s in sorted(steps, key=lambda s: (s.labels["tokens"], s.labels["train_size"])):
        recs = _records(out / s.key)
        lab = s.labels
        steps_run = int(lab["train_size"] // _vision_batch(s) * lab["epochs"])
        head = (f"#### {lab['train_size']:,} training images, patch {lab['patch']} ({lab['tokens']} tokens), "
                f"{lab['epochs']:g} epoch(s) = {steps_run} steps\n\n```\n{s.display(out)}\n```\n")
        if not recs:
            parts.append(head + "\n*not run yet*\n")
            continue
        if not (out / s.key / "step.json").exists():
            head += "\n**Partial: this step had not finished; the rows hold the runs finished so far.**\n"
        rows = vision_rows(recs)
        table = markdown_table(
            ["init", "final acc (%)", "best acc (%)", "Δ final vs default", "epochs to default's final",
             "final train loss", "seeds", "wall/run (s)", "status"],
            [[f"`{r['init']}`", fmt(*r["final"], 2, 100), fmt(*r["best"], 2, 100),
              f"{r['delta'] * 100:+.2f}" if math.isfinite(r["delta"]) else "—",
              (_fmt_g(*r["reach"]) + (f" ({r['reached']}/{r['seeds']} reached)" if r["reached"] < r["seeds"] else ""))
              if r["reached"] else f"not reached (0/{r['seeds']})",
              fmt(*r["train_loss"], 3), str(r["seeds"]), f"{r['wall']:.0f}", r["status"]] for r in rows])
        curves = out / s.key / "curves.png"
        pic = ""
        if curves.exists():
            dst = img_dir / f"{s.key}-curves.png"
            shutil.copyfile(curves, dst)
            pic = f"\n\n![test accuracy vs epoch, {s.key}]({_rel(dst, doc_dir)})"
        parts.append(head + "\n" + table + pic + "\n")
        for r in rows:
            summary.append((lab["tokens"], lab["train_size"], r))
    if summary:
        pic = _plot_datasize(summary, img_dir / datasize_png)
        if pic:
            parts.insert(0, f"![final accuracy minus default's, by training-set size]({_rel(pic, doc_dir)})\n")
    return "\n".join(parts)


def _vision_batch(step: Step) -> int:
    return int(step.args[step.args.index("--batch-size") + 1])


def lm_block(out: Path, step: Step, img_dir: Path, doc_dir: Path) -> str:
    head = (f"{step.labels['steps']} steps × {step.labels['tokens_per_step']:,} tokens per step\n\n"
            f"```\n{step.display(out)}\n```\n")
    recs = _records(out / step.key)
    if not recs:
        return head + "\n*not run yet*\n"
    if not (out / step.key / "step.json").exists():
        head += "\n**Partial: this step had not finished; the rows hold the runs finished so far.**\n"
    rows = lm_rows(recs)
    table = markdown_table(["init", "final val bpc", "best val bpc", "Δ final vs default", "seeds", "wall/run (s)",
                       "status"],
                      [[f"`{r['init']}`", fmt(*r["final"], 3), fmt(*r["best"], 3),
                        f"{r['delta']:+.3f}" if math.isfinite(r["delta"]) else "—", str(r["seeds"]),
                        f"{r['wall']:.0f}", r["status"]] for r in rows])
    pic = ""
    curves = out / step.key / "curves.png"
    if curves.exists():
        dst = img_dir / f"{step.key}-curves.png"  # as the vision steps: named after the step
        shutil.copyfile(curves, dst)
        pic = f"\n\n![validation bpc vs training]({_rel(dst, doc_dir)})"
    return head + "\n" + table + pic + "\n"


def transfer_block(out: Path, steps: list[Step], img_dir: Path, doc_dir: Path) -> str:
    parts = []
    for task in ("vision", "lm"):
        group = [s for s in steps if s.labels["task"] == task]
        if not group:
            continue
        params = list(dict.fromkeys(s.labels["param"] for s in group))
        metric = "training loss (nats)" if task == "vision" else "validation loss (nats)"
        cmds = "\n".join(s.display(out) for s in group)
        rows, curves = [], {}
        for param in params:
            res = transfer_summary([out / s.key for s in group if s.labels["param"] == param])
            if res is None:
                rows.append([param, "0", "*not run yet*", "", "", "", "", "", "", ""])
                continue
            a = res["analysis"]
            curves[param] = a
            lrs = ", ".join(f"{w}: {a.optimum[w]:.2g}{'*' if a.edge[w] else ''}" for w in a.widths if w in a.optimum)
            shifts = ", ".join(f"{s:+.2f}" for _, _, s in a.shifts)
            t = a.transfer
            rows.append([param, str(res["seeds"]), lrs or "—", shifts or "—",
                         f"{a.slope:+.2f}" if a.slope is not None else "—",
                         fmt(*res["slope"], 2) if res["seeds"] > 1 else "—",
                         f"{t['value']:.4f}" if t and math.isfinite(t["value"]) else ("diverged" if t else "—"),
                         f"{t['best_value']:.4f} (lr {t['best_lr']:.2g})" if t else "—",
                         f"{t['loss']:+.4f}" if t and math.isfinite(t["loss"]) else ("∞" if t else "—"),
                         fmt(*res["lost"], 3) if res["seeds"] > 1 else "—"])
        table = markdown_table(["param", "seeds", "lr* per width (grid; * = on grid edge)", "log2 lr* shift per doubling",
                           "fit exponent (lr* ∝ width^x)", "fit exponent, per seed (mean ± std)",
                           "largest width at smallest width's lr*", "largest width at its own lr*",
                           "loss lost by transferring", "loss lost, per seed (mean ± std)"], rows)
        pic = ""
        if curves:
            p = _plot_transfer(curves, img_dir / f"transfer-{task}.png", metric)
            pic = f"\n\n![{metric} vs lr per width]({_rel(p, doc_dir)})" if p else ""
        title = "Vision (ViT, Fashion-MNIST)" if task == "vision" else "Language (char GPT, Shakespeare)"
        parts.append(f"#### {title}: {metric} at the end of training\n\n```\n{cmds}\n```\n\n{table}{pic}\n")
    return "\n".join(parts)


def _rel(path: Path, doc_dir: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(doc_dir.resolve()))
    except ValueError:
        return str(path)


def _plot_datasize(summary, path: Path) -> Path | None:
    from .plotting import subplots
    token_counts = sorted({t for t, _, _ in summary})
    fig, axes = subplots(1, len(token_counts), figsize=(5 * len(token_counts), 3.6), squeeze=False)
    for ax, tokens in zip(axes[0], token_counts):
        inits = list(dict.fromkeys(r["init"] for t, _, r in summary if t == tokens))
        for init in inits:
            pts = sorted((n, r) for t, n, r in summary if t == tokens and r["init"] == init)
            xs = [n for n, _ in pts]
            ys = [r["delta"] * 100 for _, r in pts]
            es = [r["final"][1] * 100 if math.isfinite(r["final"][1]) else 0 for _, r in pts]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=init)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("training images")
        ax.set_ylabel("final test acc − default's (points)")
        ax.set_title(f"{tokens} tokens")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def _plot_transfer(analyses: dict, path: Path, metric: str) -> Path | None:
    from .plotting import subplots
    fig, axes = subplots(1, len(analyses), figsize=(4.2 * len(analyses), 3.4), squeeze=False)
    for ax, (param, a) in zip(axes[0], analyses.items()):
        finite = [v for row in a.table.values() for v in row.values() if math.isfinite(v)]
        for w in a.widths:
            pts = sorted((lr, v) for lr, v in a.table[w].items() if math.isfinite(v))
            if not pts:
                continue
            line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"width {w}")
            if w in a.optimum:
                ax.plot([a.optimum[w]], [a.optimum_value[w]], marker="*", ms=12, color=line.get_color())
        if finite:
            finite.sort()
            hi = finite[max(0, int(0.9 * len(finite)) - 1)]
            lo = finite[0]
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9))
        ax.set_xscale("log")
        ax.set_xlabel("lr (at the smallest width)")
        ax.set_ylabel(metric)
        ax.set_title(param)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def theory_block(doc_dir: Path) -> str:
    """Summary of the probes' agreement table (docs/theory.md), read from the JSON it writes."""
    path = doc_dir / "img" / "theory_agreement.json"
    cmd = ("initlab probe --agreement --widths 512,1024 --depths 1,6,12,24 --params standard,nt,mu "
           "--samples 128 --out docs/img")
    if not path.exists():
        return f"```\n{cmd}\n```\n\n*agreement table not found ({path.name}); run the command above*\n"
    rows = json.loads(path.read_text())
    out_rows = []
    for param in dict.fromkeys(r["param"] for r in rows):
        for width in sorted({r["width"] for r in rows if r["param"] == param}):
            rs = sorted((r for r in rows if r["param"] == param and r["width"] == width), key=lambda r: r["depth"])
            deepest = rs[-1]
            out_rows.append([param, str(width), ",".join(str(r["depth"]) for r in rs),
                             f"{deepest['G_final']:.3f} / {deepest['G_final_pred']:.3f}",
                             f"{100 * max(abs(r['G_max_rel']) for r in rs):.1f}%",
                             f"{100 * statistics.median(abs(r['grad_median_rel']) for r in rs):.1f}%",
                             f"{100 * max(abs(r['grad_max_rel']) for r in rs):.1f}%",
                             f"{100 * max(abs(r['qk_max_rel']) for r in rs):.0f}%"])
    table = markdown_table(["param", "width", "depths", "G at the deepest block (measured / theory)",
                       "max \\|err\\| of G over blocks and depths", "median grad-RMS \\|err\\|",
                       "max grad-RMS \\|err\\| (v, o, MLP, stem, head)", "max q/k grad \\|err\\|"], out_rows)
    return f"```\n{cmd}\n```\n\n(from `docs/img/{path.name}`, seed 0)\n\n{table}\n"


BLOCK = re.compile(r"<!-- results:(\w+) -->.*?<!-- /results:\1 -->", re.S)

SKELETON = """# Results: what initlab's claims look like when we measure them

Generated by `initlab results --profile {profile}`; prose outside the `results:` blocks is kept
when the tables are regenerated.

<!-- results:meta -->
<!-- /results:meta -->

## 1. Small-data vision

<!-- results:vision -->
<!-- /results:vision -->

## 2. Language

<!-- results:lm -->
<!-- /results:lm -->

## 3. Width transfer

<!-- results:transfer -->
<!-- /results:transfer -->

## 4. Theory at initialization

<!-- results:theory -->
<!-- /results:theory -->
"""


def write_report(profile: str, steps: list[Step], out: Path, *, doc: str | Path, img_dir: str | Path) -> Path:
    doc, img_dir = Path(doc), Path(img_dir)
    doc.parent.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    by = {sec: [s for s in steps if s.section == sec] for sec in SECTIONS}
    prefix = _profile(profile).get("prefix")
    blocks = {
        "meta": _meta_line(profile, steps, out),
        "vision": vision_block(out, by["vision"], img_dir, doc.parent,
                               datasize_png=f"{prefix + '-' if prefix else ''}vision-datasize.png"),
    }
    if prefix is None:  # the main profiles fill every block of the page; `long` only its own
        blocks["lm"] = lm_block(out, by["lm"][0], img_dir, doc.parent) if by["lm"] else ""
        blocks["transfer"] = transfer_block(out, by["transfer"], img_dir, doc.parent)
        blocks["theory"] = theory_block(doc.parent)
    else:
        if by["lm"]:
            blocks["lm"] = lm_block(out, by["lm"][0], img_dir, doc.parent)
        blocks = {f"{prefix}_{key}": body for key, body in blocks.items()}
    text = doc.read_text() if doc.exists() else SKELETON.format(profile=profile)
    for key, body in blocks.items():
        marker = f"<!-- results:{key} -->"
        new = f"{marker}\n{body.strip()}\n<!-- /results:{key} -->"
        if marker in text:
            text = BLOCK.sub(lambda m, k=key, n=new: n if m.group(1) == k else m.group(0), text)
        else:
            text = text.rstrip() + f"\n\n{new}\n"
    doc.write_text(text)
    return doc


def _meta_line(profile: str, steps: list[Step], out: Path) -> str:
    done = sum((out / s.key / "step.json").exists() for s in steps)
    line = (f"Profile `{profile}`: {done}/{len(steps)} steps finished, "
            f"{_wall(out, steps) / 60:.1f} min of training wall time summed over runs and sweep cells "
            f"(`initlab results --profile {profile} --out {out}`).")
    path = out / "sessions.json"
    keys = {s.key for s in steps}
    if path.exists():
        runs = [r for r in json.loads(path.read_text()) if r.get("profile") == profile and set(r["steps"]) & keys]
        if runs:
            parts = [f"{r['wall_s'] / 60:.1f} min for {len(r['steps'])} step(s) with --jobs {r['jobs']} "
                     f"({r['finished']})" for r in runs]
            line += " Wall clock of the invocations that trained: " + "; ".join(parts) + "."
    return line
