"""The report's figures, drawn headless with matplotlib's Agg canvas (no pyplot, no global backend switch).

Each ``plot_*`` function writes one PNG and returns a list of notes (e.g. "no exploits yet"); a figure without data
is still written, with the note drawn in it, so the report always has every file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib
import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullFormatter

from rpbt.report.analysis import (
    XAxis,
    exploit_scores,
    gap_to_best,
    hparam_series,
    is_categorical,
    is_log,
    score_matrix,
    score_mode,
    score_series,
    smooth,
    value_loss_windows,
)
from rpbt.report.lineage_plot import plot_lineage
from rpbt.report.reader import RunData, num_or_none
from rpbt.report.style import DPI, legend_outside, log_ticks, member_colors, message_figure, new_figure, save_figure

__all__ = [
    "PNG_NAMES",
    "member_colors",
    "plot_scores",
    "plot_hparams",
    "plot_lineage",
    "plot_value_loss",
    "plot_replay",
    "replay_info",
    "REPLAY_PNG",
    "log_ticks",
]

#: figure key -> file name, in report order
PNG_NAMES = {
    "scores": "scores.png",
    "population": "population.png",
    "hparams": "hparams.png",
    "hparam_scores": "hparam_vs_score.png",
    "lineage": "lineage.png",
    "training": "training_curves.png",
    "value_loss": "value_loss_at_exploit.png",
    "time": "time_per_round.png",
}

#: the replay figure, drawn only for a replay run (``rpbt replay``)
REPLAY_PNG = "replay.png"

__all__ += ["DPI"]



# --------------------------------------------------------------------------------------------------- scores


def plot_scores(run: RunData, axis: XAxis, path: Path, smooth_rounds: int = 1) -> list[str]:
    """Two panels. Top: every member's score over ``axis``, exploits as arrows from the donor's score to the
    recipient's; with ``smooth_rounds`` > 1 the trailing mean over that many rounds, the raw scores faint. Bottom:
    each member's gap to the round's best score (members x rounds, log colour scale), which still separates the
    members once the task is solved and every line lies near the top. Returns the figure's notes."""
    title = "Score of every member"
    series, source = score_series(run, axis)
    if source == "none":
        return message_figure(path, title,
                              "No scores yet (no \"round\" event with a score, no pbt/score in metrics.csv).")
    notes: list[str] = []
    if source == "metrics":
        notes.append("Scores taken from members/<i>/metrics.csv (pbt/score): the round events carry none.")
    P = run.population_size
    colors = member_colors(P)
    rounds, scores = score_matrix(run)
    heat = source == "events" and len(rounds) > 0
    heat_h = max(2.0, 0.2 * P + 1.0) if heat else 0.0
    fig = new_figure(11, 4.6 + heat_h)
    grid = fig.add_gridspec(2 if heat else 1, 1, height_ratios=[4.6, heat_h] if heat else [1], hspace=0.35)
    ax = fig.add_subplot(grid[0])
    for i, (xs, ys) in series.items():
        if smooth_rounds > 1:
            ax.plot(xs, ys, color=colors[i], lw=0.8, alpha=0.3)
            ax.plot(xs, smooth(ys, smooth_rounds), color=colors[i], lw=1.6, label=f"member {i}")
        else:
            ax.plot(xs, ys, color=colors[i], lw=1.4, marker="o", ms=2.5, label=f"member {i}")
    n_arrows = _draw_score_exploits(ax, run, axis, colors)
    handles, labels = ax.get_legend_handles_labels()
    if n_arrows:
        handles.append(Line2D([], [], color="0.4", marker=r"$\downarrow$", ls="none", ms=9))
        labels.append("exploit: donor -> recipient (x)")
    legend_outside(ax, handles, labels, P)
    if not run.exploits:
        ax.text(0.01, 0.98, "no exploits yet", transform=ax.transAxes, va="top", fontsize=9, color="0.4")
        notes.append("No exploits yet.")
    elif n_arrows < len(run.exploits):
        notes.append(f"{len(run.exploits) - n_arrows} exploit(s) not drawn (scores unknown).")
    if not axis.use_steps:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(axis.label)
    ax.set_ylabel("score (pbt/score)")
    smoothed = f", trailing mean over {smooth_rounds} rounds" if smooth_rounds > 1 else ""
    ax.set_title(title + smoothed + (" - arrows: exploits, donor's score -> recipient's" if n_arrows else ""))
    ax.grid(alpha=0.3)
    if heat:
        _draw_gap_heatmap(fig.add_subplot(grid[1]), run, rounds, scores)
    save_figure(fig, path)
    return notes


def _draw_score_exploits(ax, run: RunData, axis: XAxis, colors: list[tuple]) -> int:
    """An arrow per exploit from the donor's score to the recipient's (x), coloured by the donor; returns how many
    were drawn (an exploit without both scores or without an x is left out)."""
    n = 0
    for ex in run.exploits:
        d_score, r_score = exploit_scores(run, ex)
        x = axis.of_exploit(run, ex)
        if d_score is None or r_score is None or not np.isfinite(x):
            continue
        d, i = int(ex["donor"]), int(ex["recipient"])
        ax.annotate("", xy=(x, r_score), xytext=(x, d_score),
                    arrowprops=dict(arrowstyle="-|>", color=colors[d], alpha=0.45, lw=0.8, mutation_scale=7))
        ax.plot([x], [r_score], marker="x", ms=4, mew=1.0, color=colors[i], ls="none")
        n += 1
    return n


def _draw_gap_heatmap(ax, run: RunData, rounds: np.ndarray, scores: np.ndarray) -> None:
    """Members (rows) x rounds (columns): the gap to the round's best score on a log colour scale; green cells are
    the round's best; a cyan x marks an exploit's recipient in the round it was replaced."""
    gap = gap_to_best(scores, score_mode(run))
    positive = gap[np.isfinite(gap) & (gap > 0)]
    cmap = matplotlib.colormaps["magma_r"].with_extremes(under="#2ca02c", bad="white")
    if positive.size:
        vmax = float(positive.max())
        vmin = max(float(positive.min()), vmax * 1e-4)
        norm = LogNorm(vmin=vmin, vmax=vmax) if vmax > vmin else Normalize(vmin=vmin * 0.999, vmax=vmax)
        shown = np.where(gap > 0, np.maximum(gap, vmin), vmin * 0.5)
    else:
        norm, shown = Normalize(vmin=1.0, vmax=2.0), np.where(np.isfinite(gap), 0.0, np.nan)
    shown = np.where(np.isfinite(gap), shown, np.nan)
    x_edges = np.concatenate([rounds - 0.5, [rounds[-1] + 0.5]]) if len(rounds) else rounds
    mesh = ax.pcolormesh(x_edges, np.arange(run.population_size + 1) - 0.5, np.ma.masked_invalid(shown),
                         cmap=cmap, norm=norm, shading="flat")
    xs = [int(ex["round"]) for ex in run.exploits]
    ys = [int(ex["recipient"]) for ex in run.exploits]
    if xs:
        ax.plot(xs, ys, ls="none", marker="x", ms=3.5, mew=1.0, color="tab:cyan")
    ax.set_ylim(run.population_size - 0.5, -0.5)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=min(run.population_size, 12), integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("member", fontsize=9)
    ax.set_xlabel("round", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_title("Gap to the round's best score (green: the best; cyan x: exploited after that round)", fontsize=10)
    if positive.size:
        bar = ax.figure.colorbar(mesh, ax=ax, pad=0.01, fraction=0.04, extend="min")
        bar.set_label("best - score" if score_mode(run) == "max" else "score - best", fontsize=8)
        bar.ax.tick_params(labelsize=7)
        bar.ax.yaxis.set_minor_formatter(NullFormatter())


# --------------------------------------------------------------------------------------------------- hparams


def plot_hparams(run: RunData, axis: XAxis, path: Path) -> list[str]:
    """Each searched hyperparameter over env steps, one steps line per member (log axis for log-scale ones)."""
    title = "Searched hyperparameters"
    names = run.hparam_names
    if not names:
        return message_figure(path, title, "No searched hyperparameters (no search space in the \"start\" event, "
                                           "no hparams in the rounds).")
    data = hparam_series(run, axis)
    if not any(data[n] for n in names):
        return message_figure(path, title, "No hyperparameter values recorded yet.")
    colors = member_colors(run.population_size)
    ncols = 1 if len(names) == 1 else 2
    nrows = (len(names) + ncols - 1) // ncols
    fig = new_figure(7 * ncols + 1.5, 3.2 * nrows)
    exploit_x: dict[int, list[float]] = {}
    for ex in run.exploits:
        exploit_x.setdefault(int(ex["recipient"]), []).append(axis.of_exploit(run, ex))
    notes: list[str] = []
    for k, name in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        per_member = data[name]
        all_values = [v for _, (_, vs) in per_member.items() for v in vs]
        categorical = is_categorical(run, name, all_values)
        log = (not categorical) and is_log(run, name, all_values)
        cats: list = []
        if categorical:
            spec_values = run.search_space.get(name, {}).get("values")
            cats = list(spec_values) if isinstance(spec_values, list) else []
            for v in all_values:
                if v not in cats:
                    cats.append(v)
        for i, (xs, vs) in per_member.items():
            ys = [cats.index(v) if categorical else (np.nan if v is None else float(v)) for v in vs]
            ax.plot(xs, ys, drawstyle="steps-post", color=colors[i], lw=1.3, alpha=0.9,
                    marker="o" if len(xs) == 1 else None, label=f"member {i}")
            # exploit markers: the recipient's new value at the exploit
            for x in exploit_x.get(i, []):
                if x in xs:
                    y = ys[xs.index(x)]
                    ax.plot([x], [y], marker="x", ms=5, color=colors[i], ls="none")
        if categorical:
            ax.set_yticks(range(len(cats)))
            ax.set_yticklabels([str(c) for c in cats])
        if log:
            ax.set_yscale("log")
            bounds = [num_or_none(run.search_space.get(name, {}).get(b)) for b in ("low", "high")]
            log_ticks(ax, np.array([float(v) for v in all_values + bounds if v is not None]))
        spec = run.search_space.get(name, {})
        scale = "categorical" if categorical else ("log scale" if log else spec.get("scale", "linear"))
        ax.set_title(f"{name} ({scale})", fontsize=10)
        ax.set_xlabel(axis.label, fontsize=8)
        if not axis.use_steps:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        if not categorical and spec.get("low") is not None and spec.get("high") is not None:
            for b in (spec["low"], spec["high"]):
                try:
                    ax.axhline(float(b), color="0.5", lw=0.7, ls=":")
                except (TypeError, ValueError):
                    pass
    handles, labels = fig.axes[0].get_legend_handles_labels()
    if run.exploits:
        handles.append(Line2D([], [], color="0.3", marker="x", ls="none"))
        labels.append("exploit (recipient's new value)")
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.98), fontsize=8, frameon=False,
               ncol=2 if run.population_size > 12 else 1)
    fig.suptitle(title + " (dotted: search bounds)")
    fig.tight_layout()
    save_figure(fig, path)
    return notes


# --------------------------------------------------------------------------------------------------- value loss


def _mean_line(rows: np.ndarray, geometric: bool) -> np.ndarray:
    with np.errstate(all="ignore"):
        if geometric:
            logs = np.where(rows > 0, np.log(np.where(rows > 0, rows, 1.0)), np.nan)
            counts = np.isfinite(logs).sum(axis=0)
            mean = np.exp(np.nansum(logs, axis=0) / np.maximum(counts, 1))
        else:
            counts = np.isfinite(rows).sum(axis=0)
            mean = np.nansum(rows, axis=0) / np.maximum(counts, 1)
    return np.where(counts > 0, mean, np.nan)


def plot_value_loss(run: RunData, path: Path, window: Optional[int] = None) -> list[str]:
    """Recipient's train/value_loss around each exploit, per hidden-state strategy: absolute (top) and relative to
    the donor's value loss at its last update before the exploit (bottom); geometric mean + faint individuals."""
    title = "Value loss around exploits"
    if not run.exploits:
        return message_figure(path, title, "No exploits yet.")
    windows, window, notes = value_loss_windows(run, window)
    if not windows:
        return message_figure(path, title, "No train/value_loss data around the exploits (members/<i>/metrics.csv "
                                           "missing or without it).") + notes
    strategies = sorted({w.strategy for w in windows})
    fig = new_figure(max(6.0, 4.8 * len(strategies)), 7.5)
    for c, strategy in enumerate(strategies):
        group = [w for w in windows if w.strategy == strategy]
        offsets = group[0].offsets
        for row, kind in enumerate(("absolute", "relative")):
            ax = fig.add_subplot(2, len(strategies), row * len(strategies) + c + 1)
            series = [w.absolute if kind == "absolute" else w.relative for w in group]
            series = [s for s in series if s is not None]
            if not series or not any(np.isfinite(s).any() for s in series):
                ax.text(0.5, 0.5, "no donor value loss\nto compare with" if kind == "relative" else "no data",
                        ha="center", va="center", transform=ax.transAxes, color="0.4")
                ax.set_axis_off()
                continue
            rows = np.vstack(series)
            positive = bool(np.all(rows[np.isfinite(rows)] > 0))
            for j, s in enumerate(rows):
                ax.plot(offsets, s, color="tab:blue", alpha=0.18, lw=0.8, label="each exploit" if j == 0 else None)
            mean = _mean_line(rows, geometric=positive)
            ax.plot(offsets, mean, color="tab:red", lw=2.2,
                    label=("geometric mean" if positive else "mean") + f" over {len(rows)} exploit(s)")
            if positive:
                ax.set_yscale("log")
                log_ticks(ax, rows)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.axvline(0.5, color="black", ls="--", lw=1)
            if kind == "relative":
                ax.axhline(1.0, color="0.4", ls=":", lw=1)
                ax.set_ylabel("recipient / donor value loss\n(donor: last update before the exploit)", fontsize=8)
            else:
                ax.set_ylabel("recipient's train/value_loss", fontsize=8)
                ax.set_title(f"hidden state: {strategy}  ({len(group)} exploit(s))", fontsize=10)
            ax.set_xlabel("updates relative to the exploit (0: last before, 1: first after)", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{title} (dashed line: the exploit; window: {window} updates each side)")
    fig.tight_layout()
    save_figure(fig, path)
    return notes


# --------------------------------------------------------------------------------------------------- replay


def replay_info(run: RunData) -> Optional[dict]:
    """The ``"replay"`` description of a replay run's ``start`` event (see :mod:`rpbt.pbt.replay`), else None."""
    info = run.start.get("replay") if isinstance(run.start, dict) else None
    return info if isinstance(info, dict) and isinstance(info.get("hparams"), list) else None


def plot_replay(run: RunData, path: Path) -> list[str]:
    """A replay run beside the member it replays: scores over env steps (top) and the learning rate each replay
    member trained with per update against the lineage's schedule (bottom)."""
    info = replay_info(run)
    title = "Replay beside the original member"
    if info is None:
        return message_figure(path, title, "Not a replay run (no \"replay\" in the \"start\" event).")
    colors = member_colors(max(run.population_size, 1))
    fig = new_figure(11, 7)
    top, bottom = fig.add_subplot(2, 1, 1), fig.add_subplot(2, 1, 2)
    xs_orig = [num_or_none(x) for x in info.get("env_steps") or []]
    ys_orig = [num_or_none(y) for y in info.get("scores") or []]
    pts = [(x, y) for x, y in zip(xs_orig, ys_orig) if x is not None and y is not None]
    if pts:
        top.plot(*zip(*pts), color="black", lw=2.0, marker="o", ms=3,
                 label=f"original member {info.get('member')} (its lineage's weights)")
    for i in range(run.population_size):
        xs, ys = [], []
        for ev in run.rounds:
            scores = ev.get("scores")
            y = num_or_none(scores[i]) if isinstance(scores, list) and i < len(scores) else None
            x = run.round_env_steps(ev, i)
            if x is not None and y is not None:
                xs.append(x)
                ys.append(y)
        if xs:
            top.plot(xs, ys, color=colors[i], lw=1.3, marker="o", ms=2.5, label=f"replay seed {i}")
    top.set_ylabel("score (pbt/score)")
    top.set_title(f"{title}: {info.get('source')}", fontsize=10)
    top.grid(alpha=0.3)
    legend_outside(top)
    # learning-rate schedule: the lineage's (step line per round) and what each replay member used per update
    sched = [num_or_none((h or {}).get("learning_rate")) for h in info["hparams"]]
    ends = list(xs_orig)
    starts = [0.0] + ends[:-1]
    for k, (x0, x1, lr) in enumerate(zip(starts, ends, sched)):
        if x0 is not None and x1 is not None and lr is not None:
            bottom.plot([x0, x1], [lr, lr], color="black", lw=2.5, alpha=0.6,
                        label="lineage schedule" if k == 0 else None)
    for i in range(run.population_size):
        m = run.metrics.get(i)
        if m is None or not m.has_data("train/learning_rate") or m.get("env_steps") is None:
            continue
        bottom.plot(m.get("env_steps"), m.get("train/learning_rate"), ls="none", marker=".", ms=4, color=colors[i],
                    label=f"replay seed {i}: train/learning_rate per update")
    if any(v is not None and v > 0 for v in sched):
        bottom.set_yscale("log")
    bottom.set_xlabel("env steps (per member)")
    bottom.set_ylabel("learning rate")
    bottom.grid(alpha=0.3)
    legend_outside(bottom)
    fig.tight_layout()
    save_figure(fig, path)
    return []
