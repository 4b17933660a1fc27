"""What every report figure shares: a headless Agg figure, an atomic PNG write, member colours, the outside
legend, the message figure drawn when a plot has no data yet, and the tick-label overlap check the tests use."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

__all__ = ["DPI", "member_colors", "new_figure", "save_figure", "message_figure", "legend_outside",
           "log_ticks", "overlapping_tick_labels"]

DPI = 100


def member_colors(n: int) -> list[tuple]:
    """Distinct colors for n members (tab10, tab20 reordered dark-then-light, else turbo)."""
    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        return [cmap(order[i]) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(x) for x in np.linspace(0.05, 0.95, n)]


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas (no pyplot, no global backend)."""
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` atomically (a temporary file renamed over it)."""
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, path)


def message_figure(path: Path, title: str, message: str) -> list[str]:
    """A small figure holding only ``title`` and ``message`` (a plot with nothing to draw yet); returns
    ``[message]``, the figure's notes."""
    fig = new_figure(8, 2.5)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="0.35", transform=ax.transAxes, wrap=True)
    save_figure(fig, path)
    return [message]


def legend_outside(ax, handles=None, labels=None, n: int = 0) -> None:
    """The legend to the right of ``ax``, in two columns for more than 12 entries (``n``)."""
    kwargs = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if n > 12:
        kwargs["ncol"] = 2
    if handles is not None:
        ax.legend(handles, labels, **kwargs)
    else:
        ax.legend(**kwargs)


def log_ticks(ax, values: np.ndarray, which: str = "y") -> None:
    """Readable ticks on a log axis: labelled major ticks only (no minor labels), at 1-2-5 steps when the data
    span less than two decades and at 1, 1.25, 1.5, 2, 3, 4, 5, 6, 8 when they span less than half of one (so a
    narrow range still gets labels); plain "%g" numbers."""
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    decades = float(np.log10(vals.max() / vals.min())) if vals.size else 3.0
    if decades < 0.5:
        subs = (1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    elif decades < 2.0:
        subs = (1.0, 2.0, 5.0)
    else:
        subs = (1.0,)
    axis = ax.yaxis if which == "y" else ax.xaxis
    axis.set_major_locator(LogLocator(base=10.0, subs=subs, numticks=12))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def overlapping_tick_labels(fig: Figure) -> list[tuple[str, str, str]]:
    """Pairs of visible, non-empty tick labels of one axis of ``fig`` whose drawn extents overlap, as
    ``(axis description, label a, label b)``; empty when every axis is readable. Draws the figure once."""
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    found = []
    for k, ax in enumerate(fig.axes):
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            labels = [lab for lab in axis.get_ticklabels(which="both") if lab.get_visible() and lab.get_text().strip()]
            boxes = [(lab, lab.get_window_extent(renderer)) for lab in labels]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    a, b = boxes[i][1], boxes[j][1]
                    if a.width > 0 and b.width > 0 and a.overlaps(b) and _area(a, b) > 1.0:
                        found.append((f"axes {k} ({ax.get_title() or ax.get_label()}) {name}",
                                      boxes[i][0].get_text(), boxes[j][0].get_text()))
    return found


def _area(a, b) -> float:
    """Area in pixels of the intersection of two display boxes."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(w, 0.0) * max(h, 0.0)
