"""The run directory: every file a tiny run writes, bounded round folders, and overwriting only an idle directory
(a failed start writes nothing)."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from rpbt.cli import main
from rpbt.pbt.runner import PopulationRunner
from tests.conftest import TINY, tiny_config


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def test_tiny_run_writes_every_run_directory_file(tmp_path):
    cfg = tiny_config(f"run.dir={tmp_path / 'run'}", "run.tensorboard=true")
    runner = PopulationRunner(cfg, tmp_path / "run")
    runner.start()
    summary = runner.run(progress=False)
    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["pbt"]["population_size"] == 4
    events = _events(run)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end"
    rounds = [e for e in events if e["type"] == "round"]
    assert [e["round"] for e in rounds] == list(range(1, runner.total_rounds + 1))
    exploits = [e for e in events if e["type"] == "exploit"]
    assert exploits, "the tiny config must exploit at least once"
    for e in exploits:
        assert {"recipient", "donor", "old_hparams", "new_hparams", "recipient_score", "donor_score",
                "measurements", "hidden_state"} <= set(e)
        assert e["recipient"] != e["donor"]
    # wall-clock accounting: each round's training time, each round's transfer time (the same on its exploit lines,
    # within the round's own clock)
    assert all(0 < e["train_s"] <= e["time"] for e in rounds)
    for r in {e["round"] for e in exploits}:
        spent = {e["transfer_s"] for e in exploits if e["round"] == r}
        assert len(spent) == 1 and spent.pop() > 0
    for m in range(4):
        with (run / "members" / str(m) / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == runner.total_updates
        for key in ["round", "env_steps", "rollout/ep_rew_mean", "train/value_loss", "train/approx_kl",
                    "train/learning_rate", "time/fps", "pbt/score", "pbt/hp/learning_rate"]:
            assert key in rows[0], key
        assert list((run / "members" / str(m) / "tb").glob("events.out.tfevents.*"))
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["round"] == runner.total_rounds
    assert sorted(p.name for p in (run / "checkpoints" / state["checkpoint_dir"]).iterdir()) == [
        f"member_{m}.pt" for m in range(4)] + ["runner.json"]
    # the last run.keep_checkpoints (default 2) committed rounds are kept, each with its runner state
    kept = [f"round_{r:06d}" for r in (runner.total_rounds, runner.total_rounds - 1)]
    assert state["history"] == kept
    assert sorted(p.name for p in (run / "checkpoints").glob("round_*")) == sorted(kept)
    assert json.loads((run / "checkpoints" / kept[1] / "runner.json").read_text())["round"] == runner.total_rounds - 1
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["best_member"] == summary["best_member"]
    assert {"best_score", "hparams", "lineage", "scores"} <= set(on_disk)
    # The lineage of the best member is a chain of real exploits.
    for link in on_disk["lineage"]:
        assert any(e["round"] == link["round"] and e["donor"] == link["member"] for e in exploits)


def test_keep_checkpoints_bounds_the_round_folders(tmp_path):
    run = tmp_path / "k"
    runner = PopulationRunner(tiny_config(f"run.dir={run}", "run.keep_checkpoints=1"), run)
    runner.start()
    runner.run(progress=False)
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["history"] == [state["checkpoint_dir"]]
    assert [p.name for p in (run / "checkpoints").glob("round_*")] == [state["checkpoint_dir"]]


def test_overwrite_only_replaces_an_idle_run_directory_and_a_failed_start_writes_nothing(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("my thesis")
    assert main(["train", *TINY, f"run.dir={precious}", "--overwrite"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (precious / "thesis.txt").read_text() == "my thesis"
    # a bad env id fails before the run directory is created
    assert main(["train", *TINY, f"run.dir={tmp_path / 'bad'}", "env.id=NoSuchEnv-v0"]) == 2
    assert not (tmp_path / "bad").exists()
    # a run directory held by another process is neither overwritten nor resumed
    run = tmp_path / "busy"
    assert main(["train", *TINY, f"run.dir={run}"]) == 0
    from rpbt.run.rundir import RunDirectory

    holder = RunDirectory(run, 4)
    holder.lock()
    try:
        assert main(["resume", str(run)]) == 2
        assert "another rpbt process" in capsys.readouterr().err
        assert main(["train", *TINY, f"run.dir={run}", "--overwrite"]) == 2
        assert (run / "summary.json").is_file()
    finally:
        holder.close()
    assert main(["train", *TINY, f"run.dir={run}", "--overwrite"]) == 0


def test_a_run_directory_locked_by_another_process_is_refused_until_that_process_ends(tmp_path):
    import subprocess
    import sys

    from rpbt.run.rundir import RunDirectory, RunDirError

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rpbt.run.rundir import RunDirectory; "
         f"d = RunDirectory({str(tmp_path)!r}, 2); d.lock(); print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match="another rpbt process is using this run directory"):
            RunDirectory(tmp_path, 2).lock()
    finally:
        holder.communicate("", timeout=30)
    mine = RunDirectory(tmp_path, 2)
    mine.lock()  # the lock went with the process
    mine.unlock()
