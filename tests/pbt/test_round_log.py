"""A round's records: metric rows decorated with the round, time, searched hyperparameters and, on the last row of
the round, the score; the round and exploit_refused events (written to a recording stand-in run directory)."""

from __future__ import annotations

import math

from rpbt.pbt.records import MemberRecord
from rpbt.pbt.round_log import RoundLog, population_scalars
from rpbt.pbt.scoring import RoundScores
from tests.conftest import tiny_config


class _RunDir:
    def __init__(self):
        self.metrics, self.events, self.population = {}, [], []

    def write_population(self, step, values):
        self.population.append((step, values))

    def elapsed(self) -> float:
        return 12.5

    def write_metrics(self, member, rows):
        self.metrics[member] = rows

    def write_event(self, event):
        self.events.append(event)


def _info(lr):
    return [{"env_steps": 64 * (m + 1), "updates": 2, "hparams": {"learning_rate": lr[m], "gamma": 0.99}}
            for m in range(len(lr))]


def test_metric_rows_carry_round_time_searched_hparams_and_the_score_on_the_last_row():
    rundir = _RunDir()
    log = RoundLog(tiny_config("pbt.population_size=2"), rundir, ["learning_rate"])
    rows = {0: [{"train/loss": 1.0}, {"train/loss": 0.5}], 1: [{"train/loss": 2.0}, {"train/loss": 1.5}]}
    scored = RoundScores(scores=[3.0, None], returns=[[3.0], []], own=[[3.0], []], validation=[[1.0, 2.0], []],
                         eligible=None)
    log.metrics(4, rows, _info([1e-3, 2e-3]), scored, [MemberRecord(exploitation_count=2), MemberRecord()])
    first, last = rundir.metrics[0]
    assert first == {"train/loss": 1.0, "round": 4, "time": 12.5, "pbt/hp/learning_rate": 1e-3}
    assert last["pbt/score"] == 3.0 and last["eval/validation_return"] == 1.5 and last["pbt/exploitation_count"] == 2
    assert "pbt/hp/gamma" not in last  # only the searched hyperparameters
    assert rundir.metrics[1][-1]["pbt/score"] is None and rundir.metrics[1][-1]["eval/validation_return"] is None
    assert rundir.metrics[1][-1]["pbt/hp/learning_rate"] == 2e-3


def test_round_and_refused_events():
    rundir = _RunDir()
    cfg = tiny_config("pbt.population_size=2", "pbt.score_since_exploit=true")
    scored = RoundScores(scores=[1.0, math.nan], returns=[[1.0], [2.0]], own=[[1.0, 1.0, 1.0], []], validation=None,
                         eligible=None)
    RoundLog(cfg, rundir, ["learning_rate"]).round(3, _info([1e-3, 2e-3]), scored, [0, 5], train_s=1.234567)
    RoundLog(cfg, rundir, []).refused(3, 128, [{"recipient": 1, "donor": 0, "reason": "not significant"}])
    event, refused = rundir.events
    assert event["type"] == "round" and event["round"] == 3 and event["train_s"] == 1.2346
    assert event["env_steps"] == 64 and event["member_env_steps"] == [64, 128] and event["updates"] == 2
    assert event["scores"] == [1.0, None]  # non-finite scores are written as null
    assert event["episodes_since_exploit"] == [3, 0]
    assert event["hparams"][1]["learning_rate"] == 2e-3
    # the population run's scalars of the round: the one finite score, at the schedule's env steps
    assert rundir.population == [(64, {"time/total_timesteps": 64.0, "pbt/best_score": 1.0, "pbt/mean_score": 1.0,
                                       "pbt/median_score": 1.0, "pbt/min_score": 1.0, "pbt/max_score": 1.0})]
    assert refused == {"type": "exploit_refused", "round": 3, "env_steps": 128, "recipient": 1, "donor": 0,
                       "reason": "not significant"}


def test_population_scalars_by_hand():
    got = population_scalars([0.5, None, 0.1, math.nan, 0.9, 0.3], "max", 640)
    assert got == {"time/total_timesteps": 640.0, "pbt/best_score": 0.9, "pbt/mean_score": (0.5 + 0.1 + 0.9 + 0.3) / 4,
                   "pbt/median_score": 0.4, "pbt/min_score": 0.1, "pbt/max_score": 0.9}
    assert population_scalars([2.0, 1.0], "min", 0)["pbt/best_score"] == 1.0  # mode min: the lowest is best
    assert population_scalars([None, math.nan], "max", 8) == {"time/total_timesteps": 8.0}


def test_tensorboard_of_a_real_run_holds_what_its_records_say(tmp_path):
    """The event files, read back with TensorBoard's own reader: every member's time/total_timesteps equals its
    metrics.csv env steps, its HParams entry the hyperparameters of its last round event and its last pbt/score that
    round's score; the population run's best and mean score per round equal the round events'."""
    import csv
    import json

    import pytest

    from rpbt.pbt.runner import PopulationRunner

    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = tmp_path / "run"
    runner = PopulationRunner(tiny_config(f"run.dir={run}", "run.tensorboard=true"), run)
    runner.start()
    runner.run(progress=False)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line]
    rounds = [e for e in events if e["type"] == "round"]
    names = list(next(e for e in events if e["type"] == "start")["search_space"])

    def scalars(acc, tag):
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    for m in range(4):
        acc = event_accumulator.EventAccumulator(str(run / "members" / str(m) / "tb"),
                                                 size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        with (run / "members" / str(m) / "metrics.csv").open() as f:
            steps = [int(row["env_steps"]) for row in csv.DictReader(f)]
        assert scalars(acc, "time/total_timesteps") == [(s, float(s)) for s in steps]
        last_score = scalars(acc, "pbt/score")[-1]
        assert last_score[0] == steps[-1] and last_score[1] == pytest.approx(rounds[-1]["scores"][m], rel=1e-6)
        content = acc.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        got = {k: v.number_value for k, v in start.session_start_info.hparams.items()}
        assert got == {n: rounds[-1]["hparams"][m][n] for n in names}
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert [i.name.tag for i in experiment.metric_infos] == ["pbt/score"]

    acc = event_accumulator.EventAccumulator(str(run / "population" / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    steps = [e["env_steps"] for e in rounds]
    best = [max(s for s in e["scores"] if s is not None) for e in rounds]
    mean = [sum(e["scores"]) / len(e["scores"]) for e in rounds]
    assert [s for s, _ in scalars(acc, "pbt/best_score")] == steps
    assert [v for _, v in scalars(acc, "pbt/best_score")] == pytest.approx(best, rel=1e-6)
    assert [v for _, v in scalars(acc, "pbt/mean_score")] == pytest.approx(mean, rel=1e-6)
    assert scalars(acc, "time/total_timesteps") == [(s, float(s)) for s in steps]
