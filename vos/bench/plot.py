"""Benchmark and analysis plots, drawn by matplotlib (the ``plots`` extra).

A plot is a vertical stack of :class:`Panel` s sharing one x axis; each panel has its own y axis
(label with unit), grid and legend — "FPS vs frame", "memory vs frame". :func:`save_histogram` draws
a binned distribution. PNGs are written atomically through ``vos.output``, so an interrupted run
never leaves half an image under the final name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from vos.errors import VosError
from vos.output import atomic_write

DPI = 100


@dataclass
class Panel:
    """One plot area: ``series`` maps a legend label to (xs, ys); ``y_zero``: start the y axis at 0.

    ``ylabel`` names the quantity and its unit ("frames/s", "MiB"). A y value of None or NaN is a gap.
    """

    title: str
    ylabel: str
    series: dict[str, tuple[list[float], list[float | None]]] = field(default_factory=dict)
    y_zero: bool = True


def available() -> bool:
    """Whether matplotlib is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (a VosError naming the extra when missing)."""
    try:
        import matplotlib
    except ImportError:
        raise VosError("plots need matplotlib: pip install -e '.[plots]'") from None
    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG to ``path`` atomically and close it."""
    path = Path(path)
    plt = pyplot()
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def save_plot(path: str | os.PathLike, panels: list[Panel], xlabel: str, width: float = 9.6, panel_height: float = 3.4) -> Path:
    """Draw ``panels`` one below the other (shared x axis labelled ``xlabel``) into a PNG at ``path``."""
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, panel_height * len(panels)), sharex=True, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        for label, (xs, ys) in panel.series.items():
            values = [math.nan if y is None else float(y) for y in ys]
            style = {"marker": "o", "markersize": 3} if len(xs) == 1 else {}
            ax.plot(list(xs), values, label=label, linewidth=1.5, **style)
        ax.set_title(panel.title, fontsize=10)
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, color="0.9")
        if panel.y_zero:
            ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
        if panel.series:
            ax.legend(loc="best", fontsize=8)
    axes[-1, 0].set_xlabel(xlabel)
    fig.tight_layout()
    return save_figure(fig, path)


def save_histogram(
    path: str | os.PathLike, edges: list[float], counts: list[int], title: str, xlabel: str,
    ylabel: str = "objects × frames", note: str | None = None,
) -> Path:
    """A bar chart of a histogram (``edges``: left bin edges of equal width; ``counts`` per bin)."""
    plt = pyplot()
    step = (edges[1] - edges[0]) if len(edges) > 1 else 1.0
    fig, ax = plt.subplots(figsize=(7.2, 3.6))
    ax.bar(edges, counts, width=step, align="edge", edgecolor="white", linewidth=0.5)
    ax.set_xlim(edges[0], edges[-1] + step if edges else 1.0)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", color="0.9")
    ax.set_axisbelow(True)
    if note:
        ax.text(0.02, 0.95, note, transform=ax.transAxes, va="top", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
