"""Tests of the score source (rpbt.pbt.scoring): resolved once, training returns since the last exploit."""

from __future__ import annotations

import json

import pytest

from rpbt.pbt.runner import PopulationRunner
from rpbt.pbt.scoring import ScoreSource, own_returns
from tests.conftest import tiny_config


class FakeBackend:
    def evaluate_members(self, members, split):
        assert split == "validation"
        return {m: [float(m), float(m) + 2.0] for m in members}


INFO = {0: {"recent_returns": [1.0, 2.0, 3.0], "episodes": 5}, 1: {"recent_returns": [4.0, 6.0], "episodes": 4}}


def test_own_returns_keeps_the_episodes_finished_since_the_mark():
    assert own_returns(INFO[0], None) == [1.0, 2.0, 3.0]
    assert own_returns(INFO[0], 3) == [2.0, 3.0] and own_returns(INFO[0], 5) == []


def test_training_source_scores_own_returns_and_marks_eligibility():
    source = ScoreSource.from_config(tiny_config("pbt.score_since_exploit=true", "pbt.score_window=2"))
    assert source.kind == "training"
    scored = source.score_round(FakeBackend(), [0, 1], INFO, marks=[4, 0])
    assert scored.scores == [3.0, 5.0] and scored.eligible == [False, True] and scored.validation is None
    assert scored.without({1}).scores == [3.0, None]


def test_validation_source_scores_every_validation_episode():
    source = ScoreSource.from_config(tiny_config("pbt.score_window=1"))
    source.validation = True
    scored = source.score_round(FakeBackend(), [0, 1], INFO)
    assert scored.scores == [pytest.approx(1.0), pytest.approx(2.0)] and scored.returns == scored.validation
    assert scored.own == [[1.0, 2.0, 3.0], [4.0, 6.0]] and scored.eligible is None


@pytest.mark.parametrize("transfer", ["whole_state", "weights_only"])
def test_score_since_exploit_scores_only_the_recipients_own_episodes(tmp_path, transfer):
    # weights_only: the recipient keeps its own episode count and returns, so its mark is its own count
    cfg = tiny_config(f"run.dir={tmp_path / 'r'}", "pbt.score_since_exploit=true", "pbt.score_window=2",
                      "run.total_env_steps=384", f"pbt.transfer={transfer}")
    runner = PopulationRunner(cfg, tmp_path / "r")
    info = {m: {"recent_returns": [1.0, 2.0, 3.0, 4.0], "episodes": 10} for m in range(4)}
    marks = [0, 7, 10, 12]
    assert [own_returns(info[m], marks[m]) for m in range(4)] == [[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 4.0], [], []]
    runner.start()
    exploited = 0
    while runner.round < runner.total_rounds:
        events = runner.play_round()
        info = runner.backend.member_info()
        for e in events:
            exploited += 1
            # right after the exploit the recipient holds the donor's returns and none of its own
            recipient = runner.members[e["recipient"]]
            assert recipient.episode_mark == info[e["recipient"]]["episodes"] > 0
            assert own_returns(info[e["recipient"]], recipient.episode_mark) == []
    assert exploited, "the tiny config must exploit"
    runner.close()
    events = [json.loads(line) for line in (tmp_path / "r" / "events.jsonl").read_text().splitlines()]
    rounds = {e["round"]: e for e in events if e["type"] == "round"}
    for e in (e for e in events if e["type"] == "exploit"):
        assert e["transfer"] == transfer
        own = rounds[e["round"]]["episodes_since_exploit"]
        assert own[e["donor"]] >= 2 and own[e["recipient"]] >= 2  # both had a full window of their own
    state = json.loads((tmp_path / "r" / "checkpoints" / "runner.json").read_text())
    assert state["episode_marks"] == [record.episode_mark for record in runner.members]
