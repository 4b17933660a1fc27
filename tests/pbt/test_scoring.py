"""Tests of the score source (rpbt.pbt.scoring): resolved once, training returns since the last exploit."""

from __future__ import annotations

import pytest

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
