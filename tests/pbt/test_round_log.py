"""A round's records: metric rows decorated with the round, time, searched hyperparameters and, on the last row of
the round, the score; the round and exploit_refused events (written to a recording stand-in run directory)."""

from __future__ import annotations

import math

from rpbt.pbt.records import MemberRecord
from rpbt.pbt.round_log import RoundLog
from rpbt.pbt.scoring import RoundScores
from tests.conftest import tiny_config


class _RunDir:
    def __init__(self):
        self.metrics, self.events = {}, []

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
    assert refused == {"type": "exploit_refused", "round": 3, "env_steps": 128, "recipient": 1, "donor": 0,
                       "reason": "not significant"}
