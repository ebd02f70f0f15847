"""initlab train/compare/sweep against a fake engine: flags -> TrainConfig, files, errors, resume.

The fake stands in for ``initlab.train.run`` (monkeypatched), so these tests check the command
layer alone and take milliseconds; tests/test_cli_e2e.py runs the real engine.
"""
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest

import initlab.train as engine
from initlab.cli import build_parser, main
from initlab.errors import ConfigError
from initlab.experiments.configure import build_config
from initlab.experiments.records import read_csv
from initlab.train.config import TrainConfig


class FakeEngine:
    """Deterministic stand-in: accuracy depends on init and seed, loss on (width, lr)."""

    def __init__(self):
        self.calls: list[TrainConfig] = []
        self.plans: list = []

    def __call__(self, config, *, plan=None, progress=True, command=None):
        assert isinstance(config, TrainConfig)
        self.calls.append(config)
        self.plans.append(plan)
        epochs = int(config.epochs or 2)
        base = 0.6 + (0.1 if "mimetic" in config.init else 0.0) + 0.01 * config.seed
        # optimum lr 1e-2 * 64 / width: one octave lower per width doubling
        width = config.width or 64
        loss = (math.log2(config.lr) - math.log2(1e-2 * 64 / width)) ** 2 + 0.5
        history = [dict(step=10 * e, epoch=float(e), train_loss=loss + 1 / e, lr=config.lr,
                        test_acc=base * e / epochs, test_loss=loss + 0.1 / e,
                        val_loss=loss, val_bpc=loss / math.log(2)) for e in range(1, epochs + 1)]
        if config.out:
            Path(config.out).mkdir(parents=True, exist_ok=True)
            (Path(config.out) / "config.json").write_text(json.dumps(config.to_dict()))
        status = "diverged" if config.lr >= 1.0 else "completed"
        return types.SimpleNamespace(history=history, final=history[-1], best=max(history, key=lambda r: r["test_acc"]),
                                     wall_time_s=0.5 * epochs, run_dir=config.out, status=status)


@pytest.fixture
def fake(monkeypatch):
    f = FakeEngine()
    monkeypatch.setattr(engine, "run", f, raising=False)
    import initlab.experiments.checks as checks
    monkeypatch.setattr(checks, "check_data_available", lambda config: None)
    return f


def parse(argv):
    args = build_parser().parse_args(argv)
    return args


def test_flags_map_to_train_config(fake):
    args = parse(["train", "--data", "fashion-mnist", "--train-size", "5000", "--model", "vit-micro",
                  "--width", "96", "--depth", "3", "--heads", "3", "--patch-size", "4", "--lr", "3e-3",
                  "--weight-decay", "0.1", "--batch-size", "64", "--warmup", "0.1", "--label-smoothing", "0.1",
                  "--param", "nt", "--base-width", "64", "--epochs", "2", "--seed", "7", "--device", "cpu",
                  "--init", "nt+mimetic", "--model-option", "pos=sincos", "--model-option", "fused_qkv=false",
                  "--init-option", "alpha_qk=0.7", "--clip", "none", "--no-augment", "--checkpoint-every", "50"])
    config, _ = build_config(args)
    assert (config.width, config.depth, config.heads, config.patch_size) == (96, 3, 3, 4)
    assert (config.lr, config.weight_decay, config.batch_size, config.warmup) == (3e-3, 0.1, 64, 0.1)
    assert (config.param, config.base_width, config.epochs, config.seed) == ("nt", 64, 2.0, 7)
    assert config.init == "nt+mimetic" and config.init_options == {"alpha_qk": 0.7}
    assert config.model_options == {"pos": "sincos", "fused_qkv": False}
    assert config.clip is None and config.augment is False and config.checkpoint_every == 50
    assert config.train_size == 5000 and config.label_smoothing == 0.1 and config.device == "cpu"
    # unset flags keep TrainConfig defaults
    assert config.optimizer == "adamw" and config.betas == (0.9, 0.999)


def test_lm_task_defaults_and_file_override(fake, tmp_path):
    config, _ = build_config(parse(["train", "--task", "lm"]))
    assert (config.data, config.model) == ("shakespeare", "gpt-mini")
    toml = tmp_path / "c.toml"
    toml.write_text('lr = 0.002\nwidth = 128\nheads = 4\nepochs = 3\ninits = "default,mimetic"\n'
                    'seeds = 2\n[model_options]\npool = "mean"\n')
    args = parse(["compare", "--config", str(toml), "--lr", "5e-4", "--model-option", "pos=sincos"])
    config, extra = build_config(args, extra_keys=("inits", "seeds"))
    assert config.lr == 5e-4  # flag beats file
    assert (config.width, config.heads, config.epochs) == (128, 4, 3)  # file beats defaults
    assert config.model_options == {"pool": "mean", "pos": "sincos"}  # dicts merge
    assert extra == {"inits": "default,mimetic", "seeds": 2}
    # --steps on the command line replaces the file's epochs instead of clashing with it
    config, _ = build_config(parse(["compare", "--config", str(toml), "--steps", "20"]), extra_keys=("inits", "seeds"))
    assert (config.steps, config.epochs) == (20, None)
    yml = tmp_path / "c.yaml"
    yml.write_text("task: lm\nblock-size: 64\nwidth: 96\nheads: 3\n")
    config, _ = build_config(parse(["train", "--config", str(yml)]))
    assert (config.task, config.block_size, config.width, config.model) == ("lm", 64, 96, "gpt-mini")


@pytest.mark.parametrize("argv, words", [
    (["compare", "--inits", "default,bogus"], "'bogus'"),
    (["train", "--init", "mimetic+nope"], "'nope'"),
    (["train", "--init", "mimetic+"], "empty name around '+'"),
    (["train", "--width", "100", "--heads", "3"], "not divisible by heads 3"),
    (["train", "--patch-size", "5"], "patch size 5 does not divide"),
    (["sweep", "--widths", "64,96", "--lrs", "1e-3..1e-2"], "bad lr range"),
    (["sweep", "--widths", "64,96", "--lrs", "1e-3..1e-2:4", "--heads", "5"], "not divisible by heads 5"),
    (["sweep", "--lrs", "1e-3..1e-2:4"], "sweep needs --widths"),
    (["train", "--param", "weird"], "parametrization"),
    (["compare", "--inits", "default,nt", "--param", "mu"], "implies parametrization 'nt'"),
    (["train", "--model", "gpt-mini"], "does not fit task"),
    (["train", "--config", "/nonexistent.toml"], "not found"),
    (["compare", "--seeds", "x"], "bad --seeds"),
    (["train", "--task", "lm", "--data", "/no/such/text.txt"], "not found"),
])
def test_user_mistakes_are_one_line_exit_2(fake, capsys, argv, words, monkeypatch):
    if "--data" in argv:  # the real data check for this one
        monkeypatch.undo()
        monkeypatch.setattr(engine, "run", fake, raising=False)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert words in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not fake.calls  # nothing trained


def test_unknown_init_lists_valid_names(fake, capsys):
    assert main(["compare", "--inits", "mimetc"]) == 2
    err = capsys.readouterr().err
    assert "unknown init" in err and "mimetc" in err
    assert "mimetic" in err and "default" in err and "trunc_normal" in err  # the valid names are listed


def test_bad_flags_exit_2_via_argparse(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--epochs", "many"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "--epochs" in err


def test_bad_config_file_keys(fake, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = 0.01\nlearning_rate = 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "unknown key 'learning_rate'" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("lr = = 1\n")
    assert main(["train", "--config", str(broken)]) == 2
    assert "cannot parse config file" in capsys.readouterr().err


def test_compare_inits_with_options_holding_commas_run_every_init(fake, tmp_path, capsys):
    """--inits is split by the spec grammar (parentheses kept), and each init's checked plan is the
    one the engine receives (config -> plan -> engine)."""
    out = tmp_path / "cmp"
    code = main(["compare", "--inits", "default,trunc_normal(std=0.01,truncate=3)", "--epochs", "1",
                 "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert [c.init for c in fake.calls] == ["default", "trunc_normal(std=0.01,truncate=3)"]
    assert [p.spec for p in fake.plans] == [c.init for c in fake.calls]
    step = fake.plans[1].steps[0]
    assert step.scheme.name == "trunc_normal" and (step.options["std"], step.options["truncate"]) == (0.01, 3)
    table = (out / "table.txt").read_text()
    assert "trunc_normal(std=0.01,truncate=3)" in table and "default" in table
    # a config file's inits string goes through the same splitter
    toml = tmp_path / "c.toml"
    toml.write_text('inits = "xavier,trunc_normal(std=0.02,truncate=2)"\nepochs = 1\n')
    fake.calls.clear()
    assert main(["compare", "--config", str(toml), "--out", str(tmp_path / "cmp2"), "--quiet"]) == 0
    assert [c.init for c in fake.calls] == ["xavier", "trunc_normal(std=0.02,truncate=2)"]


def test_compare_writes_table_csv_json_png(fake, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--inits", "default,mimetic", "--seeds", "3", "--epochs", "2", "--out", str(out),
                 "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert [(c.init, c.seed) for c in fake.calls] == [(i, s) for i in ("default", "mimetic") for s in (0, 1, 2)]
    # mean ± std over seeds 0,1,2 of final acc 0.6+0.01*seed -> 61.00 ± 1.00 (default), 71.00 ± 1.00
    assert "61.00 ± 1.00" in printed and "71.00 ± 1.00" in printed
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["init"]: r for r in summary["rows"]}
    assert math.isclose(rows["mimetic"]["final_test_acc_mean"], 0.71)
    assert math.isclose(rows["default"]["final_test_acc_std"], 0.01)
    assert rows["default"]["seeds"] == 3 and rows["default"]["epochs"] == 2
    metrics = read_csv(out / "metrics.csv")
    assert len(metrics) == 6 * 2 and {"init", "seed", "step", "epoch", "test_acc"} <= set(metrics[0])
    assert len(json.loads((out / "metrics.json").read_text())) == 6
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "summary.csv").exists() and (out / "table.txt").exists()
    assert (out / "runs" / "mimetic-s2" / "result.json").exists()
    cmd = (out / "command.txt").read_text()
    assert cmd.startswith("initlab compare") and "--inits default,mimetic" in cmd
    # same command again: every run is finished, nothing retrains
    n = len(fake.calls)
    assert main(["compare", "--inits", "default,mimetic", "--seeds", "3", "--epochs", "2", "--out", str(out),
                 "--quiet"]) == 0
    assert len(fake.calls) == n


def test_compare_lm_reports_bpc(fake, tmp_path, capsys):
    out = tmp_path / "lm"
    assert main(["compare", "--task", "lm", "--inits", "default,mimetic", "--seeds", "0,5", "--steps", "20",
                 "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "val bpc" in printed
    assert all(c.task == "lm" and c.model == "gpt-mini" for c in fake.calls)
    assert [c.seed for c in fake.calls] == [0, 5, 0, 5]
    assert json.loads((out / "summary.json").read_text())["metric"] == "val_bpc"


def test_train_writes_run_dir_and_resume_reads_it(fake, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--init", "mimetic", "--epochs", "2", "--lr", "2e-3", "--out", str(out), "--quiet"]) == 0
    assert "completed: final test_acc" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())
    assert saved["init"] == "mimetic" and saved["lr"] == 2e-3
    assert (out / "command.txt").read_text().startswith("initlab train")
    assert (out / "result.json").exists()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    resumed = fake.calls[-1]
    assert resumed.resume is True and resumed.init == "mimetic" and resumed.lr == 2e-3
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_train_body_runs_without_the_cli_and_leaves_its_args_alone(fake, tmp_path):
    """experiments.invoke.train is `initlab train` without the CLI: the config it resumes comes
    from the run directory, the plan it checked goes to the engine, and args are not changed."""
    from initlab.experiments.invoke import train

    out = tmp_path / "run"
    record, config, run_dir, main_rank = train(parse(["train", "--init", "nt+mimetic", "--param", "nt",
                                                      "--epochs", "2", "--out", str(out), "--quiet"]))
    assert record.status == "completed" and run_dir == str(out) and main_rank
    assert fake.plans[-1].spec == "nt+mimetic" and fake.plans[-1].parametrization.s == 0.0
    args = parse(["train", "--resume", str(out), "--lr", "5e-3", "--quiet"])
    before = dict(vars(args))
    _, resumed, _, _ = train(args)
    assert vars(args) == before  # args.resume is read, never rewritten
    assert resumed.resume is True and resumed.init == "nt+mimetic" and resumed.lr == 5e-3
    assert fake.calls[-1] == resumed


def test_sweep_resumes_without_rerunning_finished_cells(fake, tmp_path, capsys):
    out = tmp_path / "sw"
    argv = ["sweep", "--widths", "64,128", "--lrs", "1.25e-3..1e-2:4", "--epochs", "1", "--out", str(out), "--quiet"]
    # first pass: only width 64
    assert main(argv[:2] + ["64"] + argv[3:]) == 0
    assert len(fake.calls) == 4
    assert main(argv) == 0  # width 128 added: only its 4 cells run
    assert len(fake.calls) == 8 and all(c.width == 128 for c in fake.calls[4:])
    printed = capsys.readouterr().out
    assert "4 cells run now, 4 finished earlier" in printed
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 8 and {r["status"] for r in rows} == {"completed"}
    analysis = json.loads((out / "analysis.json").read_text())
    # the fake's optimum is 1e-2 at width 64 and 5e-3 at 128: one octave down per doubling
    assert analysis["optimal_lr"] == {"64": 1e-2, "128": 5e-3}
    assert math.isclose(analysis["log2_lr_shift_per_doubling"][0]["shift"], -1.0, abs_tol=1e-9)
    assert math.isclose(analysis["transfer"]["loss"], 1.0, rel_tol=1e-9)  # one octave off: (1)^2
    assert (out / "transfer.png").read_bytes()[:4] == b"\x89PNG"
    # a third identical run trains nothing
    assert main(argv) == 0
    assert len(fake.calls) == 8
    # the same out with a different base config is refused, not mixed in
    assert main(argv + ["--weight-decay", "0.3"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_sweep_diverged_cells_count_as_finished(fake, tmp_path):
    out = tmp_path / "div"
    argv = ["sweep", "--widths", "64", "--lrs", "1e-2,1.0", "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    rows = {r["lr"]: r for r in read_csv(out / "sweep.csv")}
    assert rows["1"]["status"] == "diverged" and float(rows["1"]["value"]) == math.inf
    assert main(argv) == 0 and len(fake.calls) == 2


def test_error_exit_code_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "initlab", "sweep", "--widths", "64", "--lrs", "1e-3..x:3",
                           "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "bad lr range" in proc.stderr and "Traceback" not in proc.stderr


def test_width_flag_is_not_an_abbreviation_of_widths(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--widths", "64,128", "--lrs", "1e-3", "--width", "16"])
    assert info.value.code == 2 and "unrecognized arguments: --width 16" in capsys.readouterr().err


def test_sweep_under_mu_defaults_base_width_to_smallest_width(fake, tmp_path, capsys):
    assert main(["sweep", "--widths", "128,64", "--lrs", "1e-3", "--param", "mu", "--epochs", "1",
                 "--out", str(tmp_path / "mu"), "--quiet"]) == 0
    assert {c.base_width for c in fake.calls} == {64} and [c.width for c in fake.calls] == [64, 128]
    assert "using the smallest width 64" in capsys.readouterr().out


def test_sweep_lm_minimizes_val_loss(fake, tmp_path, capsys):
    out = tmp_path / "lm-sweep"
    assert main(["sweep", "--task", "lm", "--widths", "64,128", "--lrs", "2.5e-3..1e-2:3", "--steps", "5",
                 "--out", str(out), "--quiet"]) == 0
    assert all(c.task == "lm" and c.model == "gpt-mini" for c in fake.calls)
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["metric"] == "val_loss"
    assert analysis["optimal_lr"] == {"64": 1e-2, "128": 5e-3}
    assert "val_loss at lr*" in capsys.readouterr().out


def test_interrupted_run_stops_the_experiment(fake, tmp_path, capsys, monkeypatch):
    def interrupted(config, **kwargs):
        result = FakeEngine()(config, **kwargs)
        fake.calls.append(config)
        result.status = "interrupted"
        return result

    monkeypatch.setattr(engine, "run", interrupted)
    out = tmp_path / "int"
    assert main(["compare", "--inits", "default,mimetic", "--epochs", "1", "--out", str(out), "--quiet"]) == 130
    assert len(fake.calls) == 1  # the second init never started
    assert "rerun the same command to continue" in capsys.readouterr().err


def test_a_config_field_is_declared_once(fake):
    """Each TrainConfig field is one `setting`: its flag on every experiment command, its help and
    its effect on the result (what a finished run's identity and a resumed checkpoint compare)."""
    from dataclasses import fields

    from initlab.experiments.runner import identity
    from initlab.train.checkpoint import config_differences
    from initlab.train.config import ON_RESUME, RUNTIME

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    dests = {a.dest for a in sub.choices["train"]._actions}
    declared = [f.name for f in fields(TrainConfig) if f.metadata.get("cli")]
    assert set(declared) <= dests and set(declared) | {"resume"} == {f.name for f in fields(TrainConfig)}
    # a field that had no flag before the flags were generated from the declarations
    config, _ = build_config(parse(["train", "--eps", "1e-6", "--device", "cpu"]))
    assert config.eps == 1e-6
    # identity: every field but the RUNTIME ones; a resumed run may change RUNTIME and ON_RESUME ones
    base = TrainConfig()
    changed = {"out": "x", "device": "cpu", "compile": True, "checkpoint_every": 5, "resume": True,
               "data_root": "/d", "eval_every": 3, "eval_batches": 2, "steps": 9, "lr": 0.5}
    for key, value in changed.items():
        other = base.replace(**{key: value})
        same_identity = identity(other) == identity(base)
        may_resume = not config_differences(base.to_dict(), other.to_dict())
        assert same_identity == (key in TrainConfig.fields_with(RUNTIME)), key
        assert may_resume == (key in TrainConfig.fields_with(RUNTIME, ON_RESUME)), key
