"""Training curves per member from ``members/<i>/metrics.csv``: return, value loss, approx KL and entropy per
update (the learner's rows, Stable-Baselines3's keys)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from rpbt.report.analysis import XAxis, updates_per_round
from rpbt.report.reader import MemberMetrics, RunData
from rpbt.report.style import log_ticks, member_colors, message_figure, new_figure, save_figure

__all__ = ["CURVE_KEYS", "update_x", "plot_training_curves"]

#: (metrics.csv column, panel title) of the training-curve panels, in order
CURVE_KEYS = (
    ("rollout/ep_rew_mean", "episode return (rollout/ep_rew_mean)"),
    ("train/value_loss", "value loss (train/value_loss)"),
    ("train/approx_kl", "approx KL (train/approx_kl)"),
    ("train/entropy_loss", "entropy loss (train/entropy_loss = -entropy)"),
)


def update_x(run: RunData, axis: XAxis, member: int, m: MemberMetrics) -> np.ndarray:
    """x of each metrics row of ``member`` on ``axis``: its ``env_steps`` for env steps; otherwise the round's
    span on the axis (start to end of the round) split evenly over the round's rows, the last row at the end.
    Shape (rows,), NaN where the round is unknown."""
    rounds = m.get("round")
    if axis.kind == "steps" and m.get("env_steps") is not None:
        return m.get("env_steps").astype(float)
    xs = np.full(len(m), np.nan)
    if rounds is None:
        return xs
    for r in np.unique(rounds[np.isfinite(rounds)]):
        idx = np.flatnonzero(rounds == r)
        x0, x1 = axis.start_of_round(run, int(r), member), axis.end_of_round(run, int(r), member)
        xs[idx] = x0 + (x1 - x0) * (np.arange(len(idx)) + 1) / len(idx)
    return xs


def plot_training_curves(run: RunData, axis: XAxis, path: Path, smooth_rounds: int = 1) -> list[str]:
    """A panel per :data:`CURVE_KEYS` column, a line per member over ``axis`` (``smooth_rounds`` > 1: the
    trailing mean over that many rounds' updates, raw values faint); a log axis for a column that is positive
    throughout. A recipient's line jumps at an exploit: from then on it trains the donor's weights."""
    title = "Training curves per member"
    keys = [(k, t) for k, t in CURVE_KEYS if any(m is not None and m.has_data(k) for m in run.metrics.values())]
    if not keys:
        return message_figure(path, title, "No training metrics yet (members/<i>/metrics.csv missing or without "
                              + ", ".join(k for k, _ in CURVE_KEYS) + ").")
    colors = member_colors(run.population_size)
    window = max(1, smooth_rounds * updates_per_round(run)) if smooth_rounds > 1 else 1
    fig = new_figure(13, 3.3 * ((len(keys) + 1) // 2) + 0.6)
    for k, (key, label) in enumerate(keys):
        ax = fig.add_subplot((len(keys) + 1) // 2, 2, k + 1)
        everything, lines = [], []
        for i in range(run.population_size):
            m = run.metrics.get(i)
            if m is None or not m.has_data(key):
                continue
            xs, ys = update_x(run, axis, i, m), m.get(key)
            keep = np.isfinite(xs) & np.isfinite(ys)
            xs, ys = xs[keep], ys[keep]
            everything.append(ys)
            if window > 1:
                ax.plot(xs, ys, color=colors[i], lw=0.6, alpha=0.25)
                ys = _trailing_mean(ys, window)
            ax.plot(xs, ys, color=colors[i], lw=1.0, alpha=0.85, label=f"member {i}")
            lines.append((xs, ys))
        if len(lines) > 2 and all(np.array_equal(xs, lines[0][0]) for xs, _ in lines):
            ax.plot(lines[0][0], np.median(np.vstack([ys for _, ys in lines]), axis=0), color="black", lw=1.8,
                    label="median over members")
        values = np.concatenate(everything) if everything else np.array([])
        if values.size and np.all(values > 0) and values.max() / values.min() > 20:
            ax.set_yscale("log")
            log_ticks(ax, values)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel(axis.label, fontsize=8)
        ax.tick_params(labelsize=8)
        if not axis.use_steps:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = max((ax.get_legend_handles_labels() for ax in fig.axes), key=lambda hl: len(hl[0]))
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.97), fontsize=8, frameon=False,
               ncol=2 if run.population_size > 12 else 1)
    smoothed = f"; trailing mean over {window} updates" if window > 1 else ""
    fig.suptitle(f"{title} (one point per update{smoothed})")
    fig.tight_layout()
    save_figure(fig, path)
    return []


def _trailing_mean(ys: np.ndarray, k: int) -> np.ndarray:
    """Mean of the last ``k`` values at each position (fewer at the start); shape kept."""
    c = np.cumsum(np.insert(ys, 0, 0.0))
    idx = np.arange(1, len(ys) + 1)
    lo = np.maximum(idx - k, 0)
    return (c[idx] - c[lo]) / (idx - lo)
