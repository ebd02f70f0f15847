"""Training throughput of initlab's models and engine vs Hugging Face models of the same shape.

Measured in the same process, alternating single steps (ours, theirs, ours, theirs, ...) so machine
load hits both alike; the median step times and their ratio (ours / theirs, > 1 means we are
faster) are printed.

* vision: initlab ViT vs ``transformers.ViTForImageClassification`` (built from a ViTConfig with
  the same image/patch/width/depth/heads/MLP size, no dropout, SDPA attention);
* lm: initlab GPT vs ``transformers.GPT2LMHeadModel`` (same vocab/context/width/depth/heads,
  exact GELU, no dropout);
* llama: initlab Llama vs ``transformers.LlamaForCausalLM`` (same vocab/context/width/depth/heads,
  SwiGLU hidden size, RoPE, RMSNorm, untied head, no biases) -- the same function, so the ratio
  compares implementations only;
* a training step = forward, cross-entropy, backward, clip-grad-norm 1.0, AdamW step, zero_grad,
  on a batch already on the device (the same step for both models);
* "engine": ``initlab.train.run`` itself on synthetic data of the same shape (its own input pipeline,
  augmentation, LR schedule and fused AdamW included), throughput over the training steps only.
  It runs after the pair, not interleaved with it, so on a loaded machine its ratio is noisier.

Models are built from configs (never ``from_pretrained``: nothing is downloaded).

    .venv/bin/python benchmarks/bench_throughput.py              # all three, defaults below
    .venv/bin/python benchmarks/bench_throughput.py --task lm --steps 10
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def train_step(model, opt, x, y, logits_of):
    logits = logits_of(model, x)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def time_steps(model, opt, batch, logits_of, steps: int) -> float:
    x, y = batch
    acc = torch.zeros(())
    t = time.perf_counter()
    for _ in range(steps):
        acc += train_step(model, opt, x, y, logits_of)
    float(acc)  # one sync at the end
    return time.perf_counter() - t


def n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def vision_pair(a):
    from transformers import ViTConfig, ViTForImageClassification
    from initlab.models import create_model
    ours = create_model("vit-micro", image_size=a.image_size, patch_size=a.patch_size, in_chans=1,
                        num_classes=10, width=a.width, depth=a.depth, heads=a.heads)
    cfg = ViTConfig(image_size=a.image_size, patch_size=a.patch_size, num_channels=1,
                    hidden_size=a.width, num_hidden_layers=a.depth, num_attention_heads=a.heads,
                    intermediate_size=4 * a.width, hidden_act="gelu", layer_norm_eps=1e-6,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=10)
    cfg._attn_implementation = "sdpa"
    theirs = ViTForImageClassification(cfg)
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(a.batch_size, 1, a.image_size, a.image_size, generator=g),
             torch.randint(0, 10, (a.batch_size,), generator=g))
    return ours, theirs, batch, (lambda m, x: m(x)), (lambda m, x: m(pixel_values=x).logits), a.batch_size


def lm_pair(a):
    from transformers import GPT2Config, GPT2LMHeadModel
    from initlab.models import create_model
    ours = create_model("gpt-micro", vocab_size=a.vocab, block_size=a.block_size, width=a.lm_width,
                        depth=a.lm_depth, heads=a.lm_heads)
    cfg = GPT2Config(vocab_size=a.vocab, n_positions=a.block_size, n_embd=a.lm_width,
                     n_layer=a.lm_depth, n_head=a.lm_heads, activation_function="gelu",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    cfg._attn_implementation = "sdpa"
    theirs = GPT2LMHeadModel(cfg)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, a.vocab, (a.lm_batch_size, a.block_size + 1), generator=g)
    batch = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    return (ours, theirs, batch, (lambda m, x: m(x)), (lambda m, x: m(input_ids=x).logits),
            a.lm_batch_size * a.block_size)


def llama_pair(a):
    from transformers import LlamaConfig, LlamaForCausalLM
    from initlab.models import create_model
    ours = create_model("llama-mini", vocab_size=a.vocab, block_size=a.block_size, width=a.lm_width,
                        depth=a.lm_depth, heads=a.lm_heads)
    cfg = LlamaConfig(vocab_size=a.vocab, max_position_embeddings=a.block_size, hidden_size=a.lm_width,
                      intermediate_size=ours.config["mlp_hidden"], num_hidden_layers=a.lm_depth,
                      num_attention_heads=a.lm_heads, num_key_value_heads=a.lm_heads,
                      tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    cfg._attn_implementation = "sdpa"
    theirs = LlamaForCausalLM(cfg)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, a.vocab, (a.lm_batch_size, a.block_size + 1), generator=g)
    batch = (tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    return (ours, theirs, batch, (lambda m, x: m(x)), (lambda m, x: m(input_ids=x).logits),
            a.lm_batch_size * a.block_size)


def engine_throughput(a, task: str) -> float:
    """items/s of initlab.train.run on synthetic data of the benchmark's shape."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_train_support import write_fake_fashion, write_text
    from initlab.train import TrainConfig, run
    steps = a.steps * a.reps + a.warmup
    with tempfile.TemporaryDirectory() as tmp:
        if task == "vision":
            root = write_fake_fashion(Path(tmp) / "fake", n_train=max(4 * a.batch_size, 512), n_test=64)
            cfg = TrainConfig(task="vision", data="fashion-mnist", data_root=str(root), model="vit-micro",
                              width=a.width, depth=a.depth, heads=a.heads, patch_size=a.patch_size,
                              batch_size=a.batch_size, steps=steps, eval_every=steps, device="cpu")
        else:
            text = write_text(Path(tmp) / "t.txt", n_chars=200_000)
            cfg = TrainConfig(task="lm", data=str(text), tokenizer="byte",
                              model="llama-mini" if task == "llama" else "gpt-micro",
                              width=a.lm_width, depth=a.lm_depth, heads=a.lm_heads,
                              block_size=a.block_size, batch_size=a.lm_batch_size, steps=steps,
                              eval_every=steps, eval_batches=1, device="cpu")
        return run(cfg, progress=False).throughput


def bench(name, pair, a):
    ours, theirs, batch, ours_logits, theirs_logits, items = pair
    print(f"\n== {name}: ours {n_params(ours):,} params, theirs {n_params(theirs):,} params, "
          f"{items} items/step, {torch.get_num_threads()} threads")
    opts = {id(m): torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (ours, theirs)}
    for m, f in ((ours, ours_logits), (theirs, theirs_logits)):
        time_steps(m, opts[id(m)], batch, f, a.warmup)
    # alternate single steps (ours, theirs, ours, ...) so load bursts on a shared machine hit
    # both alike; compare the medians of the per-step times
    t_ours, t_theirs = [], []
    for _ in range(a.reps * a.steps):
        t_ours.append(time_steps(ours, opts[id(ours)], batch, ours_logits, 1))
        t_theirs.append(time_steps(theirs, opts[id(theirs)], batch, theirs_logits, 1))
    m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    ips_ours, ips_theirs = items / m_ours, items / m_theirs
    unit = "img/s" if name == "vision" else "tok/s"
    print(f"ours   {ips_ours:10,.0f} {unit}  ({1e3 * m_ours:.1f} ms/step, median of {len(t_ours)})")
    print(f"theirs {ips_theirs:10,.0f} {unit}  ({1e3 * m_theirs:.1f} ms/step, median of {len(t_theirs)})")
    print(f"ratio ours/theirs (model step): {ips_ours / ips_theirs:.3f}")
    if not a.no_engine:
        ips_engine = engine_throughput(a, name)
        print(f"engine {ips_engine:10,.0f} {unit}  (initlab.train.run, input pipeline included)")
        print(f"ratio engine/theirs: {ips_engine / ips_theirs:.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=("vision", "lm", "llama", "both", "all"), default="all",
                   help="both = vision and lm; all = vision, lm and llama")
    p.add_argument("--steps", type=int, default=8, help="timed steps per repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-engine", action="store_true", help="skip the initlab.train.run measurement")
    # vision: the environment's fastest measured shape (ViT d6 w192 p7, 28x28, batch 128)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--patch-size", type=int, default=7)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    # lm and llama: char models d4 w128 h4, T=128, batch 32
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--lm-width", type=int, default=128)
    p.add_argument("--lm-depth", type=int, default=4)
    p.add_argument("--lm-heads", type=int, default=4)
    p.add_argument("--lm-batch-size", type=int, default=32)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, command: {' '.join(sys.argv)}")
    if a.task in ("vision", "both", "all"):
        bench("vision", vision_pair(a), a)
    if a.task in ("lm", "both", "all"):
        bench("lm", lm_pair(a), a)
    if a.task in ("llama", "all"):
        bench("llama", llama_pair(a), a)


if __name__ == "__main__":
    main()
