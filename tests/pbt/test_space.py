"""Tests of the PBT search space: priors, perturb, resample, clip, validation."""

from __future__ import annotations

import json
import math
import random
import statistics

import pytest

from rpbt.config import SearchDim
from rpbt.pbt.space import SearchSpace

MIXED = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-2, "scale": "log"},
    "clip_range": {"type": "float", "low": 0.1, "high": 0.3},
    "update_epochs": {"type": "int", "low": 1, "high": 5},
    "activation": {"type": "categorical", "values": ["tanh", "relu", "elu"]},
}


def mixed_space() -> SearchSpace:
    return SearchSpace(MIXED)


# ------------------------------------------------------------------------------------------------ construction


def test_accepts_searchdim_and_plain_dicts_and_sorts_names():
    space = SearchSpace(
        {
            "vf_coef": SearchDim(type="float", low=0.1, high=1.0),
            "ent_coef": {"type": "float", "low": 1e-4, "high": 1e-1, "scale": "log"},
        }
    )
    assert space.names == ("ent_coef", "vf_coef")
    assert space.is_log("ent_coef") and not space.is_log("vf_coef")
    assert "vf_coef" in space and "gamma" not in space and len(space) == 2
    with pytest.raises(KeyError, match="gamma"):
        space.is_log("gamma")


def test_to_json_describes_every_dimension_and_round_trips():
    space = mixed_space()
    description = space.to_json()
    assert json.loads(json.dumps(description)) == description
    assert description["learning_rate"] == {
        "type": "float", "low": 1e-5, "high": 1e-2, "scale": "log", "values": None
    }
    assert description["update_epochs"]["low"] == 1 and isinstance(description["update_epochs"]["low"], int)
    assert description["activation"]["values"] == ["tanh", "relu", "elu"]
    assert SearchSpace(description) == space


def test_empty_space_samples_and_perturbs_nothing():
    space = SearchSpace({})
    rng = random.Random(0)
    assert space.sample(rng) == {}
    assert space.perturb({"x": 1}, rng) == ({"x": 1}, [])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "float", "low": 1.0}, "needs 'low' and 'high'"),
        ({"type": "float", "low": 2.0, "high": 1.0}, "must be greater than 'low'"),
        ({"type": "float", "low": 0.5, "high": 0.5}, "explore could never move"),
        ({"type": "int", "low": 3, "high": 3}, "explore could never move"),
        ({"type": "float", "low": 0.0, "high": 1.0, "scale": "log"}, "low > 0"),
        ({"type": "int", "low": 0.5, "high": 3}, "integral"),
        ({"type": "int", "low": 1, "high": 8, "scale": "log"}, "only supported for float"),
        ({"type": "float", "low": 0.0, "high": float("inf")}, "finite"),
        ({"type": "categorical", "values": []}, "at least two 'values'"),
        ({"type": "categorical", "values": ["only"]}, "at least two 'values'"),
        ({"type": "categorical", "values": ["a", "b", "a"]}, "duplicate"),
        ({"type": "float", "low": 0.0, "high": 1.0, "typo": 1}, "typo"),
        ({"type": "gaussian", "low": 0.0, "high": 1.0}, "type"),
    ],
)
def test_bad_definitions_raise_value_error_naming_the_dimension(spec, message):
    with pytest.raises(ValueError, match="bad_dim") as info:
        SearchSpace({"bad_dim": spec})
    assert message in str(info.value)


def test_non_mapping_dimension_is_rejected():
    with pytest.raises(ValueError, match="lr"):
        SearchSpace({"lr": 0.1})


# ------------------------------------------------------------------------------------------------ sample


def test_samples_stay_in_bounds_and_cover_int_and_categorical_values():
    space = mixed_space()
    rng = random.Random(1)
    draws = [space.sample(rng) for _ in range(2000)]
    assert all(1e-5 <= d["learning_rate"] <= 1e-2 for d in draws)
    assert all(0.1 <= d["clip_range"] <= 0.3 for d in draws)
    assert all(isinstance(d["update_epochs"], int) for d in draws)
    assert {d["update_epochs"] for d in draws} == {1, 2, 3, 4, 5}  # both ends inclusive
    counts = {v: sum(d["activation"] == v for d in draws) for v in ["tanh", "relu", "elu"]}
    assert all(abs(c / 2000 - 1 / 3) < 0.05 for c in counts.values())


def test_log_uniform_median_is_near_the_geometric_mean():
    space = SearchSpace({"lr": {"type": "float", "low": 1e-5, "high": 1e-1, "scale": "log"}})
    rng = random.Random(2)
    draws = [space.sample(rng)["lr"] for _ in range(4000)]
    # geometric mean of the bounds is 1e-3; a linear prior would put the median near 5e-2.
    assert abs(math.log10(statistics.median(draws)) - (-3.0)) < 0.1
    # a quarter of the draws below 1e-4 (one of four decades)
    assert abs(sum(d < 1e-4 for d in draws) / len(draws) - 0.25) < 0.03


def test_linear_uniform_median_is_near_the_midpoint():
    space = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 10.0}})
    rng = random.Random(3)
    draws = [space.sample(rng)["x"] for _ in range(4000)]
    assert abs(statistics.median(draws) - 5.0) < 0.3


def test_a_dimension_explore_could_never_move_is_rejected():
    # One value (low == high, or a single categorical entry) would be searched in name only.
    with pytest.raises(ValueError, match="'x'.*explore could never move"):
        SearchSpace({"x": {"type": "float", "low": 0.5, "high": 0.5, "scale": "log"}})
    with pytest.raises(ValueError, match="'x'.*at least two 'values'"):
        SearchSpace({"x": SearchDim.model_construct(type="categorical", values=["a"]).model_dump()})


# ------------------------------------------------------------------------------------------------ perturb


def test_float_perturb_multiplies_by_exactly_one_of_the_factors():
    space = SearchSpace(
        {
            "lin": {"type": "float", "low": 0.0, "high": 10.0},
            "log": {"type": "float", "low": 1e-6, "high": 1.0, "scale": "log"},
        }
    )
    rng = random.Random(4)
    start = {"lin": 2.0, "log": 1e-3}
    seen = {"lin": set(), "log": set()}
    for _ in range(200):
        new, resampled = space.perturb(start, rng, resample_probability=0.0)
        assert resampled == []
        for name in start:
            # compare exactly: the value is old * factor, not an approximation of it
            assert new[name] in (start[name] * 0.8, start[name] * 1.2)
            seen[name].add(new[name] / start[name] > 1)
    assert seen == {"lin": {True, False}, "log": {True, False}}  # both factors occur


def test_custom_factors_are_honoured():
    space = SearchSpace({"x": {"type": "float", "low": 0.0, "high": 100.0}})
    rng = random.Random(5)
    results = {space.perturb({"x": 10.0}, rng, factors=(0.5, 2.0), resample_probability=0.0)[0]["x"] for _ in range(50)}
    assert results == {5.0, 20.0}


def test_float_perturb_is_clipped_to_the_bounds():
    space = SearchSpace({"x": {"type": "float", "low": 1.0, "high": 2.0}})
    rng = random.Random(6)
    at_high = {space.perturb({"x": 2.0}, rng, resample_probability=0.0)[0]["x"] for _ in range(50)}
    at_low = {space.perturb({"x": 1.0}, rng, resample_probability=0.0)[0]["x"] for _ in range(50)}
    assert at_high == {1.6, 2.0}
    assert at_low == {1.0, 1.2}


def test_int_perturb_steps_to_a_neighbour_and_is_clipped():
    space = SearchSpace({"n": {"type": "int", "low": 1, "high": 5}})
    rng = random.Random(7)

    def outcomes(value):
        return {space.perturb({"n": value}, rng, resample_probability=0.0)[0]["n"] for _ in range(100)}

    assert outcomes(3) == {2, 4}
    assert outcomes(1) == {1, 2}
    assert outcomes(5) == {4, 5}
    assert all(isinstance(v, int) for v in outcomes(3))


def test_categorical_perturb_steps_to_a_neighbouring_index_clipped_to_the_ends():
    space = SearchSpace({"c": {"type": "categorical", "values": ["a", "b", "c", "d"]}})
    rng = random.Random(8)

    def outcomes(value):
        return {space.perturb({"c": value}, rng, resample_probability=0.0)[0]["c"] for _ in range(100)}

    assert outcomes("b") == {"a", "c"}
    assert outcomes("a") == {"a", "b"}
    assert outcomes("d") == {"c", "d"}


def test_explored_values_stay_within_bounds_over_many_draws():
    space = mixed_space()
    rng = random.Random(9)
    values = {"learning_rate": 1e-2, "clip_range": 0.1, "update_epochs": 5, "activation": "elu", "gamma": 0.99}
    for _ in range(3000):
        values, _ = space.perturb(values, rng, resample_probability=0.1)
        assert 1e-5 <= values["learning_rate"] <= 1e-2
        assert 0.1 <= values["clip_range"] <= 0.3
        assert values["update_epochs"] in {1, 2, 3, 4, 5}
        assert values["activation"] in {"tanh", "relu", "elu"}
        assert values["gamma"] == 0.99  # not searched: passes through


def test_resample_probability_is_roughly_honoured():
    space = mixed_space()
    rng = random.Random(10)
    trials = 2000
    counts = dict.fromkeys(space.names, 0)
    start = {"learning_rate": 1e-3, "clip_range": 0.2, "update_epochs": 3, "activation": "relu"}
    for _ in range(trials):
        _, resampled = space.perturb(start, rng, resample_probability=0.25)
        assert resampled == sorted(resampled)
        for name in resampled:
            counts[name] += 1
    # binomial std is ~0.0097 per dimension; 0.04 is four of them
    for name, count in counts.items():
        assert abs(count / trials - 0.25) < 0.04, name


@pytest.mark.parametrize(
    "p, expected", [(0.0, []), (1.0, ["activation", "clip_range", "learning_rate", "update_epochs"])]
)
def test_resample_probability_extremes(p, expected):
    space = mixed_space()
    rng = random.Random(11)
    start = {"learning_rate": 1e-3, "clip_range": 0.2, "update_epochs": 3, "activation": "relu"}
    for _ in range(20):
        assert space.perturb(start, rng, resample_probability=p)[1] == expected


def test_perturb_does_not_mutate_its_input_and_passes_unknown_keys_through():
    space = mixed_space()
    start = {"learning_rate": 1e-3, "clip_range": 0.2, "update_epochs": 3, "activation": "relu", "other": [1, 2]}
    snapshot = dict(start)
    new, _ = space.perturb(start, random.Random(12))
    assert start == snapshot
    assert new["other"] is start["other"]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"clip_range": 0.2}, "learning_rate"),  # missing searched name
        ({"learning_rate": float("nan"), "clip_range": 0.2}, "learning_rate"),
        ({"learning_rate": "big", "clip_range": 0.2}, "learning_rate"),
    ],
)
def test_perturb_rejects_missing_or_bad_values(values, message):
    space = SearchSpace({k: MIXED[k] for k in ("learning_rate", "clip_range")})
    with pytest.raises(ValueError, match=message):
        space.perturb(values, random.Random(0), resample_probability=0.0)


def test_perturb_rejects_unknown_categorical_value_and_bad_arguments():
    space = SearchSpace({"c": {"type": "categorical", "values": ["a", "b"]}})
    with pytest.raises(ValueError, match="'c'"):
        space.perturb({"c": "z"}, random.Random(0), resample_probability=0.0)
    with pytest.raises(ValueError, match="resample_probability"):
        space.perturb({"c": "a"}, random.Random(0), resample_probability=1.5)
    with pytest.raises(ValueError, match="factors"):
        space.perturb({"c": "a"}, random.Random(0), factors=(0.8, -1.0))
    with pytest.raises(ValueError, match="factors"):
        space.perturb({"c": "a"}, random.Random(0), factors=())


def test_results_do_not_depend_on_dict_ordering():
    forward = SearchSpace(MIXED)
    backward = SearchSpace(dict(reversed(list(MIXED.items()))))
    assert forward.sample(random.Random(13)) == backward.sample(random.Random(13))
    values = {"learning_rate": 1e-3, "clip_range": 0.2, "update_epochs": 3, "activation": "relu"}
    reversed_values = dict(reversed(list(values.items())))
    assert forward.perturb(values, random.Random(14)) == backward.perturb(reversed_values, random.Random(14))


# ------------------------------------------------------------------------------------------------ clip


def test_clip():
    space = mixed_space()
    clipped = space.clip(
        {"learning_rate": 1.0, "clip_range": -3.0, "update_epochs": 7.4, "activation": "tanh", "gamma": 2.0}
    )
    assert clipped == {"learning_rate": 1e-2, "clip_range": 0.1, "update_epochs": 5, "activation": "tanh", "gamma": 2.0}
    assert space.clip({"update_epochs": 2.6}) == {"update_epochs": 3}
    with pytest.raises(ValueError, match="activation"):
        space.clip({"activation": "sigmoid"})
