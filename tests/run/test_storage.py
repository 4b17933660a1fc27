"""Checkpoint storage (:mod:`rpbt.run.storage`): a local folder and an fsspec filesystem (``memory://``) behave
alike; a run with ``run.storage`` commits its members there (written by the shards themselves on the process
backend), and resume, evaluation and ``load_policy`` read them back from there."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pytest
import torch

from rpbt.api import load_policy
from rpbt.checkpoint import CheckpointError, MemberState
from rpbt.cli import main
from rpbt.pbt.runner import PopulationRunner
from rpbt.run.storage import CheckpointFolder, CheckpointStore, is_url
from tests.conftest import TINY, tiny_config


def _state(x: float) -> MemberState:
    return MemberState(tensors={"w": torch.tensor([x])}, rng=torch.zeros(1, dtype=torch.uint8), meta={})


@pytest.fixture
def memory_root():
    root = "memory://rpbt-tests/store"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists("/rpbt-tests"):
        fs.rm("/rpbt-tests", recursive=True)


@pytest.mark.parametrize("kind", ["local", "file-url", "memory"])
def test_a_folder_writes_reads_lists_and_removes_alike_on_every_filesystem(kind, tmp_path, memory_root):
    root = {"local": str(tmp_path / "store"), "file-url": f"file://{tmp_path / 'store'}", "memory": memory_root}[kind]
    store = CheckpointStore(root)
    assert store.folders() == []
    for name in ("round_000001", "round_000002", "round_000003"):
        store.folder(name).make()
    folder = store.folder("round_000002")
    folder.save_member(1, _state(2.5))
    assert folder.exists("member_1.pt") and not folder.exists("member_0.pt")
    assert float(folder.load_member(1).tensors["w"]) == 2.5
    folder.save_member(1, _state(3.0).to_bytes())  # replaced whole
    assert float(folder.load_member(1).tensors["w"]) == 3.0
    with pytest.raises(CheckpointError, match=r"round_000002/member_0.pt: checkpoint not found"):
        folder.load_member(0)
    folder.write("member_0.pt", b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"member_0.pt: cannot read member state"):
        folder.load_member(0)
    store.keep_only(["round_000002"])
    assert store.folders() == ["round_000002"]
    store.folder("round_000002").make()  # a leftover of an interrupted attempt is emptied
    assert not store.folder("round_000002").exists("member_1.pt")
    assert is_url(root) == (kind != "local")


def test_an_unknown_protocol_names_the_url_and_the_package_to_install():
    with pytest.raises(CheckpointError, match=r"nosuchproto://b/x: cannot open this storage"):
        CheckpointFolder("nosuchproto://b/x")


def test_a_run_with_storage_commits_there_and_resumes_evaluates_and_loads_from_there(tmp_path, memory_root):
    run = tmp_path / "run"
    cfg = tiny_config(f"run.dir={run}", "run.torch_threads=1", f"run.storage={memory_root}")
    runner = PopulationRunner(cfg, run)
    runner.start()
    runner.play_round()
    runner.play_round()
    runner.close()
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["storage"] == f"{memory_root}/run" and state["round"] == 2
    store = CheckpointStore(state["storage"])
    assert store.folders() == ["round_000001", "round_000002"]
    assert not list((run / "checkpoints").glob("round_*")), "no member state in the run directory"
    policy = load_policy(run, member=1)
    direct = store.folder("round_000002").load_member(1)
    assert policy.learner.checkpoint_path == f"{memory_root}/run/round_000002/member_1.pt"
    for name, tensor in policy.learner.snapshot(0).tensors.items():
        if name in direct.tensors and direct.tensors[name].dtype.is_floating_point:
            assert torch.equal(tensor, direct.tensors[name]), name
    assert main(["resume", str(run)]) == 0
    assert store.folders() == [f"round_{r:06d}" for r in (runner.total_rounds - 1, runner.total_rounds)]
    assert main(["evaluate", str(run), "--member", "0", "--episodes", "2"]) == 0
    written = json.loads((run / "evaluation" / "test_member0.json").read_text())
    assert written["checkpoint"] == f"{memory_root}/run/round_{runner.total_rounds:06d}/member_0.pt"


def test_on_the_process_backend_the_shards_write_their_own_members(tmp_path):
    run, storage = tmp_path / "run", tmp_path / "shared"
    cfg = tiny_config(f"run.dir={run}", "run.torch_threads=1", f"run.storage=file://{storage}",
                      "backend.kind=process", "backend.num_workers=2")
    runner = PopulationRunner(cfg, run)
    runner.start()
    sent = []
    run_all = runner.backend._run_all
    runner.backend._run_all = lambda commands: (sent.extend(c.name for c in commands.values()), run_all(commands))[1]
    runner.run(progress=False)
    assert "save_members" in sent and "snapshot_many" not in sent, "the states never passed through the driver"
    folders = sorted(p.name for p in (storage / "run").iterdir())
    assert folders == [f"round_{r:06d}" for r in (runner.total_rounds - 1, runner.total_rounds)]
    last = storage / "run" / folders[-1]
    assert sorted(p.name for p in last.iterdir()) == ["member_0.pt", "member_1.pt", "member_2.pt", "member_3.pt",
                                                      "runner.json"]
    assert int(MemberState.load(last / "member_3.pt").tensors["updates"]) == runner.total_updates
    assert not list(Path(run / "checkpoints").glob("round_*"))


def test_the_report_counts_the_checkpoints_in_the_storage(tmp_path):
    from rpbt.report import read_checkpoints

    run, storage = tmp_path / "run", tmp_path / "shared"
    cfg = tiny_config(f"run.dir={run}", "run.torch_threads=1", f"run.storage={storage}")
    runner = PopulationRunner(cfg, run)
    runner.start()
    runner.play_round()
    runner.close()
    warnings: list[str] = []
    found = read_checkpoints(run, 4, warnings=warnings)
    assert (found.present, found.round, warnings) == (4, 1, [])
    (storage / "run" / "round_000001" / "member_2.pt").unlink()
    assert read_checkpoints(run, 4).present == 3


def test_a_second_run_of_the_same_name_refuses_a_storage_holding_another_runs_checkpoints(tmp_path, capsys):
    """run.storage/<run dir name> is shared by two run directories of one name (a/exp, b/exp): the second run must
    not start, since its first commit would delete the other run's kept rounds (exit 2, nothing written)."""
    storage = tmp_path / "shared"
    first = tmp_path / "a" / "exp"
    argv = [*TINY, "run.torch_threads=1", f"run.storage={storage}"]
    assert main(["train", *argv, f"run.dir={first}"]) == 0
    kept = sorted(p.name for p in (storage / "exp").iterdir())
    second = tmp_path / "b" / "exp"
    capsys.readouterr()
    assert main(["train", *argv, f"run.dir={second}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rpbt: error: ") and "run.storage" in err and str(storage / "exp") in err, err
    assert not second.exists()
    assert sorted(p.name for p in (storage / "exp").iterdir()) == kept
    assert main(["evaluate", str(first), "--episodes", "1"]) == 0
    # replacing the run directory that owns the storage is allowed, and so is a fresh name
    assert main(["train", *argv, f"run.dir={first}", "--overwrite"]) == 0
    assert main(["train", *argv, f"run.dir={tmp_path / 'b' / 'exp2'}"]) == 0


def test_memory_storage_on_worker_processes_is_refused_before_anything_is_written(tmp_path, memory_root, capsys):
    """memory:// lives in one process: the process backend's workers would each write their members into their own
    memory, and the finished run could not be resumed, evaluated or loaded even from the training process."""
    run = tmp_path / "run"
    argv = [*TINY, "run.torch_threads=1", f"run.storage={memory_root}", f"run.dir={run}"]
    assert main(["train", *argv, "backend.kind=process", "backend.num_workers=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rpbt: error: ") and "run.storage" in err and "backend.kind=local" in err, err
    assert not run.exists() and not fsspec.filesystem("memory").exists(f"{memory_root}/run")
