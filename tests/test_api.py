"""The Python API: rpbt.train / resume / load_policy, Policy.predict (SB3 RecurrentPPO.predict's meaning), observation
flattening, custom environments (env_fn, module:EnvId), evaluation videos (the exported actor: test_actor_export.py;
the command line's own behaviour: test_cli.py)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import rpbt
import rpbt.actor_export
from rpbt.agent.ppo import make_policy
from rpbt.api import Policy
from rpbt.cli import main
from rpbt.config import ConfigError
from rpbt.envs.factory import EnvError, base_observation_space, make_env
from rpbt.run.rundir import RunDirError
from rpbt.seeding import eval_episode_seeds
from tests.conftest import TINY, Learner, tiny_config
from tests.custom_envs import make_dict_beacon, make_matrix_action


def _train(tmp_path, name="run", **values):
    values = {"pbt.population_size": 2, "run.dir": str(tmp_path / name), **values}
    return rpbt.train(overrides=TINY, **values)


# ------------------------------------------------------------------------------------------ train, load, predict


def test_train_load_best_and_deterministic_predict_returns_equal_rpbt_evaluate(tmp_path, capsys):
    run = _train(tmp_path, **{"run.total_env_steps": 256})
    assert isinstance(run, rpbt.Run) and run.dir == tmp_path / "run"
    assert run.best_member == json.loads((run.dir / "summary.json").read_text())["best_member"]
    assert main(["evaluate", str(run.dir), "--episodes", "5"]) == 0
    report = json.loads((run.dir / "evaluation" / f"test_member{run.best_member}.json").read_text())

    policy = rpbt.load_policy(run.dir)
    assert policy.member == run.best_member and policy.learner.population == 1
    # Five episodes side by side (a batch of 5), seeded as rpbt evaluate seeds them; a finished environment is no
    # longer stepped.
    seeds = eval_episode_seeds(run.config.run.seed, 5)
    envs = [policy.make_env() for _ in seeds]
    obs = np.stack([env.reset(seed=s)[0] for env, s in zip(envs, seeds)])
    rewards, done = [[] for _ in seeds], np.zeros(5, dtype=bool)
    state, start = None, np.ones(5, dtype=bool)
    while not done.all():
        actions, state = policy.predict(obs, state, episode_start=start, deterministic=True)
        assert actions.shape == (5,) and state.h.shape == (1, 5, 16)
        start = np.zeros(5, dtype=bool)
        for j, env in enumerate(envs):
            if done[j]:
                continue
            obs[j], reward, term, trunc, _ = env.step(actions[j])
            rewards[j].append(reward)
            done[j] = term or trunc
    # The return of an episode is the sum of its rewards (np.sum, as the evaluation's EpisodeTrace sums them).
    assert [float(np.sum(r)) for r in rewards] == report["returns"]
    assert [len(r) for r in rewards] == report["lengths"]

    # One observation at a time (no batch dimension) gives episode 0 again.
    env = policy.make_env()
    o, _ = env.reset(seed=seeds[0])
    state, episode, start = None, [], True
    while True:
        action, state = policy.predict(o, state, episode_start=start)
        assert np.ndim(action) == 0 and state.h.shape == (1, 1, 16)
        o, reward, term, trunc, _ = env.step(action)
        episode.append(reward)
        start = False
        if term or trunc:
            break
    assert float(np.sum(episode)) == report["returns"][0]
    assert rpbt.evaluate(run.dir, episodes=5)["returns"] == report["returns"]


def test_predict_resets_state_at_episode_starts_and_samples_when_not_deterministic(tmp_path):
    cfg = tiny_config()
    learner = Learner(cfg, [0])
    learner.train_update()
    policy = _policy_of(learner)
    env = policy.make_env()
    o, _ = env.reset(seed=0)
    _, s1 = policy.predict(o)
    _, s2 = policy.predict(o, s1)
    # episode_start=True zeroes the carried state first: the same as no state at all.
    a_fresh, fresh = policy.predict(o)
    a_reset, reset = policy.predict(o, s2, episode_start=True)
    assert np.array_equal(fresh.h, reset.h) and a_fresh == a_reset
    assert not np.allclose(s2.h, s1.h)
    draws = {int(policy.predict(o, deterministic=False)[0]) for _ in range(40)}
    assert draws == {0, 1}  # a near-uniform tiny policy samples both actions


def _policy_of(learner: Learner, member: int = 0) -> Policy:
    """A Policy of one member of a learner (what load_policy builds from a checkpoint)."""
    cfg = learner.cfg
    single = make_policy(cfg, [learner.policy.member_ids[member]])
    single.restore(0, learner.policy.snapshot(member))
    probe = make_env(cfg.env)
    try:
        return Policy(cfg, single, member, base_observation_space(probe), probe.action_space)
    finally:
        probe.close()


# ------------------------------------------------------------------------------------------ observations


def test_dict_observations_are_flattened_as_the_env_factory_does_single_and_batched():
    cfg = tiny_config("env.entry_point=tests.custom_envs:make_dict_beacon", "env.id=beacon")
    learner = Learner(cfg, [0])
    learner.train_update()
    policy = _policy_of(learner)
    assert isinstance(policy.observation_space, gym.spaces.Dict) and policy.obs_dim == 5
    raw = make_dict_beacon()
    flat = make_env(cfg.env)
    o_raw, _ = raw.reset(seed=4)
    o_flat, _ = flat.reset(seed=4)
    # by hand: Dict keys in sorted order, the Discrete entry one-hot
    by_hand = np.concatenate([np.eye(3)[o_raw["beacon"]], o_raw["position"]]).astype(np.float32)
    np.testing.assert_array_equal(policy.flatten_obs(o_raw)[0][0], by_hand)
    np.testing.assert_array_equal(o_flat, by_hand)
    batch = {"beacon": np.array([o_raw["beacon"], 0]), "position": np.stack([o_raw["position"], -o_raw["position"]])}
    x, batched = policy.flatten_obs(batch)
    assert batched and x.shape == (2, 5)
    np.testing.assert_array_equal(x[0], by_hand)
    p_raw, _ = policy.action_distribution(o_raw)
    p_flat, _ = policy.action_distribution(o_flat)
    p_batch, _ = policy.action_distribution(batch)
    np.testing.assert_array_equal(p_raw["logits"], p_flat["logits"])
    np.testing.assert_allclose(p_batch["logits"][0], p_raw["logits"], atol=1e-6)
    with pytest.raises(ValueError, match="fits neither"):
        _policy_of(Learner(tiny_config(), [0])).flatten_obs(np.zeros(7))

    # Bad arguments: a ValueError naming what was wrong, never a KeyError / IndexError / torch error from inside.
    good = policy.initial_state(1)
    bad_calls = [
        (lambda: policy.predict({"position": o_raw["position"]}), r"fits neither Dict.*KeyError: 'beacon'"),
        (lambda: policy.predict({"beacon": 1, "position": np.zeros(3)}), "fits neither Dict"),
        (lambda: policy.predict({"beacon": 7, "position": o_raw["position"]}), "fits neither Dict"),
        (lambda: policy.predict([1, 2]), "fits neither Dict"),
        (lambda: policy.predict(np.zeros(4, np.float32)), "fits neither Dict"),
        (lambda: policy.predict({"beacon": np.array([1, 0, 2]), "position": np.zeros((2, 2))}), "fits neither Dict"),
        (lambda: policy.predict(np.full(5, np.nan, np.float32)), "NaN or inf"),
        (lambda: policy.predict(o_raw, (good.h, good.c)), "state must be the PolicyState"),
        (lambda: policy.predict(o_raw, type(good)(good.h[:, :, :3], good.c, good.prev_action)),
         r"state.h has shape \(1, 1, 3\), expected \(1, 1, 16\)"),
        (lambda: policy.predict(o_raw, type(good)(np.zeros((2, 1, 16)), np.zeros((2, 1, 16)), good.prev_action)),
         r"state.h has shape \(2, 1, 16\)"),
        (lambda: policy.predict(o_raw, policy.initial_state(2)), "state is for 2 environments, the observation for 1"),
        (lambda: policy.predict(batch, episode_start=[True, False, True]), "episode_start has 3 entries"),
        (lambda: policy.predict(o_raw, episode_start="yes"), "episode_start must be a bool"),
    ]
    for call, message in bad_calls:
        with pytest.raises(ValueError, match=message):
            call()


# ------------------------------------------------------------------------------------------ custom environments


def test_env_fn_trains_is_recorded_and_is_found_again_by_the_cli(tmp_path):
    run = _train(tmp_path, **{"agent.network.prev_action": True})
    del run
    run = rpbt.train(overrides=TINY, env_fn=make_dict_beacon, **{"pbt.population_size": 2,
                                                                 "run.dir": str(tmp_path / "beacon")})
    saved = (run.dir / "config.yaml").read_text()
    assert "entry_point: tests.custom_envs:make_dict_beacon" in saved
    assert run.config.env.id == "tests.custom_envs:make_dict_beacon"
    # A later process finds the callable through config.yaml.
    assert main(["evaluate", str(run.dir), "--member", "0", "--episodes", "2"]) == 0
    report = json.loads((run.dir / "evaluation" / "test_member0.json").read_text())
    assert report["lengths"] == [10, 10]
    assert rpbt.load_policy(run.dir, 0).obs_dim == 5


def test_env_fn_that_is_not_importable_works_locally_and_is_refused_for_the_process_backend(tmp_path):
    def nested(**kwargs):  # a closure: not importable by reference
        return make_dict_beacon(length=6, **kwargs)

    with pytest.raises(ConfigError, match="not importable by reference"):
        rpbt.train(overrides=TINY, env_fn=nested, **{"backend.kind": "process", "run.dir": str(tmp_path / "p")})
    with pytest.raises(ConfigError, match="not importable by reference"):
        rpbt.train(overrides=TINY, env_fn=lambda: make_dict_beacon(), **{"backend.kind": "ray",
                                                                         "run.dir": str(tmp_path / "r")})
    run = rpbt.train(overrides=TINY, env_fn=nested, **{"pbt.population_size": 2, "run.dir": str(tmp_path / "l")})
    assert run.config.env.entry_point.endswith("<locals>.nested")
    with pytest.raises(EnvError, match="env_fn"):
        rpbt.load_policy(run.dir, 0)
    assert rpbt.load_policy(run.dir, 0, env_fn=nested).obs_dim == 5
    assert run.load_policy(0).obs_dim == 5
    assert main(["evaluate", str(run.dir), "--member", "0"]) == 2  # a clear error, no traceback


@pytest.mark.parametrize("shape, num_envs", [((2, 2), 2), ((), 2), ((1, 2), 1)])
def test_a_box_action_of_any_shape_reaches_the_env_in_its_shape_in_training_evaluation_and_predict(shape, num_envs,
                                                                                                  tmp_path):
    # MatrixAction raises for a float action of any other shape: training, evaluation and predict must all reshape.
    d = int(np.prod(shape))
    run = rpbt.train(overrides=TINY, env_fn=make_matrix_action,
                     **{"pbt.population_size": 2, "agent.network.prev_action": True, "env.num_envs": num_envs,
                        "agent.num_minibatches": 1, "env.kwargs": {"shape": list(shape)}, "run.dir": str(tmp_path)})
    assert run.summary["env_steps"] == 192
    report = rpbt.evaluate(run.dir, member=1, episodes=2)
    assert report["lengths"] == [6, 6] and all(r < 0 for r in report["returns"])
    policy = rpbt.load_policy(run.dir, 1)
    env = make_matrix_action(shape=shape)
    obs, _ = env.reset(seed=0)
    action, state = policy.predict(obs)
    assert action.shape == shape and float(np.abs(action).max()) <= 1.0
    env.step(action)
    assert state.prev_action.shape == (1, d)
    torch.testing.assert_close(torch.as_tensor(state.prev_action[0]), torch.as_tensor(action.reshape(d)))
    actions, _ = policy.predict(np.stack([obs, obs, obs]), policy.initial_state(3), deterministic=False)
    assert actions.shape == (3, *shape)


def test_env_fn_goes_to_process_workers_by_reference(tmp_path):
    run = rpbt.train(overrides=TINY, env_fn=make_dict_beacon,
                     **{"pbt.population_size": 2, "backend.kind": "process", "backend.num_workers": 2,
                        "run.dir": str(tmp_path / "proc")})
    assert run.summary["env_steps"] == 192
    assert pickle.loads(pickle.dumps(run.config)).env.env_fn() is make_dict_beacon


def test_member_ids_are_integers_or_best_and_a_missing_run_is_named_as_such(tmp_path):
    from rpbt.api import _member_id

    assert [_member_id(m) for m in ("best", 3, "3", np.int64(2))] == ["best", 3, 3, 2]
    for bad in (1.7, True, "x", "-1", None):
        with pytest.raises(ValueError, match="member must be 'best' or a member id"):
            _member_id(bad)
    for call in (lambda: rpbt.load_policy(tmp_path / "nope"), lambda: rpbt.load_policy(tmp_path / "nope", 0),
                 lambda: rpbt.evaluate(tmp_path / "nope")):
        with pytest.raises(RunDirError, match=r"no rpbt run directory at .*nope \(nothing is there\)"):
            call()


def test_evaluate_refuses_a_negative_seed_before_any_episode(tmp_path):
    run = _train(tmp_path)
    for seed in (-1, 1.5, True, np.int64(-2)):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            rpbt.evaluate(run.dir, member=0, seed=seed)
    assert not (run.dir / "evaluation").exists()
    assert rpbt.evaluate(run.dir, member=0, seed=np.int64(3), episodes=1)["seed"] == 3


def test_env_fn_on_the_process_backend_works_from_a_script_read_on_stdin(tmp_path):
    # spawn would run the main script again in each worker; "<stdin>" is no file, so the workers must not try.
    script = (f"import rpbt\nfrom tests.conftest import TINY\nfrom tests.custom_envs import make_dict_beacon\n"
              f"run = rpbt.train(overrides=TINY, env_fn=make_dict_beacon, **{{'backend.kind': 'process', "
              f"'backend.num_workers': 2, 'pbt.population_size': 2, 'run.dir': {str(tmp_path / 'run')!r}}})\n"
              f"print('env steps', run.summary['env_steps'])\n")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "env steps 192" in done.stdout


def test_module_colon_env_id_and_config_errors_name_the_argument(tmp_path):
    cfg = tiny_config("env.id=tests.custom_envs:RpbtDictBeacon-v0")
    assert make_env(cfg.env).observation_space.shape == (5,)
    with pytest.raises(EnvError, match="no_such_module"):
        make_env(tiny_config("env.id=no_such_module:Env-v0").env)
    with pytest.raises(ConfigError, match=r"agent.learnig_rate=0.1 \(argument\): unknown key"):
        rpbt.resolve_config(None, TINY, {"agent.learnig_rate": 0.1})
    with pytest.raises(ConfigError, match="dotted keys"):
        rpbt.resolve_config(None, (), {"population_size": 4})
    with pytest.raises(ConfigError, match="overrides must be a list of 'key.sub=value' strings.*wrap the string"):
        rpbt.resolve_config(None, "agent.learning_rate=3e-4")
    with pytest.raises(ConfigError, match="config must be None .* got int 42"):
        rpbt.resolve_config(42)
    cfg = rpbt.resolve_config({"env": {"num_envs": 4}}, ["agent.num_minibatches=2"], {"pbt.population_size": 3})
    assert (cfg.env.num_envs, cfg.agent.num_minibatches, cfg.pbt.population_size) == (4, 2, 3)


def test_env_kwargs_take_numpy_values_as_plain_data_and_refuse_objects_before_anything_is_written(tmp_path):
    cfg = rpbt.resolve_config(None, (), {"env.kwargs": {"length": np.int64(6), "sizes": np.array([2, 3]),
                                                        "pair": (0.5, np.float32(0.25))}})
    assert cfg.env.kwargs == {"length": 6, "sizes": [2, 3], "pair": [0.5, 0.25]}
    assert type(cfg.env.kwargs["length"]) is int
    import datetime
    cfg = rpbt.resolve_config(None, (), {"env.kwargs": {"path": Path("/data/x.csv"), "day": datetime.date(2020, 1, 2)}})
    assert cfg.env.kwargs == {"path": "/data/x.csv", "day": "2020-01-02"}  # as config.yaml recorded them before
    run_dir = tmp_path / "never"
    with pytest.raises(ConfigError, match="env.kwargs.length: .* is a object; expected a number"):
        rpbt.train(overrides=TINY, env_fn=make_dict_beacon, **{"env.kwargs": {"length": object()},
                                                                "run.dir": str(run_dir)})
    assert not run_dir.exists()


# ------------------------------------------------------------------------------------------ export


# ------------------------------------------------------------------------------------------ video


def test_evaluate_video_records_one_mp4_per_episode_and_refuses_envs_that_do_not_render(tmp_path, capsys):
    if not _has("moviepy"):
        if os.environ.get("CI"):
            pytest.fail("CI installs rpbt[video]: moviepy must be importable")
        pytest.skip("needs the rpbt[video] extra (moviepy)")
    run = _train(tmp_path, **{"env.id": "tests.custom_envs:RpbtDictBeacon-v0"})
    videos = tmp_path / "videos"
    assert main(["evaluate", str(run.dir), "--member", "0", "--episodes", "2", "--video", str(videos)]) == 0
    files = sorted(videos.iterdir())
    assert [f.name for f in files] == ["member0-episode0.mp4", "member0-episode1.mp4"]
    assert all(f.stat().st_size > 0 for f in files)
    report = json.loads((run.dir / "evaluation" / "test_member0.json").read_text())
    assert report["videos"] == [str(f) for f in files] and report["lengths"] == [10, 10]
    assert main(["evaluate", str(run.dir), "--member", "0", "--episodes", "1", "--video", str(videos)]) == 0
    report = json.loads((run.dir / "evaluation" / "test_member0.json").read_text())
    assert report["videos"] == [str(files[0])]  # this evaluation's, not every file in the folder
    capsys.readouterr()

    other = _train(tmp_path, "battleship", **{"env.id": "popgym-BattleshipEasy-v0", "run.total_env_steps": 64})
    assert main(["evaluate", str(other.dir), "--member", "0", "--video", str(tmp_path / "v2")]) == 2
    err = capsys.readouterr().err
    assert "does not render rgb_array frames" in err and "Traceback" not in err
    assert not (tmp_path / "v2").exists()


def test_video_of_an_env_function_without_render_mode_names_the_function_and_what_it_must_take(tmp_path, capsys):
    if not _has("moviepy"):
        pytest.skip("needs the rpbt[video] extra (moviepy)")
    run = _train(tmp_path, **{"env.entry_point": "tests.custom_envs:make_matrix_action", "run.total_env_steps": 64})
    capsys.readouterr()
    assert main(["evaluate", str(run.dir), "--member", "0", "--video", str(tmp_path / "v")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rpbt: error: env.entry_point "
                                                   "'tests.custom_envs:make_matrix_action' does not take render_mode")
    assert "make_matrix_action(**env.kwargs, render_mode='rgb_array')" in err and "render_mode=None" in err
    assert not (tmp_path / "v").exists()


def test_policy_make_env_of_an_env_function_without_render_mode_is_the_env_error_naming_the_function(tmp_path):
    """``Policy.make_env(render_mode=...)`` refuses a function that does not take render_mode as ``--video`` does:
    an EnvError naming env.entry_point and what the function must take, not the call's bare TypeError."""
    from rpbt.envs.factory import EnvError

    run = _train(tmp_path, **{"env.entry_point": "tests.custom_envs:make_matrix_action", "run.total_env_steps": 64})
    policy = rpbt.load_policy(run.dir, member=0)
    with pytest.raises(EnvError) as err:
        policy.make_env(render_mode="rgb_array")
    message = str(err.value)
    assert message.startswith("env.entry_point 'tests.custom_envs:make_matrix_action' does not take render_mode")
    assert "make_matrix_action(**env.kwargs, render_mode='rgb_array')" in message and "render_mode=None" in message
    assert "--video" not in message and "\n" not in message, message
    policy.make_env().close()  # without render_mode it is made as in training


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SDL's X11 / Wayland probing is Linux's")
def test_video_of_a_pygame_env_without_a_display_prints_no_sdl_noise(tmp_path):
    """CartPole draws its frames with pygame, which starts SDL's video; on a machine without a display and without
    XDG_RUNTIME_DIR, SDL's Wayland probe printed "error: XDG_RUNTIME_DIR is invalid or not set" lines."""
    if not (_has("moviepy") and _has("pygame")):
        pytest.skip("needs the rpbt[video] extra (moviepy, pygame)")
    run = _train(tmp_path, **{"env.id": "CartPole-v1", "run.total_env_steps": 64})
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_RUNTIME_DIR", "DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    env["PYTHONPATH"] = str(Path(rpbt.__file__).parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-m", "rpbt.cli", "evaluate", str(run.dir), "--member", "0", "--episodes",
                           "1", "--video", str(tmp_path / "v")], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "XDG_RUNTIME_DIR" not in done.stderr and "SDL" not in done.stderr, done.stderr
    assert [f.name for f in (tmp_path / "v").iterdir()] == ["member0-episode0.mp4"]


@pytest.mark.parametrize("environ, driver", [({}, "dummy"), ({"SDL_VIDEODRIVER": "x11"}, "x11"),
                                             ({"DISPLAY": ":0"}, None), ({"WAYLAND_DISPLAY": "wayland-0"}, None)])
def test_the_video_path_sets_sdl_s_dummy_driver_only_without_a_display_and_never_over_the_user_s(environ, driver,
                                                                                                 monkeypatch):
    from rpbt.evaluation.policy import _headless_sdl

    monkeypatch.setattr(sys, "platform", "linux")
    for key in ("SDL_VIDEODRIVER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.setenv(key, "")  # recorded, so that what _headless_sdl sets is undone after the test
        monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    _headless_sdl()
    assert os.environ.get("SDL_VIDEODRIVER") == driver


def test_video_without_moviepy_names_the_extra(tmp_path, capsys, monkeypatch):
    import rpbt.extras

    real = rpbt.extras.importlib.import_module

    def no_moviepy(name, *args):
        if name == "moviepy":
            raise ImportError("No module named 'moviepy'")
        return real(name, *args)

    run = _train(tmp_path, **{"env.id": "tests.custom_envs:RpbtDictBeacon-v0"})
    monkeypatch.setattr(rpbt.extras.importlib, "import_module", no_moviepy)
    assert main(["evaluate", str(run.dir), "--member", "0", "--video", str(tmp_path / "v")]) == 2
    assert "pip install 'rpbt[video]'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ damaged checkpoints


def test_load_policy_and_the_cli_fall_back_to_an_older_kept_round_when_the_newest_does_not_load(tmp_path, capsys):
    """As ``rpbt resume`` does: a member checkpoint of the last committed round that does not load is replaced by
    the same member's checkpoint of the newest older kept round (run.keep_checkpoints), with a warning; when no kept
    round loads, the newest round's error (exit 2)."""
    from rpbt.checkpoint import CheckpointError, MemberState
    from rpbt.evaluation.policy import CheckpointFallbackWarning

    run = _train(tmp_path)
    state = json.loads((run.dir / "checkpoints" / "runner.json").read_text())
    newest, older = state["history"][:2]
    assert newest == state["checkpoint_dir"] and newest != older
    ckpts = run.dir / "checkpoints"

    def same(a: MemberState, b: MemberState) -> bool:
        return a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k])
                                                            for k in a.tensors)

    kept = {f: MemberState.load(ckpts / f / "member_1.pt") for f in (newest, older)}
    assert not same(kept[newest], kept[older]), "the two kept rounds must differ for the test to see which"
    damaged = ckpts / newest / "member_1.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.warns(CheckpointFallbackWarning, match=older):
        policy = rpbt.load_policy(run.dir, member=1)
    assert same(policy.learner.snapshot(0), kept[older])
    rpbt.load_policy(run.dir, member=0)  # an intact member loads from the newest round, no warning needed
    capsys.readouterr()
    assert main(["evaluate", str(run.dir), "--member", "1", "--episodes", "1"]) == 0
    assert f"rpbt: warning: {run.dir}: member 1's checkpoint" in capsys.readouterr().err
    # the evaluation's JSON names the checkpoint it evaluated: the older round's
    report = json.loads((run.dir / "evaluation" / "test_member1.json").read_text())
    assert report["checkpoint"] == f"checkpoints/{older}/member_1.pt"
    older_ckpt = ckpts / older / "member_1.pt"
    older_ckpt.write_bytes(older_ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=newest) as caught:
        rpbt.load_policy(run.dir, member=1)
    assert f"the older kept rounds did not load either ({older}: " in str(caught.value)
    assert main(["evaluate", str(run.dir), "--member", "1", "--episodes", "1"]) == 2
    assert "member_1.pt" in capsys.readouterr().err


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
