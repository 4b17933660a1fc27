"""The t-test exploit, eligibility, scoring since the last exploit, and the stale-state measurements."""

from __future__ import annotations

import json
import math

import pytest
from scipy import stats

from rpbt.pbt.runner import PopulationRunner
from rpbt.pbt.scheduler import PBTScheduler
from rpbt.pbt.scoring import own_returns
from rpbt.pbt.selection import welch_ttest
from tests.conftest import tiny_config

SPACE = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"}}
HP = [{"learning_rate": 1e-3}, {"learning_rate": 2e-3}]


def two_members(**kwargs) -> PBTScheduler:
    """Two members, both ready at update 1: truncation pairs the worse (recipient) with the better (donor)."""
    return PBTScheduler(SPACE, population_size=2, perturbation_interval=1, burn_in=0, ttest=True, ttest_window=5,
                        seed=0, **kwargs)


# ------------------------------------------------------------------------------------------ Welch's t-test


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


def test_ttest_exploit_accepts_a_significantly_better_donor():
    sch = two_members()
    donor = [10.0, 11.0, 12.0, 11.0, 10.0]  # mean 10.8, var 0.7
    recipient = [1.0, 2.0, 3.0, 2.0, 1.0]  # mean 1.8, var 0.7: t = 9 / sqrt(0.28) = 17.0
    decision = sch.step([1.8, 10.8], HP, [1, 1], returns=[recipient, donor])
    assert [(d.recipient, d.donor) for d in decision.exploits] == [(0, 1)]
    test = decision.exploits[0].ttest
    assert test["t"] == pytest.approx(9.0 / math.sqrt(0.28)) and test["p"] < 0.05
    assert test["window"] == 5 and test["alpha"] == 0.05 and decision.refused == []


def test_ttest_exploit_refuses_a_donor_that_is_not_significantly_better():
    sch = two_members()
    donor = [1.0, 5.0, 2.0, 6.0, 3.0]  # mean 3.4, var 4.3
    recipient = [2.0, 4.0, 1.0, 5.0, 2.0]  # mean 2.8, var 2.7: t = 0.6 / sqrt(1.4) = 0.507
    decision = sch.step([2.8, 3.4], HP, [1, 1], returns=[recipient, donor])
    assert decision.exploits == []
    (refused,) = decision.refused
    assert refused["reason"] == "not significant" and (refused["recipient"], refused["donor"]) == (0, 1)
    assert refused["t"] == pytest.approx(0.6 / math.sqrt(1.4)) and refused["p"] > 0.05
    # the same gap with a looser level and a larger t passes; too few returns never does
    assert two_members(ttest_alpha=0.4).step([2.8, 3.4], HP, [1, 1], returns=[recipient, donor]).exploits
    short = two_members()
    decision = short.step([1.8, 10.8], HP, [1, 1], returns=[[1.0, 2.0], [10.0, 11.0, 12.0, 11.0, 10.0]])
    assert decision.exploits == [] and decision.refused[0]["reason"] == "too few returns"
    with pytest.raises(ValueError, match="returns"):
        two_members().step([1.8, 10.8], HP, [1, 1])


def test_ttest_uses_only_the_last_window_returns():
    sch = two_members()
    old_good = [100.0] * 10
    donor = old_good[:5] + [1.0, 5.0, 2.0, 6.0, 3.0]  # the last 5 are no better than the recipient's
    recipient = [0.0] * 5 + [2.0, 4.0, 1.0, 5.0, 2.0]
    assert sch.step([2.8, 3.4], HP, [1, 1], returns=[recipient, donor]).exploits == []


# ------------------------------------------------------------------------------------------ eligibility


def test_an_ineligible_member_is_neither_donor_nor_recipient_and_joins_when_eligible():
    space = SPACE
    sch = PBTScheduler(space, population_size=4, perturbation_interval=2, burn_in=0, seed=1)
    hp = [{"learning_rate": 1e-3}] * 4
    scores = [0.0, 5.0, 6.0, 9.0]
    decisions = sch.step(scores, hp, [2] * 4, eligible=[False, True, True, False]).exploits
    assert [(d.recipient, d.donor) for d in decisions] == [(1, 2)]  # 0 (worst) and 3 (best) sit out
    assert sch.last_ready == [None, 2, 2, None]  # their ready point is not spent
    decisions = sch.step(scores, hp, [3] * 4).exploits  # eligible now, and ready at once
    assert [(d.recipient, d.donor) for d in decisions] == [(0, 3)]


# ------------------------------------------------------------------------------------------ runner


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


def test_ttest_and_pb2_run_records_refused_exploits_and_resumes_with_the_model(tmp_path):
    run = tmp_path / "r"
    cfg = tiny_config(f"run.dir={run}", "pbt.ttest=true", "pbt.ttest_window=2", "pbt.explore=pb2",
                      "pbt.pb2.candidates=16", "pbt.pb2.min_data=2", "pbt.score_since_exploit=true",
                      "pbt.score_window=2", "run.total_env_steps=384")
    runner = PopulationRunner(cfg, run)
    runner.start()
    for _ in range(3):
        runner.play_round()
    committed = runner.scheduler.state_dict()
    marks = [record.episode_mark for record in runner.members]
    runner.close()
    assert committed["pb2"]["data"], "PB2's observations are committed with the round"
    resumed = PopulationRunner(cfg, run)
    resumed.resume()
    assert resumed.scheduler.state_dict() == json.loads(json.dumps(committed))
    assert [record.episode_mark for record in resumed.members] == marks
    resumed.run(progress=False)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    tested = [e for e in events if e["type"] in ("exploit", "exploit_refused")]
    assert tested, "some pair must have been tested"
    for e in tested:
        if e["type"] == "exploit":
            assert e["ttest"]["p"] < 0.05 and e["explore"] in ("perturb", "pb2")
        else:
            assert e["reason"] in ("not significant", "too few returns")


# ------------------------------------------------------------------------------------------ stale state


@pytest.mark.parametrize("strategy", ["burn_in", "keep", "zero", "reset_episodes"])
def test_every_exploit_measures_the_stale_state_against_the_burned_in_one(strategy):
    from rpbt.pbt.transfer import exploit
    from tests.conftest import Learner

    cfg = tiny_config()
    learner = Learner(cfg, [0, 1, 2])
    for _ in range(2):
        learner.train_update()
    donor = learner.policy.snapshot(0)
    m = exploit(learner.policy, learner.runner, 2, donor, learner.policy.get_hparams(0), strategy=strategy)
    assert {"pbt/stale_state_drift", "pbt/stale_policy_kl_at_exploit", "pbt/stale_value_gap_at_exploit"} <= set(m)
    # the recipient's own states were computed by other weights: burn-in corrects a real drift
    assert m["pbt/stale_state_drift"] > 0.0 and m["pbt/stale_value_gap_at_exploit"] > 0.0
    if strategy == "burn_in":
        assert m["pbt/hidden_state_drift"] == 0.0
    if strategy == "keep":  # keep leaves the stale state: both comparisons are the same one
        assert m["pbt/hidden_state_drift"] == pytest.approx(m["pbt/stale_state_drift"])
    learner.close()
