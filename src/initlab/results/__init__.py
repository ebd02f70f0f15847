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
* ``regime`` — the regime map: which init helps under which position table, readout, tokens, data
  size and width (1k-image, 49-token cells at the long profile's budget; its own ``regime_*``
  blocks);
* ``gpu``   — the map's best and worst regimes at ViT-Tiny size in bf16, for one GPU
  (``make gpu-check``);
* ``full``  — the GPU-sized version (declared here, run it on a GPU machine).

Each step runs through :mod:`initlab.experiments.invoke`, the code behind ``initlab compare`` and
``initlab sweep`` (in this process, or with ``jobs > 1`` as ``python -m initlab ...`` subprocesses,
one torch thread per core each), so every number in the report was produced by a command a user
can paste. A step whose outputs exist for the same arguments is skipped
(``step.json`` records them); compare/sweep themselves also resume half-finished steps. Then
:func:`write_report` turns the outputs into Markdown tables (mean ± sample std over seeds, the
exact command above each table) inside ``<!-- results:KEY -->`` blocks of the results page (the
prose around the blocks is kept) and PNGs under the image directory. The page is built by job:
:mod:`.statistics` (numbers from the records), :mod:`.tables` (rows and the Markdown of each
block), :mod:`.figures` (the PNGs) and :mod:`.page` (the section -> block registry and the
splicing); the position/content ratio is a measurement, :mod:`initlab.ratios`.

Model selection never looks at the test split: the vision sweeps minimize the *training* loss
(the engine's vision task has no validation split), the language sweeps the validation loss.
"""
from __future__ import annotations

from .profiles import LM_INITS, PROFILES, SECTIONS, VISION_INITS, Step, plan, profile_settings
from .page import BLOCKS, write_report
from .statistics import first_reach, mean_std, transfer_summary
from .tables import lm_regime_block, lm_regime_rows, lm_rows, regime_block, regime_rows, vision_rows
from .run import prepare_sweep_data, run_suite

__all__ = ["lm_regime_block", "lm_regime_rows", "run_suite", "plan", "write_report", "prepare_sweep_data", "profile_settings", "Step",
           "SECTIONS", "PROFILES", "VISION_INITS", "LM_INITS", "mean_std", "first_reach", "vision_rows",
           "lm_rows", "transfer_summary", "regime_rows", "regime_block", "BLOCKS"]
