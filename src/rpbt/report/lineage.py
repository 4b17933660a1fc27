"""Lineage: which member's weights descend from which, derived from the exploit events alone.

Semantics (the runner's, see RUNDIR_FORMAT.md): an exploit of round r copies the donor's state *as it was at the
end of round r's training* into the recipient. So within a round all exploits read the pre-exploit states (a
member that both donates and receives in the same round donates the weights it trained in that round).

The ancestry of member m (of the weights it holds after the last round) is found backwards: the last exploit into
m, of round r_k from donor d_k; then the last exploit into d_k of a round < r_k, from d_{k-1}; and so on until a
member that received nothing earlier - the *origin*, whose initial weights m's weights descend from. The chain is
returned oldest first as ``[(r_1, d_1), ..., (r_k, d_k)]``: ``d_1`` is the origin, and at round ``r_j`` donor
``d_j`` was copied into ``d_{j+1}`` (``d_{k+1}`` = m). An empty chain: m still trains its own initial weights.
This is the format of ``summary.json``'s ``lineage`` (``[{"round": r, "member": d}, ...]``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rpbt.report.reader import clean_events, num_or_none

__all__ = ["Exploit", "Lineage", "derive_lineage", "latest_scores"]


@dataclass(frozen=True)
class Exploit:
    round: int
    donor: int
    recipient: int
    env_steps: Optional[float] = None
    hidden_state: Optional[str] = None


@dataclass
class Lineage:
    """Per-member ancestry derived from events (see the module docstring for the semantics)."""

    population_size: int
    last_round: int
    exploits: list[Exploit]  # sorted by round (file order within a round)
    received: dict[int, list[tuple[int, int]]]  # member -> [(round, donor)] of the exploits it received, oldest first
    ancestry: dict[int, list[tuple[int, int]]]  # member -> chain [(round, donor)] of its current weights, oldest first
    origin: dict[int, int]  # member -> the member whose initial weights its current weights descend from
    # origin_by_round[r][m]: origin of the weights member m holds after round r's exploits (r = 0: initial)
    origin_by_round: list[list[int]]
    scores: dict[int, Optional[float]]  # latest non-null score per member
    best_member: Optional[int]
    best_ancestry: list[tuple[int, int]] = field(default_factory=list)  # oldest first

    def ancestry_at(self, member: int, round: int) -> list[tuple[int, int]]:
        """Chain (oldest first) of the weights ``member`` holds after the exploits of ``round``."""
        return _chain(self.exploits, member, round)

    def surviving(self) -> tuple[set[tuple[int, int]], set[Exploit]]:
        """The part of the history that today's weights descend from: ``(segments, exploits)``.

        ``segments`` holds ``(member, round)`` when the weights ``member`` trained in ``round`` are an ancestor of
        (or are) some member's weights after the last round; ``exploits`` holds the exploits on those paths. For
        a chain ``[(r_1, d_1), ..., (r_k, d_k)]`` of member m: d_1 trains rounds 1..r_1, d_j rounds
        r_{j-1}+1..r_j, and m rounds r_k+1..last_round.
        """
        segments: set[tuple[int, int]] = set()
        alive: set[Exploit] = set()
        by_key = {(ex.round, ex.donor, ex.recipient): ex for ex in self.exploits}
        for m in range(self.population_size):
            chain = self.ancestry.get(m, [])
            holders = [d for _, d in chain] + [m]
            bounds = [0] + [r for r, _ in chain] + [self.last_round]
            for j, holder in enumerate(holders):
                segments.update((holder, r) for r in range(bounds[j] + 1, bounds[j + 1] + 1))
                if j + 1 < len(holders):
                    ex = by_key.get((chain[j][0], holder, holders[j + 1]))
                    if ex is not None:
                        alive.add(ex)
        return segments, alive

    def describe(self, member: int) -> str:
        """'member 2 -(round 4)-> member 5 -(round 12)-> member 3' (origin first)."""
        chain = self.ancestry.get(member, [])
        if not chain:
            return f"member {member} (own initial weights, never replaced)"
        parts = [f"member {chain[0][1]}"]
        for j, (r, _d) in enumerate(chain):
            nxt = chain[j + 1][1] if j + 1 < len(chain) else member
            parts.append(f"-(round {r})-> member {nxt}")
        return " ".join(parts)


def _chain(exploits: list[Exploit], member: int, upto: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    m, limit = member, upto
    while True:
        last = None
        for ex in exploits:  # sorted by round: the last match is the latest (file order breaks ties)
            if ex.recipient == m and ex.round <= limit:
                last = ex
        if last is None:
            break
        out.append((last.round, last.donor))
        m, limit = last.donor, last.round - 1  # the donor's pre-exploit state of that round
    out.reverse()
    return out


def latest_scores(rounds: list[dict], population_size: int) -> dict[int, Optional[float]]:
    """Each member's latest non-null score over the (cleaned, round-sorted) round events."""
    scores: dict[int, Optional[float]] = {i: None for i in range(population_size)}
    for ev in rounds:
        vals = ev.get("scores")
        if not isinstance(vals, list):
            continue
        for i, v in enumerate(vals[:population_size]):
            x = num_or_none(v)
            if x is not None:
                scores[i] = x
    return scores


def derive_lineage(events: list[dict], population_size: Optional[int] = None) -> Lineage:
    """Pure function from parsed events (as :func:`read_events` returns them, raw or cleaned) to the lineage.

    Duplicate round lines after a resume are resolved first (keep the last attempt). The best member is the one
    with the highest latest score (lowest index on ties); ``best_ancestry`` is its chain, oldest first.
    ``population_size`` overrides the one of the ``start`` event (or the one inferred from the events).
    """
    events, _ = clean_events(list(events))
    start = next((e for e in reversed(events) if e.get("type") == "start"), None)
    rounds = sorted((e for e in events if e.get("type") == "round"), key=lambda e: int(e["round"]))
    exploits = [
        Exploit(
            round=int(e["round"]),
            donor=int(e["donor"]),
            recipient=int(e["recipient"]),
            env_steps=num_or_none(e.get("env_steps")),
            hidden_state=e.get("hidden_state") if isinstance(e.get("hidden_state"), str) else None,
        )
        for e in events
        if e.get("type") == "exploit"
    ]
    exploits.sort(key=lambda x: x.round)

    population = 0
    if population_size is not None:
        population = int(population_size)
    elif start is not None and isinstance(start.get("population_size"), int) and start["population_size"] > 0:
        population = start["population_size"]
    else:
        if start is not None and isinstance(start.get("hparams"), list):
            population = len(start["hparams"])
        for e in rounds:
            population = max(population, len(e.get("scores") or []), len(e.get("hparams") or []))
        for ex in exploits:
            population = max(population, ex.donor + 1, ex.recipient + 1)
    exploits = [x for x in exploits if 0 <= x.donor < population and 0 <= x.recipient < population]

    last_round = max([int(e["round"]) for e in rounds] + [x.round for x in exploits], default=0)

    received: dict[int, list[tuple[int, int]]] = {i: [] for i in range(population)}
    for ex in exploits:
        received[ex.recipient].append((ex.round, ex.donor))
    ancestry = {i: _chain(exploits, i, last_round) for i in range(population)}
    origin = {i: (chain[0][1] if chain else i) for i, chain in ancestry.items()}

    by_round: dict[int, list[Exploit]] = {}
    for ex in exploits:
        by_round.setdefault(ex.round, []).append(ex)
    current = list(range(population))
    origin_by_round = [list(current)]
    for r in range(1, last_round + 1):
        before = list(current)  # exploits of a round read the pre-exploit states
        for ex in by_round.get(r, []):
            current[ex.recipient] = before[ex.donor]
        origin_by_round.append(list(current))

    scores = latest_scores(rounds, population)
    ranked = [i for i in range(population) if scores[i] is not None]
    best = max(ranked, key=lambda i: (scores[i], -i)) if ranked else None
    return Lineage(population_size=population, last_round=last_round, exploits=exploits, received=received,
                   ancestry=ancestry, origin=origin, origin_by_round=origin_by_round, scores=scores, best_member=best,
                   best_ancestry=list(ancestry[best]) if best is not None else [])
