"""The driver of the sharded backends (:mod:`rpbt.pbt.backends.sharded`) over in-process fake workers: which
command an exploit becomes, what the journals keep, a dead worker restarted and its command sent again; and the
module layout (process and Ray share ``sharded.py`` without importing each other)."""

from __future__ import annotations

import torch

from rpbt.checkpoint import MemberState
from rpbt.pbt.backends.commands import Command, Restore, Train
from rpbt.pbt.backends.errors import WorkerDied
from rpbt.pbt.backends.sharded import ShardedBackend
from tests.conftest import tiny_config


class _Shard:
    def __init__(self, members):
        self.value = {m: float(m) for m in members}

    def snapshot(self, m):
        return MemberState(tensors={"w": torch.tensor([self.value[m]])}, rng=torch.zeros(1, dtype=torch.uint8))

    def train(self, n):
        self.value = {m: v + n for m, v in self.value.items()}
        return {m: [{"update": 1.0}] for m in self.value}

    def exploit(self, r, state, hp):
        self.value[r] = float(state.tensors["w"][0])
        return {"copied": self.value[r]}

    def restore(self, m, state, retry=0):
        self.value[m] = float(state.tensors["w"][0])


class _Handle:
    def __init__(self, members, log):
        self.shard, self.log, self.answer, self.die_on = _Shard(members), log, None, None

    def send(self, command: Command):
        self.log.append(command)
        if self.die_on == command.name:
            raise WorkerDied("killed for the test")
        self.answer = command.run(self.shard)

    def recv(self):
        return self.answer

    def wait_ready(self):
        return None

    def kill(self):
        pass

    def close(self):
        pass


class _Backend(ShardedBackend):
    kind = "fake"

    def __init__(self, cfg, hparams):
        super().__init__(cfg, hparams, 2)
        self.sent: list[list[Command]] = [[], []]
        self._start_all()

    def _new_handle(self, k):
        return _Handle(self.shards[k], self.sent[k])


def _backend():
    return _Backend(tiny_config(), [{} for _ in range(4)])


def test_an_exploit_from_an_unchanged_snapshot_in_the_recipients_shard_stays_inside_it():
    b = _backend()
    donor = b.snapshot(0)
    assert b.exploit(1, donor, {}) == {"copied": 0.0}
    assert b.sent[0][-1].name == "exploit_local" and b.sent[0][-1].donor == 0
    b.exploit(2, donor, {})  # across shards: the snapshot's bytes travel
    assert b.sent[1][-1].name == "exploit"
    b.train(1)  # the donor changed since the snapshot: its bytes travel even inside the shard
    assert b.exploit(1, donor, {}) == {"copied": 0.0}
    assert b.sent[0][-1].name == "exploit"
    assert [c.name for c in b.journals[0].entries] == ["exploit_local", "train", "exploit"]


def test_a_dead_worker_is_restarted_its_journal_replayed_and_its_command_sent_again():
    b = _backend()
    b.train(1)
    b.restore(3, b.snapshot(0))
    b._handles[1].die_on = "train"
    rows = b.train(1)
    assert sorted(rows) == [0, 1, 2, 3] and b.failures == [0, 1]
    # the new worker (no checkpoint yet: a fresh shard) replayed Train(1) and the Restore, then trained again
    assert [type(c) for c in b.sent[1][-3:]] == [Train, Restore, Train]
    assert b._handles[1].shard.value == {2: 4.0, 3: 2.0}
    assert b.journals[1].entries[-1] == Train(1)


def test_process_and_ray_share_the_sharded_module_without_importing_each_other():
    from tests.test_imports import GRAPH

    for module in ("rpbt.pbt.backends.process", "rpbt.pbt.backends.ray"):
        assert "rpbt.pbt.backends.sharded" in GRAPH[module]
    assert "rpbt.pbt.backends.process" not in GRAPH["rpbt.pbt.backends.ray"]
    assert "rpbt.pbt.backends.ray" not in GRAPH["rpbt.pbt.backends.process"]
