"""Experiment orchestration behind ``initlab train``, ``compare`` and ``sweep``.

* :func:`run_compare` — one run per (init, seed), mean ± std over seeds, CSV/JSON/PNG.
* :func:`run_sweep` / :func:`analyze` — width × lr grid, optimal lr per width, transfer cost.
* :func:`build_config` / :func:`check_config` — flags + TOML/YAML file -> TrainConfig, then the
  checks, which return the config's :class:`~initlab.schemes.InitPlan` (pass it to the engine).
* :func:`parse_lrs` (``1e-4..1e-1:8`` or ``1e-3,3e-3``), :func:`parse_ints`, :func:`parse_seeds`,
  :func:`parse_inits` (init specs, split by the spec grammar).
* :mod:`.invoke` — ``train``/``compare``/``sweep`` as the command line states them, without the CLI.
"""
from __future__ import annotations

from .compare import CompareResult, run_compare
from .checks import check_config
from .config_file import load_config_file
from .configure import build_config
from .grid import parse_inits, parse_ints, parse_lrs, parse_names, parse_seeds
from .records import RunRecord, read_csv, write_csv, write_json
from .runner import run_cell
from .sweep import SweepAnalysis, analyze, run_sweep

__all__ = ["run_compare", "CompareResult", "run_sweep", "analyze", "SweepAnalysis", "build_config",
           "check_config", "load_config_file", "parse_lrs", "parse_ints", "parse_seeds", "parse_names", "parse_inits",
           "RunRecord", "read_csv", "write_csv", "write_json", "run_cell"]
