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


def _updates(run, m):
    with (run / "members" / str(m) / "metrics.csv").open() as f:
        return [int(r["update"]) for r in csv.DictReader(f)]


def test_resume_with_a_larger_budget_extends_a_finished_run_by_exactly_the_requested_updates(tmp_path, capsys):
    """7 updates (rounds of 2, 2, 2 and a last one cut to 1), then extended to 10: two more rounds of 2 and 1."""
    run = tmp_path / "r"
    cfg = tiny_config(f"run.dir={run}", "run.total_env_steps=224")  # 32 env steps per update: 7 updates
    runner = PopulationRunner(cfg, run)
    runner.start()
    runner.run()
    assert json.loads((run / "summary.json").read_text())["env_steps"] == 224
    assert main(["resume", str(run), "run.total_env_steps=320"]) == 0
    out = capsys.readouterr().out
    assert "after round 4/6" in out
    events = _events(run)
    rounds = [e for e in events if e["type"] == "round"]
    assert [(e["round"], e["updates"], e["env_steps"]) for e in rounds] == [
        (1, 2, 64), (2, 4, 128), (3, 6, 192), (4, 7, 224), (5, 9, 288), (6, 10, 320)]
    for m in range(4):
        assert _updates(run, m) == list(range(1, 11))
    resume = [e for e in events if e["type"] == "resume"]
    assert resume[0]["changed"] == {"run.total_env_steps": [224, 320]}
    assert [e["type"] for e in events].count("end") == 1 and events[-1]["type"] == "end"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 320 and summary["member_env_steps"] == [320] * 4 and summary["rounds_total"] == 6
    assert "total_env_steps: 320" in (run / "config.yaml").read_text()
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["round"] == 6 and state["updates"] == 10
    # Resuming the finished run again (same budget) plays nothing more.
    assert main(["resume", str(run)]) == 0
    assert [e["round"] for e in _events(run) if e["type"] == "round"] == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_any_other_key_and_a_smaller_budget_naming_them_and_writing_nothing(tmp_path, capsys):
    run = tmp_path / "r"
    runner = PopulationRunner(tiny_config(f"run.dir={run}"), run)  # 192 env steps, 3 rounds
    runner.start()
    runner.play_round()
    runner.play_round()
    runner.close()

    def files():
        return {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.suffix != ".lock"}

    before = files()
    assert main(["resume", str(run), "agent.learning_rate=0.1"]) == 2
    err = capsys.readouterr().err
    assert "agent.learning_rate: cannot change on resume" in err and "run.total_env_steps" in err
    assert main(["resume", str(run), "run.total_env_steps=64"]) == 2
    err = capsys.readouterr().err
    assert "run.total_env_steps 64 is below the 128 env steps per member" in err and "Traceback" not in err
    assert main(["resume", str(run), "run.total_env_steps=oops"]) == 2
    assert "run.total_env_steps" in capsys.readouterr().err
    assert main(["resume", str(run), "stray"]) == 2
    assert "unexpected argument 'stray'" in capsys.readouterr().err
    assert files() == before
    # The same value as saved is no change; the Python API takes the same overrides.
    import rpbt

    done = rpbt.resume(run, overrides=["agent.learning_rate=" + str(runner.cfg.agent.learning_rate)], announce=False)
    assert done.summary["round"] == 3


def test_a_resume_may_move_the_run_to_another_backend_but_not_change_what_it_decides(tmp_path, capsys):
    from rpbt.pbt.resume import resume_config

    run = tmp_path / "r"
    runner = PopulationRunner(tiny_config(f"run.dir={run}", "backend.kind=process", "backend.num_workers=2"), run)
    runner.start()
    runner.play_round()
    runner.close()
    cfg, changed = resume_config(run, ["backend.kind=local", "backend.num_workers=null", "run.torch_threads=1"])
    assert cfg.backend.kind == "local" and changed["backend.kind"] == ["process", "local"]
    assert main(["resume", str(run), "backend.kind=local", "backend.num_workers=null"]) == 0
    resumes = [e for e in _events(run) if e["type"] == "resume"]
    assert resumes[-1]["backend"] == "local"
    assert [e["round"] for e in _events(run) if e["type"] == "round"] == list(range(1, runner.total_rounds + 1))
    assert main(["resume", str(run), "pbt.population_size=8"]) == 2
    assert "pbt.population_size: cannot change on resume" in capsys.readouterr().err
