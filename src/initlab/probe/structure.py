"""Where the residual stream is, for any layout the role map accepts: blocks, stacks, inputs.

Everything is found through the role map (attention layers' ``module_name``, the roles of the MLP
and norm tensors, ``facts.inputs``), never through a model's own attributes:

* **Block** = the smallest called module (not a ModuleList) that holds a self-attention layer and
  an MLP tensor (GPT-2's ``h.3``, LLaMA's ``layers.3``, T5's ``block.3``, BERT's ``layer.3``); an
  attention-only model's
  block is the attention's parent. Further attention layers inside the same block are its
  cross-attention (BART/Whisper/T5 decoders). A model that keeps each kind of sublayer in a list
  of its own (XLM/FlauBERT: ``attentions.i``, ``layer_norm1.i``, ``ffns.i``, ``layer_norm2.i``,
  called one after the other by the model's forward) has no block module: its block i is the set
  of modules whose tensors the role map puts in layer i (a *virtual* block, ``members``), entered
  when the first of them runs and left when a module outside it runs.
* **Stack** = the module holding a run of blocks (``encoder.block``, ``decoder.layers``): an
  encoder-decoder has two, probed and predicted separately, the decoder's cross-attention reading
  the encoder stack's output.
* **Inputs** from ``facts.inputs``: token ids below ``vocab_size``, images of ``image_size`` and
  ``in_chans``, feature frames, or width-sized embeddings; sequence-first models get (T, B, …).

:func:`trace` runs one forward with hooks and returns the order in which norms, attention and MLP
modules ran inside each block (pre-LN, post-LN or neither), the MLP nonlinearity (identified from
the values the MLP computed, so ``F.gelu`` in a forward is found as well as an ``nn.SiLU``), which
norm closes each stack, and whether each block is a plain residual sum (no branch gains, no
LayerScale, no sandwich norms): the architecture facts the leading-order theory needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ..errors import ConfigError
from ..roles.core import is_norm


def module_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0] if "." in param_name else ""


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name.startswith(prefix + ".")


@dataclass
class BlockInfo:
    index: int
    name: str
    attention: object  # the self-attention AttentionLayer
    cross: list = field(default_factory=list)  # cross-attention layers in the same block
    stack: int = 0
    mlp_in: list[str] = field(default_factory=list)  # module names, role-map order (gate first)
    mlp_out: list[str] = field(default_factory=list)
    o: list[str] = field(default_factory=list)  # output projections (self, then cross)
    # a virtual block (no module of its own, XLM/FlauBERT): the modules of its layer, from the role map
    members: list[str] = field(default_factory=list)

    def holds(self, name: str) -> str | None:
        """The longest of the block's module names (its own, or its members') that ``name`` lies
        under, or None."""
        own = [m for m in (self.members or [self.name]) if _under(name, m) or name == m]
        return max(own, key=len) if own else None


@dataclass
class StackInfo:
    name: str
    blocks: list[int]
    decoder: bool = False  # reads another stack through cross-attention
    others: list[str] = field(default_factory=list)  # layers of the stack without attention (a hybrid's SSM/MLP layers)

    @property
    def kind(self) -> str:
        return "decoder" if self.decoder else "stack"


@dataclass
class Structure:
    blocks: list[BlockInfo]
    stacks: list[StackInfo]
    norms: list[str]  # module names of every norm (role-map norms and parameter-free norms)
    encoder_decoder: bool = False
    heads: list[str] = field(default_factory=list)  # head modules: read the stream after a virtual block
    # attention layers in a list with no norm or MLP of their layer (BLT's patch cross-attention):
    # no block, not measured, named in the report
    outside: list[str] = field(default_factory=list)

    def block_of_param(self, name: str) -> int | None:
        """Index of the block a parameter lives in (longest prefix), or None."""
        best, length = None, -1
        for b in self.blocks:
            held = b.holds(name)
            if held is not None and len(held) > length:
                best, length = b.index, len(held)
        return best


def _layer_of(model: nn.Module, parts: list[str]) -> str | None:
    """The outermost ancestor of the module ``parts`` that is an element of a ModuleList (a layer
    of a stack, ``model.layers.3``), or None."""
    for k in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:k])), nn.ModuleList):
            return ".".join(parts[:k + 1])
    return None


def structure_of(model: nn.Module, rm) -> Structure:
    """Blocks and stacks of ``model`` (the unwrapped module the role map was built on)."""
    atts = rm.require_attention("probing")
    mlp = [(module_of(info.name), str(slot.role)) for info in rm for slot in info.slots
           if str(slot.role) in ("mlp_in", "mlp_gate", "mlp_out") and info.kind == "weight"]
    mlp_mods = list(dict.fromkeys(m for m, _ in mlp))
    groups: dict[str, list] = {}
    virtual: dict[str, list[str]] = {}  # block name -> member modules (parallel module lists)
    outside: list[str] = []
    for a in atts:
        parts = a.module_name.split(".")
        block = ".".join(parts[:-1])
        layer = _layer_of(model, parts)
        if layer == a.module_name:  # attentions.i of a model that lists each sublayer kind apart
            block, members = _virtual_block(rm, a, model)
            if block is None:
                outside.append(a.module_name)
                continue
            virtual[block] = members
            groups.setdefault(block, []).append(a)
            continue
        if layer is not None:
            block = layer  # an attention-only layer of a hybrid (Nemotron-H): the layer is the block
        for k in range(len(parts) - 1, 0, -1):
            anc = ".".join(parts[:k])
            if layer is not None and not _under(anc, layer) and anc != layer:
                break  # never above the stack's layer: it would swallow the whole stack
            if isinstance(model.get_submodule(anc), (nn.ModuleList, nn.ModuleDict)):
                continue  # a container is never called: T5's block.3.layer holds the sublayers
            if any(_under(m, anc) for m in mlp_mods):
                block = anc
                break
        groups.setdefault(block, []).append(a)
    blocks, stacks = [], []
    stack_index: dict[str, int] = {}
    for i, (name, group) in enumerate(groups.items()):
        selfs = [a for a in group if not a.cross] or group
        first = selfs[0]
        cross = [a for a in group if a is not first]
        members = virtual.get(name, [])
        sname = _virtual_stack(name) if members else module_of(name)
        if sname not in stack_index:
            stack_index[sname] = len(stacks)
            stacks.append(StackInfo(sname, []))
        s = stack_index[sname]
        stacks[s].blocks.append(i)
        if cross:
            stacks[s].decoder = True
        inside = (lambda m: m in members) if members else (lambda m: _under(m, name))
        mins = [m for m, r in mlp if r in ("mlp_gate", "mlp_in") and inside(m)]
        gates = [m for m, r in mlp if r == "mlp_gate" and inside(m)]
        mins = list(dict.fromkeys(gates + mins))
        outs = list(dict.fromkeys(m for m, r in mlp if r == "mlp_out" and inside(m)))
        blocks.append(BlockInfo(i, name, first, cross, s, mins, outs,
                                [module_of(a.o.name) for a in [first, *cross]], members))
    names = {b.name for b in blocks}
    for stack in stacks:
        if any(blocks[i].members for i in stack.blocks):
            continue  # the stack's lists are its blocks' members
        mod = model.get_submodule(stack.name)
        if isinstance(mod, (nn.ModuleList, nn.ModuleDict)):
            stack.others = [f"{stack.name}.{k}" for k, _ in mod.named_children()
                            if f"{stack.name}.{k}" not in names]
    norm_params = {module_of(info.name) for info in rm if "norm" in info.roles}
    norms = [n for n, m in model.named_modules() if n in norm_params or is_norm(m)]
    heads = list(dict.fromkeys(module_of(i.name) for i in rm.by_role("head", None))) if virtual else []
    if not blocks:
        raise ConfigError(
            f"{rm.model_class} keeps its attention layers in lists of their own "
            f"({', '.join(sorted({module_of(n) for n in outside}))}), outside any block module, with no "
            f"norm or MLP in their layers, so no module's output is the residual stream after a block; "
            f"the probe cannot measure it")
    return Structure(blocks, stacks, norms, bool(rm.facts.inputs.encoder_decoder), heads, outside)


_VIRTUAL = " layer "  # a virtual block's name: "<stack> layer <i>" (never a module name)


def _virtual_stack(block: str) -> str:
    return block.split(_VIRTUAL)[0]


def _virtual_block(rm, att, model: nn.Module) -> tuple[str | None, list[str]]:
    """(name, member modules) of the virtual block holding ``att``, an element of a list of
    attention layers: every module under the lists' parent whose tensors the role map puts in the
    same layer as the attention's own (XLM: ``attentions.i``, ``layer_norm1.i``, ``ffns.i.lin1``,
    ``ffns.i.lin2``, ``layer_norm2.i``). ``(None, [])`` when nothing but the attention is in its
    layer (BLT's patch cross-attention lists): no block."""
    layer = rm[att.q.name].layer
    lists = module_of(att.module_name)
    root = module_of(lists)
    if layer is None:
        raise ConfigError(
            f"{rm.model_class} keeps its attention layers in a list of their own ({lists}), outside "
            f"any block module, and the role map gives {att.module_name} no layer index, so the "
            f"probe cannot tell which norms and MLP belong to its block; map it with layer indices")
    members = [att.module_name] + [module_of(info.name) for info in rm
                                   if info.layer == layer and _under(module_of(info.name), root)]
    members = list(dict.fromkeys(members))
    if all(_under(m, att.module_name) or m == att.module_name for m in members):
        return None, []
    return f"{root or type(model).__name__}{_VIRTUAL}{layer}", members


# ------------------------------------------------------------------------------------------------
# inputs from the role map's facts
# ------------------------------------------------------------------------------------------------
def decoder_vocab(rm) -> int | None:
    """Rows of the largest token table: the decoder's vocabulary (a feature-input model's
    ``facts.inputs.vocab_size`` is None). Derived here until the role map states it."""
    rows = [info.param.shape[0] for info in rm.by_role("token_embed") if info.param.dim() == 2]
    return max(rows) if rows else rm.facts.inputs.vocab_size


AUDIO_SAMPLES_PER_TOKEN = 320  # a raw-audio batch: the total stride of a wav2vec2-style conv stem


def make_inputs(rm, model: nn.Module, *, batch: int = 4, tokens: int = 16,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A random batch the model takes, from ``rm.facts.inputs`` (token ids uniform below the
    vocabulary, N(0, 1) images/frames/embeddings, ``tokens`` x 320 samples of N(0, 1) audio)."""
    g = generator or torch.Generator().manual_seed(0)
    f = rm.facts.inputs
    if batch < 1 or tokens < 1:
        raise ConfigError(f"a probe batch needs batch >= 1 and tokens >= 1, got {batch} and {tokens}")
    if f.kind == "tokens":
        if f.vocab_size is None:
            raise ConfigError(f"{rm.model_class}: the role map does not know the vocabulary size; "
                              f"pass a batch of token ids")
        if f.max_positions is not None and tokens > f.max_positions:
            raise ConfigError(f"--tokens {tokens} exceeds the model's {f.max_positions} positions; "
                              f"pass at most {f.max_positions}")
        x = torch.randint(0, f.vocab_size, (batch, tokens), generator=g)
        return x if f.batch_first else x.t().contiguous()
    if f.kind == "image":
        if f.image_size is None or f.in_chans is None:
            raise ConfigError(f"{rm.model_class}: the role map does not know the image size; pass images")
        return torch.randn(batch, f.in_chans, *f.image_size, generator=g)
    if f.kind == "features":
        frames = feature_frames(rm, model)
        if frames is None or f.in_chans is None:
            raise ConfigError(f"{rm.model_class}: the role map does not know the feature shape; pass features")
        return torch.randn(batch, f.in_chans, frames, generator=g)
    if f.kind == "audio":
        return torch.randn(batch, tokens * AUDIO_SAMPLES_PER_TOKEN, generator=g)
    if f.kind == "embeddings":
        x = torch.randn(batch, tokens, rm.width, generator=g)
        return x if f.batch_first else x.transpose(0, 1).contiguous()
    raise ConfigError(f"{rm.model_class}: the role map does not say what the model reads "
                      f"(input kind {f.kind!r}); pass a batch")


def feature_frames(rm, model) -> int | None:
    """Frames a feature-input model takes: ``max_positions`` times the strides of its Conv1d stem
    (Whisper: 2 x 1500). Derived here until the role map states the input length."""
    n = rm.facts.inputs.max_positions
    if n is None:
        return None
    stride = 1
    for info in rm.by_role("patch_embed"):
        if info.param.dim() == 3:
            mod = model.get_submodule(module_of(info.name))
            stride *= int(getattr(mod, "stride", (1,))[0])
    return n * stride


def batch_size_and_tokens(rm, batch: torch.Tensor) -> tuple[int, int | None]:
    f = rm.facts.inputs
    if f.kind in ("tokens", "embeddings") and batch.dim() >= 2:
        return (int(batch.shape[0]), int(batch.shape[1])) if f.batch_first else \
            (int(batch.shape[1]), int(batch.shape[0]))
    return int(batch.shape[0]), None


def check_batch(rm, batch: torch.Tensor, targets: torch.Tensor | None) -> None:
    """A batch the model cannot take is a ConfigError naming the shape it wants, not torch's error."""
    f = rm.facts.inputs
    shape = tuple(batch.shape)
    layout = "(B, T)" if f.batch_first else "(T, B) (the model is sequence-first)"
    if f.kind == "tokens":
        if batch.ndim != 2 or batch.is_floating_point() or batch.is_complex():
            raise ConfigError(f"probe(): {rm.model_class} takes integer token ids of shape {layout}, "
                              f"got a {batch.dtype} batch of shape {shape}")
        t = shape[1] if f.batch_first else shape[0]
        if f.max_positions is not None and t > f.max_positions:
            raise ConfigError(f"probe(): sequence length {t} exceeds the model's block_size "
                              f"{f.max_positions} (its most positions); pass at most {f.max_positions} tokens")
        v = f.vocab_size
        if v is not None and batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= v):
            raise ConfigError(f"probe(): token ids must be in 0..{v - 1} (the model's vocabulary), "
                              f"got {int(batch.min())}..{int(batch.max())}")
        if targets is not None and tuple(targets.shape) != shape:
            raise ConfigError(f"probe(): targets must be next tokens of shape {shape}, got "
                              f"{tuple(targets.shape)}")
    elif f.kind == "image":
        known = f.image_size is not None and f.in_chans is not None
        want = f"(B, {f.in_chans}, {', '.join(map(str, f.image_size))})" if known else "(B, C, H, W)"
        if batch.ndim != 4 or not batch.is_floating_point() or (
                known and shape[1:] != (f.in_chans, *f.image_size)):
            raise ConfigError(f"probe(): {rm.model_class} takes float images of shape {want}, got a "
                              f"{batch.dtype} batch of shape {shape}; pass images of that shape")
        if targets is not None and tuple(targets.shape) != shape[:1]:
            raise ConfigError(f"probe(): targets must be class labels of shape ({shape[0]},), got "
                              f"{tuple(targets.shape)}")
    elif f.kind == "audio":
        if batch.ndim != 2 or not batch.is_floating_point():
            raise ConfigError(f"probe(): {rm.model_class} takes a float raw waveform of shape (B, samples), "
                              f"got a {batch.dtype} batch of shape {shape}")
    elif f.kind in ("features", "embeddings"):
        if batch.ndim != 3 or not batch.is_floating_point():
            raise ConfigError(f"probe(): {rm.model_class} takes float {f.kind} of rank 3, got a "
                              f"{batch.dtype} batch of shape {shape}")
        if f.kind == "embeddings" and shape[-1] != rm.width:
            raise ConfigError(f"probe(): {rm.model_class} takes vectors of width {rm.width} as the last "
                              f"dimension, got shape {shape}")


def forward_inputs(rm, batch, *, decoder_tokens: int | None = None, seed: int = 0) -> tuple[tuple, dict]:
    """(args, kwargs) for ``model(*args, **kwargs)``: the batch under the input's keyword, plus
    decoder token ids for an encoder-decoder (uniform below the decoder vocabulary, drawn from
    ``seed``; as many as the batch's tokens, else 16)."""
    if isinstance(batch, dict):
        return (), dict(batch)
    f = rm.facts.inputs
    args, kw = ((batch,), {}) if f.name is None else ((), {f.name: batch})
    if f.encoder_decoder:
        b, t = batch_size_and_tokens(rm, batch)
        vocab = decoder_vocab(rm)
        if vocab is None:
            raise ConfigError(f"{rm.model_class} needs decoder inputs and the role map knows no token "
                              f"table; pass a dict with decoder_input_ids")
        g = torch.Generator().manual_seed(seed + 7)
        kw["decoder_input_ids"] = torch.randint(0, vocab, (b, decoder_tokens or t or 16), generator=g).to(
            batch.device)
    return args, kw


def output_tensor(out) -> tuple[torch.Tensor, str]:
    """The tensor a forward returned: ``logits`` when the output has them, else the last hidden
    state (a model without a head), else the first element of a tuple."""
    if isinstance(out, torch.Tensor):
        return out, "logits"
    get = out.get if isinstance(out, dict) else (lambda k: getattr(out, k, None))
    for key, kind in (("logits", "logits"), ("last_hidden_state", "hidden")):
        v = get(key)
        if isinstance(v, torch.Tensor):
            return v, kind
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0], "logits"
    raise ConfigError(f"the model's forward returned {type(out).__name__}, with no logits or hidden "
                      f"state to measure")


def first_tensor(args, kwargs) -> torch.Tensor | None:
    for a in args:
        if isinstance(a, torch.Tensor):
            return a
    hs = kwargs.get("hidden_states") if kwargs else None
    if isinstance(hs, torch.Tensor):
        return hs
    for v in (kwargs or {}).values():
        if isinstance(v, torch.Tensor):
            return v
    return None


def out_tensor(out) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


# ------------------------------------------------------------------------------------------------
# the MLP nonlinearity, identified from what the MLP computed
# ------------------------------------------------------------------------------------------------
def identify_activation(pre: list[torch.Tensor], post: torch.Tensor) -> tuple[str | None, int | None, str]:
    """(name, gate, why) from the mlp_in output(s) ``pre`` and the mlp_out input ``post``.

    Plain: post = φ(pre[0]) (``gate`` None); gated (SwiGLU/GeGLU): post = φ(pre[gate])·pre[1 - gate],
    both orders tried, so which projection is the gate is read from the values. ``name`` is None
    when no known φ fits (then ``why`` says so).
    """
    from ..theory import ACTIVATIONS

    n = 4096
    y = post.detach().double().reshape(-1)[:n]
    xs = [p.detach().double().reshape(-1)[:n] for p in pre]
    if not xs or any(x.numel() != y.numel() for x in xs):
        return None, False, "the MLP's input and output projections have different widths"
    scale = float(y.abs().max()) + 1e-30
    best = (math.inf, None, None)
    for name, fn in ACTIVATIONS.items():
        if len(xs) == 1:
            err = float((fn(xs[0]) - y).abs().max()) / scale
            best = min(best, (err, name, None), key=lambda r: r[0])
        elif len(xs) == 2:
            for a, b in ((0, 1), (1, 0)):
                err = float((fn(xs[a]) * xs[b] - y).abs().max()) / scale
                best = min(best, (err, name, a), key=lambda r: r[0])
    err, name, gate = best
    if len(xs) > 2:
        return None, None, f"{len(xs)} MLP input projections in one block (only 1, or 2 gated, are known)"
    if name is None or err > 2e-3:
        return None, None, (f"the MLP nonlinearity matches none of {', '.join(ACTIVATIONS)} "
                             f"(best error {err:.1e})")
    return name, gate, ""


# ------------------------------------------------------------------------------------------------
# one hooked forward: what ran where, in which order
# ------------------------------------------------------------------------------------------------
@dataclass
class BlockRecord:
    z_in: torch.Tensor | None = None
    z_out: torch.Tensor | None = None
    events: list = field(default_factory=list)  # (kind, name, tensor_in, tensor_out)


@dataclass
class Trace:
    """What one forward did: per block the events N(orm) A(ttention) X (cross) M (mlp_in) O
    (mlp_out) P (attention output projection) with their tensors, norms outside blocks, and the
    stem input of every stack."""

    blocks: list[BlockRecord]
    outer: list = field(default_factory=list)  # ("N", name, in, out, after_block)
    stems: dict = field(default_factory=dict)  # stack -> input of its first block
    output: torch.Tensor | None = None
    output_kind: str = "logits"


class Recorder:
    """Hooks that fill a :class:`Trace`; use as a context manager around one forward."""

    def __init__(self, model: nn.Module, st: Structure, *, batch_first: bool = True):
        self.model, self.st, self.bf = model, st, batch_first
        self.trace = Trace([BlockRecord() for _ in st.blocks])
        self.current: list[int] = []
        self.last_block: int | None = None
        self.hooks = []
        # virtual blocks (no module of their own): member module -> block index
        self.member_of = {n: b.index for b in st.blocks for n in b.members}

    def _t(self, x):
        """Batch-first view of a (T, B, d) activation of a sequence-first model."""
        if x is None or self.bf or x.dim() != 3:
            return x
        return x.transpose(0, 1)

    def _open(self, i: int, x) -> None:
        """A member of virtual block ``i`` starts running: enter the block (leaving the one before)."""
        if self.current and self.current[-1] == i:
            return
        self._close(x, opening=i)
        rec = self.trace.blocks[i]
        rec.z_in = x
        if i in self.first:
            self.trace.stems[self.first[i]] = x
        self.current.append(i)

    def _close(self, x, opening: int | None = None) -> None:
        """Leave the virtual block now running, if any, because a module outside it runs and reads
        ``x``. Its output is the stream after it: the output of its last module when that is a norm
        (post-LN), else what the next block of its stack, or the norm after it, reads (pre-LN)."""
        if not self.current or not self.st.blocks[self.current[-1]].members:
            return
        i = self.current.pop()
        rec = self.trace.blocks[i]
        nxt = self.st.blocks[opening] if opening is not None else None
        if rec.events and rec.events[-1][0] == "N":
            rec.z_out = rec.events[-1][3]
        elif x is not None and (nxt is None or (nxt.stack == self.st.blocks[i].stack and nxt.index == i + 1)):
            rec.z_out = x
        self.last_block = i

    def _event(self, kind, name, tin, tout):
        rec = (kind, name, self._t(tin), self._t(tout))
        if self.current and self.st.blocks[self.current[-1]].members and name not in self.member_of:
            self._close(rec[2] if kind == "N" else None)  # a module after the virtual block: it has ended
        if self.current:
            self.trace.blocks[self.current[-1]].events.append(rec)
        elif kind == "N":
            self.trace.outer.append((*rec, self.last_block))

    def __enter__(self):
        m, st = self.model, self.st
        first = self.first = {s.blocks[0]: i for i, s in enumerate(st.stacks) if s.blocks}

        def pre(i):
            def fn(mod, args, kwargs):
                x = self._t(first_tensor(args, kwargs))
                self.trace.blocks[i].z_in = x
                if i in first:
                    self.trace.stems[first[i]] = x
                self.current.append(i)
            return fn

        def post(i):
            def fn(mod, args, kwargs, out):
                if self.current and self.current[-1] == i:
                    self.current.pop()
                self.trace.blocks[i].z_out = self._t(out_tensor(out))
                self.last_block = i
            return fn

        def ev(kind, name, want_out=True):
            def fn(mod, args, kwargs, out):
                self._event(kind, name, first_tensor(args, kwargs), out_tensor(out) if want_out else None)
            return fn

        def entry(kind, name):
            def fn(mod, args, kwargs):
                self._event(kind, name, first_tensor(args, kwargs), None)
            return fn

        seen = set()

        def hook(name, kind):
            if (name, kind) in seen:
                return
            seen.add((name, kind))
            mod = m.get_submodule(name)
            self.hooks.append(mod.register_forward_hook(ev(kind, name), with_kwargs=True))

        def opener(i):
            def fn(mod, args, kwargs):
                self._open(i, self._t(first_tensor(args, kwargs)))
            return fn

        def closer(mod, args, kwargs):  # a head reads the stream after the last virtual block
            self._close(self._t(first_tensor(args, kwargs)))

        def ended(mod, args, kwargs, out):  # a model without a head returns the stream itself
            try:
                hidden, kind = output_tensor(out)
            except ConfigError:
                return
            self._close(self._t(hidden) if kind == "hidden" or not st.heads else None)

        if self.member_of:
            for n in st.heads:
                self.hooks.append(m.get_submodule(n).register_forward_pre_hook(closer, with_kwargs=True))
            self.hooks.append(m.register_forward_hook(ended, with_kwargs=True))
        for b in st.blocks:
            if b.members:  # registered first: the block is entered before its modules' own hooks run
                for n in b.members:
                    self.hooks.append(m.get_submodule(n).register_forward_pre_hook(opener(b.index),
                                                                                  with_kwargs=True))
            else:
                mod = m.get_submodule(b.name)
                self.hooks.append(mod.register_forward_pre_hook(pre(b.index), with_kwargs=True))
                self.hooks.append(mod.register_forward_hook(post(b.index), with_kwargs=True))
        for b in st.blocks:
            for a, kind in ((b.attention, "A"), *((c, "X") for c in b.cross)):
                # at entry (a module like BERT's attention runs its own norm inside) and at exit
                mod = m.get_submodule(a.module_name)
                self.hooks.append(mod.register_forward_pre_hook(entry(kind, a.module_name), with_kwargs=True))
                hook(a.module_name, kind.lower())
            for n in b.mlp_in:
                hook(n, "M")
            for n in b.mlp_out:
                hook(n, "O")
            for n in b.o:
                hook(n, "P")
        for n in st.norms:
            hook(n, "N")
        return self

    def __exit__(self, *exc):
        self._close(None)  # the forward ended inside a virtual block (the stack's last)
        for h in self.hooks:
            h.remove()
        self.hooks.clear()
        return False


def reached(st: Structure, tr: Trace) -> tuple[Structure, Trace, list[dict]]:
    """The stacks the forward ran, and the ones it did not reach (a multimodal model's vision or
    audio tower on a text-only batch): ``(structure, trace, not_reached)`` with the reached blocks
    renumbered and each unreached stack as ``{"name", "blocks", "why"}``. A stack the forward
    entered but left partly unrun (a block without its self-attention) is a ConfigError: its
    numbers would not be the stack's."""
    def ran(i):
        r = tr.blocks[i]
        return r.z_out is not None and any(e[0] == "A" for e in r.events)
    keep, gone = [], []
    for s in st.stacks:
        done = [ran(i) for i in s.blocks]
        if all(done):
            keep.append(s)
        elif not any(ran(i) or tr.blocks[i].z_in is not None for i in s.blocks):
            gone.append(dict(name=s.name, blocks=len(s.blocks),
                             why="not reached by this input (the forward did not run it); not measured"))
        else:
            bad = next(st.blocks[i].name for i, d in zip(s.blocks, done) if not d)
            raise ConfigError(f"the probe's hooks did not fire for block {bad} of stack {s.name!r} "
                              f"(its forward or its self-attention did not run); is the model's "
                              f"forward going through the modules the role map names?")
    if not keep:
        raise ConfigError(f"the forward reached none of the model's stacks "
                          f"({', '.join(repr(s.name) for s in st.stacks)}); pass the input they read")
    if not gone:
        return st, tr, []
    old = [i for s in keep for i in s.blocks]
    new_of = {o: n for n, o in enumerate(old)}
    stack_of = {id(s): k for k, s in enumerate(keep)}
    blocks = [replace(st.blocks[o], index=new_of[o], stack=stack_of[id(st.stacks[st.blocks[o].stack])])
              for o in old]
    stacks = [replace(s, blocks=[new_of[i] for i in s.blocks]) for s in keep]
    old_stack = {stack_of[id(s)]: st.stacks.index(s) for s in keep}
    st2 = Structure(blocks, stacks, st.norms, st.encoder_decoder, st.heads, st.outside)
    tr2 = Trace([tr.blocks[o] for o in old],
                [(*e[:4], new_of.get(e[4]) if e[4] is not None else None) for e in tr.outer
                 if e[4] is None or e[4] in new_of],
                {k: tr.stems[o] for k, o in old_stack.items() if o in tr.stems}, tr.output, tr.output_kind)
    return st2, tr2, gone


@dataclass
class Layout:
    """Architecture facts read off a :class:`Trace` (see :func:`layout_of`)."""

    norm_position: str | None  # "pre" | "post" | None (neither: see ``why``)
    activation: str | None
    gate: int | None  # gated MLP: which mlp_in output goes through φ
    residual: bool  # every block is a plain residual sum (no gains, no sandwich norms)
    stem_norm: dict  # stack -> norm module name applied to the stem (BERT/BART's embedding LN)
    final_norm: dict  # stack -> norm module name applied to the stack's output
    why: list[str] = field(default_factory=list)  # reasons the theory cannot cover this model

    @property
    def covered(self) -> bool:
        return not self.why


def _pattern(events) -> str:
    out = []
    for kind, *_ in events:
        if kind in "NAXM" and not (kind == "M" and out and out[-1] == "M"):
            out.append(kind)
    return "".join(out)


_PRE = ("NANM", "NANXNM")
_POST = ("ANMN", "ANXNMN")


def _rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / (b.norm() + 1e-30))


def layout_of(st: Structure, tr: Trace, branch: float = 1.0) -> Layout:
    """Norm placement, MLP nonlinearity, plain-residual check and stem/final norms of each stack.
    ``branch``: the role map's residual-branch multiplier m (depth-mup, completep): a block is
    then the sum of the stream and m × its branch outputs (a hook on the output module already
    includes m in the recorded output, a block that multiplies after it does not: either is plain)."""
    why: list[str] = []
    positions, acts = set(), set()
    gate = None
    residual = True
    for b, rec in zip(st.blocks, tr.blocks):
        pat = _pattern(rec.events)
        pos = "pre" if pat in _PRE else "post" if pat in _POST else None
        if pos is None:
            why.append(f"block {b.index} ({b.name}) runs its modules in the order {pat!r} "
                       f"(N norm, A attention, X cross-attention, M MLP): neither pre-LN nor post-LN")
            continue
        positions.add(pos)
        pre = [e[3] for e in rec.events if e[0] == "M"]
        post = [e[2] for e in rec.events if e[0] == "O"]
        if pre and post:
            name, g, reason = identify_activation(pre, post[0])
            if name is None:
                why.append(f"block {b.index}: {reason}")
            acts.add(name)
            gate = g
        # a plain residual sum: each norm sees (previous stream) + (the branch's output)
        o_out = [e[3] for e in rec.events if e[0] == "P"] or [  # MHA calls no out_proj module
            e[3] for e in rec.events if e[0] in "ax" and e[3] is not None]
        mlp_out = [e[3] for e in rec.events if e[0] == "O"]
        norms = [e for e in rec.events if e[0] == "N"]
        try:
            if pos == "pre" and rec.z_in is not None and rec.z_out is not None and (o_out or mlp_out):
                err = min(_rel(rec.z_in + m * (sum(o_out) + sum(mlp_out)), rec.z_out)
                          for m in {1.0, float(branch)})
            elif pos == "post" and norms and o_out and mlp_out:
                err = min(max(_rel(rec.z_in + m * o_out[0], norms[0][2]),
                              _rel(norms[-2][3] + m * mlp_out[-1], norms[-1][2])) for m in {1.0, float(branch)})
            else:
                err = 0.0
        except RuntimeError:  # shapes differ: not a residual sum of these outputs
            err = math.inf
        if err > 1e-3:
            residual = False
            why.append(f"block {b.index} is not a plain residual sum of its attention and MLP "
                       f"outputs (relative mismatch {err:.1e}): branch gains, LayerScale, skip "
                       f"scaling or sandwich norms are outside the leading-order recursion")
    for b in st.blocks:
        q, k = b.attention.q.d_in, b.attention.k.d_in
        if q != k:
            why.append(f"block {b.index}'s attention ({b.attention.module_name}) reads queries of {q} "
                       f"and keys of {k} features: keys of another sequence, outside the recursion")
    if st.outside:
        why.append(f"{len(st.outside)} attention layers outside any block ({', '.join(st.outside[:3])}"
                   f"{', ...' if len(st.outside) > 3 else ''}) run beside the measured blocks, "
                   f"which the leading-order recursion does not cover")
    for s in st.stacks:
        if s.others:
            why.append(f"stack {s.name} also runs {len(s.others)} layers without attention "
                       f"({', '.join(s.others[:3])}{', ...' if len(s.others) > 3 else ''}: state-space, "
                       f"linear-attention or MLP-only layers), which the leading-order recursion does not cover")
    if len(positions) > 1:
        why.append("blocks mix pre-LN and post-LN")
    if len(acts) > 1:
        why.append(f"blocks use different MLP nonlinearities ({', '.join(map(str, acts))})")
    stem, final = {}, {}
    last = {s.blocks[-1]: i for i, s in enumerate(st.stacks) if s.blocks}
    for kind, name, tin, tout, after in tr.outer:
        if after is not None and after in last and tin is not None and \
                tr.blocks[after].z_out is not None and tin.shape == tr.blocks[after].z_out.shape \
                and _rel(tin, tr.blocks[after].z_out) < 1e-6:
            final[last[after]] = name
        else:
            nxt = 0 if after is None else st.blocks[after].stack + 1
            if nxt < len(st.stacks):
                stem[nxt] = name
    return Layout(positions.pop() if len(positions) == 1 else None,
                  acts.pop() if len(acts) == 1 else None, gate, residual, stem, final, why)


def logit_scale(att, module: nn.Module) -> float:
    """The factor multiplying q·k in ``module``: its ``scaling``/``scale`` (or a direct child's, as
    BERT keeps it on ``attention.self``); 1 for a T5-style module (no scaling: the init carries
    it); else 1/√head_dim. Derived here until the role map states it per attention layer."""
    for mod in (module, *module.children()):
        for attr in ("scaling", "scale", "softmax_scale"):
            v = getattr(mod, attr, None)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
    if hasattr(module, "has_relative_attention_bias"):
        return 1.0
    return 1.0 / math.sqrt(att.head_dim)


def causal_of(att, rm) -> bool:
    if att.causal is not None:
        return bool(att.causal)
    return bool(rm.facts.causal) and not att.cross
