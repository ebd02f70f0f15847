"""The results suite's profiles: each a declared list of ``initlab compare``/``initlab sweep`` steps.

A profile names its vision settings, its language table and its width-transfer sweeps; the report
(:mod:`.report`) turns each section into a block of the results page. A profile with a ``prefix``
(``long``) writes its own ``<prefix>_*`` blocks and leaves the main ones alone, so a new profile is
one more entry in :data:`PROFILE_SETTINGS` (and, when it needs its own page sections, a prefix).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

SECTIONS = ("vision", "lm", "transfer", "regime", "lmregime", "depth", "wdtau")
# trunc_normal+mimetic is the paper's own setup: timm's ViT init everywhere, mimetic attention
VISION_INITS = ("default", "trunc_normal", "mimetic", "trunc_normal+mimetic", "structured", "nt", "nt+mimetic")
# the ViT regime the cpu and long profiles were measured in (the presets now use fixed sin-cos + mean)
LEARNED_CLS = dict(pos="learned", pool="cls")
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


def _regime_cells() -> list[tuple]:
    """The regime map's cells: (train size, patch, epochs, width, position table, readout, inits,
    evaluations). Where each init helps: the regime factors of a small-data ViT (position table,
    readout, tokens, data size, width) at the long profile's 49-token budget (1k images x 30 epochs =
    210 steps; 5k images get the same steps). Every factor is kept but the grid is trimmed: 5
    position x readout regimes with default/mimetic/structured, the whole init panel, 16 tokens, 5k
    images and width 128 in the best and the worst regime. 132 single-threaded runs; ``--jobs 2``
    an estimated 2-3 hours on a 2-core box (12 of the 16 steps took 2 h 10 min while other jobs
    shared the cores)."""
    best, worst = ("sincos", "mean"), ("learned", "cls")
    core = ("default", "mimetic", "structured")
    pair = ("default", "mimetic")
    panel_a = ("trunc_normal", "mimetic(vo=false)", "mimetic(qk=false)")
    panel_b = ("trunc_normal+mimetic", "nt", "nt+mimetic")
    # running order = priority: the 1k-image 49-token regimes first, then one row per other
    # factor in the best regime, then the rest of the panel and the worst regime's rows. The
    # two headline cells are evaluated 3 times (curves); the others once, at the end (a
    # 10k-image evaluation costs about a quarter of such a run)
    cells = [(1000, 4, 30, 64, *best, core, 3), (1000, 4, 30, 64, *worst, core, 3),
             (1000, 4, 30, 64, "learned", "mean", core, 1), (1000, 4, 30, 64, "sincos", "cls", core, 1),
             (1000, 7, 30, 64, *best, core, 1), (1000, 4, 30, 64, *best, panel_a, 1),
             (1000, 4, 30, 64, "sincos-learned", "mean", pair, 1), (1000, 7, 30, 128, *best, pair, 1),
             (5000, 4, 5.4, 64, *best, core, 1),  # 39 steps/epoch x 5.4 = the same 210 steps
             (1000, 4, 30, 64, *best, panel_b, 1),
             (1000, 7, 30, 64, *worst, core, 1), (1000, 7, 30, 128, *worst, pair, 1),
             (1000, 4, 30, 64, "sincos-learned", "cls", pair, 1), (5000, 4, 5.4, 64, *worst, core, 1),
             (1000, 4, 30, 64, *worst, panel_a, 1), (1000, 4, 30, 64, *worst, panel_b, 1)]
    return cells


def _gpu_cells() -> list[tuple]:
    """The regime map's best and worst regimes at ViT-Tiny size (width 192, depth 12, 3 heads) on one
    GPU: 5k Fashion-MNIST images x 100 epochs (3,900 steps), patch 4 and 2 (49 and 196 tokens),
    bf16. 36 runs as 12 steps (one per cell and init, 3 seeds each), so that ``--jobs 12`` runs
    them side by side on the GPU. Not yet measured on a GPU: see docs/results.md section 7c."""
    best, worst = ("sincos", "mean"), ("learned", "cls")
    return [(5000, patch, 100, 192, *regime, ("default", "mimetic", "structured"), 5)
            for patch in (4, 2) for regime in (best, worst)]


#: the LM map's inits: the mimetic halves and β₂ values of issue 20, and the LM trainers' inits
LM_CORE = ("default", "mimetic-language", "mimetic-language(vo=false)", "mimetic-language(qk=false)")
LM_PANEL = ("gpt2", "mimetic-language(beta_vo=0.4)", "mimetic-language(beta_vo=0)", "modded_nanogpt",
            "modded_nanogpt_vo", "conditioned", "olmo_llama_depth")


def _lm_cells() -> list[tuple]:
    """The language map's cells: (corpus, position scheme, inits), in running order. Every position
    scheme of the Llama preset (rotary, learned table N(0, 0.02²), fixed sin-cos scaled to the token
    embeddings' RMS, none) with the core inits (default, mimetic-language and its QK-only and
    VO-only halves); the whole panel with RoPE (the modern default) and the learned table (the
    GPT-2 regime); the core again on a second corpus (the King James Bible) with RoPE and learned.
    32 cells x 3 seeds = 96 single-threaded runs of ~70 s (1M tokens each)."""
    cells = [("shakespeare", pos, LM_CORE) for pos in ("rope", "learned", "sincos", "none")]
    cells += [("shakespeare", "rope", LM_PANEL), ("kjv", "rope", LM_CORE), ("shakespeare", "learned", LM_PANEL),
              ("kjv", "learned", LM_CORE)]
    return cells


#: every profile, declared: its vision settings (train size, patch, epochs, evaluations), its
#: language table and its width-transfer sweeps; ``prefix`` = it fills its own ``<prefix>_*`` blocks
#: of the page. A new profile is a new entry here (``initlab results --profile NAME`` offers it).
PROFILE_SETTINGS: dict[str, dict] = {
    "smoke": dict(
        vision=dict(model="vit-micro", width=16, depth=1, heads=2, batch=16, lr=3e-3, seeds=2,
                    inits=("default", "mimetic"),
                    settings=[(64, 7, 2, 2)]),  # (train size, patch, epochs, evaluations)
        lm=dict(model="gpt-mini", width=16, depth=1, heads=2, block=16, batch=8, steps=4, evals=2,
                eval_batches=1, lr=3e-3, seeds=2, inits=("default", "mimetic-language")),
        transfer=dict(widths=(16, 32), lrs="1e-3..1e-2:2", params=("mu",), seeds=1,
                      vision=dict(depth=1, heads=2, batch=16, steps=2, train_size=64, test_size=20),
                      lm=dict(depth=1, heads=2, block=16, batch=8, steps=2, eval_batches=1)),
    ),
    # Sized for the shared 2-core box: ~40 CPU-minutes without the 60k row (single-threaded
    # steps, OMP_NUM_THREADS=1; run the vision section and the rest as two processes).
    "cpu": dict(
        # vit-micro: width 64, depth 4, 2 heads; patch 7 -> 16 tokens, patch 4 -> 49 tokens
        vision=dict(model="vit-micro", width=64, depth=4, heads=2, batch=128, lr=1e-3, seeds=3,
                    model_options=LEARNED_CLS,
                    inits=VISION_INITS,
                    settings=[(1000, 7, 15, 3), (5000, 7, 3, 3), (60000, 7, 0.25, 3),
                              (1000, 4, 8, 2), (5000, 4, 3, 3), (60000, 4, 0.25, 3)]),
        lm=dict(model="gpt-mini", width=128, depth=4, heads=4, block=128, batch=16, steps=150, evals=3,
                eval_batches=8, lr=1e-3, seeds=3, inits=LM_INITS),
        # 1e-3..3e-2:4 (log-spaced) plus one step lower, written out so the cells' names match
        transfer=dict(widths=(64, 128, 256, 512), lrs="0.000321829,0.001,0.00310723,0.00965489,0.03",
                      params=("standard", "nt", "mu"),
                      seeds=3,
                      vision=dict(depth=2, heads=2, batch=64, steps=30, train_size=5000, test_size=1000,
                                  model_options=LEARNED_CLS),
                      lm=dict(depth=2, heads=4, block=64, batch=16, steps=30, eval_batches=4)),
    ),
    # The regime behind the mimetic paper's small-data claim, at CPU size: the cpu profile's
    # ViT trained until 1k images are fit many times over (100 epochs), with the same number
    # of steps (~700-780) for 5k and 60k images, so the rows differ in data only. Ten
    # evaluations per run make "epochs to default's final" a real curve read-out.
    # ~155 CPU-minutes (84 vision runs of ~90 s and 12 language runs of ~150 s, single-threaded);
    # `--jobs 2` runs it in about 80 minutes.
    "long": dict(
        prefix="long",
        vision=dict(model="vit-micro", width=64, depth=4, heads=2, batch=128, lr=1e-3, seeds=3,
                    model_options=LEARNED_CLS,
                    inits=VISION_INITS,
                    settings=[(1000, 7, 100, 10), (5000, 7, 20, 10), (1000, 4, 30, 6), (60000, 7, 1.5, 10)]),
        # the cpu profile's language table at 3.3x the tokens (1.0M), to see whether the early
        # mimetic gain survives past the bigram level
        lm=dict(model="gpt-mini", width=128, depth=4, heads=4, block=128, batch=16, steps=500, evals=5,
                eval_batches=8, lr=1e-3, seeds=3, inits=LM_INITS),
    ),
    "full": dict(
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
    ),
}
PROFILE_SETTINGS["regime"] = dict(
    prefix="regime", regime=dict(model="vit-micro", depth=4, heads=2, batch=128, lr=1e-3, seeds=3,
                                 base_width=64, cells=_regime_cells()))
PROFILE_SETTINGS["gpu"] = dict(
    prefix="gpu", regime=dict(model="vit-tiny", depth=12, heads=3, batch=128, lr=1e-3, seeds=3,
                              base_width=192, cells=_gpu_cells(), split_inits=True,
                              extra=("--device", "cuda", "--amp", "bf16")))
# The language map (issue 20): a Llama-style char model (RoPE/RMSNorm/SwiGLU; width 128, depth 2,
# 4 heads of 32), context 128, batch 16 = 2,048 tokens per step, 500 steps = 1.02M tokens,
# evaluated every 50 steps (150 steps = 307k tokens) on 16 fixed validation batches.
PROFILE_SETTINGS["lm-regime"] = dict(
    prefix="lmregime", lm_regime=dict(model="llama-mini", width=128, depth=2, heads=4, block=128, batch=16,
                                      steps=500, eval_every=50, eval_batches=16, lr=1e-3, seeds=3,
                                      cells=_lm_cells()))
# Depth transfer (issue 19): the width-transfer sweeps of the cpu profile turned 90 degrees, at width
# 64 across depths 2-16, 100 steps (the cpu profile's 30 steps left the lr optimum at the grid's edge
# for some members), a 7-point lr grid of factor 2 (one grid step = the 2x of "transfers"), every
# member of the family with a depth question (standard, mu, depth-mup, completep), 3 seeds; then
# the joint move: the lr tuned at (width 64, depth 2) used at (width 256, depth 16) under completep,
# whose base is (64, 2); and the char GPT's standard and completep again at 4x the steps (400),
# depths 2 and 16, to see whether its verdict depends on the budget. The ViT is the preset's regime
# (fixed 2-D sin-cos table, mean pooling, 16 tokens); the char GPT has a learned table.
PROFILE_SETTINGS["depth"] = dict(
    prefix="depth",
    depth=dict(width=64, depths=(2, 4, 8, 16), params=("standard", "mu", "depth-mup", "completep"), seeds=3,
               vision=dict(heads=2, batch=64, steps=100, train_size=5000, test_size=1000, lrs="2.5e-4..1.6e-2:7"),
               lm=dict(heads=4, block=64, batch=16, steps=100, eval_batches=4, lrs="5e-4..3.2e-2:7"),
               joint=dict(task="lm", width=256, depths=(2, 16), params=("completep",), lrs="5e-4..6.4e-2:8"),
               lm_long=dict(steps=400, depths=(2, 16), params=("standard", "completep"), lrs="2e-3..3.2e-2:5")))
# Weight decay as a timescale (issue 19 item 5; Wang & Aitchison, arXiv 2405.13698): the same ViT
# trained for the same 30 epochs on 1k and on 5k images (5x the steps), AdamW with the decay set by
# τ = 1/(lr·wd) counted in epochs (--wd-tau), 12 timescales of factor 2 (1 to 2,048 epochs; wd 0.05, the
# engine's default, is τ = 2,857 epochs at 1k images), 3 seeds: does the best τ stay
# put while the raw decay it implies moves 5.6x (7 -> 39 steps per epoch)? vit-micro width 64, depth 2,
# 16 tokens; 72 runs of 10 s (1k) and 50 s (5k).
PROFILE_SETTINGS["wd-tau"] = dict(
    prefix="wdtau", wd_tau=dict(model="vit-micro", width=64, depth=2, heads=2, patch=7, batch=128, lr=1e-3,
                                epochs=30, sizes=(1000, 5000), taus=tuple(2 ** k for k in range(12)), seeds=3))
PROFILES = tuple(PROFILE_SETTINGS)


def profile_settings(name: str) -> dict:
    """The declared settings of profile ``name`` (:class:`ConfigError` naming the choices)."""
    if name not in PROFILE_SETTINGS:
        raise ConfigError(f"unknown results profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILE_SETTINGS[name]


def _model_options(settings: dict) -> list[str]:
    """``--model-option K=V`` flags of a profile's vision settings (the cpu and long profiles were
    measured with the ViT's learned table and class token, before the presets moved to fixed
    sin-cos + mean pooling; pinning them keeps their tables reproducible)."""
    return [a for k, v in settings.get("model_options", {}).items() for a in ("--model-option", f"{k}={v}")]


def _tokens(patch: int, image: int = 28) -> int:
    return (image // patch) ** 2


def plan(profile: str, *, data_root: str | None = None, text: str | None = None,
         small_test_root: str | None = None) -> list[Step]:
    """The suite's steps for ``profile``, in running order (headline tables first).

    ``data_root``: Fashion-MNIST location (else the standard places); ``text``: the LM corpus
    (else Shakespeare); ``small_test_root``: where :func:`prepare_sweep_data` wrote the copy with
    a small test split for the vision sweeps (which never read the test metrics).
    """
    p = profile_settings(profile)
    pre = p["prefix"] + "-" if p.get("prefix") else ""
    if "regime" in p:
        return _regime_steps(p["prefix"], p["regime"], data_root)
    if "lm_regime" in p:
        return _lm_regime_steps(p["prefix"], p["lm_regime"])
    if "depth" in p:
        return _depth_steps(p["prefix"], p["depth"], text, small_test_root or data_root)
    if "wd_tau" in p:
        return _wd_tau_steps(p["prefix"], p["wd_tau"], data_root)
    steps: list[Step] = []
    v = p["vision"]
    root = ["--data-root", data_root] if data_root else []
    for size, patch, epochs, evals in v["settings"]:
        per_epoch = size // v["batch"]
        eval_every = max(1, int(per_epoch * epochs) // evals)
        args = ["--data", "fashion-mnist", *root, "--train-size", str(size), "--model", v["model"],
                "--width", str(v["width"]), "--depth", str(v["depth"]), "--heads", str(v["heads"]),
                "--patch-size", str(patch), *_model_options(v), "--inits", ",".join(v["inits"]),
                "--seeds", str(v["seeds"]),
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
                            "--model", "vit-micro", "--patch-size", "7", *_model_options(s)]
                else:
                    args = ["--task", "lm", *(["--data", text] if text else []), "--model", "gpt-mini",
                            "--block-size", str(s["block"]), "--eval-batches", str(s["eval_batches"])]
                args += ["--depth", str(s["depth"]), "--heads", str(s["heads"]), "--batch-size", str(s["batch"]),
                         "--steps", str(s["steps"]), "--eval-every", str(s["steps"]),
                         "--widths", widths, "--lrs", t["lrs"], "--param", param, "--seed", str(seed)]
                steps.append(Step(f"transfer-{task}-{param}-s{seed}", "transfer", "sweep", tuple(args),
                                  dict(task=task, param=param, seed=seed)))
    return sorted(steps, key=priority)


def _regime_steps(prefix: str, r: dict, data_root: str | None) -> list[Step]:
    """One ``initlab compare`` per (regime cell, init group), in the order of ``r["cells"]`` (train
    size, patch, epochs, width, position table, readout, inits, evaluations); with
    ``r["split_inits"]`` one per (cell, init), so that ``--jobs N`` runs the inits side by side."""
    steps = []
    root = ["--data-root", data_root] if data_root else []
    for size, patch, epochs, width, pos, pool, inits, evals in r["cells"]:
        total = int(size // r["batch"] * epochs)
        group = ("core" if "structured" in inits else "pair") if "default" in inits else \
            ("panel-" + ("a" if "trunc_normal" in inits else "b"))
        key = f"{prefix}-n{size}-p{patch}-w{width}-{pos}-{pool}"
        groups = [(f"{key}-{group}", inits)]
        if r.get("split_inits"):
            groups = [(f"{key}-{init}", (init,)) for init in inits]
        for step_key, names in groups:
            args = ["--data", "fashion-mnist", *root, "--train-size", str(size), "--model", r["model"],
                    "--width", str(width), "--depth", str(r["depth"]), "--heads", str(r["heads"]),
                    "--patch-size", str(patch), "--model-option", f"pos={pos}", "--model-option", f"pool={pool}",
                    "--inits", ",".join(names), "--seeds", str(r["seeds"]), "--epochs", f"{epochs:g}",
                    "--eval-every", str(max(1, total // evals)), "--batch-size", str(r["batch"]),
                    "--lr", f"{r['lr']:g}", "--base-width", str(r["base_width"]), *r.get("extra", ())]
            steps.append(Step(step_key, "regime", "compare", tuple(args),
                              dict(train_size=size, patch=patch, tokens=_tokens(patch), epochs=epochs,
                                   width=width, heads=r["heads"], pos=pos, pool=pool, steps=total)))
    return steps


def _lm_regime_steps(prefix: str, r: dict) -> list[Step]:
    """One ``initlab compare`` per (corpus, position scheme, init): ``--jobs N`` runs inits side by
    side, and a cut-short suite resumes at the init it stopped in."""
    steps = []
    for corpus, pos, inits in r["cells"]:
        for init in inits:
            key = f"{prefix}-{corpus}-{pos}-{init}"
            for ch in "()=;,.":
                key = key.replace(ch, "-" if ch in "(=;," else "")
            args = ["--task", "lm", "--data", corpus, "--model", r["model"], "--width", str(r["width"]),
                    "--depth", str(r["depth"]), "--heads", str(r["heads"]), "--model-option", f"pos={pos}",
                    "--block-size", str(r["block"]), "--batch-size", str(r["batch"]), "--steps", str(r["steps"]),
                    "--eval-every", str(r["eval_every"]), "--eval-batches", str(r["eval_batches"]),
                    "--lr", f"{r['lr']:g}", "--inits", init, "--seeds", str(r["seeds"])]
            steps.append(Step(key.rstrip("-"), "lmregime", "compare", tuple(args),
                              dict(corpus=corpus, pos=pos, init=init, model=r["model"], width=r["width"],
                                   depth=r["depth"], heads=r["heads"], steps=r["steps"],
                                   tokens_per_step=r["batch"] * r["block"])))
    return steps


def sweep_test_size(settings: dict) -> int | None:
    """The small test split a profile's vision sweeps evaluate on (None: the full one)."""
    for key in ("transfer", "depth"):
        if key in settings:
            return settings[key]["vision"].get("test_size")
    return None


def _depth_steps(prefix: str, d: dict, text: str | None, data_root: str | None) -> list[Step]:
    """One ``initlab sweep --depths`` per (task, param, seed), the language sweeps first (the
    cheaper), then the joint move's sweeps: at the wide width, the shallowest and the deepest
    depth, with the base (width, depth) of the depth sweeps, so that the lr tuned there is
    read off at the wide, deep model."""
    steps = []
    depths = ",".join(str(x) for x in d["depths"])

    def task_args(task: str, steps: int | None = None) -> list[str]:
        s = d[task]
        n = str(steps or s["steps"])  # one evaluation, at the end
        if task == "vision":
            return ["--data", "fashion-mnist", *(["--data-root", data_root] if data_root else []),
                    "--train-size", str(s["train_size"]), "--model", "vit-micro", "--patch-size", "7",
                    "--heads", str(s["heads"]), "--batch-size", str(s["batch"]), "--steps", n, "--eval-every", n]
        return ["--task", "lm", *(["--data", text] if text else []), "--model", "gpt-mini",
                "--block-size", str(s["block"]), "--eval-batches", str(s["eval_batches"]), "--heads",
                str(s["heads"]), "--batch-size", str(s["batch"]), "--steps", n, "--eval-every", n]

    for task in ("lm", "vision"):
        for param in d["params"]:
            for seed in range(d["seeds"]):
                args = [*task_args(task), "--widths", str(d["width"]), "--depths", depths, "--lrs",
                        d[task]["lrs"], "--param", param, "--seed", str(seed)]
                steps.append(Step(f"{prefix}-{task}-{param}-s{seed}", "depth", "sweep", tuple(args),
                                  dict(task=task, param=param, seed=seed, kind="depth", width=d["width"])))
    longer = d.get("lm_long")  # the char GPT again at a longer budget: does its verdict hold?
    if longer:
        for param in longer["params"]:
            for seed in range(d["seeds"]):
                args = [*task_args("lm", longer["steps"]), "--widths", str(d["width"]),
                        "--depths", ",".join(str(x) for x in longer["depths"]), "--lrs", longer["lrs"],
                        "--param", param, "--seed", str(seed)]
                steps.append(Step(f"{prefix}-lm{longer['steps']}-{param}-s{seed}", "depth", "sweep", tuple(args),
                                  dict(task="lm", param=param, seed=seed, kind="depth", width=d["width"],
                                       budget=longer["steps"])))
    j = d.get("joint")
    if j:
        task = j["task"]
        for param in j["params"]:
            for seed in range(d["seeds"]):
                # the depth sweeps' grid, or one that contains it (the wide, deep model's optimum
                # may lie above it: the language grid gets one more step up)
                args = [*task_args(task), "--widths", str(j["width"]),
                        "--depths", ",".join(str(x) for x in j["depths"]), "--lrs", j.get("lrs", d[task]["lrs"]),
                        "--param", param, "--base-width", str(d["width"]), "--base-depth", str(min(d["depths"])),
                        "--seed", str(seed)]
                steps.append(Step(f"{prefix}-joint-{task}-{param}-s{seed}", "depth", "sweep", tuple(args),
                                  dict(task=task, param=param, seed=seed, kind="joint", width=j["width"],
                                       base_width=d["width"], base_depth=min(d["depths"]))))
    return steps


def _wd_tau_steps(prefix: str, w: dict, data_root: str | None) -> list[Step]:
    """One ``initlab train`` per (train size, τ, seed), seed-major so that a cut-short suite has
    every cell at one seed first."""
    steps = []
    root = ["--data-root", data_root] if data_root else []
    for seed in range(w["seeds"]):
        for size in w["sizes"]:
            total = int(size // w["batch"] * w["epochs"])
            for tau in w["taus"]:
                args = ["--data", "fashion-mnist", *root, "--train-size", str(size), "--model", w["model"],
                        "--width", str(w["width"]), "--depth", str(w["depth"]), "--heads", str(w["heads"]),
                        "--patch-size", str(w["patch"]), "--batch-size", str(w["batch"]), "--epochs",
                        f"{w['epochs']:g}", "--eval-every", str(total), "--lr", f"{w['lr']:g}",
                        "--wd-tau", f"{tau:g}", "--wd-tau-unit", "epochs", "--seed", str(seed)]
                steps.append(Step(f"{prefix}-n{size}-tau{tau:g}-s{seed}", "wdtau", "train", tuple(args),
                                  dict(train_size=size, tau=tau, seed=seed, lr=w["lr"], epochs=w["epochs"],
                                       batch=w["batch"])))
    return steps
