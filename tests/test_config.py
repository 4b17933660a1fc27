"""Configuration: defaults, dotted overrides, and errors that name the bad key."""

from __future__ import annotations

import pytest

from rpbt.config import ConfigError, apply_overrides, load_config


def test_default_config_has_the_documented_sections_and_values():
    cfg = load_config()
    assert cfg.env.id == "popgym-PositionOnlyCartPoleEasy-v0"
    assert cfg.pbt.population_size == 8
    assert cfg.agent.critic.kind == "quantile"
    assert cfg.pbt.hidden_state == "burn_in"
    assert cfg.backend.kind == "local"
    assert cfg.pbt.search_space["learning_rate"].scale == "log"


def test_overrides_parse_yaml_values():
    data = apply_overrides({}, ["agent.learning_rate=3e-4", "env.num_envs=4", "agent.network.encoder_sizes=[8, 8]",
                                "run.torch_threads=null", "pbt.exploit=tournament"])
    assert data == {"agent": {"learning_rate": 3e-4, "network": {"encoder_sizes": [8, 8]}},
                    "env": {"num_envs": 4}, "run": {"torch_threads": None}, "pbt": {"exploit": "tournament"}}


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("agent.learnig_rate=1e-3", "agent.learnig_rate", "unknown key"),
        ("agent.num_steps=abc", "agent.num_steps", "valid integer"),
        ("pbt.population_size=0", "pbt.population_size", "greater than or equal to 1"),
        ("agent.critic.kind=median", "agent.critic.kind", "'scalar', 'quantile' or 'categorical'"),
        ("pbt.search_space.lr={type: float, low: 1, high: 2}", "pbt.search_space", "unknown hyperparameter 'lr'"),
    ],
)
def test_bad_config_names_the_key_and_what_was_expected(override, key, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value) and expected in str(err.value)
    assert "default.yaml" in str(err.value)


def test_cross_field_and_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="divisible by agent.num_minibatches"):
        load_config(None, ["env.num_envs=6", "agent.num_minibatches=4"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        load_config(bad)
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        load_config(None, ["agent.learning_rate"])


@pytest.mark.parametrize(
    "override, expected",
    [
        ("pbt.search_space.learning_rate={type: float, low: -0.1, high: -0.01}", "outside its valid range (0.0, inf)"),
        ("pbt.search_space.gamma={type: float, low: 1.2, high: 1.5}", "outside its valid range (0.0, 1.0]"),
        ("pbt.search_space.learning_rate={type: categorical, values: [fast, slow]}", "'fast' is not a number"),
        ("pbt.perturb_factors=[-1, 0]", "perturb factors must be positive"),
    ],
)
def test_search_space_must_stay_inside_each_hyperparameters_valid_range(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert expected in str(err.value) and "pbt." in str(err.value)


def test_an_empty_section_means_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent:\npbt:\n  population_size: 3\n")
    cfg = load_config(path)
    assert cfg.agent.learning_rate == 2.5e-4 and cfg.pbt.population_size == 3
