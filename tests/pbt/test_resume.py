"""Resuming a run: from the last completed round, past a corrupted latest round (said), deterministically given
its commit."""

from __future__ import annotations

import csv
import json

from rpbt.cli import main
from rpbt.pbt.runner import PopulationRunner
from tests.conftest import tiny_config


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


WALL_CLOCK = ("time", "train_s", "transfer_s")  # the only event fields allowed to differ between equal runs


def _strip_time(events):
    return [{k: v for k, v in e.items() if k not in WALL_CLOCK} for e in events]


def test_resume_continues_from_last_completed_round(tmp_path, capsys):
    run = tmp_path / "r"
    cfg = tiny_config(f"run.dir={run}")
    runner = PopulationRunner(cfg, run)
    runner.start()
    runner.play_round()
    runner.play_round()
    # simulate a kill after round 2 committed while round 3 was half recorded
    runner.backend.train(1)
    runner.rundir.write_event({"type": "round", "round": 3, "scores": [], "hparams": []})
    with (run / "events.jsonl").open("a") as f:
        f.write('{"type": "exploit", "rou')
    runner.close()
    assert main(["resume", str(run)]) == 0
    events = _events(run)
    rounds = [e["round"] for e in events if e["type"] == "round"]
    assert rounds == list(range(1, runner.total_rounds + 1))
    assert [e["type"] for e in events].count("resume") == 1
    assert json.loads((run / "summary.json").read_text())["round"] == runner.total_rounds
    assert main(["resume", str(tmp_path / "nothing")]) == 2
    assert f"no rpbt run directory at {tmp_path / 'nothing'}" in capsys.readouterr().err


def test_resume_falls_back_past_a_corrupted_latest_round_and_says_so(tmp_path, capsys):
    run = tmp_path / "r"
    cfg = tiny_config(f"run.dir={run}", "run.total_env_steps=256")  # 4 rounds
    runner = PopulationRunner(cfg, run)
    runner.start()
    for _ in range(3):
        runner.play_round()
    runner.close()
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["history"] == ["round_000003", "round_000002"]
    bad = run / "checkpoints" / "round_000003" / "member_2.pt"
    bad.write_bytes(bad.read_bytes()[:100])  # a corrupted latest checkpoint
    (run / "checkpoints" / ".runner.json.abc123.tmp").write_text("{")  # a write cut short by a kill
    assert main(["resume", str(run)]) == 0
    captured = capsys.readouterr()
    assert "round 3 skipped, resuming from round 2" in captured.err and str(bad) in captured.err
    assert "resuming" in captured.out and "after round 2/4" in captured.out
    events = _events(run)
    resume = [e for e in events if e["type"] == "resume"]
    assert len(resume) == 1 and resume[0]["round"] == 2
    assert [(s["round"], s["folder"]) for s in resume[0]["skipped"]] == [(3, "round_000003")]
    assert str(bad) in resume[0]["skipped"][0]["reason"]
    assert [e["round"] for e in events if e["type"] == "round"] == [1, 2, 3, 4]  # round 3 replayed once
    times = [e["time"] for e in events]
    assert times == sorted(times)  # the run's clock continues from the resumed round's
    for m in range(4):
        with (run / "members" / str(m) / "metrics.csv").open() as f:
            assert [int(r["update"]) for r in csv.DictReader(f)] == list(range(1, 9))
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["round"] == 4 and state["history"] == ["round_000004", "round_000003"]
    assert sorted(p.name for p in (run / "checkpoints").glob("round_*")) == ["round_000003", "round_000004"]
    assert not list(run.rglob("*.tmp"))
    from rpbt.checkpoint import MemberState

    assert int(MemberState.load(bad).tensors["updates"]) == 6  # the replayed round rewrote the folder
    # When no kept round restores, resume stops naming every round's problem and changes nothing.
    for folder in ("round_000004", "round_000003"):
        (run / "checkpoints" / folder / "member_0.pt").write_bytes(b"junk")
    before = (run / "events.jsonl").read_text()
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "none of the kept rounds can be restored" in err and "round 4:" in err and "round 3:" in err
    assert "Traceback" not in err and (run / "events.jsonl").read_text() == before


def test_a_resume_is_deterministic_given_its_commit(tmp_path, capsys):
    """The resume contract (README): two resumes of the same committed round play the same rounds, bit for bit."""
    import shutil

    run = tmp_path / "r"
    runner = PopulationRunner(tiny_config(f"run.dir={run}", "run.total_env_steps=256"), run)  # 4 rounds
    runner.start()
    runner.play_round()
    runner.play_round()
    runner.backend.train(1)  # killed mid-round 3: its work is lost, the resume starts from round 2's commit
    runner.close()
    copies = [tmp_path / "a", tmp_path / "b"]
    for c in copies:
        shutil.copytree(run, c)
        assert main(["resume", str(c)]) == 0
    capsys.readouterr()
    a, b = (_strip_time(_events(c)) for c in copies)
    assert a == b and [e["round"] for e in a if e["type"] == "round"] == [1, 2, 3, 4]

    def metrics(c, m):
        with (c / "members" / str(m) / "metrics.csv").open() as f:
            return [{k: v for k, v in r.items() if k not in ("time", "time/fps")} for r in csv.DictReader(f)]

    for m in range(4):
        assert metrics(copies[0], m) == metrics(copies[1], m)
