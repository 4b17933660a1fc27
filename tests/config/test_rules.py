"""The cross-field rules of :mod:`rpbt.config.rules`, called with plain values (no config is built)."""

from __future__ import annotations

import pytest

from rpbt.config import rules


def test_resolve_score_source():
    assert rules.resolve_score_source("auto", "trading") == "validation"
    assert rules.resolve_score_source("auto", "CartPole-v1") == "training"
    assert rules.resolve_score_source("training", "trading") == "training"


def test_minibatches_divide_the_rollout():
    rules.minibatches_divide_the_rollout(8, 128, 16, 4)  # 64 segments
    rules.minibatches_divide_the_rollout(8, 128, None, 4)  # by environment
    with pytest.raises(ValueError, match=r"env.num_envs \(3\) must be divisible by agent.num_minibatches \(4\)"):
        rules.minibatches_divide_the_rollout(3, 128, None, 4)
    with pytest.raises(ValueError, match=r"agent.bptt_length \(5\) must divide agent.num_steps \(128\)"):
        rules.minibatches_divide_the_rollout(8, 128, 5, 4)
    with pytest.raises(ValueError, match="the rollout's 24 segments"):
        rules.minibatches_divide_the_rollout(3, 128, 16, 5)


def test_validation_score_needs_trading():
    rules.validation_score_needs_trading("validation", "trading")
    rules.validation_score_needs_trading("auto", "CartPole-v1")
    with pytest.raises(ValueError, match="only env.id: trading has"):
        rules.validation_score_needs_trading("validation", "CartPole-v1")


def test_pb2_min_data_at_most_max_data():
    rules.pb2_min_data_at_most_max_data("perturb", 200, 128)  # PB2 off: not checked
    rules.pb2_min_data_at_most_max_data("pb2", 128, 128)
    with pytest.raises(ValueError, match=r"pbt.pb2.min_data \(200\) must be at most pbt.pb2.max_data \(128\)"):
        rules.pb2_min_data_at_most_max_data("pb2", 200, 128)


def test_ttest_window_fits_the_returns():
    rules.ttest_window_fits_the_returns(False, 500, 20, "training", 4)  # no t-test: not checked
    rules.ttest_window_fits_the_returns(True, None, 20, "training", 4)  # 20 of the 100 kept
    rules.ttest_window_fits_the_returns(True, 4, 20, "validation", 4)
    with pytest.raises(ValueError, match=r"last 101 returns .* only 100 returns a member keeps"):
        rules.ttest_window_fits_the_returns(True, 101, 20, "training", 4)
    with pytest.raises(ValueError, match=r"last 20 returns .* only 4 env.trading.eval_episodes validation returns"):
        rules.ttest_window_fits_the_returns(True, None, 20, "validation", 4)


def test_workers_fit_the_population():
    rules.workers_fit_the_population(None, 8)
    rules.workers_fit_the_population(8, 8)
    for bad in (0, 9):
        with pytest.raises(ValueError, match=rf"between 1 and pbt.population_size \(8\) .*got {bad}"):
            rules.workers_fit_the_population(bad, 8)


def test_ray_options_need_ray():
    rules.ray_options_need_ray("ray", 0.5, {"pip": ["x"]})
    rules.ray_options_need_ray("process", 0.0, None)
    with pytest.raises(ValueError, match=r"backend.num_gpus_per_shard is a Ray backend setting, but backend.kind is "
                                         r"'local'.*the local backend uses a GPU through agent.device"):
        rules.ray_options_need_ray("local", 1.0, None)
    with pytest.raises(ValueError, match=r"backend.runtime_env is a Ray backend setting") as err:
        rules.ray_options_need_ray("process", 0.0, {"pip": ["x"]})
    assert "GPU" not in str(err.value), "runtime_env has nothing to do with GPUs"
