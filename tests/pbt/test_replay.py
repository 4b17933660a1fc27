"""`rpbt replay`: a fresh run along one member's lineage schedule reproduces that schedule exactly, is a normal run
directory, and `rpbt report` draws it beside the original member."""

from __future__ import annotations

import csv
import json

import pytest

from rpbt.cli import main
from rpbt.pbt.replay import ReplayError, lineage_schedule, replay_run
from rpbt.pbt.runner import PopulationRunner
from tests.conftest import tiny_config


def _rows(run_dir, member):
    with (run_dir / "members" / str(member) / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny PBT run with exploits, and a member whose weights came through at least one exploit."""
    run = tmp_path_factory.mktemp("replay") / "src"
    cfg = tiny_config(f"run.dir={run}", "run.total_env_steps=384")
    runner = PopulationRunner(cfg, run)
    runner.start()
    runner.run(progress=False)
    lineages = json.loads((run / "checkpoints" / "runner.json").read_text())["lineage"]
    member = max(range(4), key=lambda m: (len(lineages[m]), -m))
    assert lineages[member], "the tiny run must leave a member with a lineage"
    return run, member


def test_schedule_follows_the_owner_of_the_lineages_weights_each_round(source):
    run, member = source
    sched = lineage_schedule(run, member)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    rounds = {e["round"]: e for e in events if e["type"] == "round"}
    chain = sched.lineage
    assert sched.origin == chain[0]["member"] and sched.owners[-1] == member
    for link, nxt in zip(chain, [c["member"] for c in chain[1:]] + [member]):
        r = link["round"]
        assert sched.owners[r - 1] == link["member"] and sched.owners[r] == nxt  # the copy at the end of round r
        exploit = next(e for e in events if e["type"] == "exploit" and e["round"] == r and e["recipient"] == nxt)
        assert exploit["donor"] == link["member"]
        assert sched.hparams[r] == exploit["new_hparams"]  # the explored values are in force from round r + 1
    for r, owner in enumerate(sched.owners, start=1):
        assert sched.hparams[r - 1] == rounds[r]["hparams"][owner]
        assert sched.scores[r - 1] == rounds[r]["scores"][owner]


def test_replay_reproduces_the_members_learning_rate_schedule_exactly(source, tmp_path):
    run, member = source
    out, summary = replay_run(run, tmp_path / "replay", member=member, seeds=2, overrides=["run.progress=false"])
    sched = lineage_schedule(run, member)
    # the lineage's train/learning_rate per update: each update row of the member that owned the weights then
    lineage_lr = {}
    for m in set(sched.owners):
        for row in _rows(run, m):
            r = int(float(row["round"]))
            if sched.owners[r - 1] == m:
                lineage_lr[int(float(row["update"]))] = float(row["train/learning_rate"])
    for seed in range(2):
        rows = _rows(out, seed)
        assert [int(float(r["update"])) for r in rows] == sorted(lineage_lr)
        for row in rows:
            r, update = int(float(row["round"])), int(float(row["update"]))
            assert float(row["train/learning_rate"]) == lineage_lr[update] == sched.hparams[r - 1]["learning_rate"]
            for name in ("clip_range", "ent_coef", "gae_lambda"):
                assert float(row[f"pbt/hp/{name}"]) == sched.hparams[r - 1][name]
    # seed 0 starts from the origin's weights and environments: it matches the original until the first exploit
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    replay_rounds = [e for e in events if e["type"] == "round"]
    first_exploit = sched.lineage[0]["round"]
    for e in replay_rounds[:first_exploit]:
        assert e["scores"][0] == pytest.approx(sched.scores[e["round"] - 1], rel=1e-6)
    assert summary["replay"]["member"] == member
    assert summary["replay"]["original_score"] == pytest.approx(sched.scores[-1])
    start = events[0]
    assert start["type"] == "start" and start["replay"]["member"] == member and start["population_size"] == 2
    assert events[-1]["type"] == "end"


def test_replay_is_a_run_directory_the_report_and_evaluate_read(source, tmp_path, capsys):
    run, member = source
    out = tmp_path / "r"
    assert main(["replay", str(run), "--member", str(member), "--out", str(out)]) == 0
    assert "original member" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert "## Replay" in report and "replay.png" in report and (out / "report" / "replay.png").stat().st_size > 0
    assert "replay / original" in report
    assert main(["evaluate", str(out), "--episodes", "1"]) == 0
    assert (out / "evaluation" / "test_member0.json").is_file()
    # the source's own report has no replay section
    assert main(["report", str(run)]) == 0
    assert "## Replay" not in (run / "report" / "report.md").read_text()


def test_replay_errors_name_the_problem(source, tmp_path, capsys):
    run, _ = source
    assert main(["replay", str(run), "--member", "9", "--out", str(tmp_path / "x")]) == 2
    assert "member 9 is not in" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "nothing")]) == 2
    assert f"no rpbt run directory at {tmp_path / 'nothing'} (nothing is there)" in capsys.readouterr().err
    (tmp_path / "unfinished").mkdir()  # a run that committed no round
    (tmp_path / "unfinished" / "config.yaml").write_text((run / "config.yaml").read_text())
    assert main(["replay", str(tmp_path / "unfinished")]) == 2
    assert "no committed round" in capsys.readouterr().err
    with pytest.raises(ReplayError, match="seeds"):
        replay_run(run, tmp_path / "y", seeds=0)
