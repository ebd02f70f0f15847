"""FSDP2 (fully_shard, DTensor parameters) on 2 CPU processes with gloo.

Every scheme, mimetic_, parametrize_, param_groups and probe on a sharded model give what they give
on the same model unsharded with the same generator (compared as full tensors); the meta ->
fully_shard -> to_empty -> init flow equals initializing the unsharded model.
"""
from __future__ import annotations

import copy

import pytest
import torch
from test_train_support import spawn_gloo

pytestmark = pytest.mark.usefixtures("one_thread")

_VIT = dict(width=32, depth=2, heads=2)
MODELS = {  # (preset, options, the schemes tried on it: None = every registered scheme)
    "vit": ("vit-micro", _VIT, None),
    "gpt": ("gpt-micro", dict(width=32, depth=2, heads=2, vocab_size=64, block_size=16),
            ("default", "gpt2", "torchtitan", "mu", "mimetic")),
    "vit-post": ("vit-micro", dict(_VIT, norm_position="post"), ("deepnorm",)),
    "vit-rezero": ("vit-micro", dict(_VIT, branch_gain="rezero"), ("rezero",)),
    "vit-skipinit": ("vit-micro", dict(_VIT, branch_gain="skipinit"), ("skipinit",)),
    "vit-ls": ("vit-micro", dict(_VIT, branch_gain="layerscale"), ("layerscale",)),
}


def _full(t):
    return t.detach().full_tensor() if hasattr(t, "full_tensor") else t.detach()


def _max_diff(ref, sharded) -> float:
    worst = 0.0
    for (n, a), (m, b) in zip(ref.named_parameters(), sharded.named_parameters()):
        assert n == m
        worst = max(worst, float((a.detach() - _full(b)).abs().max()))
    return worst


def _shard(m, mesh):
    """``m`` under fully_shard: each block, then the root."""
    from torch.distributed.fsdp import fully_shard
    for b in m.blocks:
        fully_shard(b, mesh=mesh)
    fully_shard(m, mesh=mesh)
    return m


def _sharded_pair(key: str, mesh):
    """MODELS[key] built with the global seed 0, and a sharded deep copy of it."""
    from initlab.models import create_model
    name, kw, _ = MODELS[key]
    torch.manual_seed(0)
    ref = create_model(name, **kw)
    return ref, _shard(copy.deepcopy(ref), mesh)


def _shard_rank(rank: int, world: int, report: dict) -> None:
    report.update(schemes={}, refused={})
    import initlab
    from initlab.errors import InitlabError
    from initlab.models import create_model
    from initlab.schemes import init_, schemes
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (world,))
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    report["all_schemes"] = [info.name for info in schemes()]
    for key, (_, _, only) in MODELS.items():
        ref, sh = _sharded_pair(key, mesh)  # one pair per model: each scheme starts where the last left both
        for name in only or report["all_schemes"]:
            try:
                init_(ref, name, generator=gen())
            except InitlabError as exc:  # the scheme does not apply to this model
                report["refused"][f"{key}:{name}"] = str(exc)[:120]
                continue
            init_(sh, name, generator=gen())
            report["schemes"][f"{key}:{name}"] = dict(
                diff=_max_diff(ref, sh), head=[ref.head_multiplier, sh.head_multiplier],
                scale=[ref.blocks[0].attn.scale, sh.blocks[0].attn.scale],
                skip=[ref.blocks[0].skip_scale, sh.blocks[0].skip_scale])
    ref, sh = _sharded_pair("gpt", mesh)
    initlab.mimetic_(ref, generator=gen())
    initlab.mimetic_(sh, generator=gen())
    report["mimetic"] = _max_diff(ref, sh)
    initlab.parametrize_(ref, "mu", generator=gen())
    initlab.parametrize_(sh, "mu", generator=gen())
    report["parametrize_mu"] = _max_diff(ref, sh)
    report["head_multiplier"] = [ref.head_multiplier, sh.head_multiplier]
    g_ref = initlab.param_groups(ref, "mu", lr=1e-3)
    g_sh = initlab.param_groups(sh, "mu", lr=1e-3)
    report["groups_equal"] = [(g["role"], g["lr"], g["param_names"]) for g in g_ref] == \
                             [(g["role"], g["lr"], g["param_names"]) for g in g_sh]
    report["groups_hold_dtensors"] = all(hasattr(p, "full_tensor") for g in g_sh for p in g["params"])
    batch = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    p_ref, p_sh = initlab.probe_model(ref, batch), initlab.probe_model(sh, batch)
    report["probe_rows"] = max(abs(a[k] - b[k]) for a, b in zip(p_ref.blocks, p_sh.blocks)
                               for k in a if isinstance(a[k], float) and a[k] == a[k])
    report["probe_grads"] = max(abs(a["norm"] - b["norm"]) / max(a["norm"], 1e-12)
                                for a, b in zip(p_ref.grads, p_sh.grads))
    # meta -> fully_shard -> to_empty -> init, against the unsharded model
    name, kw, _ = MODELS["gpt"]
    with torch.device("meta"):
        meta = create_model(name, **kw)
    _shard(meta, mesh)
    meta.to_empty(device="cpu")
    initlab.parametrize_(meta, "mu", generator=gen())
    torch.manual_seed(0)
    plain = create_model(name, **kw)
    initlab.parametrize_(plain, "mu", generator=gen())
    report["meta_flow"] = _max_diff(plain, meta)


def test_fsdp2_sharded_init_equals_unsharded(tmp_path):
    pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 needs torch >= 2.6")
    if not hasattr(torch.distributed.fsdp, "fully_shard"):
        pytest.skip("this torch has no torch.distributed.fsdp.fully_shard")
    for r in spawn_gloo(_shard_rank, tmp_path / "res"):
        names = {s.split(":")[1] for s in r["schemes"]}
        assert names == set(r["all_schemes"]), (set(r["all_schemes"]) - names, r["refused"])
        for key, res in r["schemes"].items():
            assert res["diff"] == 0.0, (key, res)
            assert res["head"][0] == res["head"][1] and res["scale"][0] == res["scale"][1], key
            assert res["skip"][0] == res["skip"][1], key
        assert r["mimetic"] == 0.0 and r["parametrize_mu"] == 0.0 and r["meta_flow"] == 0.0
        assert r["head_multiplier"][0] == r["head_multiplier"][1] != 1.0
        assert r["groups_equal"] and r["groups_hold_dtensors"]
        assert r["probe_rows"] < 1e-5 and r["probe_grads"] < 1e-4


def _train_rank(rank: int, world: int, report: dict, cfg_dict: dict) -> None:
    from initlab.train import TrainConfig, run
    for mode in ("ddp", "fsdp"):
        cfg = TrainConfig.from_dict({**cfg_dict, "fsdp": mode == "fsdp",
                                     "out": f"{cfg_dict['out']}-{mode}"})
        result = run(cfg, progress=False)
        report[mode] = dict(status=result.status, history=result.history)


def test_train_fsdp_matches_ddp(tmp_path):
    from test_train_support import vision_config, write_fake_fashion
    root = write_fake_fashion(tmp_path / "data", n_train=256, n_test=64)
    cfg = vision_config(root, tmp_path / "run", width=16, batch_size=32, steps=6, eval_every=3,
                        checkpoint_every=3, optimizer="sgd", lr=0.1, init="mu")
    for r in spawn_gloo(_train_rank, tmp_path / "res", cfg.to_dict()):
        assert r["ddp"]["status"] == r["fsdp"]["status"] == "completed"
        for a, b in zip(r["ddp"]["history"], r["fsdp"]["history"]):
            for key in ("train_loss", "test_loss", "test_acc"):
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    ck = torch.load(tmp_path / "run-fsdp" / "checkpoint.pt", weights_only=False)
    assert not any(hasattr(v, "full_tensor") for v in ck["model"].values())  # gathered, full


_CHAINS = ("xavier", "nt+mimetic", "gpt2+mimetic-qk", "mu")


def _layerwise_rank(rank: int, world: int, report: dict) -> None:
    """init_ chains with a seed on a sharded GPT: the same weights as unsharded, and never more
    than one block's tensors gathered at a time (counted through full_tensors)."""
    import contextlib

    import initlab.roles.dtensor as dt
    from initlab.schemes import InitPlan
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (world,))
    live, peak = [0], [0]
    original = dt.full_tensors

    @contextlib.contextmanager
    def counting(rmap, **kwargs):
        n = len({id(i.param) for i in rmap if dt.is_dtensor(i.param)})
        live[0] += n
        peak[0] = max(peak[0], live[0])
        try:
            with original(rmap, **kwargs) as full:
                yield full
        finally:
            live[0] -= n
    dt.full_tensors = counting
    try:
        report["diff"], report["peak"] = {}, {}
        for spec in _CHAINS:
            ref, sh = _sharded_pair("gpt", mesh)
            plan = InitPlan.build(spec)
            plan.initialize_(ref, seed=11)
            peak[0] = 0
            plan.initialize_(sh, seed=11)
            report["diff"][spec] = _max_diff(ref, sh)
            report["peak"][spec] = peak[0]
        # "mu" sets the tied head's multiplier: each part of the map must answer "tied?" as the
        # whole map does, also when the adapter does not say (tied_head=None: judged by roles)
        from dataclasses import replace

        from initlab.roles import roles

        def undecided(m):
            rm = roles(m)
            return replace(rm, controls=replace(rm.controls, tied_head=None))
        ref, sh = _sharded_pair("gpt", mesh)
        plan = InitPlan.build("mu")
        plan.initialize_(ref, seed=11, role_map=undecided(ref))
        plan.initialize_(sh, seed=11, role_map=undecided(sh))
        report["mu_undecided"] = [_max_diff(ref, sh), ref.head_multiplier, sh.head_multiplier]
        report["block_params"] = max(len(list(b.parameters())) for b in ref.blocks)
        report["all_params"] = len(list(ref.parameters()))
    finally:
        dt.full_tensors = original


def test_sharded_init_chains_equal_unsharded_and_gather_one_block_at_a_time(tmp_path):
    """InitPlan.apply_ on a fully_shard-ed model visits it layer by layer (peak memory per rank:
    one layer's full tensors, not the whole model's) and draws the same numbers as unsharded."""
    pytest.importorskip("torch.distributed.fsdp", reason="FSDP2 needs torch >= 2.6")
    if not hasattr(torch.distributed.fsdp, "fully_shard"):
        pytest.skip("this torch has no torch.distributed.fsdp.fully_shard")
    for r in spawn_gloo(_layerwise_rank, tmp_path / "res"):
        assert set(r["diff"]) == set(_CHAINS)
        for spec in _CHAINS:
            assert r["diff"][spec] == 0.0, (spec, r["diff"])
            assert 0 < r["peak"][spec] <= r["block_params"] < r["all_params"], (spec, r)
        diff, head_ref, head_sh = r["mu_undecided"]
        assert diff == 0.0 and head_ref == head_sh != 1.0, r["mu_undecided"]
