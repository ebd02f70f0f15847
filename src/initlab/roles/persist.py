"""What initlab sets on a model besides its tensors, and how it survives saving and reloading.

Two such settings: a tied head's multiplier N_rescale (``Parametrization.head_multiplier``:
mu, nt and every s-member rescale the logits of a head that shares the token embedding's weight),
and the residual-branch multiplier of the depth members (``Parametrization.branch_multiplier``:
depth-mup, completep multiply every residual branch by (L/L_base)^-α).

The branch multiplier follows the same rules: initlab's ViT/GPT/Llama keep it in the state dict
(extra state, set on every block); any other model gets a forward hook on each branch output the
role map names (:meth:`~initlab.roles.core.RoleMap.branch_outputs`: the attention output
projections and the MLP outputs), with the value recorded in ``model.config`` as
``initlab_branch_multiplier`` when the model has a config (Hugging Face), so ``save_pretrained``
writes it and :func:`restore_` (or any initlab verb building the role map, with a warning) puts
the hooks back. A model without a config (``nn.TransformerEncoder``, timm) keeps the hooks through
``copy.deepcopy`` and pickling, not through a state dict alone.

* initlab's ViT/GPT keep it as ``model.head_multiplier``, saved in the state dict as the model's
  extra state (:class:`initlab.models.layers.HeadMultiplierState`): every path that carries the
  state dict or the module carries it.
* A Hugging Face model with a tied head gets a forward hook on its output module that multiplies
  the logits (the tie stays: one tensor). The value is also written into ``model.config`` as
  ``initlab_head_multiplier``, which ``save_pretrained`` serializes into ``config.json``. A model
  rebuilt from that config (``from_pretrained``, or ``type(model)(model.config)`` then
  ``load_state_dict``) gets the hook back from :func:`restore_`, and from every initlab verb that
  builds the role map, which also warns (:class:`HeadMultiplierWarning`) that the model had lost it.
  ``copy.deepcopy`` and pickling the whole model (``torch.save(model)``) keep the hook.

An untied head has nothing to keep: its n^-s is in its initial weights (multiplier 1).
"""
from __future__ import annotations

import copy
import warnings

from torch import nn

from ..errors import RoleMapError
from .registry import unwrap

CONFIG_KEY = "initlab_head_multiplier"  # the key in a Hugging Face config (and its config.json)
_MULT = "_initlab_head_multiplier"  # the value on the output module, read by the hook
BRANCH_KEY = "initlab_branch_multiplier"  # the residual-branch multiplier's key in a config
_BRANCH = "_initlab_branch_multiplier"  # the value on each branch-output module, read by its hook


class HeadMultiplierWarning(UserWarning):
    """A reloaded model had lost the head multiplier its config records (initlab put it back)."""


def scale_logits(module: nn.Module, args, output):
    """The forward hook on a tied output module: its logits times the multiplier set on it."""
    m = getattr(module, _MULT, 1.0)
    return output if m == 1.0 else output * m


def tied_output(model: nn.Module) -> nn.Module | None:
    """The output-embedding module when its weight is the input embedding's (a tied head)."""
    try:
        out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    w_out, w_in = getattr(out, "weight", None), getattr(inp, "weight", None)
    return out if w_out is not None and w_out is w_in else None


def _hooked(out: nn.Module) -> bool:
    return any(h is scale_logits for h in out._forward_hooks.values())


def recorded_multiplier(model: nn.Module, key: str = CONFIG_KEY) -> float | None:
    """The head multiplier (``key=BRANCH_KEY``: the branch multiplier) ``model.config`` records, or None."""
    config = getattr(model, "config", None)
    if isinstance(config, dict):  # initlab's own models: their multipliers are in the state dict
        return None
    value = getattr(config, key, None)
    return None if value is None else float(value)


def _record(model: nn.Module, value: float | None, key: str = CONFIG_KEY) -> None:
    """Write (or, for None, remove) the record in a copy of ``model.config`` that every module of
    the model holding the old config gets: a config object the caller shares with other models
    (``Cls(cfg)`` twice, or a model built from another's config) never changes behind their back."""
    old = getattr(model, "config", None)
    if old is None or isinstance(old, dict) or recorded_multiplier(model, key) == value:
        return
    new = copy.copy(old)
    if value is None:
        if hasattr(new, key):
            delattr(new, key)
    else:
        setattr(new, key, float(value))
    for module in model.modules():
        if getattr(module, "config", None) is old:
            module.config = new


def _apply(out: nn.Module, value: float) -> None:
    setattr(out, _MULT, float(value))
    if not _hooked(out):
        out.register_forward_hook(scale_logits)


def head_controls(controls, model: nn.Module) -> None:
    """Role-map controls of a Hugging Face model's tied head (N_rescale without untying), and the
    check that a reloaded model still applies the multiplier its config records."""
    out = tied_output(model)
    controls.tied_head = out is not None
    recorded = recorded_multiplier(model)
    if out is None:
        if recorded not in (None, 1.0):
            warnings.warn(f"{type(model).__name__}.config records {CONFIG_KEY}={recorded:.6g}, but "
                          f"the model's head is not tied to its token embedding, so initlab cannot "
                          f"apply it and the logits differ from the saved model's; load the model "
                          f"with its tied head (tie_word_embeddings=True)", HeadMultiplierWarning,
                          stacklevel=3)
        return
    if _hooked(out):
        live = float(getattr(out, _MULT, 1.0))
        _record(model, None if live == 1.0 else live)  # the hook computes: the record follows it
    elif recorded not in (None, 1.0):
        _apply(out, recorded)
        warnings.warn(f"{type(model).__name__} was reloaded without its tied-head multiplier "
                      f"({CONFIG_KEY}={recorded:.6g} in its config): its logits were off by that "
                      f"factor until now; initlab restored it. Call initlab.restore_(model) right "
                      f"after loading (docs/parametrizations.md, 'Saving and reloading')",
                      HeadMultiplierWarning, stacklevel=3)

    def get() -> float:
        return float(getattr(out, _MULT, 1.0))

    def set_(value: float) -> None:
        value = float(value)
        if value != 1.0 or _hooked(out):
            _apply(out, value)
        _record(model, None if value == 1.0 else value)

    controls.get_head_multiplier, controls.set_head_multiplier = get, set_


# -- the residual-branch multiplier ------------------------------------------------------------------
def scale_branch(module: nn.Module, args, output):
    """The forward hook on a residual branch's output module: its output times the multiplier."""
    m = getattr(module, _BRANCH, 1.0)
    if m == 1.0:
        return output
    if isinstance(output, tuple) and output and hasattr(output[0], "mul"):
        return (output[0] * m,) + tuple(output[1:])
    return output * m


def _branch_hooked(module: nn.Module) -> bool:
    return any(h is scale_branch for h in module._forward_hooks.values())


def _branch_modules(rmap, model: nn.Module) -> list[nn.Module]:
    mods = []
    for _, name in rmap.branch_outputs():
        if name:
            try:
                mods.append(model.get_submodule(name))
            except AttributeError:
                return []
    return mods


#: children of a block that normalize a branch's output before the residual sum (Gemma 2/3 and
#: OLMo-2's post_feedforward_layernorm, GLM-4's post_mlp_layernorm): a norm there undoes any
#: multiplier on the output projection in front of it
_BRANCH_OUTPUT_NORMS = ("post_feedforward_layernorm", "post_mlp_layernorm")


def _normalized_branch(rmap, model: nn.Module) -> str | None:
    """The first branch-output norm in a block of ``model`` (its path), or None."""
    for _, name in rmap.branch_outputs():
        parts = (name or "").split(".")
        for cut in range(len(parts) - 1, 0, -1):  # the enclosing modules, innermost first
            try:
                holder = model.get_submodule(".".join(parts[:cut]))
            except AttributeError:
                break
            for child, _mod in holder.named_children():
                if child in _BRANCH_OUTPUT_NORMS:
                    return f"{'.'.join(parts[:cut])}.{child}"
    return None


def _apply_branch(mods, value: float) -> None:
    for mod in mods:
        setattr(mod, _BRANCH, float(value))
        if not _branch_hooked(mod):
            mod.register_forward_hook(scale_branch)


def branch_controls(rmap, model: nn.Module) -> None:
    """Role-map controls of the residual-branch multiplier for a model whose adapter has none: a
    forward hook on every branch output the role map names, the value recorded in ``model.config``
    (when it has one) for ``save_pretrained``; and the check that a reloaded model still applies
    the multiplier its config records (put back, with a :class:`HeadMultiplierWarning`)."""
    controls = rmap.controls
    if controls.set_branch_multiplier is not None:
        return
    mods = _branch_modules(rmap, model)
    if not mods:
        return
    recorded = recorded_multiplier(model, BRANCH_KEY)
    if any(_branch_hooked(m) for m in mods):
        live = float(getattr(mods[0], _BRANCH, 1.0))
        _record(model, None if live == 1.0 else live, BRANCH_KEY)
    elif recorded not in (None, 1.0):
        _apply_branch(mods, recorded)
        warnings.warn(f"{type(model).__name__} was reloaded without its residual-branch multiplier "
                      f"({BRANCH_KEY}={recorded:.6g} in its config): its outputs were wrong until now; "
                      f"initlab restored it. Call initlab.restore_(model) right after loading "
                      f"(docs/parametrizations.md, 'Saving and reloading')", HeadMultiplierWarning,
                      stacklevel=4)

    def get() -> float:
        return float(getattr(mods[0], _BRANCH, 1.0))

    def check(value: float) -> None:
        if float(value) != 1.0:
            norm = _normalized_branch(rmap, model)
            if norm is not None:
                raise RoleMapError(
                    f"{type(model).__name__} normalizes each branch's output before the residual sum "
                    f"({norm}): a residual-branch multiplier on the output projections would be undone "
                    f"by that norm; depth members (depth-mup, completep, depth=...) need a model whose "
                    f"branches add to the stream unnormalized -- use a width-only member (mu, nt) here")

    def set_(value: float) -> None:
        value = float(value)
        check(value)
        if value != 1.0 or any(_branch_hooked(m) for m in mods):
            _apply_branch(mods, value)
        _record(model, None if value == 1.0 else value, BRANCH_KEY)

    controls.get_branch_multiplier, controls.set_branch_multiplier = get, set_
    controls.check_branch_multiplier = check


def restore_(model: nn.Module) -> nn.Module:
    """Put back what initlab set on ``model`` besides its tensors, after a reload; returns ``model``.

    It re-installs the residual-branch multiplier of a depth member (``initlab_branch_multiplier``
    in ``model.config``: hooks on the branch outputs the role map names). For a Hugging Face model
    with a tied head it re-installs the logit multiplier N_rescale that ``model.config`` records (``from_pretrained`` of a folder ``save_pretrained`` wrote, or a model
    built from a saved model's config and given its state dict). initlab's own models need nothing
    (the multiplier is in their state dict); for them, and for models initlab never rescaled, this
    does nothing. Every initlab verb that builds the role map does the same, with a warning.

    Raises :class:`~initlab.errors.RoleMapError` when the config records a multiplier the model
    cannot apply (its head is not tied, or its role map names no residual-branch output).
    """
    inner = unwrap(model)
    _restore_branch(inner)
    recorded = recorded_multiplier(inner)
    if recorded is None or not hasattr(inner, "get_output_embeddings"):
        return model
    out = tied_output(inner)
    if out is None:
        if recorded != 1.0:
            raise RoleMapError(f"{type(inner).__name__}.config records {CONFIG_KEY}={recorded:.6g}, "
                               f"but the model's head is not tied to its token embedding, so the "
                               f"multiplier cannot be applied; load it with tie_word_embeddings=True")
        return model
    if not _hooked(out) and recorded != 1.0:
        _apply(out, recorded)
    return model


def _restore_branch(inner: nn.Module) -> None:
    """Re-install the branch hooks a config records (the role map names where they go)."""
    recorded = recorded_multiplier(inner, BRANCH_KEY)
    if recorded in (None, 1.0):
        return
    from .registry import roles  # the role map says where the branches are; building it puts the
    with warnings.catch_warnings():  # hooks back (restore_ is the explicit call: no warning)
        warnings.simplefilter("ignore", HeadMultiplierWarning)
        rmap = roles(inner)
    if rmap.controls.set_branch_multiplier is None:
        raise RoleMapError(f"{type(inner).__name__}.config records {BRANCH_KEY}={recorded:.6g}, but its "
                           f"role map names no residual-branch outputs to apply it to")


__all__ = ["restore_", "head_controls", "branch_controls", "tied_output", "scale_logits", "scale_branch",
           "recorded_multiplier", "HeadMultiplierWarning", "CONFIG_KEY", "BRANCH_KEY"]
