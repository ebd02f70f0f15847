"""Coordinate check (as μP's ``mup.coord_check``), for our parametrizations.

Any model the role map accepts (inputs passed under the role map's input keyword, decoder ids
drawn for an encoder-decoder, the logits read from a Hugging Face output). Train a few steps at
several widths with the parametrization's initialization and per-group
learning rates (:func:`initlab.parametrization.param_groups`) and record, per role and step, the
RMS of each role's module output on a fixed batch (activation size) and the RMS of its change since
step 0 (update size). Under a parametrization that is right for width these curves are flat across
widths; under the standard parametrization at a fixed learning rate they grow with width.

With ``base_width`` the factors are (n/n_base)^e, so at the base width every parametrization takes
the same steps and the curves fan out from one point.

**Depth.** With ``depths`` the check sweeps depth as well (``make_model(width, depth)``): the depth
members (``depth-mup``, ``completep``; base depth the smallest depth) keep the activation and update
sizes flat across depth, where a width-only member's grow with depth. ``CoordCheck.slope(...,
axis="depth")`` is the depth exponent.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .roles import roles

TRACKED = ("patch_embed", "token_embed", "q+k+v", "q", "k", "v", "o", "mlp_in", "mlp_out", "residual", "logits")
#: "residual": the sum of every residual branch's output (the role map's branch outputs, times the
#: branch multiplier), i.e. what the blocks add to the stream; the quantity the depth members keep
#: flat across depth


AXES = ("width", "depth")


@dataclass
class CoordCheck:
    """Records: one dict per (param, width, depth, step, role) with ``act`` and ``delta`` (RMS)."""

    records: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def value(self, param: str, width: int, role: str, *, step: int | None = None, key: str = "act",
              depth: int | None = None) -> float:
        """The record of ``param`` at ``width`` (and ``depth``, default the first one recorded)."""
        rows = [r for r in self.records if r["param"] == param and r["width"] == width and r["role"] == role]
        if rows and depth is None:
            depth = rows[0].get("depth")
        rows = [r for r in rows if r.get("depth") == depth]
        if not rows:
            raise ConfigError(f"no record for {param}/{width}/{role}" + (f"/depth {depth}" if depth else ""))
        step = max(r["step"] for r in rows) if step is None else step
        return next(r[key] for r in rows if r["step"] == step)

    def sizes(self, axis: str = "width") -> list[int]:
        """The widths (or depths) recorded."""
        if axis not in AXES:
            raise ConfigError(f"axis must be 'width' or 'depth', got {axis!r}")
        return sorted({r[axis] for r in self.records if r.get(axis) is not None})

    def axis(self) -> str:
        """``"depth"`` when the check swept depth at one width, else ``"width"``."""
        return "depth" if len(self.sizes("depth")) > 1 and len(self.sizes("width")) == 1 else "width"

    def _at(self, param: str, role: str, size: int, axis: str, step, key) -> float:
        if axis == "width":
            return self.value(param, size, role, step=step, key=key)
        width = self.sizes("width")[0]
        return self.value(param, width, role, step=step, key=key, depth=size)

    def slope(self, param: str, role: str, *, key: str = "act", step: int | None = None,
              axis: str = "width") -> float:
        """Least-squares exponent e of value ∝ size^e across widths (``axis="depth"``: across
        depths at the first width); 0 = flat."""
        sizes = sorted({r[axis] for r in self.records if r["param"] == param and r.get(axis) is not None})
        if len(sizes) < 2:
            raise ConfigError(f"the check has one {axis} only; a slope needs two or more")
        xs = [math.log(w) for w in sizes]
        ys = [math.log(max(self._at(param, role, w, axis, step, key), 1e-30)) for w in sizes]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)

    def roles(self) -> list[str]:
        return [r for r in TRACKED if any(x["role"] == r for x in self.records)]

    def params(self) -> list[str]:
        return list(dict.fromkeys(r["param"] for r in self.records))

    @classmethod
    def read_csv(cls, path) -> "CoordCheck":
        with Path(path).open() as fh:
            rows = [dict(r, width=int(r["width"]), step=int(r["step"]), act=float(r["act"]),
                         delta=float(r["delta"]), depth=int(r["depth"]) if r.get("depth") else None)
                    for r in csv.DictReader(fh)]
        return cls(rows)

    def write_csv(self, path) -> Path:
        from .output import atomic_write_text
        from .probe.measure import csv_text

        return atomic_write_text(path, csv_text(["param", "width", "depth", "step", "role", "act", "delta"],
                                                self.records))

    def table(self) -> str:
        axes = [a for a in AXES if len(self.sizes(a)) > 1]
        lines = []
        for axis in axes:
            lines.append(f"{axis} exponent of the activation RMS (act) and its change since step 0 (delta) "
                         f"at the last step; 0 = flat across {axis}s"
                         + (f" (at width {self.sizes('width')[0]})" if axis == "depth" else ""))
            for p in self.params():
                lines.append(f"{p:>14}: " + "  ".join(
                    f"{r} {self.slope(p, r, axis=axis):+.2f}/{self.slope(p, r, key='delta', axis=axis):+.2f}"
                    for r in self.roles()))
        return "\n".join(lines)

    def plot(self, path, *, key: str = "delta", axis: str | None = None) -> Path:
        from .plotting import colormap, save, subplots

        axis = axis or self.axis()
        params, rls = self.params(), self.roles()
        steps = sorted({r["step"] for r in self.records})
        fig, axes = subplots(len(params), len(rls), figsize=(2.6 * len(rls), 2.4 * len(params)),
                                 squeeze=False, sharex=True)
        cmap = colormap("viridis")
        for i, p in enumerate(params):
            sizes = sorted({r[axis] for r in self.records if r["param"] == p and r.get(axis) is not None})
            for j, role in enumerate(rls):
                ax = axes[i][j]
                for k, st in enumerate(steps):
                    if key == "delta" and st == 0:
                        continue
                    ax.loglog(sizes, [self._at(p, role, w, axis, st, key) for w in sizes], "o-",
                              ms=3, color=cmap(k / max(len(steps) - 1, 1)), label=f"step {st}")
                ax.set_xticks(sizes)
                ax.set_xticklabels([str(w) for w in sizes], fontsize=7)
                ax.minorticks_off()
                ax.set_title(f"{p}: {role}", fontsize=9)
                if i == len(params) - 1:
                    ax.set_xlabel(axis)
        axes[0][0].legend(fontsize=7)
        what = "RMS change of the output since step 0" if key == "delta" else "RMS of the output"
        fig.suptitle(f"coordinate check: {what}, per role (flat = {axis}-independent)")
        return save(fig, path, dpi=100)


def _module_of(param_name: str) -> str:
    return param_name.rsplit(".", 1)[0]


def coord_check(make_model: Callable[..., nn.Module], widths, batch: torch.Tensor, targets: torch.Tensor, *,
                params=("standard", "nt", "mu"), optimizer: str = "adamw", lr: float = 1e-2,
                steps: int = 4, base_width: int | None = None, seed: int = 0, depths=None,
                base_depth: int | None = None) -> CoordCheck:
    """Train ``steps`` steps at each width (and depth) for each parametrization and record per-role sizes.

    Args:
        make_model: width -> a fresh model (same depth, heads chosen so head_dim stays fixed); with
            ``depths``: (width, depth) -> a fresh model.
        batch, targets: one fixed batch, used for every step (the check is about sizes, not data).
        params: parametrization specs for :func:`initlab.parametrization.Parametrization.parse`.
        base_width: n_base of the lr factors (default: the smallest width).
        depths: depths to sweep as well (each with every width); ``base_depth`` (default the
            smallest depth) is L_base of the depth members.
    """
    from .parametrization import param_groups
    from .probe.structure import forward_inputs, output_tensor
    from .schemes.plan import InitPlan, build_seeded

    widths = sorted(int(w) for w in widths)
    depth_list = sorted(int(d) for d in depths) if depths is not None else [None]
    if len(widths) < 2 and len(depth_list) < 2:
        raise ConfigError("a coordinate check needs at least two widths (or two depths)")
    base = base_width or widths[0]
    b_depth = base_depth or (depth_list[0] if depths is not None else None)
    out = CoordCheck(meta=dict(widths=widths, depths=None if depths is None else depth_list,
                               optimizer=optimizer, lr=lr, steps=steps, base_width=base, base_depth=b_depth))
    for spec in params:
        plan = InitPlan.build("default", param=spec, base_width=base, always_parametrize=True,
                              param_options={} if b_depth is None else {"base_depth": b_depth})
        p = plan.parametrization
        for width in widths:
            for depth in depth_list:
                make = (lambda: make_model(width)) if depth is None else (lambda: make_model(width, depth))
                model = build_seeded(make, seed)
                _run_one(out, model, plan, p, str(spec), width, batch, targets, optimizer, lr, steps, seed,
                         param_groups, forward_inputs, output_tensor)
    return out


def _run_one(out, model, plan, p, spec, width, batch, targets, optimizer, lr, steps, seed, param_groups,
             forward_inputs, output_tensor) -> None:
    rm = roles(model)
    plan.initialize_(model, seed, role_map=rm)
    groups = param_groups(model, p, lr=lr, optimizer=optimizer, role_map=rm)
    opt = (torch.optim.AdamW(groups, lr=lr, weight_decay=0.0) if optimizer == "adamw"
           else torch.optim.SGD(groups, lr=lr))
    modules = {}
    for info in rm:
        if info.kind == "weight" and info.role in TRACKED and info.role not in modules:
            modules[info.role] = [model.get_submodule(_module_of(i.name)) for i in rm
                                  if i.kind == "weight" and i.role == info.role]
    branches = [model.get_submodule(name) for _, name in rm.branch_outputs() if name]
    first: dict = {}
    for step in range(steps + 1):
        acts: dict = {}
        added: list = []
        hooks = [m.register_forward_hook(lambda mod, i, o, role=role: acts.setdefault(role, []).append(o.detach()))
                 for role, mods in modules.items() for m in mods]
        hooks += [m.register_forward_hook(lambda mod, i, o: added.append(o.detach())) for m in branches]
        try:
            args, kw = forward_inputs(rm, batch, seed=seed)
            logits, _ = output_tensor(model(*args, **kw))
        finally:
            for h in hooks:
                h.remove()
        if added and all(a.shape == added[0].shape for a in added):
            acts["residual"] = [sum(added)]
        acts["logits"] = [logits.detach()]
        for role, outs in acts.items():
            if step == 0:
                first[role] = [o.clone() for o in outs]
            act = math.sqrt(sum(float(o.double().pow(2).mean()) for o in outs) / len(outs))
            delta = math.sqrt(sum(float((o - f).double().pow(2).mean())
                                  for o, f in zip(outs, first[role])) / len(outs))
            out.records.append(dict(param=spec, width=width, depth=rm.depth, step=step, role=role,
                                    act=act, delta=delta))
        if step == steps:
            break
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
