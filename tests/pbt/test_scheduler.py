"""Tests of the PBT scheduler: ready schedule, truncation selection, binary tournament, explore, determinism."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from rpbt.config import PBTConfig
from rpbt.pbt.scheduler import Decision, PBTScheduler
from rpbt.pbt.selection import truncation_group_size
from rpbt.pbt.space import SearchSpace

SPACE = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "scale": "log"},
    "clip_range": {"type": "float", "low": 0.1, "high": 0.3},
}
DEFAULTS = {"learning_rate": 2.5e-4, "clip_range": 0.2, "gamma": 0.99}


def make(population_size=8, **kwargs) -> PBTScheduler:
    options = dict(perturbation_interval=1, burn_in=0, seed=0)
    options.update(kwargs)
    return PBTScheduler(SearchSpace(SPACE), population_size=population_size, **options)


def hparams_for(n):
    return [{"learning_rate": 1e-3 * (1 + i % 5), "clip_range": 0.2, "gamma": 0.9 + i / 100} for i in range(n)]


def decide(scheduler, scores, updates=None):
    n = len(scores)
    return scheduler.step(scores, hparams_for(n), updates if updates is not None else [1] * n).exploits


# ------------------------------------------------------------------------------------------------ ready


def test_first_ready_at_max_of_burn_in_and_interval_then_every_interval():
    scheduler = make(population_size=1, burn_in=5, perturbation_interval=4)
    assert [u for u in range(12) if scheduler.ready(0, u)] == list(range(5, 12))
    scheduler.step([1.0], hparams_for(1), [5])  # records the ready point
    assert scheduler.last_ready == [5]
    assert [u for u in range(5, 15) if scheduler.ready(0, u)] == list(range(9, 15))


@pytest.mark.parametrize("burn_in, interval, first", [(0, 3, 3), (2, 4, 4), (6, 4, 6), (4, 4, 4)])
def test_first_ready_point(burn_in, interval, first):
    scheduler = make(population_size=1, burn_in=burn_in, perturbation_interval=interval)
    assert min(u for u in range(20) if scheduler.ready(0, u)) == first


def test_ready_is_a_pure_query_and_step_records_only_ready_members():
    scheduler = make(population_size=3, burn_in=2, perturbation_interval=2)
    assert scheduler.ready(0, 2) and scheduler.ready(0, 2)  # asking twice changes nothing
    assert scheduler.last_ready == [None, None, None]
    scheduler.step([1.0, 2.0, 3.0], hparams_for(3), [2, 1, 3])
    assert scheduler.last_ready == [2, None, 3]
    assert not scheduler.ready(0, 3) and scheduler.ready(0, 4)
    assert scheduler.ready(1, 2)
    with pytest.raises(ValueError, match="member"):
        scheduler.ready(3, 10)


def test_members_that_are_not_ready_take_no_part():
    # member 0 has the worst score but is not ready; members 1..3 are ready.
    for seed in range(20):
        scheduler = make(population_size=4, burn_in=4, perturbation_interval=4, seed=seed)
        decisions = scheduler.step([-100.0, 1.0, 2.0, 3.0], hparams_for(4), [3, 4, 4, 4]).exploits
        assert [(d.recipient, d.donor) for d in decisions] == [(1, 3)]


# ------------------------------------------------------------------------------------------------ truncation

SCORES_8 = [5.0, 1.0, 7.0, 3.0, 0.0, 6.0, 2.0, 4.0]  # ranking (best first): 2, 5, 0, 7, 3, 6, 1, 4


@pytest.mark.parametrize("seed", range(25))
def test_truncation_bottom_quarter_copies_top_quarter(seed):
    decisions = decide(make(seed=seed), SCORES_8)
    assert [d.recipient for d in decisions] == [1, 4]
    assert {d.donor for d in decisions} <= {2, 5}
    for d in decisions:
        assert d.recipient_score == SCORES_8[d.recipient] and d.donor_score == SCORES_8[d.donor]


@pytest.mark.parametrize("seed", range(25))
def test_truncation_mode_min_reverses_the_ranking(seed):
    decisions = decide(make(seed=seed, mode="min"), SCORES_8)
    assert [d.recipient for d in decisions] == [2, 5]
    assert {d.donor for d in decisions} <= {1, 4}


def test_truncation_donors_are_chosen_uniformly_from_the_top():
    donors = Counter()
    scheduler = make(seed=3)
    for update in range(1, 401):  # interval 1: ready every update
        donors.update(d.donor for d in decide(scheduler, SCORES_8, [update] * 8))
    assert set(donors) == {2, 5}
    assert abs(donors[2] / 800 - 0.5) < 0.07


@pytest.mark.parametrize("q, n, k", [(0.25, 8, 2), (0.5, 8, 4), (0.25, 7, 1), (0.2, 10, 2), (0.5, 5, 2), (0.1, 3, 1)])
def test_truncation_count_per_side_is_floor_q_n_at_least_one(q, n, k):
    assert truncation_group_size(q, n) == k  # the count the runner's start warning reports
    scores = [float(i) for i in range(n)]  # member i has score i: bottom k are 0..k-1
    decisions = decide(make(population_size=n, quantile_fraction=q), scores)
    assert [d.recipient for d in decisions] == list(range(k))
    assert all(d.donor >= n - k for d in decisions)


@pytest.mark.parametrize("seed", range(10))
def test_none_and_nan_scores_count_as_worst(seed):
    scores = [None, float("nan"), 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    decisions = decide(make(seed=seed), scores)
    assert [d.recipient for d in decisions] == [0, 1]
    assert {d.donor for d in decisions} <= {6, 7}
    assert all(d.recipient_score is None for d in decisions)  # NaN reported as None
    # also in mode min: missing scores stay worst
    decisions = decide(make(seed=seed, mode="min"), scores)
    assert [d.recipient for d in decisions] == [0, 1]
    assert {d.donor for d in decisions} <= {2, 3}


def test_a_missing_score_is_worse_than_minus_infinity():
    decisions = decide(make(population_size=4), [-math.inf, None, 1.0, 2.0])
    assert [(d.recipient, d.donor) for d in decisions] == [(1, 3)]


def test_population_of_two_has_one_on_each_side():
    for mode, expected in (("max", (0, 1)), ("min", (1, 0))):
        decisions = decide(make(population_size=2, mode=mode), [1.0, 2.0])
        assert [(d.recipient, d.donor) for d in decisions] == [expected]


def test_population_of_one_never_decides():
    scheduler = make(population_size=1)
    for update in range(1, 6):
        assert scheduler.step([1.0], hparams_for(1), [update]).exploits == []


@pytest.mark.parametrize("seed", range(20))
def test_truncation_never_copies_a_tie_or_an_unscored_member(seed):
    assert decide(make(seed=seed), [1.0] * 8) == []  # everyone tied: no churn
    assert decide(make(seed=seed), [None] * 8) == []
    # bottom two tied with a top member: both copy the one strictly better donor of the top two
    decisions = decide(make(seed=seed), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0])
    assert len(decisions) == 2
    for d in decisions:
        assert d.donor == 7 and d.donor_score > d.recipient_score


def test_truncation_donor_is_uniform_among_the_strictly_better_top_members():
    # n = 4, q = 0.5: bottom {member 0, one of the 3s}, top {the other 3, member 3}. The bottom 3 must copy member 3
    # every time (the tie is never a donor); member 0 copies either top member, uniformly.
    donors_of_zero, decided = Counter(), 0
    for seed in range(400):
        decisions = decide(make(population_size=4, quantile_fraction=0.5, seed=seed), [0.0, 3.0, 3.0, 5.0])
        assert len(decisions) == 2
        decided += 1
        for d in decisions:
            if d.recipient == 0:
                donors_of_zero[d.donor] += 1
            else:
                assert d.recipient in (1, 2) and d.donor == 3
    assert set(donors_of_zero) == {1, 2, 3} - {min(donors_of_zero)} or set(donors_of_zero) <= {1, 2, 3}
    top_three = donors_of_zero[3] / decided
    assert abs(top_three - 0.5) < 0.08  # member 0's donor: member 3 half of the time, the top 3 the other half


def test_truncation_ties_in_the_bottom_are_broken_by_the_seed():
    scores = [1.0] * 6 + [5.0, 6.0]
    picks = {tuple(d.recipient for d in decide(make(seed=seed), scores)) for seed in range(30)}
    assert len(picks) > 5  # not always the same members
    assert all(len(p) == 2 for p in picks)
    assert decide(make(seed=4), scores) == decide(make(seed=4), scores)


# ------------------------------------------------------------------------------------------------ tournament


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("mode", ["max", "min"])
def test_tournament_copies_only_strictly_better_members(n, mode):
    for seed in range(40):
        scores = [float(s) for s in random.Random(seed).sample(range(100), n)]
        decisions = decide(make(population_size=n, exploit="tournament", mode=mode, seed=seed), scores)
        best = (max if mode == "max" else min)(range(n), key=lambda i: scores[i])
        recipients = [d.recipient for d in decisions]
        donors = {d.donor for d in decisions}
        assert best not in recipients
        assert len(set(recipients)) == len(recipients)
        assert not set(recipients) & donors
        for d in decisions:
            assert d.recipient != d.donor
            better = d.donor_score > d.recipient_score if mode == "max" else d.donor_score < d.recipient_score
            assert better


def test_tournament_with_equal_scores_never_copies():
    for seed in range(20):
        assert decide(make(population_size=6, exploit="tournament", seed=seed), [2.0] * 6) == []
        assert decide(make(population_size=6, exploit="tournament", seed=seed), [None] * 6) == []


def test_tournament_missing_scores_lose():
    for seed in range(20):
        decisions = decide(make(population_size=2, exploit="tournament", seed=seed), [float("nan"), -5.0])
        assert [(d.recipient, d.donor) for d in decisions] == [(0, 1)]


def test_tournament_even_population_pairs_every_member_with_a_uniform_opponent():
    # With distinct scores and an even population, each pair yields exactly one copy, the worst member always
    # loses, and its opponent is uniform over the other three.
    donors_of_worst = Counter()
    scores = [0.0, 1.0, 2.0, 3.0]
    for seed in range(600):
        decisions = decide(make(population_size=4, exploit="tournament", seed=seed), scores)
        assert len(decisions) == 2
        worst = [d for d in decisions if d.recipient == 0]
        assert len(worst) == 1
        donors_of_worst[worst[0].donor] += 1
    assert set(donors_of_worst) == {1, 2, 3}
    assert all(abs(c / 600 - 1 / 3) < 0.06 for c in donors_of_worst.values())


# ------------------------------------------------------------------------------------------------ explore


def test_explore_perturbs_the_donors_hparams_only_for_recipients():
    scheduler = make(resample_probability=0.0)
    hparams = hparams_for(8)
    decisions = scheduler.step(SCORES_8, hparams, [1] * 8).exploits
    assert decisions
    for d in decisions:
        donor = hparams[d.donor]
        assert d.old_hparams == hparams[d.recipient]
        assert d.resampled == []
        assert d.new_hparams["gamma"] == donor["gamma"]  # not searched: the donor's value
        assert d.new_hparams["learning_rate"] in (donor["learning_rate"] * 0.8, donor["learning_rate"] * 1.2)
        assert d.new_hparams["clip_range"] in (donor["clip_range"] * 0.8, donor["clip_range"] * 1.2)
    assert hparams == hparams_for(8)  # inputs untouched


def test_explore_with_resample_probability_one_resamples_everything_within_bounds():
    scheduler = make(resample_probability=1.0)
    for update in range(1, 51):
        for d in decide(scheduler, SCORES_8, [update] * 8):
            assert d.resampled == ["clip_range", "learning_rate"]
            assert 1e-5 <= d.new_hparams["learning_rate"] <= 1e-2
            assert 0.1 <= d.new_hparams["clip_range"] <= 0.3


def test_decisions_are_json_able():
    decisions = decide(make(population_size=4), [float("nan"), 1.0, 2.0, 3.0])
    payload = json.dumps([d.to_dict() for d in decisions], allow_nan=False)
    assert json.loads(payload)[0]["recipient"] == 0
    assert isinstance(decisions[0], Decision)


# ------------------------------------------------------------------------------------------------ initial hparams


def test_initial_hparams_overlay_a_draw_on_the_defaults():
    scheduler = make(population_size=6)
    members = scheduler.initial_hparams(DEFAULTS)
    assert len(members) == 6
    assert all(m["gamma"] == 0.99 for m in members)
    assert all(1e-5 <= m["learning_rate"] <= 1e-2 and 0.1 <= m["clip_range"] <= 0.3 for m in members)
    assert len({m["learning_rate"] for m in members}) == 6
    assert scheduler.initial_hparams(DEFAULTS) == members  # same on every call
    assert make(population_size=6, seed=1).initial_hparams(DEFAULTS) != members


def test_initial_hparams_do_not_shift_the_decision_stream():
    a, b = make(seed=7), make(seed=7)
    a.initial_hparams(DEFAULTS)
    assert decide(a, SCORES_8) == decide(b, SCORES_8)


# ------------------------------------------------------------------------------------------------ determinism


def run_rounds(scheduler, rounds, start=1):
    out = []
    for r in range(start, start + rounds):
        scores = [float(s) for s in random.Random(r).sample(range(100), 8)]
        out.append([d.to_dict() for d in scheduler.step(scores, hparams_for(8), [r] * 8).exploits])
    return out


@pytest.mark.parametrize("exploit", ["truncation", "tournament"])
def test_same_seed_same_decisions_and_other_seed_differs(exploit):
    assert run_rounds(make(exploit=exploit, seed=11), 5) == run_rounds(make(exploit=exploit, seed=11), 5)
    assert run_rounds(make(exploit=exploit, seed=11), 5) != run_rounds(make(exploit=exploit, seed=12), 5)


def test_decisions_do_not_depend_on_hparams_dict_ordering():
    forward = hparams_for(8)
    backward = [dict(reversed(list(h.items()))) for h in forward]
    space_backward = dict(reversed(list(SPACE.items())))
    a = make(seed=5).step(SCORES_8, forward, [1] * 8).exploits
    b = PBTScheduler(space_backward, population_size=8, perturbation_interval=1, burn_in=0, seed=5).step(
        SCORES_8, backward, [1] * 8
    ).exploits
    assert [(d.recipient, d.donor, d.new_hparams, d.resampled) for d in a] == [
        (d.recipient, d.donor, d.new_hparams, d.resampled) for d in b
    ]


@pytest.mark.parametrize("exploit", ["truncation", "tournament"])
def test_state_dict_round_trip_continues_the_same_stream(exploit):
    original = make(exploit=exploit, seed=21, perturbation_interval=2, burn_in=2)
    run_rounds(original, 3)
    state = json.loads(json.dumps(original.state_dict()))
    expected = run_rounds(original, 6, start=4)

    resumed = make(exploit=exploit, seed=999, perturbation_interval=2, burn_in=2)  # seed is replaced by the state
    resumed.load_state_dict(state)
    assert resumed.last_ready == state["last_ready"]
    assert run_rounds(resumed, 6, start=4) == expected


def test_load_state_dict_rejects_a_mismatched_or_malformed_state():
    state = make(population_size=8).state_dict()
    with pytest.raises(ValueError, match="population"):
        make(population_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="malformed"):
        make().load_state_dict({"population_size": 8, "last_ready": [None] * 8})
    with pytest.raises(ValueError, match="malformed"):
        make().load_state_dict({**state, "rng_state": [3, [1, 2], None]})


# ------------------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"population_size": 0}, "population_size"),
        ({"perturbation_interval": 0}, "perturbation_interval"),
        ({"burn_in": -1}, "burn_in"),
        ({"exploit": "roulette"}, "exploit"),
        ({"quantile_fraction": 0.6}, "quantile_fraction"),
        ({"quantile_fraction": 0.0}, "quantile_fraction"),
        ({"resample_probability": -0.1}, "resample_probability"),
        ({"perturb_factors": ()}, "factors"),
        ({"perturb_factors": (0.8, 0.0)}, "factors"),
        ({"mode": "avg"}, "mode"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_step_rejects_lists_of_the_wrong_length():
    scheduler = make(population_size=3)
    with pytest.raises(ValueError, match="scores"):
        scheduler.step([1.0, 2.0], hparams_for(3), [1, 1, 1])
    with pytest.raises(ValueError, match="updates"):
        scheduler.step([1.0, 2.0, 3.0], hparams_for(3), [1, 1])


def test_from_config():
    cfg = PBTConfig(
        population_size=4,
        perturbation_interval=3,
        burn_in=6,
        exploit="tournament",
        mode="min",
        search_space={"agent.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "scale": "log"}},
    )
    scheduler = PBTScheduler.from_config(cfg, seed=3)
    assert scheduler.population_size == 4 and scheduler.exploit == "tournament" and scheduler.mode == "min"
    assert scheduler.space.names == ("learning_rate",) and scheduler.space.is_log("learning_rate")
    assert min(u for u in range(20) if scheduler.ready(0, u)) == 6


def test_constructor_defaults_and_ranges_are_the_configs():
    defaults = PBTConfig.model_construct()
    scheduler = make()
    assert (scheduler.exploit, scheduler.quantile_fraction, scheduler.resample_probability, scheduler.mode) == (
        defaults.exploit, defaults.quantile_fraction, defaults.resample_probability, defaults.mode)
    assert scheduler.perturb_factors == defaults.perturb_factors and scheduler.ttest == defaults.ttest
    assert scheduler.ttest_window == max(2, defaults.score_window)
    with pytest.raises(ValueError, match="ttest_alpha"):
        make(ttest_alpha=1.0)


TTEST_SPACE = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "scale": "log"}}


TTEST_HP = [{"learning_rate": 1e-3}, {"learning_rate": 2e-3}]


def ttest_pair(**kwargs) -> PBTScheduler:
    """Two members, both ready at update 1: truncation pairs the worse (recipient) with the better (donor)."""
    return PBTScheduler(TTEST_SPACE, population_size=2, perturbation_interval=1, burn_in=0, ttest=True, ttest_window=5,
                        seed=0, **kwargs)


def test_ttest_exploit_accepts_a_significantly_better_donor():
    sch = ttest_pair()
    donor = [10.0, 11.0, 12.0, 11.0, 10.0]  # mean 10.8, var 0.7
    recipient = [1.0, 2.0, 3.0, 2.0, 1.0]  # mean 1.8, var 0.7: t = 9 / sqrt(0.28) = 17.0
    decision = sch.step([1.8, 10.8], TTEST_HP, [1, 1], returns=[recipient, donor])
    assert [(d.recipient, d.donor) for d in decision.exploits] == [(0, 1)]
    test = decision.exploits[0].ttest
    assert test["t"] == pytest.approx(9.0 / math.sqrt(0.28)) and test["p"] < 0.05
    assert test["window"] == 5 and test["alpha"] == 0.05 and decision.refused == []


def test_ttest_exploit_refuses_a_donor_that_is_not_significantly_better():
    sch = ttest_pair()
    donor = [1.0, 5.0, 2.0, 6.0, 3.0]  # mean 3.4, var 4.3
    recipient = [2.0, 4.0, 1.0, 5.0, 2.0]  # mean 2.8, var 2.7: t = 0.6 / sqrt(1.4) = 0.507
    decision = sch.step([2.8, 3.4], TTEST_HP, [1, 1], returns=[recipient, donor])
    assert decision.exploits == []
    (refused,) = decision.refused
    assert refused["reason"] == "not significant" and (refused["recipient"], refused["donor"]) == (0, 1)
    assert refused["t"] == pytest.approx(0.6 / math.sqrt(1.4)) and refused["p"] > 0.05
    # the same gap with a looser level and a larger t passes; too few returns never does
    assert ttest_pair(ttest_alpha=0.4).step([2.8, 3.4], TTEST_HP, [1, 1], returns=[recipient, donor]).exploits
    short = ttest_pair()
    decision = short.step([1.8, 10.8], TTEST_HP, [1, 1], returns=[[1.0, 2.0], [10.0, 11.0, 12.0, 11.0, 10.0]])
    assert decision.exploits == [] and decision.refused[0]["reason"] == "too few returns"
    with pytest.raises(ValueError, match="returns"):
        ttest_pair().step([1.8, 10.8], TTEST_HP, [1, 1])


def test_ttest_uses_only_the_last_window_returns():
    sch = ttest_pair()
    old_good = [100.0] * 10
    donor = old_good[:5] + [1.0, 5.0, 2.0, 6.0, 3.0]  # the last 5 are no better than the recipient's
    recipient = [0.0] * 5 + [2.0, 4.0, 1.0, 5.0, 2.0]
    assert sch.step([2.8, 3.4], TTEST_HP, [1, 1], returns=[recipient, donor]).exploits == []


def test_an_ineligible_member_is_neither_donor_nor_recipient_and_joins_when_eligible():
    space = TTEST_SPACE
    sch = PBTScheduler(space, population_size=4, perturbation_interval=2, burn_in=0, seed=1)
    hp = [{"learning_rate": 1e-3}] * 4
    scores = [0.0, 5.0, 6.0, 9.0]
    decisions = sch.step(scores, hp, [2] * 4, eligible=[False, True, True, False]).exploits
    assert [(d.recipient, d.donor) for d in decisions] == [(1, 2)]  # 0 (worst) and 3 (best) sit out
    assert sch.last_ready == [None, 2, 2, None]  # their ready point is not spent
    decisions = sch.step(scores, hp, [3] * 4).exploits  # eligible now, and ready at once
    assert [(d.recipient, d.donor) for d in decisions] == [(0, 3)]
