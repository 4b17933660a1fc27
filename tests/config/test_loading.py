"""Loading a configuration: YAML files and dotted overrides, and errors that name the file, the key, its lines or the
override; the name given to an environment made by an entry point."""

from __future__ import annotations

import pytest
import yaml

from rpbt.config import ConfigError, apply_overrides, load_config
from tests.config.test_schema import DEFAULT_SEARCH_SPACE


def _error(*overrides: str, path=None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path, list(overrides))
    return str(err.value)


def test_a_dotted_search_space_override_changes_or_adds_one_dimension_of_the_space_in_force(tmp_path):
    """``pbt.search_space.NAME={...}`` changes or adds one dimension: of the default space when the file gives none
    (the same as on the shipped default file), of the file's own space when it gives one."""
    from rpbt.api import resolve_config

    ent = "pbt.search_space.ent_coef={type: float, low: 0.001, high: 0.02, scale: log}"
    gamma = "pbt.search_space.gamma={type: float, low: 0.9, high: 0.999}"
    minimal = tmp_path / "min.yaml"
    minimal.write_text("env:\n  id: CartPole-v1\n")
    for space in (load_config(minimal, [ent]).pbt.search_space, load_config(None, [ent]).pbt.search_space,
                  resolve_config(minimal, [ent]).pbt.search_space,
                  resolve_config({"env": {"id": "CartPole-v1"}}, [ent]).pbt.search_space,
                  resolve_config(minimal, values={"pbt.search_space.ent_coef": {
                      "type": "float", "low": 0.001, "high": 0.02, "scale": "log"}}).pbt.search_space):
        assert list(space) == list(DEFAULT_SEARCH_SPACE)
        assert (space["ent_coef"].low, space["ent_coef"].high) == (0.001, 0.02)
        assert space["learning_rate"].model_dump() == DEFAULT_SEARCH_SPACE["learning_rate"]
    assert list(load_config(minimal, [gamma]).pbt.search_space) == [*DEFAULT_SEARCH_SPACE, "gamma"]
    assert load_config(minimal, ["pbt.search_space.learning_rate.high=0.01"]).pbt.search_space[
        "learning_rate"].model_dump() == {**DEFAULT_SEARCH_SPACE["learning_rate"], "high": 0.01}
    # a file that gives its own space keeps it; the override changes or adds one dimension of it
    own = tmp_path / "own.yaml"
    own.write_text("pbt:\n  search_space:\n    clip_range: {type: float, low: 0.1, high: 0.2}\n")
    assert list(load_config(own, [gamma]).pbt.search_space) == ["clip_range", "gamma"]
    assert list(load_config(own, [ent]).pbt.search_space) == ["clip_range", "ent_coef"]
    # a whole space given on the command line still replaces the space whole
    assert list(load_config(minimal, ["pbt.search_space={gamma: {low: 0.9, high: 0.99}}"]).pbt.search_space) == [
        "gamma"]


def test_overrides_parse_yaml_values():
    data = apply_overrides({}, ["agent.learning_rate=3e-4", "env.num_envs=4", "agent.network.encoder_sizes=[8, 8]",
                                "run.torch_threads=null", "pbt.exploit=tournament"])
    assert data == {"agent": {"learning_rate": 3e-4, "network": {"encoder_sizes": [8, 8]}},
                    "env": {"num_envs": 4}, "run": {"torch_threads": None}, "pbt": {"exploit": "tournament"}}


def test_an_override_value_that_would_lose_text_to_a_yaml_comment_is_an_error():
    """`` #`` starts a YAML comment: ``run.dir=runs/a #1`` would silently read as ``runs/a``. Quoted, the whole
    text is kept; a ``#`` inside a word is no comment."""
    from rpbt.api import resolve_config

    message = _error("run.dir=runs/a #1")
    assert message.startswith("override 'run.dir=runs/a #1' (command line): YAML reads '#1' as a comment")
    assert "quote the value to keep it (e.g. \"run.dir='runs/a #1'\" on a shell command line)" in message
    assert "'#x' as a comment" in _error("run.dir=#x")  # all comment: YAML would read null
    assert "'# two' as a comment" in _error("agent.network.encoder_sizes=[8, 8] # two")
    assert load_config(None, ["run.dir='runs/a #1'"]).run.dir == "runs/a #1"
    assert load_config(None, ['run.dir="runs/b #2"']).run.dir == "runs/b #2"
    assert load_config(None, ["run.dir=runs/a#1"]).run.dir == "runs/a#1"
    assert apply_overrides({}, ["env.kwargs={name: 'x #1'}"]) == {"env": {"kwargs": {"name": "x #1"}}}
    with pytest.raises(ConfigError, match=r"override 'run.dir=a #1' \(argument\): YAML reads '#1' as a comment"):
        resolve_config(None, ["run.dir=a #1"])


def test_keys_a_merge_brings_in_may_be_set_again_even_when_the_merged_mapping_is_merged_elsewhere():
    import yaml

    from rpbt.config import load_yaml

    text = "a:\n  b: &x\n    <<: {k: 1}\n    k: 2\nc:\n  <<: *x\n"
    assert load_yaml(text) == yaml.safe_load(text)


def test_a_key_given_twice_is_an_error_naming_the_file_the_key_and_its_lines(tmp_path):
    """yaml.safe_load keeps the last of two equal keys silently; a config file or override value must not."""
    from rpbt.api import resolve_config
    from rpbt.config import load_yaml

    path = tmp_path / "c.yaml"
    path.write_text("env:\n  num_envs: 4\nagent:\n  num_steps: 64\nenv:\n  id: CartPole-v1\n")
    assert _error(path=path) == (f"{path}: key 'env' is given twice in one mapping, at line 1 and line 5 (YAML would "
                                 f"keep only the last one); merge them or remove one")
    with pytest.raises(ConfigError, match="key 'env' is given twice in one mapping, at line 1 and line 5"):
        resolve_config(path)
    path.write_text("agent:\n  network:\n    lstm_hidden_size: 8\n    prev_action: true\n    lstm_hidden_size: 16\n")
    assert "key 'lstm_hidden_size' is given twice in one mapping, at line 3 and line 5" in _error(path=path)
    # a merge key brings in keys that may be set again (YAML's own override), and equal keys in two mappings are fine
    path.write_text("x-base: &base {num_steps: 64, update_epochs: 2}\nagent:\n  <<: *base\n  num_steps: 32\n")
    assert load_yaml(path.read_text())["agent"] == {"num_steps": 32, "update_epochs": 2}
    assert load_yaml("a: {k: 1}\nb: {k: 1}\n") == yaml.safe_load("a: {k: 1}\nb: {k: 1}\n")
    message = _error("env.kwargs={size: 3, size: 4}")
    assert message == ("override 'env.kwargs={size: 3, size: 4}' (command line): key 'size' is given twice in one "
                       "mapping (YAML would keep only the last one)")


@pytest.mark.parametrize(
    "override, expected",
    [
        ("agent.learnig_rate=1e-3", "unknown key"),
        ("agent.num_steps=abc", "valid integer"),
        ("agent.learning_rate=abc", "valid number"),
        ("pbt.population_size=1", "PBT needs at least two members"),
        ("pbt.population_size=0", "PBT needs at least two members"),
        ("agent.critic.kind=median", "'scalar', 'quantile' or 'categorical'"),
        ("pbt.search_space.lr={type: float, low: 1, high: 2}", "unknown hyperparameter 'lr'"),
    ],
)
def test_an_override_error_names_the_override_and_what_was_expected(override, expected):
    message = _error(override)
    assert f"{override} (command line)" in message and expected in message
    assert "default.yaml" not in message


def test_a_file_error_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  gamma: 1.5\npbt:\n  population_size: 1\n")
    message = _error(path=path)
    assert message.splitlines() == [
        f"invalid configuration in {path}:",
        "  agent.gamma: Input should be less than or equal to 1 (got 1.5)",
        "  pbt.population_size: PBT needs at least two members (exploit copies one member into another) (got 1)",
    ]
    # the override fixes gamma; the file's population is still wrong and still named as the file's
    message = _error("agent.gamma=0.9", "agent.learning_rate=-1", path=path)
    assert message.splitlines() == [
        f"invalid configuration in {path}:",
        "  pbt.population_size: PBT needs at least two members (exploit copies one member into another) (got 1)",
        "  agent.learning_rate=-1 (command line): Input should be greater than 0 (got -1)",
    ]


def test_a_cross_field_error_names_the_overrides_it_mentions():
    message = _error("agent.bptt_length=null", "env.num_envs=6", "run.seed=3")
    assert "env.num_envs=6 (command line)" in message and "divisible by agent.num_minibatches" in message
    assert "run.seed" not in message


def test_the_last_override_of_a_key_is_the_one_named():
    message = _error("agent.learning_rate=abc", "agent.learning_rate=-2")
    assert "agent.learning_rate=-2 (command line)" in message and "abc" not in message


@pytest.mark.parametrize("text, what", [
    ("", "the file is empty"), ("\n  \n", "the file is empty"), ("# nothing yet\n", "only comments"),
    ("---\n# c\n...\n", "only comments"), ("~\n", "only null"), ("null  # c\n", "only null"),
])
def test_an_empty_config_file_is_an_error_not_the_default_job(tmp_path, text, what):
    """An empty file (blank, only comments, only null) is most likely a mistake: the default job is run by giving
    no file, so the file is refused, by the command line and the Python API alike, before anything is written."""
    import rpbt
    from rpbt.cli import main

    path = tmp_path / "empty.yaml"
    path.write_text(text)
    message = _error(path=path)
    assert message.startswith(f"{path}: ") and what in message and "give no file to run the default job" in message
    assert _error("pbt.population_size=4", path=path) == message
    with pytest.raises(ConfigError, match="give no file to run the default job"):
        rpbt.train(path, overrides=[f"run.dir={tmp_path / 'run'}"])
    assert main(["train", str(path), f"run.dir={tmp_path / 'run'}"]) == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, got", [("[]\n", "list"), ("false\n", "bool"), ("0\n", "int"), ("''\n", "str")])
def test_a_config_file_holding_a_false_value_is_not_read_as_an_empty_mapping(tmp_path, text, got):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert _error(path=path) == f"{path}: expected a mapping with sections env, agent, pbt, run; got {got}"


def test_a_non_finite_number_in_a_file_is_rejected_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  vgs:\n    alpha: .inf\n")
    assert _error(path=path).splitlines() == [
        f"invalid configuration in {path}:", "  agent.vgs.alpha: Input should be a finite number (got inf)"]


def test_an_entry_point_without_an_id_is_named_by_the_entry_point(tmp_path):
    """A custom environment given only by ``env.entry_point`` is not reported under the default environment's id;
    an explicit ``env.id`` (file or override) wins."""
    ep = "tests.custom_envs:make_dict_beacon"
    assert load_config(None, [f"env.entry_point={ep}"]).env.id == ep
    assert load_config(None, [f"env.entry_point={ep}", "env.id=beacon"]).env.id == "beacon"
    f = tmp_path / "c.yaml"
    f.write_text(f"env:\n  entry_point: {ep}\n")
    assert load_config(f).env.id == ep
    f.write_text(f"env:\n  id: beacon\n  entry_point: {ep}\n")
    assert load_config(f).env.id == "beacon"
    assert load_config(None).env.id == "popgym-PositionOnlyCartPoleEasy-v0"


def test_the_python_api_names_an_entry_point_environment_as_the_command_line_does(tmp_path):
    """rpbt.resolve_config (behind rpbt.train): a file, a mapping, overrides and dotted values with only
    ``env.entry_point`` name the environment by it; an explicit id wins."""
    from rpbt.api import resolve_config

    ep = "tests.custom_envs:make_dict_beacon"
    f = tmp_path / "ep.yaml"
    f.write_text(f"env:\n  entry_point: {ep}\n")
    assert resolve_config(f).env.id == ep
    assert resolve_config({"env": {"entry_point": ep}}).env.id == ep
    assert resolve_config(None, [f"env.entry_point={ep}"]).env.id == ep
    assert resolve_config(None, values={"env.entry_point": ep}).env.id == ep
    assert resolve_config(None, values={"env.entry_point": ep, "env.id": "b"}).env.id == "b"
    assert resolve_config({"env": {"entry_point": ep, "id": "c"}}).env.id == "c"
    assert resolve_config(None).env.id == "popgym-PositionOnlyCartPoleEasy-v0"


# --------------------------------------------------------------------------------------------------- shipped configs


def test_shipped_configs_are_the_package_s_yaml_files_by_name():
    from rpbt.config import SHIPPED_CONFIG_DIR, shipped_configs

    shipped = shipped_configs()
    assert {"default", "trading_googl", "popgym/RepeatFirstEasy"} <= set(shipped)
    assert list(shipped) == sorted(shipped)
    assert len(shipped) == len(list(SHIPPED_CONFIG_DIR.rglob("*.yaml")))
    for name, path in shipped.items():
        assert path == SHIPPED_CONFIG_DIR / f"{name}.yaml"


def test_a_shipped_config_loads_by_name_and_names_its_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    from rpbt.config import load_config

    for given in ("popgym/RepeatFirstEasy", "popgym/RepeatFirstEasy.yaml"):
        cfg = load_config(given)
        assert cfg.env.id == "popgym-RepeatFirstEasy-v0" and cfg.agent.num_steps == 256, given
        assert cfg.run.dir == "runs/popgym/RepeatFirstEasy"


def test_an_existing_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from rpbt.config import load_config

    (tmp_path / "popgym").mkdir()
    (tmp_path / "popgym" / "RepeatFirstEasy").write_text("pbt: {population_size: 3}\n")
    cfg = load_config("popgym/RepeatFirstEasy")
    assert cfg.pbt.population_size == 3 and cfg.env.id == "popgym-PositionOnlyCartPoleEasy-v0"


def test_an_unknown_name_is_a_config_error_listing_the_shipped_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from rpbt.config import ConfigError, load_config, shipped_configs

    with pytest.raises(ConfigError) as err:
        load_config("popgym/NoSuchTask")
    msg = str(err.value)
    assert msg.startswith("config file not found: popgym/NoSuchTask")
    assert all(name in msg for name in shipped_configs()) and "rpbt configs" in msg
