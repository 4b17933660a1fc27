"""The figures' shared helpers: the tick-label overlap check (that it finds overlaps and passes readable axes) and
the log-axis ticks that keep a narrow log range readable."""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import FormatStrFormatter

from rpbt.report.style import log_ticks, new_figure, overlapping_tick_labels


def _log_axes(low: float, high: float):
    fig = new_figure(6, 3)
    ax = fig.add_subplot()
    ys = np.geomspace(low, high, 20)
    ax.plot(np.arange(20), ys)
    ax.set_yscale("log")
    return fig, ax, ys


def test_labelled_minor_ticks_of_a_log_axis_are_found_overlapping():
    # what value_loss_at_exploit.png drew before: every minor tick of a log axis labelled with "%.3g"
    fig, ax, _ = _log_axes(0.03, 300)
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
    found = overlapping_tick_labels(fig)
    assert found and all(where.endswith(" y") for where, _, _ in found)


def test_crowded_x_labels_are_found_overlapping():
    fig = new_figure(3, 2)
    ax = fig.add_subplot()
    ax.set_xticks(range(30))
    ax.set_xticklabels([f"label {i}" for i in range(30)])
    assert any(where.endswith(" x") for where, _, _ in overlapping_tick_labels(fig))


def test_log_ticks_label_no_overlap_at_any_span():
    for low, high in [(0.03, 300), (0.8, 1.3), (0.5, 20), (1e-6, 10), (0.99, 1.01)]:
        fig, ax, ys = _log_axes(low, high)
        log_ticks(ax, ys)
        assert overlapping_tick_labels(fig) == [], (low, high)
        fig.canvas.draw()
        shown = [lab.get_text() for lab in ax.get_yticklabels() if lab.get_text()]
        assert len(shown) >= 2 or high / low < 1.05, (low, high, shown)  # a narrow range still gets labels
