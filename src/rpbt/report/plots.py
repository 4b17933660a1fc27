"""The report's figures, drawn headless with matplotlib's Agg canvas (no pyplot, no global backend switch).

Each ``plot_*`` function writes one PNG and returns a list of notes (e.g. "no exploits yet"); a figure without data
is still written, with the note drawn in it, so the report always has every file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, MaxNLocator

from rpbt.report.analysis import (
    XAxis,
    exploit_scores,
    hparam_series,
    is_categorical,
    is_log,
    score_series,
    value_loss_windows,
)
from rpbt.report.lineage import Lineage
from rpbt.report.reader import RunData, num_or_none

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
]

#: figure key -> file name, in report order
PNG_NAMES = {
    "scores": "scores.png",
    "hparams": "hparams.png",
    "lineage": "lineage.png",
    "value_loss": "value_loss_at_exploit.png",
}

#: the replay figure, drawn only for a replay run (``rpbt replay``)
REPLAY_PNG = "replay.png"

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


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", bbox_inches="tight")
    os.replace(tmp, path)


def _message_figure(path: Path, title: str, message: str) -> None:
    fig = _figure(8, 2.5)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="0.35", transform=ax.transAxes, wrap=True)
    _save(fig, path)


def _legend_outside(ax, handles=None, labels=None, n: int = 0) -> None:
    kwargs = dict(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    if n > 12:
        kwargs["ncol"] = 2
    if handles is not None:
        ax.legend(handles, labels, **kwargs)
    else:
        ax.legend(**kwargs)


# --------------------------------------------------------------------------------------------------- scores


def plot_scores(run: RunData, axis: XAxis, path: Path) -> list[str]:
    """Score of every member over env steps; exploits as arrows from the donor's score to the recipient's."""
    title = "Score of every member"
    series, source = score_series(run, axis)
    if source == "none":
        msg = "No scores yet (no \"round\" event with a score, no pbt/score in metrics.csv)."
        _message_figure(path, title, msg)
        return [msg]
    notes: list[str] = []
    if source == "metrics":
        notes.append("Scores taken from members/<i>/metrics.csv (pbt/score): the round events carry none.")
    colors = member_colors(run.population_size)
    fig = _figure(11, 5)
    ax = fig.add_subplot()
    for i, (xs, ys) in series.items():
        ax.plot(xs, ys, color=colors[i], lw=1.4, marker="o", ms=2.5, label=f"member {i}")
    n_arrows = 0
    for ex in run.exploits:
        d_score, r_score = exploit_scores(run, ex)
        if d_score is None or r_score is None:
            continue
        x = axis.of_exploit(run, ex)
        if not np.isfinite(x):
            continue
        d, i = int(ex["donor"]), int(ex["recipient"])
        ax.annotate(
            "",
            xy=(x, r_score),
            xytext=(x, d_score),
            arrowprops=dict(arrowstyle="-|>", color=colors[d], alpha=0.55, lw=0.9, mutation_scale=8),
        )
        ax.plot([x], [r_score], marker="x", ms=5, mew=1.2, color=colors[i], ls="none")
        n_arrows += 1
    handles, labels = ax.get_legend_handles_labels()
    if n_arrows:
        handles.append(Line2D([], [], color="0.4", marker=r"$\downarrow$", ls="none", ms=9))
        labels.append("exploit: donor -> recipient (x)")
    _legend_outside(ax, handles, labels, run.population_size)
    if not run.exploits:
        ax.text(0.01, 0.98, "no exploits yet", transform=ax.transAxes, va="top", fontsize=9, color="0.4")
        notes.append("No exploits yet.")
    elif n_arrows < len(run.exploits):
        notes.append(f"{len(run.exploits) - n_arrows} exploit(s) not drawn (scores unknown).")
    if not axis.use_steps:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(axis.label)
    ax.set_ylabel("score (pbt/score)")
    ax.set_title(title + (" - arrows: exploits, donor's score -> recipient's (colored by donor)" if n_arrows else ""))
    ax.grid(alpha=0.3)
    _save(fig, path)
    return notes


# --------------------------------------------------------------------------------------------------- hparams


def plot_hparams(run: RunData, axis: XAxis, path: Path) -> list[str]:
    """Each searched hyperparameter over env steps, one steps line per member (log axis for log-scale ones)."""
    title = "Searched hyperparameters"
    names = run.hparam_names
    if not names:
        msg = "No searched hyperparameters (no search space in the \"start\" event, no hparams in the rounds)."
        _message_figure(path, title, msg)
        return [msg]
    data = hparam_series(run, axis)
    if not any(data[n] for n in names):
        msg = "No hyperparameter values recorded yet."
        _message_figure(path, title, msg)
        return [msg]
    colors = member_colors(run.population_size)
    ncols = 1 if len(names) == 1 else 2
    nrows = (len(names) + ncols - 1) // ncols
    fig = _figure(7 * ncols + 1.5, 3.2 * nrows)
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
    _save(fig, path)
    return notes


# --------------------------------------------------------------------------------------------------- lineage


def plot_lineage(run: RunData, lineage: Lineage, path: Path) -> list[str]:
    """Members as horizontal lanes, rounds on x; a lane is colored by the member whose initial weights it carries;
    an arrow from donor lane to recipient lane at each exploit; the best member's ancestry highlighted."""
    title = "Lineage: whose weights each member carries"
    P, R = lineage.population_size, lineage.last_round
    if P == 0 or R == 0:
        msg = "No completed round yet: no lineage to draw."
        _message_figure(path, title, msg)
        return [msg]
    notes: list[str] = []
    colors = member_colors(P)
    fig = _figure(max(8.0, min(18.0, 4.0 + 0.22 * R)), max(3.0, 0.42 * P + 1.6))
    ax = fig.add_subplot()
    jump = 0.35 if R <= 60 else R * 0.006  # horizontal run of an exploit arrow, in rounds

    _draw_lanes(ax, lineage, colors)
    _draw_exploit_arrows(ax, lineage, colors, jump)

    best = lineage.best_member
    handles = []
    labels = []
    if best is not None:
        chain = lineage.best_ancestry
        members = [d for _, d in chain] + [best]
        xs, ys = [0.0], [float(members[0])]
        for j, (r, _d) in enumerate(chain):
            xs += [r, r + jump]
            ys += [members[j], members[j + 1]]
        xs.append(R)
        ys.append(best)
        ax.plot(xs, ys, color="black", lw=2.2, alpha=0.9, zorder=4)
        ax.plot([R], [best], marker="*", ms=16, color="gold", mec="black", zorder=5)
        handles.append(Line2D([], [], color="black", lw=2.2))
        labels.append(f"ancestry of the best member ({best})")
    else:
        notes.append("No scores yet: no best member to highlight.")
    if not lineage.exploits:
        notes.append("No exploits yet: every member still carries its own initial weights.")
        ax.text(0.5, 1.01, "no exploits yet", transform=ax.transAxes, ha="center", va="bottom", fontsize=9,
                color="0.4")

    surviving = sorted(set(lineage.origin_by_round[-1]))
    for o in sorted(set(o for row in lineage.origin_by_round for o in row)):
        handles.append(Line2D([], [], color=colors[o], lw=5))
        labels.append(f"weights of member {o}" + ("" if o in surviving else " (extinct)"))
    handles.append(Line2D([], [], color="0.3", marker=r"$\nearrow$", ls="none", ms=10))
    labels.append("exploit: donor -> recipient")

    for m in range(P):
        s = lineage.scores.get(m)
        ax.text(R + 0.3 + jump, m, f"{s:.4g}" if s is not None else "n/a", va="center", fontsize=8, color="0.25")
    ax.set_xlim(-0.3, R + 0.3 + jump + max(1.5, 0.06 * R))
    ax.set_ylim(P - 0.5, -0.5)
    ax.set_yticks(range(P))
    ax.set_yticklabels([f"member {m}" for m in range(P)], fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (lane color: whose initial weights the member carries; right: latest score)")
    ax.set_title(title)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", alpha=0.25)
    _legend_outside(ax, handles, labels, len(handles))
    _save(fig, path)
    return notes


def _draw_lanes(ax, lineage: Lineage, colors: list[tuple]) -> None:
    """One lane per member at y = member; the segment [r-1, r] is round r's training, of the weights held after
    round r-1's exploits, colored by the member whose initial weights they are."""
    P, R = lineage.population_size, lineage.last_round
    for m in range(P):
        r = 1
        while r <= R:
            o = lineage.origin_by_round[r - 1][m]
            r2 = r
            while r2 + 1 <= R and lineage.origin_by_round[r2][m] == o:
                r2 += 1
            ax.plot([r - 1, r2], [m, m], color=colors[o], lw=5, solid_capstyle="butt", alpha=0.85, zorder=2)
            r = r2 + 1


def _draw_exploit_arrows(ax, lineage: Lineage, colors: list[tuple], jump: float) -> None:
    """An arrow per exploit from the donor's lane at its round to the recipient's ``jump`` rounds later, colored
    by the donor's weights."""
    for ex in lineage.exploits:
        o = lineage.origin_by_round[ex.round - 1][ex.donor]
        ax.annotate(
            "",
            xy=(ex.round + jump, ex.recipient),
            xytext=(ex.round, ex.donor),
            arrowprops=dict(arrowstyle="-|>", color=colors[o], lw=1.0, alpha=0.9, mutation_scale=9,
                            shrinkA=0, shrinkB=2),
            zorder=3,
        )


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
        msg = "No exploits yet."
        _message_figure(path, title, msg)
        return [msg]
    windows, window, notes = value_loss_windows(run, window)
    if not windows:
        msg = "No train/value_loss data around the exploits (members/<i>/metrics.csv missing or without it)."
        _message_figure(path, title, msg)
        return [msg] + notes
    strategies = sorted({w.strategy for w in windows})
    fig = _figure(max(6.0, 4.8 * len(strategies)), 7.5)
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
                if kind == "relative":
                    ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
                    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
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
    _save(fig, path)
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
        msg = "Not a replay run (no \"replay\" in the \"start\" event)."
        _message_figure(path, title, msg)
        return [msg]
    colors = member_colors(max(run.population_size, 1))
    fig = _figure(11, 7)
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
    _legend_outside(top)
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
    _legend_outside(bottom)
    fig.tight_layout()
    _save(fig, path)
    return []
