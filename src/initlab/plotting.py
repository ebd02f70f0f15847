"""Figures without pyplot: nothing here selects or changes a matplotlib backend.

Every initlab plot draws on a bare :class:`matplotlib.figure.Figure` and writes it straight to a
file, so a notebook user's backend and pyplot's figure registry are never touched.
"""
from __future__ import annotations

from pathlib import Path


def subplots(nrows: int = 1, ncols: int = 1, *, figsize=None, dpi=None, **kwargs):
    """``(figure, axes)`` like ``plt.subplots``, on a figure pyplot does not know about."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def colormap(name: str):
    import matplotlib
    return matplotlib.colormaps[name]


def save(fig, path: str | Path, *, dpi=None) -> Path:
    """Lay out and write the figure (creating its folder); returns the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi if dpi is not None else "figure")
    return path


__all__ = ["subplots", "colormap", "save"]
