"""Progress of long commands: a live line on a terminal, plain lines otherwise.

``initlab train``/``compare``/``sweep``/``results`` report between evaluations through one
:class:`Progress`:

* on a terminal, a live line (step, steps/s, elapsed, ETA and the run's label, e.g. ``[2/6]
  mimetic s0`` in a compare: runs done of total) redrawn in place, with the evaluation lines
  printed above it;
* when the output is a file or a pipe, one plain line per evaluation with the same numbers, so a
  log holds no control characters;
* ``--quiet`` (``progress=False``): neither.

The live line is `tqdm <https://tqdm.github.io>`_'s (a dependency already, small, thread- and
notebook-aware, and it degrades by itself when the terminal is narrow); we use it rather than
rich because nothing else in initlab needs rich's layout engine, and rather than hand-written
carriage returns because tqdm already handles terminal width, rate smoothing and ETA.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@dataclass(frozen=True)
class Progress:
    """Where and how progress is shown.

    Attributes:
        live: True for the live line, False for plain lines, None (default) for a live line
            exactly when ``stream`` is a terminal.
        stream: where to write (None: ``sys.stderr`` at the time of writing).
        label: what the lines are prefixed with (``"[2/6] mimetic s0"``).
    """

    live: bool | None = None
    stream: object = None
    label: str = ""

    def out(self):
        return self.stream if self.stream is not None else sys.stderr

    def is_live(self) -> bool:
        if self.live is not None:
            return self.live
        isatty = getattr(self.out(), "isatty", None)
        return bool(isatty and isatty())

    def labelled(self, label: str) -> "Progress":
        """The same progress with ``label`` after the current one (``[1/3] vision-table [2/6] mimetic s0``)."""
        return replace(self, label=f"{self.label} {label}".strip())

    def line(self, text: str) -> None:
        """One plain line (a run finished, a step of the results suite done)."""
        print(text, file=self.out(), flush=True)

    @contextmanager
    def steps(self, total: int, initial: int = 0):
        """A :class:`StepLine` from step ``initial`` to ``total``; closed on the way out."""
        line = StepLine(self, total, initial)
        try:
            yield line
        finally:
            line.close()


class StepLine:
    """The progress of one training run: :meth:`advance` at sync points, :meth:`report` at evaluations."""

    def __init__(self, progress: Progress, total: int, initial: int = 0):
        self.progress, self.total, self.step, self.initial = progress, int(total), int(initial), int(initial)
        self.t0 = time.perf_counter()
        self.bar = None
        if progress.is_live():
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, initial=self.step, unit=" steps", dynamic_ncols=True,
                            desc=progress.label or None, file=progress.out(),
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
                                       "[{rate_fmt}, elapsed {elapsed}, ETA {remaining}{postfix}]")

    def stats(self) -> tuple[float, float, float]:
        """(steps/s since this line started, elapsed s, ETA s; ETA is nan before the first step)."""
        elapsed = time.perf_counter() - self.t0
        done = self.step - self.initial
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        eta = (self.total - self.step) / rate if rate == rate and rate > 0 else float("nan")
        return rate, elapsed, eta

    def update(self, step: int, postfix: str = "") -> None:
        """The run is at ``step`` (absolute); ``postfix``: loss, lr, throughput for the live line."""
        done, self.step = int(step) - self.step, int(step)
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(done)

    def report(self, text: str) -> None:
        """An evaluation: above the live line, or as one plain line with step, steps/s, elapsed, ETA."""
        if self.bar is not None:
            self.bar.write(text, file=self.progress.out())
            return
        rate, elapsed, eta = self.stats()
        label = f"{self.progress.label} " if self.progress.label else ""
        speed = f"{rate:.2f} steps/s" if rate == rate else "- steps/s"
        left = _clock(eta) if eta == eta else "-"
        self.progress.line(f"{label}step {self.step}/{self.total} {speed} elapsed {_clock(elapsed)} "
                           f"ETA {left} | {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def as_progress(progress) -> Progress | None:
    """``True`` -> :class:`Progress` (live on a terminal), ``False``/``None`` -> None (quiet)."""
    if isinstance(progress, Progress):
        return progress
    return Progress() if progress else None


def labelled(progress, label: str):
    """``progress`` with ``label`` (runs done of total in compare/sweep); quiet stays quiet."""
    p = as_progress(progress)
    return p.labelled(label) if p is not None else False


__all__ = ["Progress", "StepLine", "as_progress", "labelled"]
