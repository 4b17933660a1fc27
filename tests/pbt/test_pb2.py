"""PB2's explore (rpbt.pbt.pb2) through the scheduler alone: a synthetic objective with a known best region,
determinism, bounds, batch selection, resume, and the time-varying kernel."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from rpbt.pbt.pb2 import PB2Explorer, TimeVaryingRBF, ucb_kappa
from rpbt.pbt.scheduler import PBTScheduler
from rpbt.pbt.space import SearchSpace

SPACE = {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
         "clip_range": {"type": "float", "low": 0.1, "high": 0.3}}
BEST = {"learning_rate": 3e-2, "clip_range": 0.15}  # the known best region


def gain(hp) -> float:
    """Score gained per interval: a bump around BEST (0.5 decades wide in lr, 0.05 in clip_range)."""
    a = (math.log10(hp["learning_rate"]) - math.log10(BEST["learning_rate"])) / 0.5
    b = (hp["clip_range"] - BEST["clip_range"]) / 0.05
    return math.exp(-0.5 * (a * a + b * b))


def distance(hp) -> float:
    """Distance to BEST in the unit cube of SPACE (lr in log10, 3 decades; clip_range over 0.2)."""
    a = (math.log10(hp["learning_rate"]) - math.log10(BEST["learning_rate"])) / 3.0
    b = (hp["clip_range"] - BEST["clip_range"]) / 0.2
    return math.hypot(a, b)


def simulate(explore: str, seed: int, population: int = 8, rounds: int = 10, noise: float = 0.1, space=SPACE,
             gain_fn=gain, candidates: int = 128, **kwargs):
    """PBT through the scheduler on the synthetic objective: each member's score grows by gain(hparams) + noise
    per interval; an exploit copies the donor's score (its "weights"). Returns (mean distance per round,
    scheduler, decisions per round)."""
    sch = PBTScheduler(space, population_size=population, perturbation_interval=1, burn_in=1, explore=explore,
                       seed=seed, pb2_candidates=candidates, **kwargs)
    hps = sch.initial_hparams({})
    rng = random.Random(1000 + seed)
    score = [0.0] * population
    dists, all_decisions = [], []
    for r in range(1, rounds + 1):
        for m in range(population):
            score[m] += gain_fn(hps[m]) + rng.gauss(0.0, noise)
        decisions = sch.step(list(score), hps, [r] * population).exploits
        for d in decisions:
            score[d.recipient] = score[d.donor]
            hps[d.recipient] = d.new_hparams
        dists.append(sum(distance(h) for h in hps) / population if gain_fn is gain else 0.0)
        all_decisions.append(decisions)
    return dists, sch, all_decisions


def test_pb2_moves_members_toward_the_best_region_faster_than_perturb_on_average_over_seeds():
    seeds = range(4)
    curves = {e: [simulate(e, s)[0] for s in seeds] for e in ("perturb", "pb2")}
    # area under the population's mean distance-to-best curve, per seed (smaller: got there sooner)
    area = {e: float(np.mean([np.mean(c) for c in cs])) for e, cs in curves.items()}
    assert area["pb2"] < 0.8 * area["perturb"], area
    # ... and at the end of the budget the population sits closer to the best region
    final = {e: float(np.mean([c[-1] for c in cs])) for e, cs in curves.items()}
    assert final["pb2"] < final["perturb"], final


def test_pb2_decisions_are_deterministic_for_a_seed_and_inside_the_bounds():
    space = {**SPACE, "ent_coef": {"type": "float", "low": 1e-4, "high": 3e-2, "scale": "log"},
             "steps": {"type": "int", "low": 1, "high": 9},
             "kind": {"type": "categorical", "values": ["a", "b", "c"]}}

    def gain_mixed(hp):
        return gain(hp) + 0.05 * hp["steps"] + (0.2 if hp["kind"] == "b" else 0.0)

    runs = [simulate("pb2", 3, space=space, gain_fn=gain_mixed, rounds=6, candidates=64)[2] for _ in range(2)]
    other = simulate("pb2", 4, space=space, gain_fn=gain_mixed, rounds=6, candidates=64)[2]
    as_json = [json.dumps([[d.to_dict() for d in ds] for ds in run], sort_keys=True) for run in runs]
    assert as_json[0] == as_json[1]
    assert json.dumps([[d.to_dict() for d in ds] for ds in other], sort_keys=True) != as_json[0]
    explored = [d for ds in runs[0] for d in ds]
    assert any(d.explore == "pb2" for d in explored) and explored[0].explore == "perturb"  # no model at first
    for d in explored:
        hp = d.new_hparams
        assert 1e-4 <= hp["learning_rate"] <= 1e-1 and 0.1 <= hp["clip_range"] <= 0.3
        assert 1e-4 <= hp["ent_coef"] <= 3e-2
        assert isinstance(hp["steps"], int) and 1 <= hp["steps"] <= 9
        assert hp["kind"] in ("a", "b", "c")
        if d.explore == "pb2":
            assert {"predicted_change", "predicted_std", "kappa", "observations", "epsilon"} <= set(d.pb2)
            assert 0.0 < d.pb2["epsilon"] <= 0.5 and d.pb2["predicted_std"] >= 0.0


def test_pb2_places_a_batch_at_different_points():
    _, _, decisions = simulate("pb2", 0, population=8, rounds=5, candidates=128)
    batches = [[d for d in ds if d.explore == "pb2"] for ds in decisions]
    batches = [b for b in batches if len(b) >= 2]
    assert batches, "population 8 with quantile 0.25 places two recipients per round"
    for batch in batches:
        points = {tuple(round(d.new_hparams[n], 12) for n in sorted(SPACE)) for d in batch}
        assert len(points) == len(batch)  # GP-BUCB: a placed member lowers the variance around it


def test_pb2_state_survives_a_resume():
    kwargs = dict(population_size=4, perturbation_interval=1, burn_in=1, explore="pb2", seed=7, pb2_candidates=64)
    a = PBTScheduler(SPACE, **kwargs)
    hps = a.initial_hparams({})
    rng = random.Random(5)
    score = [0.0] * 4
    inputs = []
    for r in range(1, 9):
        for m in range(4):
            score[m] += gain(hps[m]) + rng.gauss(0, 0.1)
        inputs.append((list(score), [dict(h) for h in hps], [r] * 4))
        for d in a.step(*inputs[-1]).exploits if r <= 4 else []:
            score[d.recipient] = score[d.donor]
            hps[d.recipient] = d.new_hparams
        if r == 4:
            saved = json.loads(json.dumps(a.state_dict()))
            assert saved["pb2"]["data"], "observations are part of the state"
    b = PBTScheduler(SPACE, **kwargs)
    b.load_state_dict(saved)
    assert b.pb2.num_observations == a.pb2.num_observations
    for args in inputs[4:]:
        da, db = a.step(*args).exploits, b.step(*args).exploits
        assert [d.to_dict() for d in da] == [d.to_dict() for d in db]
    with pytest.raises(ValueError, match="PB2 state"):
        PBTScheduler(SPACE, **{**kwargs, "population_size": 5}).pb2.load_state_dict(saved["pb2"])


def test_perturb_scheduler_has_no_pb2_state_and_bad_explore_is_refused():
    sch = PBTScheduler(SPACE, population_size=2, perturbation_interval=1, burn_in=0)
    assert "pb2" not in sch.state_dict() and sch.pb2 is None
    with pytest.raises(ValueError, match="explore: Input should be 'perturb' or 'pb2'"):
        PBTScheduler(SPACE, population_size=2, perturbation_interval=1, burn_in=0, explore="bayes")


def test_observations_are_score_changes_per_interval_from_the_donors_score_after_an_exploit():
    ex = PB2Explorer(SearchSpace(SPACE), population_size=2, perturbation_interval=5)
    hp = [{"learning_rate": 1e-3, "clip_range": 0.2}, {"learning_rate": 1e-2, "clip_range": 0.1}]
    ex.remember([1.0, 3.0], hp, [5, 5])
    # member 0 was exploited by member 1 at update 5: it starts from the donor's score with new values
    moved = {"learning_rate": 2e-2, "clip_range": 0.15}
    ex.remember([3.0, 3.0], [moved, hp[1]], [5, 5])
    assert ex.observe([4.0, 2.0], [moved, hp[1]], [15, 15]) == 2
    (t0, r0, y0, x0), (t1, r1, y1, x1) = ex._data
    assert (t0, r0, x0) == (1.0, 3.0, moved) and y0 == pytest.approx((4.0 - 3.0) / 2)  # two intervals of 5
    assert (t1, r1) == (1.0, 3.0) and y1 == pytest.approx(-0.5)
    # hyperparameters that are not the recorded ones, or a missing score, give no observation
    ex.remember([4.0, None], [moved, hp[1]], [15, 15])
    assert ex.observe([5.0, 3.0], [hp[0], hp[1]], [20, 20]) == 0


def test_time_varying_kernel_values_and_gradient():
    k = TimeVaryingRBF(epsilon=0.2, length_scale=[0.5, 2.0])
    X = np.array([[0.0, 0.1, 0.3], [2.0, 0.4, 0.9], [3.0, 0.2, 0.5]])
    K, grad = k(X, eval_gradient=True)
    assert np.allclose(np.diag(K), 1.0) and np.allclose(K, K.T)
    expected = 0.8 ** (2.0 / 2) * math.exp(-0.5 * ((0.3 / 0.5) ** 2 + (0.6 / 2.0) ** 2))
    assert K[0, 1] == pytest.approx(expected)
    theta = k.theta.copy()
    for j in range(len(theta)):
        step = np.zeros_like(theta)
        step[j] = 1e-6
        numeric = (k.clone_with_theta(theta + step)(X) - k.clone_with_theta(theta - step)(X)) / 2e-6
        assert np.allclose(grad[:, :, j], numeric, atol=1e-6)
    assert ucb_kappa(2) == pytest.approx(math.sqrt(0.2)) and ucb_kappa(1000) > ucb_kappa(100)


def test_unit_cube_is_log_for_log_dimensions_and_rounds_integers():
    space = SearchSpace({**SPACE, "steps": {"type": "int", "low": 0, "high": 10}})
    assert space.numeric_names == ("clip_range", "learning_rate", "steps")
    u = space.to_unit({"learning_rate": math.sqrt(1e-4 * 1e-1), "clip_range": 0.25, "steps": 3})
    assert u == pytest.approx([0.75, 0.5, 0.3])
    back = space.from_unit([0.75, 0.5, 0.34])
    assert back["learning_rate"] == pytest.approx(math.sqrt(1e-5)) and back["steps"] == 3
    assert space.from_unit([2.0, -1.0, 1.0]) == {"clip_range": 0.3, "learning_rate": 1e-4, "steps": 10}
