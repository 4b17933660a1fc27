"""The command journal (:mod:`rpbt.pbt.backends.journal`): what it keeps, where it cuts, what a restart replays.
No worker process is needed."""

from __future__ import annotations

import os

import pytest

from rpbt.pbt.backends.commands import Exploit, MemberInfo, Restore, Snapshot, SnapshotMany, Train
from rpbt.pbt.backends.journal import Journal, Mark


def test_only_mutating_commands_are_recorded_in_order():
    j = Journal()
    for command in (Train(1), MemberInfo(), Snapshot(2), Exploit(1, 0, {"lr": 1.0}), SnapshotMany([0, 1]),
                    Restore(0, b"x"), Exploit(1, b"donor", {})):
        j.record(command)
    assert j.entries == [Train(1), Exploit(1, 0, {"lr": 1.0}), Restore(0, b"x"), Exploit(1, b"donor", {})]
    assert j.replay(None) == j.entries  # a fresh shard replays everything
    assert not j.pruned


def test_marks_are_real_paths_and_a_restart_replays_what_follows_its_folder(tmp_path):
    link = tmp_path / "link"
    os.symlink(tmp_path, link)
    j = Journal()
    j.record(Train(1))
    j.mark(link / "round_000001")
    j.record(Train(2))
    j.record(Exploit(1, 0, {}))
    assert j.marks() == [os.path.realpath(tmp_path / "round_000001")]
    assert j.entries[1] == Mark(os.path.realpath(tmp_path / "round_000001"))
    assert j.replay(tmp_path / "round_000001") == [Train(2), Exploit(1, 0, {})]
    assert j.replay(None) == [Train(1), Train(2), Exploit(1, 0, {})]  # marks are never replayed
    with pytest.raises(KeyError, match="round_000009"):
        j.replay(tmp_path / "round_000009")


def test_a_new_mark_prunes_up_to_the_previous_one_which_stays_replayable(tmp_path):
    j = Journal()
    j.record(Train(1))
    j.mark(tmp_path / "r1")
    assert not j.pruned  # the first mark cuts nothing: a fresh shard can still replay from the start
    j.record(Train(2))
    j.mark(tmp_path / "r2")  # r1 may still be the committed one (the runner commits r2 after writing it)
    assert j.pruned
    assert j.marks() == [str(tmp_path / "r1"), str(tmp_path / "r2")]
    assert j.replay(tmp_path / "r1") == [Train(2)]
    assert j.replay(tmp_path / "r2") == []
    j.record(Train(3))
    j.mark(tmp_path / "r3")
    assert j.marks() == [str(tmp_path / "r2"), str(tmp_path / "r3")]
    assert j.replay(tmp_path / "r2") == [Train(3)]
    with pytest.raises(KeyError):
        j.replay(tmp_path / "r1")  # cut away
    with pytest.raises(LookupError, match="pruned"):
        j.replay(None)


def test_the_same_folder_marked_twice_replays_from_its_latest_mark(tmp_path):
    j = Journal()
    j.mark(tmp_path / "r")
    j.record(Train(1))
    j.mark(tmp_path / "r")  # saved again into the same folder: its files hold the state after Train(1)
    j.record(Train(2))
    assert j.replay(tmp_path / "r") == [Train(2)]
