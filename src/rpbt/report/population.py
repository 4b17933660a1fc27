"""Population-level figures of the report: score quantiles per round, time per round, and each hyperparameter
against the score it gave (which values won)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from rpbt.report.analysis import (
    XAxis,
    hparam_score_points,
    is_categorical,
    is_log,
    population_stats,
    round_times,
    smooth,
)
from rpbt.report.lineage import Lineage
from rpbt.report.reader import RunData, num_or_none
from rpbt.report.style import legend_outside, log_ticks, message_figure, new_figure, save_figure

__all__ = ["plot_population", "plot_round_times", "plot_hparam_scores"]


def plot_population(run: RunData, axis: XAxis, path: Path, smooth_rounds: int = 1) -> list[str]:
    """Top: the best score, mean and median of the population per round, with the 25-75% and min-max bands
    (``smooth_rounds`` > 1: each a trailing mean over that many rounds). Bottom: exploits per round."""
    title = "Population score per round"
    stats = population_stats(run)
    if not np.isfinite(stats["mean"]).any():
        return message_figure(path, title, "No scores yet (no \"round\" event with a score).")
    xs = np.array([axis.end_of_round(run, int(r), 0) for r in stats["rounds"]], dtype=float)
    s = {k: smooth(v, smooth_rounds) for k, v in stats.items() if k not in ("rounds", "n")}
    fig = new_figure(11, 6)
    grid = fig.add_gridspec(2, 1, height_ratios=[3.2, 1.0], hspace=0.35)
    ax = fig.add_subplot(grid[0])
    ax.fill_between(xs, s["min"], s["max"], color="tab:blue", alpha=0.12, lw=0, label="min - max")
    ax.fill_between(xs, s["q25"], s["q75"], color="tab:blue", alpha=0.3, lw=0, label="25% - 75%")
    ax.plot(xs, s["median"], color="tab:blue", lw=1.5, label="median")
    ax.plot(xs, s["mean"], color="black", lw=1.3, ls="--", label="mean")
    ax.plot(xs, s["best"], color="tab:red", lw=2.0, label="best")
    legend_outside(ax)
    ax.set_ylabel("score (pbt/score)")
    ax.set_xlabel(axis.label)
    smoothed = f" (trailing mean over {smooth_rounds} rounds)" if smooth_rounds > 1 else ""
    ax.set_title(title + smoothed)
    ax.grid(alpha=0.3)
    if not axis.use_steps:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom = fig.add_subplot(grid[1])
    counts = {int(r): 0 for r in stats["rounds"]}
    for ex in run.exploits:
        counts[int(ex["round"])] = counts.get(int(ex["round"]), 0) + 1
    bottom.bar(list(counts), list(counts.values()), color="0.45", width=0.8)
    bottom.set_xlabel("round")
    bottom.set_ylabel("exploits")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
    bottom.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return []


def plot_round_times(run: RunData, path: Path) -> list[str]:
    """Seconds per round as stacked bars: training (``train_s``), exploits (``transfer_s``: snapshots, transfers,
    burn-in) and the rest of the run's clock (scoring, checkpoint commits, records)."""
    title = "Time per round"
    t = round_times(run)
    if not np.isfinite(t["train"]).any():
        return message_figure(path, title, "No round times recorded (the round events carry no train_s).")
    fig = new_figure(11, 4)
    ax = fig.add_subplot()
    r = t["rounds"]
    train, exploit, other = np.nan_to_num(t["train"]), t["exploit"], np.nan_to_num(t["other"])
    ax.bar(r, train, width=0.8, color="tab:blue", label="training")
    ax.bar(r, exploit, width=0.8, bottom=train, color="tab:orange", label="exploits")
    ax.bar(r, other, width=0.8, bottom=train + exploit, color="0.7", label="other (scoring, commit, records)")
    legend_outside(ax)
    ax.set_xlabel("round")
    ax.set_ylabel("seconds")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    total = float(np.nansum(t["total"]))
    ax.set_title(f"{title}: training {np.nansum(t['train']):.1f} s, exploits {exploit.sum():.2f} s, "
                 f"all rounds {total:.1f} s on the run's clock")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
    return []


def plot_hparam_scores(run: RunData, lineage: Lineage, path: Path) -> list[str]:
    """One panel per searched hyperparameter: the score of every member in every round against the value it
    trained with (colour: round); black rings: on a path that today's weights descend from; large markers: the
    last round; a star: the best member now."""
    title = "Score against each hyperparameter"
    points = hparam_score_points(run)
    names = [n for n in run.hparam_names if any(n in p.hparams for p in points)]
    if not points or not names:
        return message_figure(path, title, "No scored rounds with hyperparameters yet.")
    segments, _ = lineage.surviving()
    last = max(p.round for p in points)
    ncols = min(2, len(names))
    nrows = (len(names) + ncols - 1) // ncols
    fig = new_figure(6.2 * ncols + 1.2, 3.4 * nrows + 0.9)
    fig.set_layout_engine("constrained")
    cmap = matplotlib.colormaps["viridis"]
    norm = Normalize(vmin=1, vmax=max(last, 2))
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        _hparam_panel(ax, run, name, points, segments, lineage, last, cmap, norm)
    handles = [Line2D([], [], ls="none", marker="o", ms=5, mfc="none", mec="black", mew=1.2),
               Line2D([], [], ls="none", marker="o", ms=8, color="0.5"),
               Line2D([], [], ls="none", marker="*", ms=13, color="gold", mec="black")]
    labels = ["on a surviving path (today's weights descend from it)", f"last round ({last})", "best member now"]
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=fig.axes, pad=0.01, fraction=0.03,
                       aspect=40)
    bar.set_label("round", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(title + " (each point: one member in one round, the values it trained with)")
    save_figure(fig, path)
    return []


def _hparam_panel(ax, run: RunData, name: str, points: list, segments: set, lineage: Lineage, last: int,
                  cmap, norm) -> None:
    """Score against hyperparameter ``name`` in one panel (see :func:`plot_hparam_scores`)."""
    pts = [p for p in points if name in p.hparams]
    values = [p.hparams[name] for p in pts]
    categorical = is_categorical(run, name, values)
    if categorical:
        cats = list(dict.fromkeys(str(v) for v in values))
        rng = np.random.default_rng(0)
        xs = np.array([cats.index(str(v)) for v in values], dtype=float) + rng.uniform(-0.2, 0.2, len(values))
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels(cats)
    else:
        xs = np.array([num_or_none(v) if num_or_none(v) is not None else np.nan for v in values])
        if is_log(run, name, values):
            ax.set_xscale("log")
            log_ticks(ax, xs, which="x")
    ys = np.array([p.score for p in pts])
    rounds = np.array([p.round for p in pts])
    alive = np.array([(p.member, p.round) in segments for p in pts])
    final = rounds == last
    ax.scatter(xs[~final], ys[~final], c=rounds[~final], cmap=cmap, norm=norm, s=10, alpha=0.6, lw=0)
    if alive.any():
        ax.scatter(xs[alive & ~final], ys[alive & ~final], s=16, facecolors="none", edgecolors="black", lw=0.6)
    ax.scatter(xs[final], ys[final], c=rounds[final], cmap=cmap, norm=norm, s=48, edgecolors="black", lw=0.8)
    best = lineage.best_member
    for j in np.flatnonzero(final):
        if pts[j].member == best:
            ax.plot([xs[j]], [ys[j]], marker="*", ms=14, color="gold", mec="black", ls="none", zorder=5)
    spec = run.search_space.get(name, {})
    scale = "categorical" if categorical else spec.get("scale", "linear")
    ax.set_title(f"{name} ({scale})", fontsize=10)
    ax.set_ylabel("score", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6)) if not categorical and ax.get_xscale() != "log" else None
    ax.grid(alpha=0.3)
