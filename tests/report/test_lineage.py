"""The lineage derived from the events: who copied whom, ancestry chains, best member, by hand."""

from __future__ import annotations

from rpbt.report import (
    derive_lineage,
)
from tests.report.fabricate import (
    HAND_EVENTS,
)


def test_lineage_matches_hand_built_example():
    lin = derive_lineage(HAND_EVENTS)
    assert lin.population_size == 4
    assert lin.last_round == 4
    # the stale attempt's exploit (round 3, 1 -> 0) is gone after the resume
    assert [(x.round, x.donor, x.recipient) for x in lin.exploits] == [(1, 0, 3), (2, 3, 1), (2, 1, 2), (3, 2, 0)]
    assert lin.received == {0: [(3, 2)], 1: [(2, 3)], 2: [(2, 1)], 3: [(1, 0)]}
    assert lin.ancestry == {
        0: [(2, 1), (3, 2)],  # member 1's initial weights -> 2 at round 2 -> 0 at round 3
        1: [(1, 0), (2, 3)],  # member 0's initial weights -> 3 at round 1 -> 1 at round 2
        2: [(2, 1)],  # same-round: 1 donated its own weights before receiving 3's
        3: [(1, 0)],
    }
    assert lin.origin == {0: 1, 1: 0, 2: 1, 3: 0}
    assert lin.origin_by_round == [[0, 1, 2, 3], [0, 1, 2, 0], [0, 0, 1, 0], [1, 0, 1, 0], [1, 0, 1, 0]]
    assert lin.scores == {0: 9.0, 1: 7.0, 2: 8.0, 3: 6.0}
    assert lin.best_member == 0
    assert lin.best_ancestry == [(2, 1), (3, 2)]
    assert lin.describe(0) == "member 1 -(round 2)-> member 2 -(round 3)-> member 0"
    assert lin.ancestry_at(0, 2) == []  # before round 3's exploit member 0 had its own weights
    # derive_lineage is pure: the input is untouched, and the same from cleaned or raw events
    assert derive_lineage(list(HAND_EVENTS)).ancestry == lin.ancestry


def test_surviving_part_of_the_hand_built_lineage():
    lin = derive_lineage(HAND_EVENTS)
    segments, alive = lin.surviving()
    # member 3's own weights of round 1 were overwritten after it (by 0's), member 2's of rounds 1-2 after round 2
    # (by 1's), member 0's of rounds 2-3 after round 3 (by 2's), and nobody had copied them: those died; everything
    # else is an ancestor of some member's weights now
    everything = {(m, r) for m in range(4) for r in range(1, 5)}
    assert everything - segments == {(3, 1), (2, 1), (2, 2), (0, 2), (0, 3)}
    assert {(x.round, x.donor, x.recipient) for x in alive} == {(1, 0, 3), (2, 3, 1), (2, 1, 2), (3, 2, 0)}
    # one more exploit at round 4 (0 -> 3) ends member 3's line of rounds 3-4; round 2 lives on in member 1
    more = HAND_EVENTS + [{"type": "exploit", "round": 4, "time": 12, "env_steps": 400, "recipient": 3, "donor": 0}]
    segments, alive = derive_lineage(more).surviving()
    assert everything - segments == {(3, 1), (2, 1), (2, 2), (0, 2), (0, 3), (3, 3), (3, 4)}
    assert (4, 0, 3) in {(x.round, x.donor, x.recipient) for x in alive}
