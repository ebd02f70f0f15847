"""Figures without pyplot: nothing here selects or changes a matplotlib backend.

Every initlab plot draws on a bare :class:`matplotlib.figure.Figure` and writes it with
:func:`save` (rendered in memory, then written atomically by :mod:`initlab.output`), so a notebook
user's backend and pyplot's figure registry are never touched and a reader never sees half a PNG.
"""
from __future__ import annotations

import io
from pathlib import Path

from .output import atomic_write_bytes


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, dpi=None, **kwargs):
    """``(figure, axes)`` like ``plt.subplots``, on a figure pyplot does not know about."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str):
    import matplotlib
    return matplotlib.colormaps[name]


def save(fig, path: str | Path, *, dpi=None, tight: bool = True, bbox_inches=None) -> Path:
    """Lay out (``tight``) and write the figure atomically (creating its folder); the format comes
    from the suffix (``.png``, ``.pdf``, ``.svg``); returns the path."""
    path = Path(path)
    if tight:
        fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".").lower() or "png",
                dpi=dpi if dpi is not None else "figure", bbox_inches=bbox_inches)
    return atomic_write_bytes(path, buf.getvalue())


__all__ = ["subplots", "colormap", "save"]
