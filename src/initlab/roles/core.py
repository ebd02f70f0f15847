"""The role map: one model of the network that every scheme, optimizer scaling and probe reads.

A :class:`RoleMap` says, for each parameter tensor, which role(s) it plays (a fused qkv weight
plays three, each on a slice) and, for each attention layer, gives per-head read/write views of
Q, K, V and O in one canonical convention, whatever the storage layout:

    canonical matrix M of shape (d_in, d_out), acting on row vectors: y = x @ M

* ``nn.Linear`` stores (out, in) and computes x Wᵀ, so M = W[rows].T (a view).
* Hugging Face ``Conv1D`` stores (in, out) and computes x W, so M = W[:, cols] (a view).

Views share storage with the parameters, so ``view.copy_(...)`` under ``torch.no_grad()`` writes
the parameter in place (identity, dtype, device and ``requires_grad`` kept).

Nothing is stored on the parameters: the map is derived from the module structure each time it is
built, so it survives ``deepcopy``, ``state_dict`` round trips, ``torch.compile`` and wrappers.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import RoleMapError
from ..output import text_table


class Role(str, Enum):
    """What a parameter (or a slice of one) does in a Transformer."""

    PATCH_EMBED = "patch_embed"
    TOKEN_EMBED = "token_embed"
    POS_EMBED = "pos_embed"
    CLS_TOKEN = "cls_token"
    Q = "q"
    K = "k"
    V = "v"
    O = "o"
    MLP_IN = "mlp_in"  # up projection (a dense MLP's or one expert's)
    MLP_GATE = "mlp_gate"  # gate projection of a gated MLP (SwiGLU/GeGLU); schemes treat it as mlp_in
    MLP_OUT = "mlp_out"  # down projection (a dense MLP's or one expert's)
    ROUTER = "router"  # MoE router: d_model -> n_experts logits
    NORM = "norm"
    HEAD = "head"
    GAIN = "gain"  # residual-branch multipliers (ReZero, SkipInit, LayerScale)
    OTHER = "other"  # mapped but owned by no role (never touched by schemes)

    def __str__(self) -> str:  # "q", not "Role.Q"
        return self.value

    @classmethod
    def _missing_(cls, value):
        # Role("qq") is a user's typo: initlab's own error naming the choices, not a bare ValueError
        raise RoleMapError(f"unknown role {value!r}; roles are {', '.join(r.value for r in cls)}")


WEIGHT, BIAS = "weight", "bias"
ATTENTION_ROLES = (Role.Q, Role.K, Role.V, Role.O)


@dataclass(frozen=True)
class Grouped:
    """Index of a region interleaved in a fused tensor.

    Along ``axis`` the tensor is ``groups`` blocks of ``stride`` entries; the region takes entries
    ``[offset, offset + size)`` of every block (e.g. GPT-NeoX's per-head [q_h | k_h | v_h] rows).
    :func:`take` returns it as a view of shape (…, groups, size, …).
    """

    groups: int
    stride: int
    offset: int
    size: int
    axis: int = 0

    def take(self, t: torch.Tensor) -> torch.Tensor:
        ax = self.axis % t.dim()
        shape = t.shape[:ax] + (self.groups, self.stride) + t.shape[ax + 1:]
        idx = (slice(None),) * (ax + 1) + (slice(self.offset, self.offset + self.size),)
        return t.view(shape)[idx]


def take(t: torch.Tensor, index) -> torch.Tensor:
    """The region ``index`` (a slot's or projection's index) of ``t``, as a view."""
    if isinstance(index, Grouped):
        return index.take(t)
    return t[index] if index else t


@dataclass(frozen=True)
class Slot:
    """One role played by a region of a tensor (``index`` selects the region; () = whole)."""

    role: Role
    index: tuple = ()
    fan_in: int = 0
    fan_out: int = 0


@dataclass
class ParamInfo:
    """Role information for one parameter tensor.

    ``gain_offset``: for a norm weight, the constant its module adds to it (Gemma's RMSNorm computes
    x·(1 + w): offset 1), so "unit gain" writes ``1 - gain_offset`` (see :meth:`unit_gain`). The
    builder measures it on the norm module itself (:func:`gain_offset_of`), whatever its class.
    ``frozen``: the tensor is not trained (``requires_grad=False``, e.g. Whisper's sinusoidal
    encoder positions): no scheme, parametrization or mimetic init writes it unless the caller
    passes ``include_frozen=True``.
    """

    name: str
    param: nn.Parameter
    kind: str  # "weight" or "bias"
    slots: tuple[Slot, ...]
    layer: int | None = None
    gain_offset: float = 0.0

    @property
    def frozen(self) -> bool:
        """True when the tensor is not trained (``requires_grad=False``): schemes leave it alone."""
        return not self.param.requires_grad

    @property
    def unit_gain(self) -> float:
        """The stored value that makes this norm weight a gain of exactly 1."""
        return 1.0 - self.gain_offset

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(s.role for s in self.slots)

    @property
    def role(self) -> str:
        """Role key: ``"q"`` for a single-role tensor, ``"q+k+v"`` for a fused one."""
        return "+".join(r.value for r in self.roles)

    @property
    def is_bias(self) -> bool:
        return self.kind == BIAS

    @property
    def fan_in(self) -> int:
        return self.slots[0].fan_in

    @property
    def fan_out(self) -> int:
        return sum(s.fan_out for s in self.slots)

    def region(self, slot: Slot) -> torch.Tensor:
        """The region of the parameter's data that ``slot`` covers (a view)."""
        return take(self.param.detach(), slot.index)


@dataclass
class Projection:
    """One linear map of an attention layer, stored inside a (possibly fused) tensor.

    ``layout`` is ``"out_in"`` (nn.Linear: weight (out, in)) or ``"in_out"`` (Conv1D: (in, out)).
    ``offset``/``d_out`` select this projection's outputs inside a fused tensor; ``in_offset``/
    ``d_in`` its inputs, when the stored matrix reads more features than the projection does
    (ConvBERT's output projection reads [attention heads | convolution heads]: the attention's O is
    the first half of its inputs). With
    ``groups`` > 1 the outputs are interleaved: the stored output axis is ``groups`` blocks of
    ``stride`` features and this projection owns ``[offset, offset + d_out/groups)`` of each block
    (GPT-NeoX/Bloom per-head [q|k|v], Falcon per-KV-group, CodeGen's model-parallel blocks, a gated
    query's [q_h | gate_h]). :meth:`matrix` is then a copy; write with :meth:`write`.
    """

    name: str
    weight: nn.Parameter
    layout: str
    d_in: int
    d_out: int
    offset: int = 0
    bias: nn.Parameter | None = None
    bias_name: str | None = None
    groups: int = 1
    stride: int = 0
    in_offset: int = 0

    def __post_init__(self):
        if self.layout not in ("out_in", "in_out"):
            raise RoleMapError(f"unknown projection layout {self.layout!r} for {self.name}")
        rows = self.weight.shape[0] if self.layout == "out_in" else self.weight.shape[1]
        cols = self.weight.shape[1] if self.layout == "out_in" else self.weight.shape[0]
        if self.groups > 1:
            ok = (self.d_out % self.groups == 0 and self.groups * self.stride == rows
                  and self.offset + self.d_out // self.groups <= self.stride)
        else:
            ok = self.offset + self.d_out <= rows
        ins_ok = self.in_offset + self.d_in <= cols if self.in_offset or self.d_in < cols else cols == self.d_in
        if self.in_offset and self.groups > 1:
            ins_ok = False
        if not ins_ok or not ok:
            raise RoleMapError(
                f"{self.name}: weight of shape {tuple(self.weight.shape)} ({self.layout}) cannot hold "
                f"a {self.d_in}->{self.d_out} projection at offset {self.offset}"
                + (f" reading inputs from {self.in_offset}" if self.in_offset or self.d_in < cols else "")
                + (f" in {self.groups} groups of {self.stride}" if self.groups > 1 else ""))

    @property
    def size(self) -> int:
        """Outputs per group (all of them when not interleaved)."""
        return self.d_out // self.groups

    @property
    def index(self):
        """Index of this projection's region inside the stored weight (see :func:`take`)."""
        axis = 0 if self.layout == "out_in" else 1
        if self.groups > 1:
            return Grouped(self.groups, self.stride, self.offset, self.size, axis)
        sl = slice(self.offset, self.offset + self.d_out)
        ins = slice(self.in_offset, self.in_offset + self.d_in) if self._partial_in else slice(None)
        return (sl, ins) if axis == 0 else (ins, sl)

    @property
    def _partial_in(self) -> bool:
        cols = self.weight.shape[1] if self.layout == "out_in" else self.weight.shape[0]
        return self.in_offset > 0 or self.d_in < cols

    @property
    def bias_index(self):
        if self.groups > 1:
            return Grouped(self.groups, self.stride, self.offset, self.size, 0)
        return (slice(self.offset, self.offset + self.d_out),)

    def _rows(self, start: int, stop: int) -> tuple[int, int]:
        """Stored output positions of canonical outputs [start, stop) (within one group)."""
        if self.groups == 1:
            return self.offset + start, self.offset + stop
        g = start // self.size
        if stop > (g + 1) * self.size:
            raise RoleMapError(f"{self.name}: outputs {start}:{stop} cross an interleaving block")
        base = g * self.stride + self.offset - g * self.size
        return base + start, base + stop

    def cols(self, start: int, stop: int) -> torch.Tensor:
        """Canonical (d_in, stop - start) view of outputs [start, stop) (e.g. one head)."""
        a, b = self._rows(start, stop)
        w = self.weight.detach()
        i, j = self.in_offset, self.in_offset + self.d_in
        return w[a:b, i:j].t() if self.layout == "out_in" else w[i:j, a:b]

    def matrix(self) -> torch.Tensor:
        """Canonical (d_in, d_out) matrix, y = x @ matrix(): a view (a copy when interleaved)."""
        if self.groups == 1:
            return self.cols(0, self.d_out)
        return torch.cat([self.cols(g * self.size, (g + 1) * self.size) for g in range(self.groups)], 1)

    @torch.no_grad()
    def write(self, value: torch.Tensor) -> None:
        """Write a canonical (d_in, d_out) matrix into the stored weight, in place."""
        if tuple(value.shape) != (self.d_in, self.d_out):
            raise RoleMapError(f"{self.name}: cannot write a {tuple(value.shape)} matrix into a "
                               f"{self.d_in}->{self.d_out} projection (the writer assumed other head "
                               f"widths or counts than the role map's)")
        for g in range(self.groups):
            view = self.cols(g * self.size, (g + 1) * self.size)
            view.copy_(value[:, g * self.size:(g + 1) * self.size].to(view.device, view.dtype))

    def bias_view(self) -> torch.Tensor | None:
        """This projection's bias (a view; a copy when interleaved)."""
        if self.bias is None:
            return None
        return take(self.bias.detach(), self.bias_index).reshape(-1)

    @torch.no_grad()
    def zero_bias(self) -> None:
        if self.bias is not None:
            take(self.bias.detach(), self.bias_index).zero_()


@dataclass
class AttentionLayer:
    """Per-head access to one self-attention layer.

    Canonical shapes: ``q_head(h)``, ``k_head(g)`` are (d_model, head_dim), ``v_head(g)`` is
    (d_model, v_head_dim) and ``o_head(h)`` is (v_head_dim, d_model), so that head h computes
    softmax(scale · (x Wq_h)(x Wk_g)ᵀ) (x Wv_g) Wo_h, summed over heads, with g = kv_group(h).
    ``v_head_dim`` is ``head_dim`` unless the model's value heads are of another width (MiMo-V2's
    128-wide values beside 16-wide queries and keys, Perceiver's decoder cross-attention).
    For cross-attention, keys and values read the other sequence: ``k.d_in``/``v.d_in`` may differ
    from ``d_model`` (the query side's width).
    """

    index: int
    module_name: str
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    q: Projection
    k: Projection
    v: Projection
    o: Projection
    set_logit_scale: Callable[[float], None] | None = None
    cross: bool = False  # cross-attention: keys/values read another sequence (encoder states)
    causal: bool | None = None  # masked to earlier positions (None: the adapter cannot tell)
    get_logit_scale: Callable[[], float] | None = None  # the multiplier on q·k (None: 1/√head_dim)
    v_head_dim: int = 0  # width of a value head (0: head_dim)
    get_value_scale: Callable[[], float] | None = None  # a constant on the values (None: 1)
    # (offset, width): the value-input features [offset, offset + width) that the block's residual
    # path carries onto output features [0, width) (Zamba's shared block reads [hidden, embeddings]:
    # (0, d)). None: all of them when v reads as many features as o writes, else none. Mimetic's VO
    # identity term lives there (docs/mimetic.md, "Value input and output of different widths").
    residual_in: tuple[int, int] | None = None

    def logit_scale(self) -> float:
        """The multiplier the layer applies to q·kᵀ (its own, else 1/√head_dim)."""
        if self.get_logit_scale is not None:
            value = self.get_logit_scale()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                return float(value)
        return self.head_dim ** -0.5

    def value_scale(self) -> float:
        """The constant the layer multiplies its values by before attending (MiMo-V2's
        ``v_scale``; 1 for most models): the kernel's values are value_scale · x W_v, so the
        layer's value-to-output map is value_scale · :meth:`vo_product`."""
        if self.get_value_scale is not None:
            value = self.get_value_scale()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                return float(value)
        return 1.0

    @property
    def frozen(self) -> bool:
        """True when any of the layer's q, k, v, o weights is frozen (mimetic init skips it)."""
        return any(not p.weight.requires_grad for p in (self.q, self.k, self.v, self.o))

    def __post_init__(self):
        if not self.v_head_dim:
            self.v_head_dim = self.head_dim
        if self.n_heads % self.n_kv_heads:
            raise RoleMapError(f"{self.module_name}: {self.n_heads} query heads do not split into "
                               f"{self.n_kv_heads} key/value groups")
        if self.residual_in is not None:
            off, width = self.residual_in
            if not (0 <= off and 0 < width <= self.o.d_out and off + width <= self.v.d_in):
                raise RoleMapError(f"{self.module_name}: residual_in={self.residual_in} must name "
                                   f"(offset, width) with value-input features [offset, offset + width) "
                                   f"inside the {self.v.d_in} the value projection reads and width <= "
                                   f"the {self.o.d_out} the output projection writes")

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    def kv_group(self, h: int) -> int:
        return h // self.group_size

    def _head(self, proj: Projection, h: int) -> torch.Tensor:
        return proj.cols(h * self.head_dim, (h + 1) * self.head_dim)

    def q_head(self, h: int) -> torch.Tensor:
        return self._head(self.q, h)

    def k_head(self, g: int) -> torch.Tensor:
        return self._head(self.k, g)

    def v_head(self, g: int) -> torch.Tensor:
        return self.v.cols(g * self.v_head_dim, (g + 1) * self.v_head_dim)

    def o_head(self, h: int) -> torch.Tensor:
        return self.o.matrix()[h * self.v_head_dim:(h + 1) * self.v_head_dim]

    def qk_product(self, h: int) -> torch.Tensor:
        """W_q^h W_k^hᵀ (d_model x d_model), computed in float64."""
        return self.q_head(h).double() @ self.k_head(self.kv_group(h)).double().t()

    def vo_product(self) -> torch.Tensor:
        """Σ_h W_v^{g(h)} W_o^h (value input x output width: d_model x d_model in a plain layer,
        v.d_in x o.d_out where they differ): the layer's value-to-output map, float64."""
        out = torch.zeros(self.v.d_in, self.o.d_out, dtype=torch.float64, device=self.o.weight.device)
        for h in range(self.n_heads):
            out += self.v_head(self.kv_group(h)).double() @ self.o_head(h).double()
        return out

    def projections(self) -> dict[Role, Projection]:
        return {Role.Q: self.q, Role.K: self.k, Role.V: self.v, Role.O: self.o}


@dataclass(frozen=True)
class InputFacts:
    """What the model reads, so probes and checks can build a valid batch.

    ``kind``: ``"tokens"`` (integer ids < ``vocab_size``, at most ``max_positions`` long),
    ``"image"`` (float (B, ``in_chans``, *``image_size``)), ``"features"`` (float frames, e.g.
    Whisper's log-mel (B, ``in_chans``, ``max_positions``)), ``"embeddings"`` (float vectors of
    the model width, e.g. ``nn.TransformerEncoder``; (T, B, d) when not ``batch_first``),
    ``"audio"`` (a float raw waveform (B, samples): Moonshine's, SpeechT5's ``input_values``) or
    ``"unknown"``.
    ``encoder_decoder``: the forward also needs decoder inputs (T5, BART, Whisper).
    ``name``: the forward's keyword for the input (``input_ids``, ``pixel_values``, …; None:
    positional).
    """

    kind: str = "unknown"
    name: str | None = None
    batch_first: bool = True
    vocab_size: int | None = None
    max_positions: int | None = None
    image_size: tuple[int, ...] | None = None
    in_chans: int | None = None
    encoder_decoder: bool = False


@dataclass(frozen=True)
class PositionFacts:
    """How the model encodes positions.

    ``kind``: ``"learned"`` (a trained table), ``"fixed"`` (a buffer or a frozen parameter: never
    re-drawn), ``"rope"`` (rotary, no table), ``"relative"`` (a learned bias on the logits, T5-style),
    ``"none"`` or ``"unknown"``. ``table``: the parameter or buffer name of the table of the
    model's main input (the encoder's, for an encoder-decoder), if any; ``tables``: every position
    table (Whisper: the encoder's fixed one and the decoder's learned one).
    ``grid``: (rows, cols) of the image patch grid the table is laid out on, for vision models.
    ``prefix_tokens``: tokens before the grid in the sequence (class, distillation, register
    tokens); ``table_prefix``: rows of the table before the grid's rows (DINOv2 with registers:
    3 prefix tokens, 1 table row, since its register tokens carry no position).
    ``interpolated``: the model resizes the table to the input's grid (DINOv2 always; a ViT with
    ``interpolate_pos_encoding``): ``grid`` is the table's own grid.
    """

    kind: str = "unknown"
    table: str | None = None
    grid: tuple[int, int] | None = None
    prefix_tokens: int = 0
    table_prefix: int = 0
    tables: tuple[str, ...] = ()
    interpolated: bool = False


@dataclass(frozen=True)
class ModelFacts:
    """Model-level facts every consumer reads from the role map, never from the model itself.

    ``causal``: decoder-only masked attention (None: the adapter cannot tell).
    ``embed_scale``: the constant the model multiplies its token embeddings by (Gemma: √d; BART
    with ``scale_embedding``: √d), so a scheme or probe can reason about the embedding the blocks
    actually see (the table's std times this).
    ``norm_position``: ``"pre"`` (x + F(LN(x)): the residual stream is never normalized; Gemma2's
    extra post-branch norms included), ``"post"`` (x ← LN(x + F(x)), BERT, BART) or None (unknown).
    """

    inputs: InputFacts = field(default_factory=InputFacts)
    positions: PositionFacts = field(default_factory=PositionFacts)
    causal: bool | None = None
    embed_scale: float = 1.0
    norm_position: str | None = None


@dataclass
class ModelControls:
    """Model-level knobs some schemes need, when the model exposes them.

    ``head_multiplier``: get/set the constant multiplying the output logits (N_rescale).
    ``skip_scale``: set the residual skip multiplier (DeepNorm's alpha).
    ``branch_multiplier``: get/set the constant every residual branch's output is multiplied by
    (the depth family's (L/L_base)^-α, CompleteP's ``residual_scaling``); the branch outputs are
    :meth:`RoleMap.branch_outputs`. initlab's models keep it in their state dict; any other model
    gets a forward hook on each branch output (:mod:`initlab.roles.persist`).
    ``tied_head``: True when the output layer reuses the token embedding (None: unknown, judged from
    the roles: a token embedding and no head weight).
    """

    get_head_multiplier: Callable[[], float] | None = None
    set_head_multiplier: Callable[[float], None] | None = None
    set_skip_scale: Callable[[float], None] | None = None
    tied_head: bool | None = None
    get_branch_multiplier: Callable[[], float] | None = None
    set_branch_multiplier: Callable[[float], None] | None = None
    # raises when a branch multiplier of that value cannot act on this model (called before any
    # tensor is written: a model that normalizes its branch outputs)
    check_branch_multiplier: Callable[[float], None] | None = None


@dataclass
class RoleMap:
    """Roles of every parameter of one model, plus per-head attention views."""

    model_class: str
    width: int
    depth: int
    params: dict[str, ParamInfo]
    attention: list[AttentionLayer] = field(default_factory=list)
    controls: ModelControls = field(default_factory=ModelControls)
    adapter: str = ""
    facts: ModelFacts = field(default_factory=ModelFacts)
    frozen_layers: tuple[str, ...] = ()  # attention layers a trainable() view left out

    def __iter__(self) -> Iterator[ParamInfo]:
        return iter(self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> ParamInfo:
        try:
            return self.params[name]
        except KeyError:
            raise RoleMapError(f"no parameter named {name!r} in the role map of {self.model_class}") from None

    def role_of(self, name: str) -> str:
        return self[name].role

    def trainable(self) -> "RoleMap":
        """This map without its frozen tensors (``requires_grad=False``) and without the attention
        layers that hold one: what schemes write unless asked to ``include_frozen``."""
        if not any(info.frozen for info in self.params.values()):
            return self
        params = {n: info for n, info in self.params.items() if not info.frozen}
        attention = [a for a in self.attention if not a.frozen]
        dropped = tuple(a.module_name for a in self.attention if a.frozen)
        return replace(self, params=params, attention=attention,
                       frozen_layers=self.frozen_layers + dropped)

    def frozen(self) -> list[str]:
        """Names of the frozen tensors (left alone by every writer unless ``include_frozen``)."""
        return [n for n, info in self.params.items() if info.frozen]

    def slots(self, role: Role | str, kind: str | None = WEIGHT) -> list[tuple[ParamInfo, Slot]]:
        """Every (tensor, slot) pair playing ``role``; ``kind`` = "weight", "bias" or None (both)."""
        role = Role(role)
        return [(info, s) for info in self.params.values() for s in info.slots
                if s.role == role and (kind is None or info.kind == kind)]

    def require_attention(self, purpose: str) -> list:
        """The attention layers, or :class:`RoleMapError` saying ``purpose`` needs some."""
        if not self.attention and self.frozen_layers:
            raise RoleMapError(f"every attention layer of {self.model_class} holds a frozen weight "
                               f"(requires_grad=False, e.g. {self.frozen_layers[0]}), and frozen "
                               f"tensors are left as they are; unfreeze them or pass "
                               f"include_frozen=True to let {purpose} write them")
        if not self.attention:
            raise RoleMapError(f"{self.model_class} has no attention layers in its role map; "
                               f"{purpose} needs them")
        return self.attention

    def branch_outputs(self) -> list[tuple[int | None, str]]:
        """(layer, module name) of every residual branch's last linear map, in model order: each
        attention layer's output projection (role ``o``) and each MLP's output (role ``mlp_out``,
        one per expert in a mixture). A branch's output is that module's output: multiplying it
        multiplies the branch (its bias included)."""
        out, seen = [], set()
        names = [(a.index, a.o.name) for a in self.attention]
        names += [(info.layer, info.name) for info in self.params.values()
                  if info.kind == WEIGHT and Role.MLP_OUT in info.roles]
        for layer, pname in names:
            module = pname.rpartition(".")[0]
            if module not in seen:
                seen.add(module)
                out.append((layer, module))
        return out

    def by_role(self, role: Role | str, kind: str | None = WEIGHT) -> list[ParamInfo]:
        role = Role(role)
        return [info for info in self.params.values()
                if role in info.roles and (kind is None or info.kind == kind)]

    def summary(self) -> str:
        """A table of name, role, kind, layer and shape, one line per tensor."""
        rows = [("name", "role", "kind", "layer", "shape")]
        for info in self.params.values():
            rows.append((info.name, info.role, info.kind, "" if info.layer is None else str(info.layer),
                         "x".join(map(str, info.param.shape))))
        return text_table(rows)


class RoleMapBuilder:
    """Collects role information for one model; adapters use it, then call :meth:`build`.

    Every parameter of the model ends up in exactly one :class:`ParamInfo`; a parameter no adapter
    claimed is an error (so schemes never silently skip tensors), unless ``allow_unmapped`` is set,
    in which case it gets role ``other`` and no scheme touches it.
    """

    def __init__(self, model: nn.Module, *, prefix: str = ""):
        self.model = model
        self.prefix = prefix
        self.named = dict(model.named_parameters(remove_duplicate=True))
        # every name, tied aliases included (xlm-roberta's decoder.weight is word_embeddings.weight)
        self.aliases = dict(model.named_parameters(remove_duplicate=False))
        self._ids = {id(p): n for n, p in self.named.items()}
        self.infos: dict[str, ParamInfo] = {}
        self.attention: list[AttentionLayer] = []
        self.controls = ModelControls()
        self.facts = ModelFacts()

    # -- lookup ---------------------------------------------------------------------------------
    def param(self, name: str) -> nn.Parameter:
        try:
            return self.aliases[name]
        except KeyError:
            raise RoleMapError(f"{type(self.model).__name__} has no parameter {name!r}") from None

    def canonical_name(self, p: nn.Parameter) -> str:
        """The name under which a (possibly shared/tied) parameter is listed."""
        return self._ids[id(p)]

    # -- registration ---------------------------------------------------------------------------
    def add(self, name: str, role: Role | str, *, kind: str = WEIGHT, layer: int | None = None,
            fan_in: int = 0, fan_out: int = 0, index: tuple = ()) -> None:
        """Register a role for a parameter (or a region of it)."""
        p = self.param(name)
        name = self.canonical_name(p)
        slot = Slot(Role(role), index, fan_in, fan_out)
        if name in self.infos:
            info = self.infos[name]
            if info.kind != kind:
                raise RoleMapError(f"{name} registered both as {info.kind} and {kind}")
            if not index or any(not s.index for s in info.slots) or any(s.index == index for s in info.slots):
                if slot in info.slots or (not index and Role(role) in info.roles):
                    return  # tied parameter seen twice with the same role
                raise RoleMapError(f"{name} already has role {info.role}; cannot also be {Role(role)}")
            info.slots = info.slots + (slot,)
        else:
            self.infos[name] = ParamInfo(name, p, kind, (slot,), layer)

    def add_module(self, module_name: str, role: Role | str, *, layer: int | None = None) -> None:
        """Register ``weight`` (and ``bias`` if present) of a Linear/Conv/Embedding/Norm module."""
        mod = self.model.get_submodule(module_name)
        w = getattr(mod, "weight", None)
        if isinstance(w, nn.Parameter):
            fan_in, fan_out = _fans(mod, w)
            self.add(join_name(module_name, "weight"), role, layer=layer, fan_in=fan_in, fan_out=fan_out)
        b = getattr(mod, "bias", None)
        if isinstance(b, nn.Parameter):
            self.add(join_name(module_name, "bias"), role, kind=BIAS, layer=layer, fan_in=1, fan_out=b.numel())

    def linear(self, module_name: str, *, offset: int = 0, d_out: int | None = None,
               layout: str | None = None, groups: int = 1, stride: int = 0, in_offset: int = 0,
               d_in: int | None = None) -> Projection:
        """A :class:`Projection` over an ``nn.Linear`` (or Conv1D when ``layout="in_out"``);
        ``in_offset``/``d_in`` select part of its inputs (default: all)."""
        mod = self.model.get_submodule(module_name)
        w = mod.weight
        if layout is None:
            layout = "out_in"
        cols = w.shape[1] if layout == "out_in" else w.shape[0]
        total = w.shape[0] if layout == "out_in" else w.shape[1]
        b = getattr(mod, "bias", None)
        b = b if isinstance(b, nn.Parameter) else None
        return Projection(join_name(module_name, "weight"), w, layout,
                          cols - in_offset if d_in is None else d_in,
                          total - offset if d_out is None else d_out, offset,
                          b, join_name(module_name, "bias") if b is not None else None, groups, stride,
                          in_offset)

    def add_attention(self, layer: int, module_name: str, *, q: Projection, k: Projection,
                      v: Projection, o: Projection, n_heads: int, n_kv_heads: int | None = None,
                      set_logit_scale: Callable[[float], None] | None = None,
                      head_dim: int | None = None, cross: bool = False,
                      causal: bool | None = None,
                      get_logit_scale: Callable[[], float] | None = None,
                      v_head_dim: int | None = None,
                      get_value_scale: Callable[[], float] | None = None,
                      residual_in: tuple[int, int] | None = None) -> AttentionLayer:
        """Register an attention layer and the roles of the tensors its projections live in.
        ``v_head_dim``: the width of a value head when it is not ``head_dim``."""
        n_kv = n_kv_heads or n_heads
        d_model = q.d_in
        if q.d_out % n_heads:
            raise RoleMapError(f"{module_name}: q width {q.d_out} is not divisible by {n_heads} heads")
        if head_dim is not None and head_dim * n_heads != q.d_out:
            raise RoleMapError(f"{module_name}: {n_heads} heads of head_dim {head_dim} need a q width "
                               f"of {n_heads * head_dim}, the q projection has {q.d_out}")
        head_dim = q.d_out // n_heads
        vd = v_head_dim or head_dim
        if k.d_out != n_kv * head_dim or v.d_out != n_kv * vd or o.d_in != n_heads * vd:
            raise RoleMapError(
                f"{module_name}: projection shapes do not match {n_heads} heads of {head_dim} "
                f"(values {vd}) with {n_kv} key/value heads: q {q.d_in}->{q.d_out}, k "
                f"{k.d_in}->{k.d_out}, v {v.d_in}->{v.d_out}, o {o.d_in}->{o.d_out}")
        att = AttentionLayer(layer, module_name, d_model, n_heads, n_kv, head_dim, q, k, v, o,
                             set_logit_scale, cross, causal, get_logit_scale, v_head_dim=vd,
                             get_value_scale=get_value_scale, residual_in=residual_in)
        for role, proj in att.projections().items():
            self.add(proj.name, role, layer=layer, fan_in=proj.d_in, fan_out=proj.d_out, index=proj.index)
            if proj.bias is not None:
                self.add(proj.bias_name, role, kind=BIAS, layer=layer, fan_in=1, fan_out=proj.d_out,
                         index=proj.bias_index)
        self.attention.append(att)
        return att

    def add_norms(self, *, layer_of: Callable[[str], int | None] = lambda n: None) -> None:
        """Register every LayerNorm/RMSNorm-like module not yet claimed as role ``norm``."""
        for mname, mod in self.model.named_modules():
            if is_norm(mod):
                for pname, p in mod.named_parameters(recurse=False):
                    full = join_name(mname, pname)
                    if self.canonical_name(p) not in self.infos:
                        self.add(full, Role.NORM, kind=BIAS if pname == "bias" else WEIGHT,
                                 layer=layer_of(mname), fan_in=1, fan_out=p.numel())

    def build(self, *, width: int, depth: int, adapter: str, allow_unmapped: bool = False) -> RoleMap:
        missing = [n for n in self.named if n not in self.infos]
        if missing and not allow_unmapped:
            raise RoleMapError(
                f"{type(self.model).__name__}: adapter {adapter!r} left parameters without a role: "
                f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}. Pass an explicit "
                f"mapping to initlab.role_map(model, mapping=...) or register an adapter.")
        for n in missing:
            p = self.named[n]
            self.infos[n] = ParamInfo(n, p, BIAS if n.endswith("bias") else WEIGHT,
                                      (Slot(Role.OTHER, (), 0, p.numel()),), None)
        ordered = {n: self.infos[n] for n in self.named}  # model order
        self._gain_offsets(ordered)
        facts = self.facts
        if facts.causal is None and self.attention:  # from the self-attention layers when they agree
            flags = {a.causal for a in self.attention if not a.cross}
            if len(flags) == 1 and None not in flags:
                facts = replace(facts, causal=flags.pop())
        return RoleMap(type(self.model).__name__, width, depth, ordered, self.attention,
                       self.controls, adapter, facts)


    def _gain_offsets(self, infos: dict[str, ParamInfo]) -> None:
        """Measure the gain convention of every norm weight's module (see :func:`gain_offset_of`)."""
        cache: dict = {}
        for info in infos.values():
            if info.kind != WEIGHT or Role.NORM not in info.roles:
                continue
            owner, _, pname = info.name.rpartition(".")
            if pname != "weight":
                continue
            try:
                mod = self.model.get_submodule(owner)
            except AttributeError:
                continue
            info.gain_offset = gain_offset_of(mod, cache)


_OFFSET_FREE = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _cache_key(mod: nn.Module):
    simple = tuple(sorted((k, v) for k, v in vars(mod).items()
                          if not k.startswith("_") and isinstance(v, (bool, int, float, str))))
    return type(mod), simple


def gain_offset_of(mod: nn.Module, cache: dict | None = None) -> float:
    """The constant a norm module adds to its weight: 0 for y = w·n(x), 1 for Gemma's y = (1 + w)·n(x).

    Measured on the module's own ``forward``: a shallow copy with stand-in parameters (no
    parameter of the model is read or written) runs once with weight 0 and once with weight 1 on a
    fixed input; the output is (offset + w)·n(x), so offset = ⟨y₀, y₁ − y₀⟩ / ‖y₁ − y₀‖². PyTorch's
    own norms are 0 without a probe. Modules that cannot be probed (meta buffers, odd forwards)
    fall back on the class name (``Gemma*RMSNorm``: 1, else 0).
    """
    rms = getattr(nn, "RMSNorm", None)
    if type(mod) in _OFFSET_FREE or (rms is not None and type(mod) is rms):  # subclasses may differ
        return 0.0
    key = _cache_key(mod)
    if cache is not None and key in cache:
        return cache[key]
    value = _probe_gain_offset(mod)
    if value is None:
        name = type(mod).__name__.lower()
        value = 1.0 if "gemma" in name and "rmsnorm" in name else 0.0
    if cache is not None:
        cache[key] = value
    return value


@torch.no_grad()
def _probe_gain_offset(mod: nn.Module) -> float | None:
    w = mod._parameters.get("weight")
    if w is None or w.dim() != 1 or w.numel() == 0:
        return None
    d = w.shape[0]
    probe = copy.copy(mod)  # shallow; its parameter/buffer/hook dicts are replaced below
    probe._parameters = {n: None if p is None else torch.zeros(p.shape, dtype=torch.float32)
                         for n, p in mod._parameters.items()}
    buffers = {}
    for n, b in mod._buffers.items():
        if b is not None and (b.is_meta or type(b) is not torch.Tensor):
            return None
        buffers[n] = None if b is None else b.detach().to("cpu", copy=True)
    probe._buffers = buffers
    probe._forward_hooks, probe._forward_pre_hooks = {}, {}
    x = torch.randn(2, 3, d, generator=torch.Generator().manual_seed(0)) * 2.0 + 0.5
    try:
        y0 = type(mod).forward(probe, x)
        probe._parameters["weight"] = torch.ones(d)
        y1 = type(mod).forward(probe, x)
    except Exception:  # a forward that needs more than one tensor: fall back on the class name
        return None
    if not (isinstance(y0, torch.Tensor) and isinstance(y1, torch.Tensor) and y0.shape == x.shape
            and y1.shape == x.shape):
        return None
    y0, y1 = y0.double(), y1.double()
    diff = y1 - y0
    den = float((diff * diff).sum())
    if not den > 0:
        return None
    off = float((y0 * diff).sum()) / den
    if float((y0 - off * diff).norm()) > 1e-3 * max(float(y0.norm()), float(diff.norm())):
        return None  # not of the form (offset + w)·n(x)
    return float(round(off)) if abs(off - round(off)) < 1e-4 else off


def join_name(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def require_materialized(model: nn.Module, action: str = "initialize it") -> None:
    """:class:`~initlab.errors.InitError` naming the first parameter still on the meta device."""
    from ..errors import InitError
    for n, p in model.named_parameters():
        if p.is_meta:
            raise InitError(f"parameter {n} is on the meta device; materialize the model first "
                            f"(model.to_empty(device=...)), then {action}")


def is_norm(mod: nn.Module) -> bool:
    if isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)):
        return True
    rms = getattr(nn, "RMSNorm", None)
    return (rms is not None and isinstance(mod, rms)) or type(mod).__name__.lower().endswith(("rmsnorm", "layernorm"))


def _fans(mod: nn.Module, w: torch.Tensor) -> tuple[int, int]:
    """(fan_in, fan_out) of a module's weight in the sense of the linear map it computes."""
    if isinstance(mod, nn.Embedding):
        return 1, w.shape[1]  # a lookup: each output reads one row
    if type(mod).__name__ == "Conv1D":  # Hugging Face: (in, out)
        return w.shape[0], w.shape[1]
    if w.dim() >= 2:
        receptive = w[0][0].numel() if w.dim() > 2 else 1
        return w.shape[1] * receptive, w.shape[0] * receptive
    return 1, w.numel()
