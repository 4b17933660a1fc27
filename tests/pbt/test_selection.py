"""Tests of the exploit strategies (rpbt.pbt.selection): pure functions of the ready members, scores and a generator."""

from __future__ import annotations

import math
import random

import pytest
from scipy import stats

from rpbt.pbt.selection import rank_key, significant, tournament, truncation, truncation_group_size, welch_ttest


def test_rank_key_puts_missing_scores_below_every_real_one_in_both_modes():
    assert rank_key(None, "max") < rank_key(-math.inf, "max")
    assert rank_key(None, "min") < rank_key(math.inf, "min")
    assert rank_key(1.0, "min") > rank_key(2.0, "min")


def test_truncation_copies_only_strictly_better_members_of_the_top_group():
    scores = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    for seed in range(10):
        pairs = truncation(random.Random(seed), list(range(8)), scores, "max", 0.25)
        assert [r for r, _ in pairs] == [0, 1] and all(d in (6, 7) for _, d in pairs)
    assert truncation(random.Random(0), list(range(4)), [1.0] * 4, "max", 0.5) == []  # ties: no churn
    assert truncation_group_size(0.25, 8) == 2 and truncation_group_size(0.25, 3) == 1


def test_tournament_pairs_the_worse_with_the_better():
    for seed in range(10):
        pairs = tournament(random.Random(seed), [0, 1], [1.0, 2.0], "max")
        assert pairs == [(0, 1)]
        assert tournament(random.Random(seed), [0, 1], [1.0, 2.0], "min") == [(1, 0)]


def test_significant_returns_kept_pairs_their_tests_and_the_refused_pairs():
    better, worse = [10.0, 11.0, 12.0, 11.0, 10.0], [1.0, 2.0, 3.0, 2.0, 1.0]
    kept, tests, refused = significant([(0, 1)], [worse, better], "max", window=5, alpha=0.05)
    assert kept == [(0, 1)] and tests[0]["t"] == pytest.approx(welch_ttest(better, worse)[0]) and refused == []
    kept, tests, refused = significant([(0, 1)], [worse, better[:3]], "max", window=5, alpha=0.05)
    assert kept == [] and tests == {}
    assert refused == [{"recipient": 0, "donor": 1, "n_donor": 3, "n_recipient": 5, "window": 5, "alpha": 0.05,
                        "reason": "too few returns"}]
    _, _, refused = significant([(0, 1)], [better, worse], "max", window=5, alpha=0.05)
    assert refused[0]["reason"] == "not significant" and refused[0]["p"] > 0.5


def test_welch_t_statistic_by_hand():
    donor, recipient = [3.0, 4.0, 5.0, 6.0, 7.0], [1.0, 2.0, 3.0]
    # means 5 and 2; sample variances 2.5 and 1; se^2 = 2.5/5 + 1/3 = 5/6
    t, df, p = welch_ttest(donor, recipient)
    assert t == pytest.approx(3.0 / math.sqrt(5.0 / 6.0))  # 3.2863
    assert df == pytest.approx((5 / 6) ** 2 / (0.5 ** 2 / 4 + (1 / 3) ** 2 / 2))  # 5.882
    ref = stats.ttest_ind(donor, recipient, equal_var=False, alternative="greater")
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    t_min, _, p_min = welch_ttest(donor, recipient, mode="min")  # lower is better: the donor is worse
    assert t_min == pytest.approx(-t) and p_min == pytest.approx(1 - p)
    assert welch_ttest([2.0, 2.0], [1.0, 1.0])[::2] == (math.inf, 0.0)  # no variance, different means
    assert welch_ttest([1.0, 1.0], [1.0, 1.0])[2] == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        welch_ttest([1.0], [1.0, 2.0])
