"""`initlab results --profile smoke` end to end on synthetic Fashion-MNIST-shaped IDX files and a
small text file: every section's table is written with the command that produced it, reruns skip
finished steps, and the prose around the generated blocks survives a regeneration."""
from __future__ import annotations

import json
import math

import pytest

from initlab.cli import main
from initlab.data.synthetic import random_images, write_idx_dataset
from initlab.errors import ConfigError
from initlab.results import first_reach, mean_std, plan, run_suite, vision_rows


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("results")
    for split, n, seed in (("train", 96, 1), ("test", 40, 2)):
        images, labels = random_images(n, 1, 28, 10, seed=seed)
        write_idx_dataset(tmp / "fm", split, images, labels)
    (tmp / "text.txt").write_text("To be, or not to be, that is the question. " * 60)
    doc, img = tmp / "docs" / "results.md", tmp / "docs" / "img" / "results"
    argv = ["results", "--profile", "smoke", "--out", str(tmp / "out"), "--data-root", str(tmp / "fm"),
            "--text", str(tmp / "text.txt"), "--doc", str(doc), "--img-dir", str(img)]
    assert main(argv) == 0
    return tmp, doc, img, argv


def test_report_has_every_table_with_its_command(suite):
    tmp, doc, img, _ = suite
    text = doc.read_text()
    steps = plan("smoke", data_root=str(tmp / "fm"), text=str(tmp / "text.txt"))
    assert {s.section for s in steps} == {"vision", "lm", "transfer"}
    for step in steps:
        assert (tmp / "out" / step.key / "step.json").exists()
        # the exact command (its arguments in order) stands in the page
        assert f"initlab {step.command} " in text and " ".join(step.args[:4]) in text
    assert "*not run yet*" not in text
    assert "| `default` |" in text and "| `mimetic` |" in text and "| `mimetic-language` |" in text
    assert "| mu |" in text
    # mean ± std over the two seeds
    assert " ± " in text
    for name in ("vision-datasize.png", "lm-curves.png", "transfer-vision.png", "transfer-lm.png"):
        assert (img / name).stat().st_size > 1000
        assert f"img/results/{name}" in text


def test_rerun_skips_finished_steps_and_keeps_prose(suite, capsys):
    tmp, doc, _, argv = suite
    doc.write_text(doc.read_text().replace("## 2. Language", "## 2. Language\n\nOUR READING STAYS."))
    before = json.loads((tmp / "out" / "lm" / "step.json").read_text())
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("done earlier, skipped") == len(plan("smoke"))
    assert json.loads((tmp / "out" / "lm" / "step.json").read_text()) == before
    assert "OUR READING STAYS." in doc.read_text()
    assert doc.read_text().count("<!-- results:vision -->") == 1


def test_epochs_to_reach_and_vision_rows():
    hist = [{"epoch": 1.0, "test_acc": 0.5}, {"epoch": 2.0, "test_acc": 0.7}, {"epoch": 3.0, "test_acc": 0.6}]
    assert first_reach(hist, "test_acc", 0.65) == 2.0
    assert math.isnan(first_reach(hist, "test_acc", 0.9))
    runs = [{"labels": {"init": "default", "seed": s}, "history": hist, "final": {"test_acc": a},
             "wall_time_s": 1.0, "status": "completed"} for s, a in ((0, 0.6), (1, 0.8))]
    runs.append({"labels": {"init": "mimetic", "seed": 0}, "history": [{"epoch": 1.0, "test_acc": 0.75}],
                 "final": {"test_acc": 0.75}, "wall_time_s": 1.0, "status": "completed"})
    rows = {r["init"]: r for r in vision_rows(runs)}
    assert rows["default"]["final"] == pytest.approx((0.7, mean_std([0.6, 0.8])[1]))
    assert rows["mimetic"]["delta"] == pytest.approx(0.05)
    assert rows["mimetic"]["reach"][0] == 1.0  # reaches default's mean final (0.7) at epoch 1
    assert rows["default"]["reached"] == 2


def test_cpu_and_full_profiles_are_declared_and_unknown_names_refused(tmp_path):
    cpu = plan("cpu")
    keys = [s.key for s in cpu]
    assert "vision-n1000-p7" in keys and "vision-n1000-p4" in keys and "vision-n60000-p7" in keys
    vision = [s for s in cpu if s.section == "vision"]
    assert all("3" == s.args[s.args.index("--seeds") + 1] for s in vision)
    sweep = [s for s in cpu if s.command == "sweep"]
    assert {s.args[s.args.index("--param") + 1] for s in sweep} == {"standard", "nt", "mu"}
    assert all(s.args[s.args.index("--widths") + 1] == "64,128,256,512" for s in sweep)
    # the grid: 1k/5k/60k images at 16 and 49 tokens, and several seeds per sweep
    assert {(s.labels["train_size"], s.labels["tokens"]) for s in vision} == {
        (n, t) for n in (1000, 5000, 60000) for t in (16, 49)}
    assert {s.labels["seed"] for s in sweep} == {0, 1, 2}
    long = plan("long")
    assert {s.section for s in long} == {"vision", "lm"} and all(s.key.startswith("long-") for s in long)
    # the long rows train the same number of steps (within 12%) at every data size
    n_steps = [s.labels["train_size"] // 128 * s.labels["epochs"] for s in long
               if s.section == "vision" and s.labels["patch"] == 7]
    assert max(n_steps) / min(n_steps) < 1.12 and min(n_steps) >= 700
    assert len(plan("full")) > len(cpu) - 1
    with pytest.raises(ConfigError):
        plan("huge")
    with pytest.raises(ConfigError):
        run_suite("smoke", "/nonexistent-never-made", only=["speed"], run=False, doc=tmp_path / "r.md", img_dir=tmp_path)


def test_parallel_jobs_run_steps_as_processes_and_report_wall_clock(suite, tmp_path):
    """--jobs 2: each step is its own `python -m initlab` process (its output kept), the report
    is the same shape, and the invocation's wall clock is recorded and quoted."""
    tmp, _, _, _ = suite
    doc = tmp_path / "results.md"
    assert main(["results", "--profile", "smoke", "--out", str(tmp_path / "out"), "--only", "vision,lm",
                 "--data-root", str(tmp / "fm"), "--text", str(tmp / "text.txt"), "--doc", str(doc),
                 "--img-dir", str(tmp_path / "img"), "--jobs", "2"]) == 0
    for key in ("vision-n64-p7", "lm"):
        assert json.loads((tmp_path / "out" / key / "step.json").read_text())["rc"] == 0
        assert (tmp_path / "out" / key / "output.txt").exists()
    sessions = json.loads((tmp_path / "out" / "sessions.json").read_text())
    assert sessions[-1]["jobs"] == 2 and sorted(sessions[-1]["steps"]) == ["lm", "vision-n64-p7"]
    text = doc.read_text()
    assert "with --jobs 2" in text and "| `mimetic-language` |" in text and "| `mimetic` |" in text
    with pytest.raises(ConfigError, match="jobs"):
        run_suite("smoke", tmp_path / "out", jobs=0, doc=tmp_path / "r.md", img_dir=tmp_path)


def test_long_profile_writes_only_its_own_blocks(suite, tmp_path):
    """The long profile's tables go into long_* blocks; the main profile's blocks are untouched."""
    tmp, doc, _, _ = suite
    page = tmp_path / "results.md"
    page.write_text(doc.read_text())
    before = page.read_text()
    run_suite("long", tmp / "out", doc=page, img_dir=tmp_path / "img", run=False)
    after = page.read_text()
    for block in ("long_meta", "long_vision", "long_lm"):
        assert f"<!-- results:{block} -->" in after
    assert after.startswith(before.rstrip())  # nothing above was rewritten
    assert after.count("*not run yet*") == 5  # its four vision rows and its lm table have not run here


def test_transfer_summary_reports_the_spread_over_seeds(tmp_path):
    """Cells are averaged over seeds for the headline analysis, and each seed's sweep is also
    analysed alone so the fit exponent and the loss lost come with a std."""
    from initlab.results import transfer_summary
    lrs = [1e-3, 1e-2, 1e-1]
    tables = [  # seed 0: the optimum stays at 1e-2; seed 1: at width 128 it drops to 1e-3
        {64: [2.0, 1.0, 2.0], 128: [2.0, 1.0, 2.0]},
        {64: [2.0, 1.0, 2.0], 128: [0.5, 1.5, 3.0]},
    ]
    dirs = []
    for seed, t in enumerate(tables):
        d = tmp_path / f"s{seed}"
        d.mkdir()
        (d / "analysis.json").write_text(json.dumps({
            "metric": "train_loss", "widths": [64, 128], "lrs": lrs,
            "table": {str(w): {f"{lr:g}": v for lr, v in zip(lrs, vals)} for w, vals in t.items()}}))
        dirs.append(d)
    res = transfer_summary(dirs)
    assert res["seeds"] == 2
    slope_mean, slope_std = res["slope"]
    assert slope_mean == pytest.approx(-math.log2(10) / 2)  # 0 and -log2(10) per doubling
    assert slope_std == pytest.approx(math.log2(10) / math.sqrt(2))
    assert res["lost"][0] == pytest.approx(0.5)  # seed 0 loses 0, seed 1 loses 1.5 - 0.5
    # the mean table: width 128 is (1.25, 1.25, 2.5); its first minimum is the edge lr 1e-3
    assert res["analysis"].optimum[128] == pytest.approx(1e-3)


def test_regime_profile_keeps_every_factor_with_three_seeds():
    from initlab.models.layers import POS_KINDS
    steps = plan("regime")
    labels = [s.labels for s in steps]
    assert {l["pos"] for l in labels} == set(POS_KINDS)
    assert {l["pool"] for l in labels} == {"cls", "mean"}
    assert {l["tokens"] for l in labels} == {16, 49}
    assert {l["train_size"] for l in labels} == {1000, 5000}
    assert {l["width"] for l in labels} == {64, 128}
    assert len({l["steps"] for l in labels}) == 1  # data size and tokens change nothing else
    inits = set()
    for s in steps:
        a = list(s.args)
        assert a[a.index("--seeds") + 1] == "3"
        inits |= set(a[a.index("--inits") + 1].split(","))
    assert inits == {"default", "trunc_normal", "mimetic", "mimetic(vo=false)", "mimetic(qk=false)",
                     "trunc_normal+mimetic", "structured", "nt", "nt+mimetic"}
    gpu = plan("gpu")
    assert all("--device" in s.args and "bf16" in s.args for s in gpu)
    assert {s.labels["tokens"] for s in gpu} == {49, 196} and len(gpu) == 12


def test_regime_block_pairs_seeds_and_says_when_a_gap_is_noise(tmp_path):
    from initlab.results import regime_block, regime_rows
    from initlab.results.tables import Page

    step = plan("regime")[0]
    runs = tmp_path / step.key / "runs"
    accs = {"default": (0.60, 0.62, 0.64), "mimetic": (0.65, 0.67, 0.69), "structured": (0.58, 0.66, 0.60)}
    for init, values in accs.items():
        for seed, acc in enumerate(values):
            d = runs / f"{init}-s{seed}"
            d.mkdir(parents=True)
            (d / "result.json").write_text(json.dumps({
                "labels": {"init": init, "seed": seed}, "status": "completed",
                "final": {"test_acc": acc}, "history": [{"step": 210, "epoch": 30, "test_acc": acc}]}))
    rows = {r["init"]: r for r in regime_rows(tmp_path, [step])}
    assert rows["mimetic"]["delta"][0] == pytest.approx(5.0) and rows["mimetic"]["delta"][1] == pytest.approx(0.0)
    assert rows["structured"]["delta"][0] == pytest.approx(-2 / 3)  # paired: -2, +4, -4
    assert rows["default"]["ratio"] > 0.5  # fixed sin-cos positions are as large as the content
    text = regime_block(Page("regime", tmp_path, tmp_path, tmp_path / "img", "regime"), [step])
    assert "| `mimetic` | 3 | 67.00 ± 2.00 | 5.00 ± 0.00 | gain |" in text
    assert "within noise" in text and step.display(tmp_path) in text
    from initlab.results.statistics import noise_word
    assert noise_word((4.0, 2.2), 3) == "within noise"  # t = 3.15 < 4.30: not significant at 3 seeds
    assert noise_word((4.1, 1.6), 3) == "gain" and noise_word((-3.0, 0.5), 3) == "loss"
    assert (tmp_path / "img" / "regime-map.png").stat().st_size > 1000


def test_lm_regime_profile_crosses_every_position_scheme_with_the_core_inits():
    from initlab.models.llama import LLAMA_POS
    from initlab.results.profiles import LM_CORE, LM_PANEL
    steps = plan("lm-regime")
    cells = {(s.labels["corpus"], s.labels["pos"], s.labels["init"]) for s in steps}
    assert {(c, p, i) for c, p, i in cells if c == "shakespeare" and i in LM_CORE} == \
        {("shakespeare", p, i) for p in LLAMA_POS for i in LM_CORE}
    assert {("shakespeare", p, i) for p in ("rope", "learned") for i in LM_PANEL} <= cells
    assert {("kjv", p, i) for p in ("rope", "learned") for i in LM_CORE} <= cells
    assert len({s.key for s in steps}) == len(steps)
    for s in steps:  # 3 seeds, >= 1M tokens each, one init per step (resumable per init)
        a = list(s.args)
        assert a[a.index("--seeds") + 1] == "3" and "," not in a[a.index("--inits") + 1]
        assert s.labels["steps"] * s.labels["tokens_per_step"] >= 1_000_000
        assert f"pos={s.labels['pos']}" in a and a[a.index("--data") + 1] == s.labels["corpus"]


def test_lm_regime_block_reads_early_and_final_bpc_paired_by_seed(tmp_path):
    from initlab.results import lm_regime_block, lm_regime_rows
    from initlab.results.tables import Page

    steps = [s for s in plan("lm-regime") if s.labels["corpus"] == "shakespeare" and s.labels["pos"] == "learned"
             and s.labels["init"] in ("default", "mimetic-language", "modded_nanogpt")]
    # bpc per (init, seed) at steps 50..500; mimetic leads early by 0.1 and ends 0.05 behind
    curves = {"default": lambda t, s: 4.0 - t / 250 + 0.01 * s,
              "mimetic-language": lambda t, s: 4.0 - t / 250 + 0.01 * s - (0.1 if t <= 150 else -0.05),
              "modded_nanogpt": lambda t, s: 4.0 - t / 250 + 0.03 * s - 0.2}
    for step in steps:
        init = step.labels["init"]
        for seed in range(3):
            d = tmp_path / step.key / "runs" / f"{init}-s{seed}"
            d.mkdir(parents=True)
            hist = [{"step": t, "val_bpc": curves[init](t, seed)} for t in range(50, 501, 50)]
            (d / "result.json").write_text(json.dumps({
                "labels": {"init": init, "seed": seed}, "status": "completed", "final": hist[-1], "history": hist}))
    rows = {r["init"]: r for r in lm_regime_rows(tmp_path, steps)}
    assert rows["default"]["early_step"] == 150 and rows["default"]["early_tokens"] == 150 * 2048
    assert rows["mimetic-language"]["d_early"] == pytest.approx((-0.1, 0.0))
    assert rows["mimetic-language"]["d_final"] == pytest.approx((0.05, 0.0))
    # modded_nanogpt: Δ = 0.02·seed - 0.2; reaches default's mean final bpc (2.01) at steps 450,
    # 500, 500 (the first evaluation at or below it)
    assert rows["modded_nanogpt"]["d_final"] == pytest.approx((-0.18, 0.02))
    assert rows["modded_nanogpt"]["reach"][0] == pytest.approx((450 + 500 + 500) / 3)
    assert rows["mimetic-language"]["reached"] == 0
    # the Llama's learned table and token embeddings are both N(0, 0.02²) under default; modded's
    # token embedding std 0.005 makes the table 4x the content
    assert rows["default"]["ratio"] == pytest.approx(1.0, rel=0.05)
    assert rows["modded_nanogpt"]["ratio"] == pytest.approx(4.0, rel=0.05)
    text = lm_regime_block(Page("lm-regime", tmp_path, tmp_path, tmp_path / "img", "lmregime"), steps)
    assert f"| shakespeare | learned | {rows['mimetic-language']['ratio']:.2f} | `mimetic-language` | 3 |" in text
    assert "| -0.100 ± 0.000 |" in text and "| 0.050 ± 0.000 | loss | not reached (0/3) |" in text
    assert "| -0.180 ± 0.020 | gain | 483 ± 29 |" in text
    assert steps[0].display(tmp_path) in text
    assert (tmp_path / "img" / "lmregime-lm-map.png").stat().st_size > 1000


def _write_sweep(d, sizes, lrs, values, axis="depth", metric="val_loss"):
    d.mkdir(parents=True, exist_ok=True)
    (d / "analysis.json").write_text(json.dumps({
        "metric": metric, "axis": axis, "widths": sizes, "lrs": lrs,
        "table": {str(n): {f"{lr:g}": v for lr, v in zip(lrs, vals)} for n, vals in zip(sizes, values)}}))


def test_depth_profile_sweeps_every_member_across_depth_with_three_seeds():
    steps = plan("depth")
    longer = [s for s in steps if s.labels.get("budget")]
    assert {s.labels["param"] for s in longer} == {"standard", "completep"} and len(longer) == 6
    assert all(s.args[s.args.index("--steps") + 1] == "400" for s in longer)
    steps = [s for s in steps if not s.labels.get("budget")]
    sweeps = [s for s in steps if s.labels["kind"] == "depth"]
    assert {s.labels["param"] for s in sweeps} == {"standard", "mu", "depth-mup", "completep"}
    assert {s.labels["task"] for s in sweeps} == {"lm", "vision"}
    assert {s.labels["seed"] for s in sweeps} == {0, 1, 2}
    for s in sweeps:
        args = list(s.args)
        assert args[args.index("--depths") + 1] == "2,4,8,16" and s.command == "sweep"
    joint = [s for s in steps if s.labels["kind"] == "joint"]
    assert len(joint) == 3
    for s in joint:  # the joint sweep's base is the depth sweeps' (width, shallowest depth)
        args = list(s.args)
        assert args[args.index("--base-width") + 1] == "64" and args[args.index("--base-depth") + 1] == "2"
        lm = next(t for t in sweeps if t.labels["task"] == "lm")  # a grid containing the tuned one
        from initlab.experiments.grid import parse_lrs
        tuned = parse_lrs(list(lm.args)[list(lm.args).index("--lrs") + 1])
        wide = parse_lrs(args[args.index("--lrs") + 1])
        assert all(any(math.isclose(a, b, rel_tol=1e-9) for b in wide) for a in tuned)


def test_depth_block_reads_drift_in_grid_steps_and_the_joint_move(tmp_path):
    """Per seed: the optimum's drift from the shallowest to the deepest model in steps of the lr
    grid, the loss lost there in % of its own best; the joint move reads the lr tuned at the
    shallow base off the wide, deep sweep of the same seed."""
    from initlab.results.page import render_blocks
    from initlab.results.statistics import grid_steps, joint_summary, transfer_summary
    assert grid_steps(1e-3, 4e-3, [1e-3, 2e-3, 4e-3, 8e-3]) == pytest.approx(2)
    lrs = [1e-3, 2e-3, 4e-3, 8e-3]
    steps = plan("depth")
    out = tmp_path / "out"
    for s in steps:
        seed = s.labels["seed"]
        if s.labels.get("budget"):  # the 400-step sweeps: optimum at 8e-3 (the joint must not read them)
            _write_sweep(out / s.key, [2, 16], lrs, [[3.0, 2.0, 1.5, 1.0]] * 2)
        elif s.labels["kind"] == "depth":
            # completep: the optimum stays at 2e-3; standard: it moves down one step per doubling
            if s.labels["param"] == "completep":
                vals = [[2.0, 1.0, 2.0, 3.0]] * 4
            elif s.labels["param"] == "standard":
                vals = [[3.0, 2.5, 2.0, 1.0 + seed / 10], [2.5, 2.0, 1.0, 2.0], [2.0, 1.0, 2.0, 3.0],
                        [1.0, 2.0, 3.0, 4.0]]
            else:
                continue
            _write_sweep(out / s.key, [2, 4, 8, 16], lrs, vals)
        elif seed < 2:  # the joint move: at (256, 16) the best lr is 4e-3, one step above
            _write_sweep(out / s.key, [2, 16], lrs, [[2.0, 1.0, 2.0, 3.0], [2.0, 1.1, 1.0, 3.0]])
    short = [s for s in steps if s.labels["kind"] == "depth" and not s.labels.get("budget")]
    cp = transfer_summary([out / s.key for s in short if s.labels["task"] == "lm" and s.labels["param"] == "completep"])
    assert cp["drift"] == (0.0, 0.0) and cp["lost"] == (0.0, 0.0)
    st = transfer_summary([out / s.key for s in short if s.labels["task"] == "lm" and s.labels["param"] == "standard"])
    assert st["analysis"].axis == "depth"
    assert st["drift"][0] == pytest.approx(-3)  # 8e-3 at depth 2 -> 1e-3 at depth 16
    assert st["lost_pct"][0] == pytest.approx(300)  # 4.0 at 8e-3 vs its best 1.0
    joint = [s for s in steps if s.labels["kind"] == "joint"]
    tuned = [s for s in steps if s.labels["kind"] == "depth" and s.labels["task"] == "lm"
             and s.labels["param"] == "completep" and not s.labels.get("budget")]
    res = joint_summary([out / s.key for s in tuned], [out / s.key for s in joint], tuned_at=2, target=16)
    assert res["seeds"] == 2  # seed 2's joint sweep has not run
    assert res["loss"][0] == pytest.approx(0.1) and res["loss_pct"][0] == pytest.approx(10)
    assert res["steps"][0] == pytest.approx(1)
    blocks = render_blocks("depth", steps, out, doc_dir=tmp_path, img_dir=tmp_path / "img")
    text = blocks["depth_transfer"]
    assert "*not run yet*" in text  # mu and depth-mup have no sweeps here
    assert "`completep` | 3 | 2: 0.002, 4: 0.002, 8: 0.002, 16: 0.002" in text
    # standard on the seed-mean table: 8e-3 at depth 2, 1e-3 at depth 16, 3 steps down, and
    # depth 16 at 8e-3 (4.0) against its best (1.0): 3 nats, 300%
    assert "| -3; -3.00 ± 0.00 |" in text and "+3.000 (300.0%)" in text
    assert "| `completep` | (256, 16) | 2 | 0.002, 0.002 | 1.1000 ± 0.0000 | 1.0000 ± 0.0000 | 0.004, 0.004 | 0.100 ± 0.000 | 10.0 ± 0.0 |" in text
    assert (tmp_path / "img" / "depth-lm.png").exists()
    assert "initlab sweep --task lm" in text and "--base-depth 2" in text


def test_wd_tau_block_finds_the_best_timescale_per_data_size(tmp_path):
    """The raw decay each τ implies comes from the run's own steps per epoch (7 at 1k images of
    batch 128, 39 at 5k), so one τ grid shows both: where the best τ sits and how far the raw
    decay it implies moved."""
    from initlab.parametrization import weight_decay_from_timescale
    from initlab.results.page import render_blocks
    from initlab.results.statistics import wd_tau_rows
    steps = plan("wd-tau")
    assert {s.command for s in steps} == {"train"} and {s.labels["seed"] for s in steps} == {0, 1, 2}
    out = tmp_path / "out"
    for s in steps:
        size, tau, seed = s.labels["train_size"], s.labels["tau"], s.labels["seed"]
        if seed == 2:
            continue  # not finished yet
        per_epoch = size // 128
        loss = abs(math.log2(tau) - 3) + 0.1 * seed + (0.05 if size == 5000 else 0)  # best at τ = 8
        (out / s.key).mkdir(parents=True)
        (out / s.key / "result.json").write_text(json.dumps({
            "status": "completed", "wall_time_s": 1.0,
            "final": {"step": per_epoch * 30, "epoch": 30.0, "test_loss": loss, "test_acc": 0.5}}))
    rows = wd_tau_rows(out, steps)
    best = {r["train_size"]: r for r in rows if r["best"]}
    assert best[1000]["tau"] == best[5000]["tau"] == 8
    assert best[1000]["wd"] == pytest.approx(weight_decay_from_timescale(8, lr=1e-3, steps_per_epoch=7))
    assert best[1000]["wd"] / best[5000]["wd"] == pytest.approx(39 / 7)
    assert best[1000]["best_tau_by_seed"] == {0: 8, 1: 8} and best[1000]["seeds"] == 2
    text = render_blocks("wd-tau", steps, out, doc_dir=tmp_path, img_dir=tmp_path / "img")["wdtau_map"]
    assert f"{len(steps) // 3 * 2}/{len(steps)} runs finished" in text
    assert "- 1,000 images: best τ 8 epochs (wd 17.9); per seed s0: τ 8, s1: τ 8" in text
    assert (tmp_path / "img" / "wdtau-wd-tau.png").exists()


def test_an_interrupted_train_step_stops_the_suite_and_is_not_marked_done(tmp_path, monkeypatch):
    """In-process `initlab train` steps (the wd-tau profile) return their record instead of
    raising: Ctrl-C or SIGTERM inside one must stop the suite, not write step.json and go on."""
    import initlab.experiments.invoke as invoke
    import initlab.results.run as suite
    from initlab.errors import Interrupted
    from initlab.experiments.records import RunRecord
    from initlab.results.profiles import Step
    step = Step("wdtau-x", "wdtau", "train", ("--data", "fashion-mnist", "--steps", "2"),
                dict(train_size=1000, tau=1, seed=0, lr=1e-3, epochs=1, batch=8))
    outcome = {"status": "interrupted"}

    def fake_train(args, progress=None):
        record = RunRecord(labels={}, history=[], final={}, best={}, wall_time_s=0.0, status=outcome["status"],
                           extra={"signal": 15})
        return record, None, None, True
    monkeypatch.setattr(invoke, "train", fake_train)
    assert suite._run_in_process(step, tmp_path)[1] == 143
    outcome["status"] = "diverged"
    assert suite._run_in_process(step, tmp_path)[1] == 1  # a result, as for compare and sweep
    outcome["status"] = "interrupted"
    monkeypatch.setattr(suite, "plan", lambda profile, **kw: [step])
    with pytest.raises(Interrupted):
        suite.run_suite("wd-tau", tmp_path / "out", doc=tmp_path / "r.md", img_dir=tmp_path / "img")
    assert not (tmp_path / "out" / "wdtau-x" / "step.json").exists()
