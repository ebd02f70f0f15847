"""``initlab results``: run the measurement suite behind docs/results.md and write its tables.

    initlab results --profile cpu --out results/ --jobs 2   # under an hour on a 2-core CPU
    initlab results --profile long --out results/ --jobs 2  # the long small-data ViT runs
    initlab results --profile cpu --out results/ --only lm  # one section
    initlab results --profile cpu --out results/ --report-only   # tables from what has run
"""
from __future__ import annotations

from ..experiments.grid import parse_names  # --only: section names, not init specs
from ..results.profiles import PROFILES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "results", allow_abbrev=False,
        help="run the declared compare/sweep suite and write docs/results.md",
        description="Run (or resume) the declared list of `initlab compare` / `initlab sweep` invocations "
                    "of a profile (smoke: seconds; cpu: under an hour on 2 CPU cores; long: the many-epoch "
                    "small-data ViT runs and a longer language table, about 80 minutes on 2 cores; full: GPU-sized), "
                    "then write mean ± std tables with their commands into the results page and PNGs "
                    "into the image folder. Finished steps are not rerun.")
    p.add_argument("--profile", choices=PROFILES, default="cpu",
                   help="suite size (default cpu)")
    p.add_argument("--out", default="results", help="where the runs go (default results/)")
    p.add_argument("--only", default=None, metavar="S1,S2",
                   help="comma list of sections (vision, lm, transfer) or step keys (see --list; default all)")
    p.add_argument("--data-root", default=None, metavar="DIR", help="Fashion-MNIST location (else standard places)")
    p.add_argument("--text", default=None, metavar="PATH", help="LM text file (default Shakespeare)")
    p.add_argument("--doc", default="docs/results.md", help="results page to write (default docs/results.md)")
    p.add_argument("--img-dir", default="docs/img/results", help="PNG folder (default docs/img/results)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="steps run at once, each in its own process with cpu_count/N torch threads "
                        "(default 1: one after another, in this process)")
    p.add_argument("--report-only", action="store_true", help="train nothing; tables from finished steps")
    p.add_argument("--list", action="store_true", help="print the steps' commands and exit")
    p.add_argument("--quiet", action="store_true",
                   help="no live progress line (the steps' start/finish lines are still printed)")
    p.set_defaults(run=run)


def run(args) -> int:
    from pathlib import Path

    from ..results import SECTIONS, plan, run_suite
    only = parse_names(args.only, "--only") if args.only else list(SECTIONS)
    if args.list:
        for step in plan(args.profile, data_root=args.data_root, text=args.text):
            if step.section in only or step.key in only:
                print(f"{step.key}: {step.display(Path(args.out))}")
        return 0
    from ..train.lock import hold_directory

    # one writer per --out: two `initlab results` on one --out would interleave their steps and
    # both rewrite sessions.json; the second exits 2 naming the first
    with hold_directory(args.out):
        doc = run_suite(args.profile, args.out, only=only, data_root=args.data_root, text=args.text,
                        doc=args.doc, img_dir=args.img_dir, run=not args.report_only,
                        log=lambda m: print(m, flush=True), jobs=args.jobs, progress=not args.quiet)
    print(f"wrote {doc}")
    return 0
