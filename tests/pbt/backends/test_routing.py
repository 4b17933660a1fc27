"""Routing of a sharded backend (:mod:`rpbt.pbt.backends.routing`): which shard holds which member, which donors
travel as bytes, waves of one command per shard, and the snapshot cache. No worker process is needed."""

from __future__ import annotations

import pytest

from rpbt.pbt.backends.routing import Routing, SnapshotCache


def test_members_live_in_contiguous_shards_described_by_their_members():
    r = Routing(5, 2)
    assert r.shards == [[0, 1, 2], [3, 4]] and len(r) == 2
    assert [r.shard_of[m] for m in range(5)] == [0, 0, 0, 1, 1]
    assert r.describe(0) == "shard 0 (members 0..2)" and r.describe(1) == "shard 1 (members [3, 4])"
    assert r.by_shard([4, 0, 2]) == {0: [0, 2], 1: [4]}
    with pytest.raises(IndexError, match="member 5 out of range 0..4"):
        r.check(5)


def test_donors_travel_across_shards_or_when_they_are_recipients_too():
    r = Routing(4, 2)  # [0, 1] | [2, 3]
    assert r.travels([(1, 0, {}), (3, 0, {}), (2, 0, {})]) == [False, True, True]
    assert r.travels([(3, 1, {}), (2, 3, {})]) == [True, True]  # 3 is overwritten in the same call


def test_waves_hold_at_most_one_position_per_shard_in_the_order_given():
    r = Routing(4, 2)
    assert list(r.waves([1, 3, 2, 0])) == [{0: 0, 1: 1}, {1: 2, 0: 3}]
    assert list(r.waves([3, 2])) == [{1: 0}, {1: 1}]
    assert list(r.waves([])) == []


def test_the_snapshot_cache_finds_a_handed_out_state_by_identity_and_knows_when_it_is_stale():
    cache = SnapshotCache(3)
    a, b, other = object(), object(), object()
    cache.remember(1, a, b"a")
    cache.remember(1, b, b"b")
    assert cache.find(a) == (1, True, b"a") and cache.find(b) == (1, True, b"b")
    assert cache.find(other) is None
    cache.changed(1)
    assert cache.find(a) == (1, False, b"a")  # still the same bytes, but no longer the member's state
    cache.changed_all()
    assert cache.find(b) is None
