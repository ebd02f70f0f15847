"""initlab.probe: measured quantities are the right ones, hooks leave no trace, writers work, and
the measured gradient RMS per group agrees with the theory's backward kernel."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import initlab
from initlab import theory as th
from initlab.errors import ConfigError, RoleMapError
from initlab.models import GPT, ViT
from initlab.parametrization import parametrize_
from initlab.probe import probe


def _vit(width=64, depth=2, seed=0, **kw):
    m = ViT(width=width, depth=depth, heads=max(1, width // 32), bias=False, ln_affine=False, pool="mean", **kw)
    parametrize_(m, "nt", generator=torch.Generator().manual_seed(seed))
    return m


def _images(b=3, seed=1):
    return torch.randn(b, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _no_hooks(model):
    return all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)
               for m in model.modules())


def test_hooks_leave_no_trace():
    a = _vit(seed=3)
    b = copy.deepcopy(a)
    x = _images()
    marker = torch.full_like(a.head.weight, 0.5)
    a.head.weight.grad = marker.clone()  # a gradient the user already had must come back
    rng = torch.get_rng_state()
    initlab.probe_model(a, x, targets=torch.tensor([0, 1, 2]), predict=False)
    assert torch.equal(torch.get_rng_state(), rng)
    assert _no_hooks(a)
    assert torch.equal(a.head.weight.grad, marker)
    assert all(p.grad is None for n, p in a.named_parameters() if n != "head.weight")
    y = _images(seed=9)
    assert torch.equal(a(y), b(y))  # bit-identical to the never-probed copy
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_hooks_removed_on_error(monkeypatch):
    m = _vit()

    def boom(*args, **kwargs):
        raise RuntimeError("boom inside the forward")
    monkeypatch.setattr(m.blocks[-1].mlp, "forward", boom)
    with pytest.raises(ConfigError, match="boom inside the forward"):  # the forward's own error, named
        probe(m, _images())  # fails inside the forward, after the hooks are in place
    assert _no_hooks(m) and all(p.grad is None for p in m.parameters())
    with pytest.raises(ConfigError, match="shape"):  # a batch of the wrong shape: refused before any hook
        probe(m, torch.randn(2, 1, 27, 27))
    assert _no_hooks(m)


def test_measured_quantities_are_the_right_ones():
    m = _vit(width=64, depth=2)
    x = _images()
    r = probe(m, x)
    torch.set_grad_enabled(False)
    try:
        _check_by_hand(m, x, r)
    finally:
        torch.set_grad_enabled(True)
    # gradient of f = Σ_b logit_0: the head bias gradient is the batch size
    assert r.grad_rms("head", kind="bias") == pytest.approx(3 / math.sqrt(10), rel=1e-6)
    assert {g["role"] for g in r.grads} >= {"q", "k", "v", "o", "mlp_in", "mlp_out", "patch_embed", "pos_embed", "head"}


def _check_by_hand(m, x, r):
    # G per block and at the stem, recomputed by hand
    z = m.tokens(x)
    assert r.g_stem == pytest.approx(float(z.double().pow(2).mean()), rel=1e-6)
    blk = m.blocks[0]
    s = blk.norm1(z)
    # attention logits of head 0 by hand from the module's own weights (fused qkv rows)
    d, hd = m.width, m.width // m.heads
    q = s @ blk.attn.qkv.weight[:d].t()
    k = s @ blk.attn.qkv.weight[d:2 * d].t()
    lg = torch.stack([(q[..., h * hd:(h + 1) * hd] @ k[..., h * hd:(h + 1) * hd].transpose(1, 2))
                      for h in range(m.heads)], 1) * blk.attn.scale
    assert r.blocks[0]["attn_logit_var"] == pytest.approx(float(lg.double().var(unbiased=False)), rel=1e-5)
    p = torch.softmax(lg.double(), -1)
    assert r.blocks[0]["attn_entropy"] == pytest.approx(float(-(p * p.log()).sum(-1).mean()), rel=1e-6)
    z1 = blk(z)
    assert r.blocks[0]["G"] == pytest.approx(float(z1.double().pow(2).mean()), rel=1e-6)
    u = F.normalize(z1.double(), dim=-1)
    cos = u @ u.transpose(1, 2)
    t = cos.shape[-1]
    assert r.blocks[0]["cosine"] == pytest.approx(float((cos.sum() - cos.diagonal(dim1=1, dim2=2).sum()) / (3 * t * (t - 1))), rel=1e-6)
    assert r.blocks[0]["ln1_s2"] == pytest.approx(1.0, abs=1e-4)


def test_causal_attention_statistics():
    g = GPT(width=64, depth=2, heads=2, bias=False, ln_affine=False)
    parametrize_(g, "nt", generator=torch.Generator().manual_seed(0))
    idx = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    r = probe(g, idx, targets=idx)
    # causal rows see t+1 tokens: entropy <= mean log(t+1), distance <= mean t/2 ... and > 0
    t = torch.arange(8, dtype=torch.float64)
    assert 0 < r.blocks[0]["attn_entropy"] < float(torch.log(t + 1).mean())
    assert 0 < r.blocks[0]["attn_distance"] < float(t.mean())
    with torch.no_grad():
        assert r.loss == pytest.approx(float(g(idx, idx)[1]), rel=1e-5)
    assert r.objective == "mean cross-entropy"


def test_writers_and_plot(tmp_path):
    m = _vit(width=64, depth=3)
    r = probe(m, _images(2), predict=True, samples=16)
    d = r.to_dict()
    assert d["predicted"]["blocks"][0]["G"] > 1 and len(d["comparison"]) > 20
    js = json.loads(r.write_json(tmp_path / "p.json").read_text())
    assert js["width"] == 64 and len(js["blocks"]) == 3
    lines = r.write_csv(tmp_path / "p.csv").read_text().splitlines()
    assert len(lines) == 4 and "pred_G" in lines[0] and "grad_rms.q" in lines[0]
    png = r.plot(tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "(" in r.table()  # predicted values shown next to measured ones


def test_probe_rejects_models_without_attention():
    with pytest.raises(RoleMapError):
        probe(torch.nn.Linear(3, 3), torch.randn(2, 3))


@pytest.mark.parametrize("param", ["nt", "mu"])
def test_gradient_rms_matches_theory(param):
    """Per-group gradient RMS at width 512 vs the backward-kernel prediction (not fitted).

    Tolerance: one draw of the weights fluctuates by O(1/√n) around the leading order (at n=512
    about 5%; q and k, whose gradients pass through one softmax per head, up to ~15%)."""
    n = 512
    m = ViT(width=n, depth=4, heads=8, bias=False, ln_affine=False, pool="mean")
    parametrize_(m, param, generator=torch.Generator().manual_seed(11))
    consts = th.Constants.from_parametrization(param, width=n, n_patch=49)
    r = probe(m, _images(4, seed=5), predict=True, constants=consts, samples=48)
    errs = {c["quantity"] + str(c["block"]): c["rel_error"] for c in r.comparison()
            if c["quantity"].startswith("grad_rms")}
    assert len(errs) >= 4 * 6 + 3
    body = [abs(e) for k, e in errs.items() if not k.startswith(("grad_rms.q", "grad_rms.k"))]
    qk = [abs(e) for k, e in errs.items() if k.startswith(("grad_rms.q", "grad_rms.k"))]
    assert sorted(body)[len(body) // 2] < 0.06 and max(body) < 0.2, errs
    assert max(qk) < 0.3, errs
    # MU's head is n^{-1/2} smaller than NT's, and so is every body gradient: the prediction knows
    head_var = th.network_of(m, constants=consts).head_variance
    assert head_var == pytest.approx(1 / n ** (2 if param == "mu" else 1), rel=0.1)


def test_network_of_refuses_what_the_theory_does_not_cover():
    m = ViT(width=64, depth=2, heads=2, norm_position="post")  # biases drawn by torch's defaults
    with pytest.raises(ConfigError, match="nonzero biases"):
        th.network_of(m)
    m = ViT(width=64, depth=2, heads=2, bias=False, ln_affine=False, skip_scale=0.5)
    with pytest.raises(ConfigError, match="not a plain residual sum"):
        th.network_of(m)
    post = th.network_of(ViT(width=64, depth=2, heads=2, norm_position="post", bias=False, ln_affine=False))
    assert post.norm_position == "post" and post.activation == "gelu" and not post.gated


def test_post_ln_prediction_matches():
    """Post-LN (z = LN(z + MHSA z), LN(z + MLP z)): the stream is renormalized every block, so G is
    ~1 and the informative quantity is G_mid, the sum entering the block's last norm."""
    m = ViT(width=256, depth=3, heads=4, bias=False, ln_affine=False, pool="mean", norm_position="post")
    parametrize_(m, "nt", generator=torch.Generator().manual_seed(2))
    r = probe(m, _images(4), predict=True, samples=32)
    gm = [abs(c["rel_error"]) for c in r.comparison() if c["quantity"] == "G_mid"]
    assert len(gm) == 3 and max(gm) < 0.1, gm
    assert r.predicted["unavailable"]["gradients"] == "gradients are derived for pre-LN blocks with no stem norm"


def test_gpt_prediction_causal_and_tied():
    """Causal mask, tied head (N_rescale = n^-1/2) and the language stem C_WE·[same token]: G within
    3%, gradients within 25% at n=256 (the tied row also feeds the input: a bias the paper ignores)."""
    g = GPT(width=256, depth=2, heads=4, bias=False, ln_affine=False, block_size=64)
    parametrize_(g, "nt", generator=torch.Generator().manual_seed(0))
    idx = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    r = probe(g, idx, predict=True, samples=32)
    cmp = r.comparison()
    assert max(abs(c["rel_error"]) for c in cmp if c["quantity"] == "G") < 0.03
    grads = [abs(c["rel_error"]) for c in cmp if c["quantity"].startswith("grad_rms")]
    assert len(grads) == 2 * 6 + 1 and max(grads) < 0.25  # pos table: only the 16 used rows count
    assert r.predicted["blocks"][0]["attn_logit_var"] == pytest.approx(0.25, rel=1e-3)


class _ListAttention(torch.nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.num_heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            torch.nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.num_heads, -1).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))


class _ListMLP(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(d, 4 * d, bias=False), torch.nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _ParallelLists(torch.nn.Module):
    """A pre-LN decoder whose sublayers live in parallel lists (no block module): attentions.i,
    ln1.i, ffns.i, ln2.i; then a final norm and head, a head only, or the stream returned."""

    def __init__(self, end, d=32, layers=3, vocab=50):
        super().__init__()
        self.end = end
        self.wte = torch.nn.Embedding(vocab, d)
        self.attentions = torch.nn.ModuleList(_ListAttention(d, 2) for _ in range(layers))
        self.ln1 = torch.nn.ModuleList(torch.nn.LayerNorm(d) for _ in range(layers))
        self.ffns = torch.nn.ModuleList(_ListMLP(d) for _ in range(layers))
        self.ln2 = torch.nn.ModuleList(torch.nn.LayerNorm(d) for _ in range(layers))
        self.ln_f = torch.nn.LayerNorm(d) if end == "norm" else None
        self.head = torch.nn.Linear(d, vocab, bias=False) if end != "none" else None

    def forward(self, ids, streams=None):
        x = self.wte(ids)
        for i in range(len(self.attentions)):
            x = x + self.attentions[i](self.ln1[i](x))
            x = x + self.ffns[i](self.ln2[i](x))
            if streams is not None:
                streams.append(x.detach())
        x = self.ln_f(x) if self.ln_f is not None else x
        return self.head(x) if self.head is not None else x


@pytest.mark.parametrize("end", ["norm", "head", "none"])
def test_parallel_sublayer_lists_pre_ln_blocks_are_the_role_maps_layers(end):
    """A pre-LN model without block modules: block i is the role map's layer i, and its G is the
    stream after layer i -- read by the next layer, the final norm, the head, or returned."""
    from initlab.schemes.plan import build_seeded
    m = build_seeded(lambda: _ParallelLists(end), 0).eval()
    with torch.no_grad():
        for i, ffn in enumerate(m.ffns):
            ffn.fc2.weight.mul_(1.0 + 2 * i)  # each layer its own branch size
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    streams = []
    with torch.no_grad():
        m(ids, streams)
    rep = probe(m, ids)
    assert rep.depth == 3 and rep.meta["layout"]["norm_position"] == "pre"
    for i, row in enumerate(rep.blocks):
        assert row["G"] == pytest.approx(float(streams[i].double().pow(2).mean()), rel=1e-6)
    assert {g["block"] for g in rep.grads if g["name"].startswith("ffns.1.")} == {1}


class _Block(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.attn, self.mlp = _ListAttention(d, 2), _ListMLP(d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class _BlocksAndLoneAttention(torch.nn.Module):
    """Pre-LN blocks, then attention layers kept in a list with nothing else of their layer (as
    BLT's patch cross-attention lists): not blocks."""

    def __init__(self, blocks=2, d=32, vocab=50):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList(_Block(d) for _ in range(blocks))
        self.extra = torch.nn.ModuleList([_ListAttention(d, 2)])
        self.head = torch.nn.Linear(d, vocab, bias=False)

    def forward(self, ids, streams=None):
        x = self.wte(ids)
        for b in self.blocks:
            x = b(x)
            if streams is not None:
                streams.append(x.detach())
        for attn in self.extra:  # the lone attention outside the blocks (none in subclasses)
            x = x + attn(x)
        return self.head(x)


def test_lone_attention_in_a_list_is_named_not_measured_and_not_predicted():
    from initlab.schemes.plan import build_seeded
    m = build_seeded(lambda: _BlocksAndLoneAttention(), 0).eval()
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    streams = []
    with torch.no_grad():
        m(ids, streams)
    rep = probe(m, ids, predict=True)
    assert rep.depth == 2 and rep.meta["attention_outside_blocks"] == ["extra.0"]
    for i, row in enumerate(rep.blocks):
        assert row["G"] == pytest.approx(float(streams[i].double().pow(2).mean()), rel=1e-6)
    assert all(p is None for p in rep.predicted["blocks"])
    assert all("outside any block (extra.0)" in why for why in rep.predicted["unavailable"].values())
    assert "extra.0" in rep.table()
    only = build_seeded(lambda: _BlocksAndLoneAttention(blocks=0), 0).eval()
    with pytest.raises(ConfigError, match="no norm or MLP in their layers"):
        probe(only, ids)


class _MemoryAttention(torch.nn.Module):
    """Queries from the stream, keys/values from a learned memory of another width (Perceiver-like)."""

    def __init__(self, d, dk, heads=2, slots=5):
        super().__init__()
        self.num_heads = heads
        self.memory = torch.nn.Parameter(torch.randn(slots, dk))
        self.q_proj, self.o_proj = torch.nn.Linear(d, d, bias=False), torch.nn.Linear(d, d, bias=False)
        self.k_proj, self.v_proj = torch.nn.Linear(dk, d, bias=False), torch.nn.Linear(dk, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        mem = self.memory.expand(b, -1, -1)
        q = self.q_proj(x).view(b, t, self.num_heads, -1).transpose(1, 2)
        k, v = (p(mem).view(b, mem.shape[1], self.num_heads, -1).transpose(1, 2)
                for p in (self.k_proj, self.v_proj))
        return self.o_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))


class _MemoryBlocks(_BlocksAndLoneAttention):
    def __init__(self):
        super().__init__(blocks=2)
        for blk in self.blocks:
            blk.attn = _MemoryAttention(32, 16)
        self.extra = torch.nn.ModuleList()


def test_keys_of_another_width_leave_logits_unmeasured_not_a_raw_error():
    """An attention whose keys read another sequence (a memory of width 16 beside a stream of 32):
    the block is measured, its logits are not (NaN, with the reason), the theory says why it
    predicts nothing -- no torch shape error."""
    from initlab.schemes.plan import build_seeded
    m = build_seeded(_MemoryBlocks, 0).eval()
    ids = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(3))
    streams = []
    with torch.no_grad():
        m(ids, streams)
    rep = probe(m, ids, predict=True)
    assert rep.depth == 2
    for i, row in enumerate(rep.blocks):
        assert row["G"] == pytest.approx(float(streams[i].double().pow(2).mean()), rel=1e-6)
        assert math.isnan(row["attn_logit_var"])
    assert set(rep.meta["attention_logits_not_measured"]) == {"blocks.0.attn", "blocks.1.attn"}
    assert all(p is None for p in rep.predicted["blocks"])
    assert "keys of 16 features" in rep.predicted["unavailable"]["blocks"]
