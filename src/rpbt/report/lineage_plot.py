"""The lineage figure: members as lanes over rounds, the exploits between them, the best member's ancestry.

What today's weights descend from (:meth:`Lineage.surviving`) is drawn strong: those lane segments thick and
coloured by the member whose initial weights they carry, and the exploits on those paths as arrows; the rest of
the history (branches whose weights no member carries any more) is drawn thin and light, its exploits as faint
lines without heads. Once one member's weights have taken over, the figure still shows which copies made today's
members and when.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from rpbt.report.lineage import Exploit, Lineage
from rpbt.report.reader import RunData
from rpbt.report.style import legend_outside, member_colors, message_figure, new_figure, save_figure

__all__ = ["plot_lineage", "root_colors"]

DEAD = "0.82"  # colour of a lane segment whose weights no member carries after the last round


def plot_lineage(run: RunData, lineage: Lineage, path: Path) -> list[str]:
    """Members as horizontal lanes, rounds on x; strong where the weights survive (coloured by their root),
    light where they died out; an arrow per exploit on a surviving path, a faint line per other exploit; the best
    member's ancestry in black. Returns the figure's notes."""
    title = "Lineage: whose weights each member carries"
    P, R = lineage.population_size, lineage.last_round
    if P == 0 or R == 0:
        return message_figure(path, title, "No completed round yet: no lineage to draw.")
    notes: list[str] = []
    colors = root_colors(lineage)
    fig = new_figure(max(8.0, min(18.0, 4.0 + 0.22 * R)), max(3.0, 0.42 * P + 1.6))
    ax = fig.add_subplot()
    jump = 0.35 if R <= 60 else R * 0.006  # horizontal run of an exploit arrow, in rounds
    segments, alive = lineage.surviving()

    _draw_lanes(ax, lineage, colors, segments)
    n_alive = _draw_exploit_arrows(ax, lineage, colors, jump, alive)

    handles: list = []
    labels: list[str] = []
    if lineage.best_member is not None:
        _draw_best_ancestry(ax, lineage, jump)
        handles.append(Line2D([], [], color="black", lw=1.5))
        labels.append(f"ancestry of the best member ({lineage.best_member})")
    else:
        notes.append("No scores yet: no best member to highlight.")
    if not lineage.exploits:
        notes.append("No exploits yet: every member still carries its own initial weights.")
        ax.text(0.5, 1.01, "no exploits yet", transform=ax.transAxes, ha="center", va="bottom", fontsize=9,
                color="0.4")
    roots = sorted(set(lineage.origin_by_round[-1]))
    for o in roots:
        handles.append(Line2D([], [], color=colors[o], lw=5))
        labels.append(f"weights of member {o} (surviving)")
    handles.append(Line2D([], [], color=DEAD, lw=2))
    labels.append("weights no member carries now")
    handles.append(Line2D([], [], color="0.2", marker=r"$\nearrow$", ls="none", ms=10))
    labels.append(f"exploit on a surviving path ({n_alive})")
    handles.append(Line2D([], [], color="0.6", lw=0.7))
    labels.append(f"other exploit ({len(lineage.exploits) - n_alive})")
    _finish_axes(ax, lineage, jump, title)
    legend_outside(ax, handles, labels, len(handles))
    save_figure(fig, path)
    return notes


def root_colors(lineage: Lineage) -> list[tuple]:
    """A colour per member index for the weights descending from that member: the surviving roots (members whose
    initial weights some member carries after the last round) get tab10's colours in order, grey left out so that
    a survivor never looks like the light grey of dead branches; the others keep :func:`member_colors`."""
    P = lineage.population_size
    colors = member_colors(P)
    roots = sorted(set(lineage.origin_by_round[-1])) if lineage.origin_by_round else []
    tab10 = matplotlib.colormaps["tab10"]
    palette = [tab10(i) for i in (0, 1, 2, 3, 4, 5, 6, 8, 9)]
    if len(roots) <= len(palette):
        for k, root in enumerate(roots):
            colors[root] = palette[k]
    return colors


def _draw_lanes(ax, lineage: Lineage, colors: list[tuple], segments: set[tuple[int, int]]) -> None:
    """One lane per member at y = member; the segment [r-1, r] is round r's training, of the weights held after
    round r-1's exploits: thick in the colour of their root when they survive, thin and light when not."""
    P, R = lineage.population_size, lineage.last_round
    for m in range(P):
        r = 1
        while r <= R:
            o = lineage.origin_by_round[r - 1][m]
            live = (m, r) in segments
            r2 = r
            while (r2 + 1 <= R and lineage.origin_by_round[r2][m] == o and ((m, r2 + 1) in segments) == live):
                r2 += 1
            if live:
                ax.plot([r - 1, r2], [m, m], color=colors[o], lw=6, solid_capstyle="butt", alpha=0.9, zorder=2)
            else:
                ax.plot([r - 1, r2], [m, m], color=DEAD, lw=2, solid_capstyle="butt", zorder=1)
            r = r2 + 1


def _draw_exploit_arrows(ax, lineage: Lineage, colors: list[tuple], jump: float, alive: set[Exploit]) -> int:
    """Per exploit, from the donor's lane at its round to the recipient's ``jump`` rounds later: an arrow in the
    colour of the donor's root when the copy survives, else a faint line. Returns the number of arrows."""
    n = 0
    for ex in lineage.exploits:
        xy, xytext = (ex.round + jump, ex.recipient), (ex.round, ex.donor)
        if ex in alive:
            o = lineage.origin_by_round[ex.round - 1][ex.donor]
            ax.annotate("", xy=xy, xytext=xytext, zorder=3,
                        arrowprops=dict(arrowstyle="-|>", color=colors[o], lw=1.2, alpha=0.95, mutation_scale=10,
                                        shrinkA=0, shrinkB=2))
            n += 1
        else:
            ax.plot([xytext[0], xy[0]], [xytext[1], xy[1]], color="0.6", lw=0.7, alpha=0.6, zorder=1)
    return n


def _draw_best_ancestry(ax, lineage: Lineage, jump: float) -> None:
    """The best member's ancestry as a black path along the lanes, a star at its end."""
    best, R = lineage.best_member, lineage.last_round
    chain = lineage.best_ancestry
    members = [d for _, d in chain] + [best]
    xs, ys = [0.0], [float(members[0])]
    for j, (r, _d) in enumerate(chain):
        xs += [r, r + jump]
        ys += [members[j], members[j + 1]]
    xs.append(R)
    ys.append(best)
    ax.plot(xs, ys, color="black", lw=1.5, alpha=0.9, zorder=4)
    ax.plot([R], [best], marker="*", ms=16, color="gold", mec="black", zorder=5)


def _finish_axes(ax, lineage: Lineage, jump: float, title: str) -> None:
    """Latest scores at the right end of the lanes, member tick labels, limits, labels and title."""
    P, R = lineage.population_size, lineage.last_round
    for m in range(P):
        s = lineage.scores.get(m)
        ax.text(R + 0.3 + jump, m, f"{s:.4g}" if s is not None else "n/a", va="center", fontsize=8, color="0.25")
    ax.set_xlim(-0.3, R + 0.3 + jump + max(1.5, 0.06 * R))
    ax.set_ylim(P - 0.5, -0.5)
    ax.set_yticks(range(P))
    ax.set_yticklabels([f"member {m}" for m in range(P)], fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (strong lanes: weights some member carries now, coloured by whose initial weights they "
                  "are; right: latest score)")
    ax.set_title(title)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", alpha=0.25)


