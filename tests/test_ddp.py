"""Data parallelism on gloo (2 CPU processes), batch sharding, and meta-device initialization."""
from __future__ import annotations


import pytest
import torch

from initlab.errors import TrainingError
from initlab.models import create_model
from initlab.train import materialize_, read_metrics, run
from initlab.train.batches import TextStream, VisionStream
from initlab.train.distributed import DistInfo, check_same_init
from test_train_support import spawn_gloo, vision_config, write_fake_fashion

pytestmark = pytest.mark.usefixtures("one_thread")


def _ddp_rank(rank: int, world: int, report: dict, cfg_dict: dict, result_path: str) -> None:
    info = DistInfo(rank=rank, local_rank=rank, world_size=world)
    # the checksum check: same seed passes, a rank-dependent init is caught on every rank
    torch.manual_seed(0)
    check_same_init(create_model("vit-micro", width=16, depth=1), info, torch.device("cpu"))
    torch.manual_seed(rank)
    try:
        check_same_init(create_model("vit-micro", width=16, depth=1), info, torch.device("cpu"))
        report["mismatch_caught"] = False
    except TrainingError as exc:
        report["mismatch_caught"] = "ranks initialized different weights" in str(exc)
    from initlab.train import TrainConfig
    result = run(TrainConfig.from_dict(cfg_dict), progress=False)
    report.update(status=result.status, history=result.history,
                  checksum=result.info["init_checksum"], world=result.info["world_size"])
    torch.save(result.model.state_dict(), f"{result_path}.rank{rank}.pt")


def test_two_process_gloo_equals_one_process(tmp_path):
    root = write_fake_fashion(tmp_path / "data", n_train=256, n_test=64)
    # SGD: Adam would amplify float-order noise in gradients that are exactly 0 in theory (the key
    # bias: softmax ignores it) into +-lr steps, hiding what this test checks
    cfg = vision_config(root, tmp_path / "ddp", width=16, batch_size=32, steps=10, eval_every=5,
                        checkpoint_every=5, optimizer="sgd", lr=0.1)
    reports = spawn_gloo(_ddp_rank, tmp_path / "res", cfg.to_dict(), str(tmp_path / "res"))
    for r in reports:
        assert r["mismatch_caught"] is True
        assert r["status"] == "completed" and r["world"] == 2
    # identical init on both ranks, identical weights after training (DDP keeps them in sync)
    assert reports[0]["checksum"] == reports[1]["checksum"]
    w0, w1 = (torch.load(tmp_path / f"res.rank{r}.pt") for r in range(2))
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # each rank trained on a disjoint half of every global batch: the result equals one process
    # with the whole batch (up to float summation order)
    single = run(cfg.replace(out=str(tmp_path / "single")), progress=False)
    assert reports[0]["checksum"] == single.info["init_checksum"]
    for a, b in zip(reports[0]["history"], single.history):
        for key in ("train_loss", "test_loss", "test_acc"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(w0[k], v, rtol=1e-4, atol=1e-5)
    # metrics and checkpoints come from rank 0 only: one row per evaluation, no duplicates
    rows = read_metrics(tmp_path / "ddp" / "metrics.csv")
    assert [r["step"] for r in rows] == [5, 10]
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=False)["world_size"] == 2


def test_vision_shards_are_disjoint_halves_of_the_global_batch(tmp_path):
    from initlab.data import VisionBatches, load_vision
    root = write_fake_fashion(tmp_path / "data", n_train=128, n_test=16)
    data = load_vision("fashion-mnist", root=root)
    make = lambda r, w: VisionStream(VisionBatches(data, batch_size=16, augment=True, seed=5,
                                                   drop_last=True, rank=r, world_size=w))
    for step in (0, 9):  # second epoch too
        x, y = make(0, 1).batch(step)
        x0, y0 = make(0, 2).batch(step)
        x1, y1 = make(1, 2).batch(step)
        assert torch.equal(x0, x[0::2]) and torch.equal(x1, x[1::2])
        assert torch.equal(y0, y[0::2]) and torch.equal(y1, y[1::2])


def test_text_shards_are_disjoint_halves_of_the_global_batch():
    tokens = torch.arange(1000) % 97
    make = lambda r, w: TextStream(tokens, batch_size=8, block_size=16, seed=1, rank=r, world_size=w)
    for step in (0, 3):
        x, y = make(0, 1).batch(step)
        assert torch.equal(y[:, :-1], x[:, 1:])  # targets are the next tokens
        assert torch.equal(make(0, 2).batch(step)[0], x[0::2])
        assert torch.equal(make(1, 2).batch(step)[0], x[1::2])
    assert not torch.equal(make(0, 1).batch(0)[0], make(0, 1).batch(1)[0])


# ---------------------------------------------------------------------------------------------
# meta device -> to_empty -> init (the FSDP2 / torchtitan flow)

@pytest.mark.parametrize("name, kwargs", [
    ("vit-micro", dict(width=64, depth=2, heads=2)),
    ("vit-micro", dict(width=64, depth=2, heads=2, pos="sincos", pool="mean")),
    ("gpt-micro", dict(width=64, depth=2, heads=2, vocab_size=50, block_size=32)),
])
def test_meta_device_materialization_equals_direct_construction(name, kwargs):
    torch.manual_seed(11)
    direct = create_model(name, **kwargs)
    with torch.device("meta"):
        meta = create_model(name, **kwargs)
    assert all(p.is_meta for p in meta.parameters())
    torch.manual_seed(11)
    materialize_(meta, "cpu")
    sd, sm = direct.state_dict(), meta.state_dict()
    for k in sd:
        assert torch.equal(sd[k], sm[k]), k
    for (n, a), (_, b) in zip(direct.named_buffers(), meta.named_buffers()):
        assert torch.equal(a, b), n


def test_meta_device_then_mimetic_init_has_the_right_statistics():
    import initlab
    with torch.device("meta"):
        model = create_model("vit-micro", width=64, depth=2, heads=2, pos="learned", pool="cls")
        preset = create_model("vit-micro", width=64, depth=2, heads=2)  # fixed sin-cos + mean pooling
    g = torch.Generator().manual_seed(0)
    materialize_(model, "cpu", init="mimetic", generator=g)
    materialize_(preset, "cpu", init="mimetic", generator=torch.Generator().manual_seed(0))
    assert torch.equal(preset.pos_embed[0], preset.sincos_table())  # the fixed table is recomputed
    assert all(torch.isfinite(p).all() for p in model.parameters())
    rmap = initlab.role_map(model)
    # module defaults: Linear U(-1/sqrt(fan_in), 1/sqrt(fan_in)) has std 1/sqrt(3 fan_in)
    w_in = rmap.by_role("mlp_in", "weight")[0].param
    assert w_in.std().item() == pytest.approx(1 / (3 * 64) ** 0.5, rel=0.05)
    # learned tables N(0, 0.02^2)
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.15)
    # norms at 1 / 0
    assert torch.equal(model.norm.weight, torch.ones(64)) and torch.equal(model.norm.bias, torch.zeros(64))
    # mimetic: W_q W_k^T of each head is positively aligned with the identity (beta_1 I term)
    for layer in rmap.attention:
        for h in range(layer.n_heads):
            qk = layer.qk_product(h)
            assert torch.trace(qk) / qk.shape[0] > 0.1
