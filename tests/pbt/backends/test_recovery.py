"""Recovery of a dead shard (:mod:`rpbt.pbt.backends.recovery`): which checkpoint folder it restores from, what it
replays, how deaths are counted and when the run stops. Fake workers: no process is started."""

from __future__ import annotations

import json

import pytest

from rpbt.checkpoint import CheckpointError
from rpbt.pbt.backends.commands import Restore, Train
from rpbt.pbt.backends.errors import BackendError, WorkerDied
from rpbt.pbt.backends.journal import Journal
from rpbt.pbt.backends.recovery import Recovery
from rpbt.pbt.backends.routing import Routing
from rpbt.run.storage import CheckpointStore


class _RunDir:
    def __init__(self, root):
        self.checkpoint_dir = root / "checkpoints"
        self.runner_state_path = self.checkpoint_dir / "runner.json"
        self.events = []

    def commit(self, round_, folder):
        self.checkpoint_dir.mkdir(exist_ok=True)
        self.runner_state_path.write_text(json.dumps({"round": round_, "checkpoint_dir": folder}))

    def read_runner_state(self):
        return json.loads(self.runner_state_path.read_text())

    def store(self, state=None):
        return CheckpointStore(self.checkpoint_dir)

    def write_event(self, event):
        self.events.append(event)


class _Handle:
    def __init__(self):
        self.sent = []

    def send(self, command):
        self.sent.append(command)

    def recv(self):
        return None


def _member_state_bytes(member):
    import torch

    from rpbt.checkpoint import MemberState

    return MemberState(tensors={"w": torch.tensor([float(member)])}, rng=torch.zeros(1, dtype=torch.uint8),
                       meta={}).to_bytes()


def _recovery(max_failures=2):
    routing = Routing(4, 2)
    return Recovery("process", routing, [Journal() for _ in routing.shards], max_failures)


def test_a_restart_restores_the_committed_folder_and_replays_what_followed(tmp_path):
    rec = _recovery()
    rundir = _RunDir(tmp_path)
    rec.attach_run(rundir)
    journal = rec.journals[1]
    journal.record(Train(1))
    assert rec.plan(1) == (None, [Train(1)])  # nothing committed yet: a fresh shard replays everything
    folder = rundir.checkpoint_dir / "round_000001"
    folder.mkdir(parents=True)
    for m in (2, 3):
        (folder / f"member_{m}.pt").write_bytes(_member_state_bytes(m))
    journal.mark(folder)
    rundir.commit(1, "round_000001")
    journal.record(Train(1))
    plan = rec.plan(1)
    assert plan == (str(folder.resolve()), [Train(1)])
    handle = _Handle()
    rec.bring_back(1, handle, *plan)
    assert handle.sent == [Restore(2, _member_state_bytes(2)), Restore(3, _member_state_bytes(3)), Train(1)]


def test_a_missing_or_truncated_checkpoint_is_named(tmp_path):
    rec = _recovery()
    folder = tmp_path / "round_000001"
    folder.mkdir()
    with pytest.raises(CheckpointError, match=r"member_2\.pt: checkpoint not found .*shard 1 \(members \[2, 3\]\)"):
        rec.bring_back(1, _Handle(), folder, [])
    (folder / "member_2.pt").write_bytes(_member_state_bytes(2)[:10])
    with pytest.raises(CheckpointError, match=r"member_2\.pt"):
        rec.bring_back(1, _Handle(), folder, [])


def test_without_a_run_directory_the_latest_complete_folder_is_used(tmp_path):
    rec = _recovery()
    complete, partial = tmp_path / "a", tmp_path / "b"
    for folder, members in ((complete, (2, 3)), (partial, (2,))):
        folder.mkdir()
        for m in members:
            (folder / f"member_{m}.pt").write_bytes(b"x")
    journal = rec.journals[1]
    journal.mark(complete)
    journal.record(Train(1))
    journal.mark(partial)
    journal.record(Train(2))
    assert rec.plan(1) == (str(complete.resolve()), [Train(1), Train(2)])


def test_a_pruned_journal_without_the_committed_folder_cannot_restart(tmp_path):
    rec = _recovery()
    rundir = _RunDir(tmp_path)
    rec.attach_run(rundir)
    for name in ("r1", "r2"):
        rec.journals[0].record(Train(1))
        rec.journals[0].mark(tmp_path / name)
    assert rec.journals[0].pruned
    rundir.commit(7, "elsewhere")
    with pytest.raises(BackendError, match=r"cannot restart shard 0 \(members \[0, 1\]\).*not one this backend"):
        rec.plan(0)


def test_deaths_are_counted_and_written_and_more_than_max_failures_stop_the_run(tmp_path):
    rec = _recovery(max_failures=2)
    rundir = _RunDir(tmp_path)
    rec.attach_run(rundir)
    restarts, kills = [], []

    def restart_dies_once(k):
        restarts.append(k)
        if len(restarts) == 1:
            raise WorkerDied("died again while restarting")

    rec.recover(1, "SIGKILL", restart_dies_once, kills.append)  # 2 deaths: the first restart died too
    assert rec.failures == [0, 2] and restarts == [1, 1] and kills == []
    with pytest.raises(BackendError) as info:
        rec.recover(1, "SIGKILL again", restart_dies_once, kills.append)
    msg = str(info.value)
    assert "process backend: shard 1 (members [2, 3]) failed 3 times" in msg
    assert "backend.max_failures=2" in msg and "SIGKILL again" in msg
    assert kills == [1]
    assert [(e["round"], e["shard"], e["members"], e["cause"], e["failures"], e["action"]) for e in rundir.events] == [
        (1, 1, [2, 3], "SIGKILL", 1, "restart"), (1, 1, [2, 3], "died again while restarting", 2, "restart"),
        (1, 1, [2, 3], "SIGKILL again", 3, "stop")]
