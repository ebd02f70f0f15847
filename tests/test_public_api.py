"""The public names of the README work in any order of first use."""
import subprocess
import sys

import pytest

SNIPPETS = [
    "import initlab; assert callable(initlab.schemes); initlab.schemes.init_; assert initlab.schemes()",
    "import initlab.schemes, initlab; assert initlab.schemes() and initlab.init_",
    "import initlab; initlab.probe.probe; assert callable(initlab.probe)",
    "import initlab; assert callable(initlab.roles); initlab.roles.Role",
    "import initlab; initlab.Parametrization; initlab.parametrize_; initlab.param_groups; initlab.mimetic_",
]


@pytest.mark.parametrize("code", SNIPPETS)
def test_public_names_in_a_fresh_interpreter(code):
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_non_zero_rank_writes_nothing(monkeypatch, tmp_path):
    """Under torchrun only rank 0 writes config.json/result.json (the engine guards its own files)."""
    from types import SimpleNamespace

    from initlab.experiments import runner
    from initlab.train import TrainConfig

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(runner, "engine_run", lambda: (lambda config, **kw: "result"))
    monkeypatch.setattr(runner.RunRecord, "from_result",
                        classmethod(lambda cls, result, labels: SimpleNamespace(extra={}, result=result)))
    cfg = TrainConfig(out=str(tmp_path / "run"))
    record, reused = runner.run_cell(cfg, {"init": "default", "seed": 0}, reuse=False)
    assert record.result == "result" and not reused
    assert list((tmp_path / "run").iterdir()) == []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(runner, "write_run_files", lambda record, run_dir: (run_dir / "result.json").write_text("{}"))
    runner.run_cell(cfg, {"init": "default", "seed": 0}, reuse=False)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".initlab.lock", "config.json", "result.json"]
