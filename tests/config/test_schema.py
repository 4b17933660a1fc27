"""The configuration schema: defaults, the hyperparameter table, field and search-space bounds, and validation errors
that name the bad key (loading files and overrides: test_loading.py)."""

from __future__ import annotations

import math

import pytest

from rpbt.config import (
    DEFAULT_CONFIG_PATH,
    HPARAM_NAMES,
    HPARAMS,
    SEARCHABLE,
    Config,
    ConfigError,
    PBTConfig,
    SearchDim,
    default_search_space,
    load_config,
    member_hparams,
)

# Written out by hand: what the shipped default job is.
DEFAULT_SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "scale": "log", "values": None},
    "ent_coef": {"type": "float", "low": 1e-4, "high": 3e-2, "scale": "log", "values": None},
    "clip_range": {"type": "float", "low": 0.1, "high": 0.3, "scale": "linear", "values": None},
    "gae_lambda": {"type": "float", "low": 0.8, "high": 0.99, "scale": "linear", "values": None},
}
DEFAULT_HPARAMS = {
    "learning_rate": 1e-3, "ent_coef": 0.01, "clip_range": 0.2, "vf_coef": 0.5, "gamma": 0.99, "gae_lambda": 0.95,
    "max_grad_norm": 0.5, "adversarial.epsilon": 0.05, "adversarial.robust_kl_coef": 0.1, "adversarial.ratio": 1.0,
}
VALID_RANGES = {
    "learning_rate": "(0.0, inf)", "ent_coef": "[0.0, inf)", "clip_range": "(0.0, inf)", "vf_coef": "[0.0, inf)",
    "gamma": "(0.0, 1.0]", "gae_lambda": "[0.0, 1.0]", "max_grad_norm": "(0.0, inf)",
    "adversarial.epsilon": "[0.0, inf)", "adversarial.robust_kl_coef": "[0.0, inf)", "adversarial.ratio": "[0.0, 1.0]",
}


def _error(*overrides: str, path=None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, list(overrides))
    return str(err.value)


# --------------------------------------------------------------------------------------------------- the default job


def test_default_config_has_the_documented_sections_and_values():
    cfg = load_config()
    assert cfg.env.id == "popgym-PositionOnlyCartPoleEasy-v0"
    assert cfg.pbt.population_size == 8
    assert cfg.agent.critic.kind == "quantile"
    assert cfg.pbt.hidden_state == "burn_in"
    assert cfg.backend.kind == "auto"
    assert cfg.pbt.search_space["learning_rate"].scale == "log"


def test_the_pydantic_defaults_are_the_shipped_default_job():
    cfg = Config()
    assert cfg.agent.learning_rate == 1e-3
    assert (cfg.pbt.perturbation_interval, cfg.pbt.burn_in) == (5, 5)
    assert cfg.run.total_env_steps == 150_000
    assert {k: d.model_dump() for k, d in cfg.pbt.search_space.items()} == DEFAULT_SEARCH_SPACE
    assert list(cfg.pbt.search_space) == list(DEFAULT_SEARCH_SPACE)
    # default.yaml is a documented copy of exactly these defaults: nothing more, nothing less.
    assert load_config(DEFAULT_CONFIG_PATH) == cfg
    assert load_config(DEFAULT_CONFIG_PATH).to_dict() == cfg.to_dict()


def test_an_empty_section_means_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent:\npbt:\n  population_size: 3\n")
    cfg = load_config(path)
    assert cfg.agent.learning_rate == 1e-3 and cfg.pbt.population_size == 3
    assert list(cfg.pbt.search_space) == list(DEFAULT_SEARCH_SPACE)


def test_a_given_search_space_replaces_the_default_whole(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("pbt:\n  search_space:\n    agent.gamma: {type: float, low: 0.9, high: 0.999}\n")
    cfg = load_config(path)
    assert list(cfg.pbt.search_space) == ["gamma"]
    # the default factory hands out copies: changing one config's space leaves the default alone
    cfg.pbt.search_space["gamma"].low = 0.95
    assert default_search_space()["learning_rate"].low == 1e-4


# --------------------------------------------------------------------------------------------------- the table


def test_one_table_gives_names_defaults_ranges_fields_and_member_hparams():
    assert HPARAM_NAMES == tuple(DEFAULT_HPARAMS)
    assert tuple(h.name for h in HPARAMS) == HPARAM_NAMES
    assert SEARCHABLE == set(DEFAULT_HPARAMS)
    assert member_hparams(Config()) == DEFAULT_HPARAMS
    assert list(member_hparams(Config())) == list(DEFAULT_HPARAMS)
    assert {h.name: h.interval() for h in HPARAMS} == VALID_RANGES
    assert {h.name for h in HPARAMS if h.prior is not None} == set(DEFAULT_SEARCH_SPACE)
    for h in HPARAMS:
        assert h.path == f"agent.{h.name}"
        assert h.get(Config()) == DEFAULT_HPARAMS[h.name]
    cfg = load_config(None, ["agent.gamma=0.9", "agent.adversarial.ratio=0.5"])
    assert member_hparams(cfg) == {**DEFAULT_HPARAMS, "gamma": 0.9, "adversarial.ratio": 0.5}


def test_the_policy_holds_one_per_member_tensor_per_table_entry():
    from rpbt.agent.ppo import make_policy
    from rpbt.checkpoint import hparam_key

    policy = make_policy(Config(), [0, 1])
    held = sorted(k for k in policy.state_dict() if k.startswith("hp_"))
    assert held == sorted(hparam_key(n) for n in HPARAM_NAMES)
    assert policy.get_hparams(1) == pytest.approx(member_hparams(Config()))


@pytest.mark.parametrize(
    "key, value, ok",
    [
        ("learning_rate", 0.0, False), ("learning_rate", 1e-9, True),
        ("ent_coef", 0.0, True), ("ent_coef", -1e-9, False),
        ("clip_range", 0.0, False),
        ("vf_coef", 0.0, True),
        ("gamma", 0.0, False), ("gamma", 1.0, True), ("gamma", 1.001, False),
        ("gae_lambda", 0.0, True), ("gae_lambda", 1.0, True), ("gae_lambda", 1.001, False),
        ("max_grad_norm", 0.0, False),
        ("adversarial.epsilon", 0.0, True), ("adversarial.epsilon", -0.1, False),
        ("adversarial.robust_kl_coef", 0.0, True),
        ("adversarial.ratio", 0.0, True), ("adversarial.ratio", 1.0, True), ("adversarial.ratio", 1.5, False),
    ],
)
def test_field_bounds_and_search_space_bounds_are_the_same_range(key, value, ok):
    text = format(value, ".12f")  # YAML 1.1 reads "1e-09" as a string
    field_override = f"agent.{key}={text}"
    space_override = f"pbt.search_space={{{key}: {{type: categorical, values: [{text}, 0.5]}}}}"
    if ok:
        assert member_hparams(load_config(None, [field_override]))[key] == value
        load_config(None, [space_override])
    else:
        assert f"agent.{key}" in _error(field_override)
        assert "outside its valid range" in _error(space_override)


# --------------------------------------------------------------------------------------------------- overrides


# --------------------------------------------------------------------------------------------------- errors


def test_cross_field_and_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="divisible by agent.num_minibatches"):
        load_config(None, ["env.num_envs=6", "agent.num_minibatches=4", "agent.bptt_length=null"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("agent: [1\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match=r"override 'agent.learning_rate' \(command line\): expected key.sub=value"):
        load_config(None, ["agent.learning_rate"])


def test_a_dotted_override_reaches_a_search_dimension_whose_name_holds_a_dot(tmp_path):
    """After ``pbt.search_space.``, the last component is a field of the dimension when it is one of
    SearchDim's fields (type, low, high, scale, values), else part of the name: ``adversarial.epsilon`` and
    ``agent.learning_rate`` are names, as in the file. ``agent.NAME`` reaches the dimension the space holds as
    ``NAME`` (and the other way round)."""
    from rpbt.api import resolve_config

    assert set(SearchDim.model_fields) == {"type", "low", "high", "scale", "values"}
    eps = {"type": "float", "low": 0.05, "high": 1.0, "scale": "log"}
    on = "agent.adversarial.enabled=true"
    for name in ("adversarial.epsilon", "agent.adversarial.epsilon"):
        whole = f"pbt.search_space.{name}={{type: float, low: 0.05, high: 1.0, scale: log}}"
        for cfg in (load_config(None, [on, whole]),
                    resolve_config(None, values={"agent.adversarial.enabled": True, f"pbt.search_space.{name}": eps})):
            assert list(cfg.pbt.search_space) == [*DEFAULT_SEARCH_SPACE, "adversarial.epsilon"]
            assert cfg.pbt.search_space["adversarial.epsilon"].model_dump() == {**eps, "values": None}
        for cfg in (load_config(None, [on, whole, f"pbt.search_space.{name}.high=0.5"]),
                    resolve_config(None, [on, whole], values={f"pbt.search_space.{name}.high": 0.5})):
            assert cfg.pbt.search_space["adversarial.epsilon"].model_dump() == {**eps, "high": 0.5, "values": None}
    # a file's own dotted dimension: one field of it changes, under either spelling
    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  adversarial: {enabled: true}\npbt:\n  search_space:\n"
                    "    adversarial.epsilon: {type: float, low: 0.01, high: 0.1}\n")
    for key in ("pbt.search_space.adversarial.epsilon.high", "pbt.search_space.agent.adversarial.epsilon.high"):
        space = load_config(path, [f"{key}=0.2"]).pbt.search_space
        assert list(space) == ["adversarial.epsilon"] and (space["adversarial.epsilon"].low,
                                                          space["adversarial.epsilon"].high) == (0.01, 0.2)
        assert resolve_config(path, values={key: 0.2}).pbt.search_space == space
    # agent.learning_rate is the default space's learning_rate: one field, or the whole dimension
    lr = DEFAULT_SEARCH_SPACE["learning_rate"]
    for space in (load_config(None, ["pbt.search_space.agent.learning_rate.high=0.01"]).pbt.search_space,
                  resolve_config(None, values={"pbt.search_space.agent.learning_rate.high": 0.01}).pbt.search_space):
        assert list(space) == list(DEFAULT_SEARCH_SPACE) and space["learning_rate"].model_dump() == {**lr, "high": 0.01}
    space = load_config(None, ["pbt.search_space.agent.learning_rate={type: float, low: 1e-4, high: 1e-2}"]).pbt
    assert list(space.search_space) == list(DEFAULT_SEARCH_SPACE)
    assert space.search_space["learning_rate"].model_dump() == {**lr, "high": 0.01, "scale": "linear"}
    # errors name the override; a misspelled field of a known dimension is an unknown key of it
    message = _error(on, "pbt.search_space.adversarial.epsilon.low=0.01")
    assert message.startswith("invalid configuration:") and "adversarial.epsilon.low=0.01 (command line)" in message
    assert "needs 'low' and 'high'" in message, message
    message = _error("pbt.search_space.learning_rate.hgh=0.01")
    assert "pbt.search_space.learning_rate.hgh=0.01 (command line)" in message and "unknown key" in message, message
    assert "default.yaml" not in message, message


def test_an_override_that_changes_a_dimension_s_type_starts_that_dimension_afresh(tmp_path):
    """Setting ``pbt.search_space.NAME.type`` to another type keeps none of the dimension's fields from the file
    (a float's low / high / scale, a categorical's values): the dimension is what the overrides give, in any
    order, on the command line and through the API alike. The same type keeps them."""
    from rpbt.api import resolve_config

    key = "pbt.search_space.learning_rate"
    to_categorical = [f"{key}.type=categorical", f"{key}.values=[0.001,0.002]"]
    expected = {"type": "categorical", "low": None, "high": None, "scale": "linear", "values": [0.001, 0.002]}
    for cfg in (load_config(None, to_categorical), load_config(None, to_categorical[::-1]),
                resolve_config(None, to_categorical), resolve_config(None, [to_categorical[0]],
                                                                     values={f"{key}.values": [0.001, 0.002]}),
                resolve_config(None, values={f"{key}.values": [0.001, 0.002], f"{key}.type": "categorical"}),
                load_config(None, ["pbt.search_space.agent.learning_rate.type=categorical", to_categorical[1]])):
        assert list(cfg.pbt.search_space) == list(DEFAULT_SEARCH_SPACE)
        assert cfg.pbt.search_space["learning_rate"].model_dump() == expected
    # a categorical of the file turned into a float: its values go
    path = tmp_path / "c.yaml"
    path.write_text("pbt:\n  search_space:\n    gamma: {type: categorical, values: [0.9, 0.99]}\n")
    gamma = load_config(path, ["pbt.search_space.gamma.high=0.999", "pbt.search_space.gamma.type=float",
                               "pbt.search_space.gamma.low=0.9"]).pbt.search_space["gamma"]
    assert gamma.model_dump() == {"type": "float", "low": 0.9, "high": 0.999, "scale": "linear", "values": None}
    # the same type keeps the file's fields
    assert load_config(None, [f"{key}.type=float", f"{key}.high=0.01"]).pbt.search_space[
        "learning_rate"].model_dump() == {**DEFAULT_SEARCH_SPACE["learning_rate"], "high": 0.01}
    # a new type without its fields is an error naming the override, not the file
    message = _error(f"{key}.type=int")
    assert f"{key}.type=int (command line): {key}: an int dimension needs 'low' and 'high'" in message, message
    message = _error(f"{key}.type=categorical")
    assert message.startswith("invalid configuration:") and "default.yaml" not in message, message
    assert f"{key}.type=categorical (command line)" in message and "at least two 'values'" in message, message
    # a field the overrides give is kept, and checked
    message = _error(*to_categorical, f"{key}.low=0.001")
    assert "default.yaml" not in message and f"{key}.low=0.001 (command line): 'low' is for" in message, message


@pytest.mark.parametrize("text, what", [
    ("{}\n", "the file sets no key"), ("# c\n--- {}  # c\n", "the file sets no key"),
    ("---\n", "the file is empty;"), ("---\n...\n", "the file is empty;"), ("--- \n\n", "the file is empty;"),
])
def test_a_config_file_setting_no_key_is_refused_like_an_empty_one(tmp_path, text, what):
    """``{}`` (a mapping that sets no key) runs the default job no more than a blank file does; a file holding only
    a document marker (``---``) is empty, not "only comments"."""
    import rpbt
    from rpbt.cli import main

    path = tmp_path / "empty.yaml"
    path.write_text(text)
    message = _error(path=path)
    assert message.startswith(f"{path}: {what}") and "give no file to run the default job" in message, message
    assert "comments" not in message and "\n" not in message, message
    with pytest.raises(ConfigError, match="give no file to run the default job"):
        rpbt.train(path, overrides=[f"run.dir={tmp_path / 'run'}"])
    assert main(["train", str(path), f"run.dir={tmp_path / 'run'}"]) == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["file", "override"])
def test_a_log_scale_on_a_categorical_dimension_is_an_error_naming_the_key(tmp_path, where):
    dim = "{type: categorical, values: [0.9, 0.99], scale: log}"
    if where == "file":
        path = tmp_path / "c.yaml"
        path.write_text(f"pbt:\n  search_space:\n    gamma: {dim}\n")
        message = _error(path=path)
    else:
        message = _error(f"pbt.search_space.gamma={dim}")
        assert "(command line)" in message
    assert "pbt.search_space.gamma.scale" in message and "'log'" in message and "categorical" in message, message
    # linear (the default) says nothing a categorical could ignore
    assert load_config(None, ["pbt.search_space.gamma={type: categorical, values: [0.9, 0.99], scale: linear}"])


@pytest.mark.parametrize("where", ["file", "override"])
@pytest.mark.parametrize("bound", ["low", "high"])
def test_bounds_on_a_categorical_dimension_are_an_error_naming_the_key(tmp_path, where, bound):
    """``low`` / ``high`` on a categorical would be silently ignored (it moves between its values): refused, as
    ``values`` on a float dimension is."""
    dim = f"{{type: categorical, values: [0.1, 0.2], {bound}: 0.3}}"
    if where == "file":
        path = tmp_path / "c.yaml"
        path.write_text(f"pbt:\n  search_space:\n    clip_range: {dim}\n")
        message = _error(path=path)
        assert f"in {path}" in message, message
    else:
        message = _error(f"pbt.search_space.clip_range={dim}")
        assert "(command line)" in message, message
    assert f"pbt.search_space.clip_range.{bound}" in message and "categorical" in message, message
    assert "moves between its 'values'" in message, message
    with pytest.raises(ValueError, match=f"'{bound}'"):
        SearchDim(type="categorical", values=[0.1, 0.2], **{bound: 0.3})
    # null says nothing a categorical could ignore (a run's config.yaml writes every field)
    assert SearchDim(type="categorical", values=[0.1, 0.2], low=None, high=None).low is None


@pytest.mark.parametrize(
    "override, key",
    [
        ("agent.learning_rate=.inf", "agent.learning_rate"),
        ("agent.learning_rate=nan", "agent.learning_rate"),
        ("agent.learning_rate=1e999", "agent.learning_rate"),
        ("agent.critic.v_min=-.inf", "agent.critic.v_min"),
        ("agent.network.log_std_init=.nan", "agent.network.log_std_init"),
        ("pbt.perturb_factors=[.inf, 1.2]", "pbt.perturb_factors.0"),
        ("pbt.search_space.learning_rate={type: float, low: 1.0e-4, high: .inf}",
         "pbt.search_space.learning_rate.high"),
        ("pbt.search_space.gamma={type: categorical, values: [0.9, .nan]}", "pbt.search_space.gamma.values"),
        ("env.kwargs={a: {b: [1, .nan]}}", "env.kwargs.a.b[1]"),
    ],
)
def test_non_finite_numbers_are_rejected_naming_the_key(override, key):
    message = _error(override)
    assert key in message and "finite number" in message and "(command line)" in message


@pytest.mark.parametrize("text", ["search_space: {}", "search_space:"])
def test_an_empty_search_space_is_an_error(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(f"pbt:\n  {text}\n")
    message = _error(path=path)
    assert "pbt.search_space" in message and "PBT would have nothing to explore" in message
    assert "pbt.search_space={} (command line)" in _error("pbt.search_space={}")


def test_a_negative_seed_is_an_error_naming_run_seed_and_its_source(tmp_path):
    """Every derived seed comes from run.seed through numpy's SeedSequence, which rejects negative entropy: the
    config says so, not a traceback from rpbt.seeding once training starts."""
    from rpbt.api import resolve_config

    assert load_config(None, ["run.seed=0"]).run.seed == 0
    assert load_config(None, ["run.seed=12345678901234567890"]).run.seed == 12345678901234567890
    message = _error("run.seed=-1")
    assert "run.seed=-1 (command line)" in message and "greater than or equal to 0" in message
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  seed: -7\n")
    assert _error(path=path).splitlines() == [
        f"invalid configuration in {path}:", "  run.seed: Input should be greater than or equal to 0 (got -7)"]
    with pytest.raises(ConfigError, match=r"run.seed=-2 \(argument\): Input should be greater than or equal to 0"):
        resolve_config(None, values={"run.seed": -2})


def test_a_population_of_two_is_the_smallest():
    assert load_config(None, ["pbt.population_size=2"]).pbt.population_size == 2
    with pytest.raises(ValueError, match="at least two members"):
        PBTConfig(population_size=1)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("pbt.search_space.learning_rate={type: float, low: -0.1, high: -0.01}", "outside its valid range (0.0, inf)"),
        ("pbt.search_space.gamma={type: float, low: 1.2, high: 1.5}", "outside its valid range (0.0, 1.0]"),
        ("pbt.search_space.learning_rate={type: categorical, values: [fast, slow]}", "'fast' is not a number"),
        ("pbt.search_space.gamma={type: categorical, values: [0.9]}", "at least two 'values'"),
        ("pbt.search_space.gamma={type: categorical, values: []}", "at least two 'values'"),
        ("pbt.search_space.gamma={type: float, low: 0.9, high: 0.9}", "explore could never move"),
        ("pbt.search_space={gamma: {type: float, low: 0.9, high: 0.99}, "  # noqa: ISC004
         "agent.gamma: {type: float, low: 0.9, high: 0.99}}", "'gamma' is searched twice"),
        ("pbt.perturb_factors=[-1, 0]", "perturb factors must be positive"),
    ],
)
def test_search_space_must_stay_inside_each_hyperparameters_valid_range(override, expected):
    message = _error(override)
    assert expected in message and "pbt." in message


def test_categorical_values_in_scientific_notation_are_numbers_as_low_and_high_are(tmp_path):
    """YAML 1.1 reads 1e-4 (no dot) as a string; pydantic reads it as a number for low / high, and so does a
    categorical of a (numeric) hyperparameter. A string that is not a number is still an error."""
    from rpbt.api import resolve_config
    from rpbt.pbt.space import SearchSpace

    path = tmp_path / "c.yaml"
    path.write_text("pbt:\n  search_space:\n    learning_rate: {type: categorical, values: [1e-4, 1E-3, '2e-3']}\n"
                    "    ent_coef: {type: float, low: 1e-4, high: 1e-2}\n")
    cfg = load_config(path)
    values = cfg.pbt.search_space["learning_rate"].values
    assert values == [1e-4, 1e-3, 2e-3] and all(type(v) is float for v in values)
    assert cfg.to_dict()["pbt"]["search_space"]["learning_rate"]["values"] == [1e-4, 1e-3, 2e-3]
    assert SearchSpace(cfg.pbt.search_space).sample(__import__("random").Random(0))["learning_rate"] in values
    override = "pbt.search_space.learning_rate={type: categorical, values: [1e-4, 1e-3]}"
    assert load_config(None, [override]).pbt.search_space["learning_rate"].values == [1e-4, 1e-3]
    assert resolve_config(None, values={"pbt.search_space": {"gamma": {"type": "categorical", "values": [
        "9.9e-1", 0.9]}}}).pbt.search_space["gamma"].values == [0.99, 0.9]

    for bad, expected in [("[1e-4, fast]", "'fast' is not a number"), ("[1e-4, 0.0001]", "duplicate categorical "
                          "value 0.0001"), ("[1e-4, 1e+3]", "outside its valid range"),
                          ("[1e-4, 'inf']", "not a finite number"), ("[1e-4, true]", "True is not a number")]:
        message = _error(f"pbt.search_space.gamma={{type: categorical, values: {bad}}}")
        assert f"values: {bad}}} (command line)" in message and "search space of gamma" in message, message
        assert expected in message, message
    path.write_text("pbt:\n  search_space:\n    learning_rate: {type: categorical, values: [1e-4, 1e-3x]}\n")
    message = _error(path=path)
    assert f"in {path}" in message and "search space of learning_rate: '1e-3x' is not a number" in message


def test_search_dim_is_the_one_check_of_a_dimension():
    with pytest.raises(ValueError, match="at least two 'values'"):
        SearchDim(type="categorical", values=[1])
    with pytest.raises(ValueError, match="finite number"):
        SearchDim(type="float", low=0.0, high=math.inf)


