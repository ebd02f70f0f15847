"""Where the first layer of the language map's model attends at initialization.

For each position scheme and init of docs/results.md section 8 (the Llama preset, width 128, 4 heads,
char-level Shakespeare), the attention probabilities of block 0 on 8 windows of 128 characters,
averaged over 3 seeds, for queries with at least 32 keys behind them: the mass on the token itself,
on the 4 tokens before it, on earlier occurrences of the same character, the mean distance
attended to, and the size of block 0's attention output next to the stream it is added to (RMS of
the attention branch over RMS of the embedded tokens, positions included). Usage::

    PYTHONPATH=src python tools/lm_attention_at_init.py [--inits default,mimetic-language(vo=false)]
"""
from __future__ import annotations

import argparse

import torch

from initlab.data import CharTokenizer, load_text
from initlab.models import create_model
from initlab.models.llama import LLAMA_POS, apply_rope
from initlab.schemes import split_specs
from initlab.schemes.plan import InitPlan, build_seeded


def branch_over_stream(model, ids: torch.Tensor) -> float:
    """RMS of block 0's attention output over RMS of the residual stream entering block 0."""
    cap = {}
    block, att = model.blocks[0], model.blocks[0].attn
    h1 = block.register_forward_pre_hook(lambda mod, args: cap.update(z=args[0]))
    h2 = att.register_forward_hook(lambda mod, args, out: cap.update(out=out))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        h1.remove()
        h2.remove()
    return float(cap["out"].pow(2).mean().sqrt() / cap["z"].pow(2).mean().sqrt())


def attention_at_init(model, ids: torch.Tensor) -> torch.Tensor:
    """Block 0's attention probabilities (batch, heads, T, T), recomputed from its projections."""
    cap = {}
    att = model.blocks[0].attn
    hook = att.register_forward_pre_hook(lambda mod, args: cap.update(x=args[0], cos=args[1], sin=args[2]))
    try:
        with torch.no_grad():
            model(ids)
    finally:
        hook.remove()
    x = cap["x"]
    b, t, _ = x.shape
    with torch.no_grad():
        q = att.q_proj(x).view(b, t, att.n_heads, att.head_dim).transpose(1, 2)
        k = att.k_proj(x).view(b, t, att.n_kv_heads, att.head_dim).transpose(1, 2)
        if att.rope:
            q, k = apply_rope(q, cap["cos"], cap["sin"]), apply_rope(k, cap["cos"], cap["sin"])
        k = k.repeat_interleave(att.n_heads // att.n_kv_heads, dim=1)
        logits = (q @ k.transpose(-1, -2)) * att.scale
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    return logits.masked_fill(~causal, float("-inf")).softmax(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inits", default="default,mimetic-language,mimetic-language(vo=false)")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    text = load_text("shakespeare")
    tok = CharTokenizer.from_text(text)
    ids = torch.as_tensor(tok.encode(text[:128 * 8]), dtype=torch.long).view(8, 128)
    t = ids.shape[1]
    i = torch.arange(t)
    offset = (i[:, None] - i[None, :]).float()
    same = (ids[:, :, None] == ids[:, None, :]) & (offset > 0)  # earlier occurrences of the same char
    rows = slice(32, None)
    print(f"{'positions':9s} {'init':30s} {'self':>6s} {'4 before':>9s} {'same char':>10s} {'distance':>9s} "
          f"{'branch/stream':>14s}")
    for pos in LLAMA_POS:
        for init in split_specs(args.inits):
            acc = torch.zeros(5)
            for seed in range(args.seeds):
                m = build_seeded(lambda: create_model("llama-mini", width=128, depth=2, heads=4, pos=pos,
                                                      vocab_size=tok.vocab_size), seed)
                InitPlan.build(init).initialize_(m, seed)
                p = attention_at_init(m, ids)[..., rows, :]
                acc += torch.tensor([
                    float(p.diagonal(offset=32, dim1=-2, dim2=-1).mean()),
                    float((p * ((offset[rows] >= 1) & (offset[rows] <= 4))).sum(-1).mean()),
                    float((p * same[:, None, rows]).sum(-1).mean()),
                    float((p * offset[rows].clamp_min(0)).sum(-1).mean()),
                    branch_over_stream(m, ids)]) / args.seeds
            print(f"{pos:9s} {init:30s} {acc[0]:6.3f} {acc[1]:9.3f} {acc[2]:10.3f} {acc[3]:9.1f} {acc[4]:14.2f}")


if __name__ == "__main__":
    main()
