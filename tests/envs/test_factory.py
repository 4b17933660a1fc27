"""Making environments from a spec: the action spec of each space, flat float32 observations, popgym's
MultiDiscrete environments end to end, and the errors for spaces and env kwargs it cannot take."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from rpbt.envs.factory import EnvError, space_info
from rpbt.envs.features import ActionFeatures
from rpbt.evaluation.policy import evaluate_policy, load_member
from tests.conftest import TINY


def test_action_spec_of_each_space_maps_actions_to_the_env_and_to_features():
    def features(spec, sent):  # the policy's input for what the environment took (envs.features, the one builder)
        return ActionFeatures(spec)(torch.as_tensor(np.asarray(sent)))

    d = space_info(gym.spaces.Discrete(3, start=1))
    assert (d.kind, d.dim, d.shape, d.continuous) == ("discrete", 3, (), False)
    assert d.to_env(np.array([0, 2])).tolist() == [1, 3]
    torch.testing.assert_close(features(d, d.to_env(np.array([2, 0]))), torch.tensor([[0., 0, 1], [1, 0, 0]]))

    md = space_info(gym.spaces.MultiDiscrete([3, 2], start=[1, -1]))
    assert (md.kind, md.dim, md.nvec, md.shape) == ("multi_discrete", 5, (3, 2), (2,))
    assert md.to_env(np.array([[0, 0], [2, 1]])).tolist() == [[1, -1], [3, 0]]
    torch.testing.assert_close(features(md, md.to_env(np.array([[2, 1], [0, 0]]))),
                               torch.tensor([[0., 0, 1, 0, 1], [1, 0, 0, 1, 0]]))

    box = space_info(gym.spaces.Box(-1.0, 2.0, (2,)))
    assert (box.kind, box.dim, box.shape, box.continuous) == ("box", 2, (2,), True)
    assert box.to_env(np.array([[-3.0, 5.0]], dtype=np.float32)).tolist() == [[-1.0, 2.0]]
    torch.testing.assert_close(features(box, [[0.5, -1.0]]), torch.tensor([[0.5, -1.0]]))

    matrix = space_info(gym.spaces.Box(-1.0, 1.0, (2, 2)))  # the policy acts on 4 numbers, the env takes (2, 2)
    assert (matrix.dim, matrix.shape, matrix.box_shape) == (4, (4,), (2, 2))
    sent = matrix.to_env(np.array([[0.125, 2.0, -0.25, 0.5], [0.0, 0.0, 0.0, -5.0]], dtype=np.float32))
    assert sent.shape == (2, 2, 2) and sent.tolist() == [[[0.125, 1.0], [-0.25, 0.5]], [[0.0, 0.0], [0.0, -1.0]]]
    torch.testing.assert_close(features(matrix, sent.reshape(2, 4)),
                               torch.tensor([[0.125, 1.0, -0.25, 0.5], [0.0, 0.0, 0.0, -1.0]]))
    scalar = space_info(gym.spaces.Box(-1.0, 1.0, ()))
    assert scalar.to_env(np.array([[0.5], [3.0]], dtype=np.float32)).tolist() == [0.5, 1.0]

    with pytest.raises(EnvError, match="not Discrete, MultiDiscrete or Box"):
        space_info(gym.spaces.MultiBinary(3))
    with pytest.raises(EnvError, match="one-dimensional"):
        space_info(gym.spaces.MultiDiscrete([[2, 2], [2, 2]]))


@pytest.mark.parametrize("env_id", ["popgym-BattleshipEasy-v0", "popgym-MineSweeperEasy-v0"])
def test_popgym_multi_discrete_envs_train_and_evaluate(env_id, tmp_path):
    from rpbt.cli import main

    run = tmp_path / "run"
    extra = ["pbt.population_size=2", "agent.network.prev_action=true", "run.total_env_steps=128"]
    assert main(["train", *TINY, *extra, f"env.id={env_id}", f"run.dir={run}"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 128 and summary["best_member"] is not None
    assert main(["evaluate", str(run), "--member", "0", "--episodes", "2"]) == 0
    report = json.loads((run / "evaluation" / "test_member0.json").read_text())
    assert len(report["returns"]) == 2 and all(length > 0 for length in report["lengths"])
    cfg, learner = load_member(run, 0)
    result = evaluate_policy(learner, 0, cfg.env, episodes=1)
    assert result.episodes[0].actions.shape == (result.lengths[0], 2)  # (T, K): both coordinates of every shot


def test_made_environments_show_flat_float32_observations_even_for_discrete_observation_spaces():
    # MineSweeper observes Discrete values: flattened one-hot int64 by Gymnasium, cast to float32 by the factory, so
    # Policy.predict reads make_env()'s observations as flat vectors and never as a batch of Discrete observations.
    from rpbt.config import EnvConfig
    from rpbt.envs.factory import make_env

    env = make_env(EnvConfig(id="popgym-MineSweeperEasy-v0"))
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.ndim == 1 and env.observation_space.dtype == np.float32
    env.close()


class _ObsSpaceEnv(gym.Env):
    def __init__(self, space: gym.Space):
        self.observation_space, self.action_space = space, gym.spaces.Discrete(2)


@pytest.mark.parametrize("space, named", [
    (gym.spaces.Sequence(gym.spaces.Discrete(3)), "Sequence"),
    (gym.spaces.Dict({"s": gym.spaces.Box(0, 1, (2,), np.float32), "q": gym.spaces.Sequence(gym.spaces.Discrete(3))}),
     "Sequence"),
    (gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Text(5))), "Text"),
    (gym.spaces.Graph(gym.spaces.Box(0, 1, (2,), np.float32), None), "Graph"),
])
def test_observation_spaces_without_a_fixed_size_flattening_are_refused_naming_the_env_and_the_part(space, named):
    from rpbt.config import EnvConfig
    from rpbt.envs.factory import make_env

    cfg = EnvConfig(id="my-env").with_env_fn(lambda: _ObsSpaceEnv(space))
    with pytest.raises(EnvError, match=rf"env.id 'my-env': observation space .* holds {named}\("):
        make_env(cfg)


def test_env_kwargs_an_env_fn_does_not_take_are_an_env_error():
    from rpbt.config import EnvConfig
    from rpbt.envs.factory import make_env
    from tests.custom_envs import make_dict_beacon

    cfg = EnvConfig(id="beacon", kwargs={"bogus": 1}).with_env_fn(make_dict_beacon)
    with pytest.raises(EnvError, match="'beacon' .* cannot be made with env.kwargs {'bogus': 1}: .*bogus"):
        make_env(cfg)
    env = make_env(EnvConfig(id="beacon", kwargs={"length": 3}).with_env_fn(make_dict_beacon))
    assert env.observation_space.shape == (5,)
