"""Typed shard commands (:mod:`rpbt.pbt.backends.commands`): mutating-ness declared on each command, dispatch by
the command's own ``run``, round trip through pickle and through their fields. No worker process is needed."""

from __future__ import annotations

import pickle

import pytest

from rpbt.pbt.backends import commands as c


def _all_commands():
    return [c.Ping(), c.Train(2), c.MemberInfo(), c.EvaluateMembers([0, 1], "test"), c.Snapshot(1),
            c.SnapshotMany([0, 1]), c.Restore(1, b"data", 2), c.Exploit(1, b"donor", {"lr": 0.1}),
            c.Exploit(1, 0, {"lr": 0.1}), c.Close()]


def test_mutating_is_declared_on_the_command():
    mutating = {cmd.name for cmd in _all_commands() if cmd.mutating}
    assert mutating == {"train", "restore", "exploit", "exploit_local"}
    names = [cmd.name for cmd in _all_commands()]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("command", _all_commands(), ids=lambda cmd: cmd.name)
def test_commands_travel_by_pickle_and_by_fields(command):
    assert pickle.loads(pickle.dumps(command)) == command
    assert type(command)(*command.fields()) == command


class _FakeShard:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, args))
            return name

        return call


def test_the_server_dispatches_by_command_type_and_refuses_anything_else(monkeypatch):
    server = c.ShardServer.__new__(c.ShardServer)
    server.shard = _FakeShard()
    assert server.handle(c.Train(3)) == "train"
    assert server.handle(c.EvaluateMembers((2,), "validation")) == "evaluate_members"
    server.handle(c.Exploit(1, 0, {"lr": 0.5}))
    assert server.shard.calls == [("train", (3,)), ("evaluate_members", ([2], "validation")), ("snapshot", (0,)),
                                  ("exploit", (1, "snapshot", {"lr": 0.5}))]
    with pytest.raises(ValueError, match="unknown shard command 'train'"):
        server.handle("train")


def test_bytes_that_are_not_a_member_state_are_refused_naming_the_member():
    from rpbt.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="state sent for member 3"):
        c.Restore(3, b"not a member state").run(_FakeShard())
    with pytest.raises(CheckpointError, match="donor state sent for member 2"):
        c.Exploit(2, b"nope", {}).run(_FakeShard())
