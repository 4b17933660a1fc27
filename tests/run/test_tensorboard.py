"""A run's TensorBoard writers: nothing written when disabled; rows at env-step steps with time/total_timesteps,
non-finite values skipped; the population run in its own folder (read back with TensorBoard's reader)."""

from __future__ import annotations

import math
import time

import pytest

from rpbt.run.tensorboard import TensorBoardLog

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _read(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_disabled_writes_nothing(tmp_path):
    log = TensorBoardLog(tmp_path, enabled=False)
    log.rows(0, [{"round": 1, "update": 1, "env_steps": 8, "time": 0.1, "train/value_loss": 1.0}])
    log.scalars("population", 8, {"pbt/best_score": 1.0})
    log.hparams(0, {"learning_rate": 1e-3}, ["pbt/score"])
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_rows_and_population_scalars(tmp_path):
    log = TensorBoardLog(tmp_path)
    log.rows(1, [{"round": 1, "update": 1, "env_steps": 8, "time": 0.1, "train/value_loss": 0.5, "pbt/score": None},
                 {"round": 1, "update": 2, "env_steps": 16, "time": 0.2, "train/value_loss": math.nan,
                  "pbt/score": 0.25}])
    log.scalars("population", 16, {"pbt/best_score": 0.75, "pbt/mean_score": None})
    log.close()
    member = _read(tmp_path / "members" / "1" / "tb")
    assert member == {"time/total_timesteps": [(8, 8.0), (16, 16.0)], "train/value_loss": [(8, 0.5)],
                      "pbt/score": [(16, 0.25)]}  # round, update, time are no scalars; None and NaN skipped
    assert _read(tmp_path / "population" / "tb") == {"pbt/best_score": [(16, 0.75)]}


def test_a_resume_hides_what_the_dropped_rounds_wrote(tmp_path):
    """A resume drops the rounds after the one it restores (here round 3, whose checkpoint is corrupt) from
    events.jsonl and metrics.csv and plays them again; TensorBoard must not show both attempts at the same steps:
    every step appears once, with the value of metrics.csv, for each member and for the population."""
    import csv

    from rpbt.cli import main
    from tests.conftest import TINY

    run = tmp_path / "run"
    argv = [a for a in TINY if a != "run.tensorboard=false"] + ["run.torch_threads=1", f"run.dir={run}"]
    assert main(["train", *argv]) == 0
    (run / "checkpoints" / "round_000003" / "member_1.pt").write_bytes(b"corrupt")
    # TensorBoard reads a folder's event files in name order, whose first field is the second a file was opened
    # (then host, pid and a per-process counter): a resume in the same second of the same process could sort first.
    time.sleep(1.1)
    assert main(["resume", str(run)]) == 0
    for m in range(4):
        rows = list(csv.DictReader((run / "members" / str(m) / "metrics.csv").open()))
        want = [(int(r["env_steps"]), float(r["train/value_loss"])) for r in rows]
        got = _read(run / "members" / str(m) / "tb")["train/value_loss"]
        assert [s for s, _ in got] == [s for s, _ in want], (m, got)
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6)
    population = _read(run / "population" / "tb")["pbt/best_score"]
    steps = [s for s, _ in population]
    assert steps == sorted(set(steps)) and len(steps) == 3, population
