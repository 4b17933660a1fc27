"""rpbt.envs.features: the previous action / reward features, against hand-computed one-hots, eager and scripted."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rpbt.envs.factory import space_info
from rpbt.envs.features import ActionFeatures, action_features, network_input

SPACES = {
    "discrete": gym.spaces.Discrete(3, start=-1),
    "multi_discrete": gym.spaces.MultiDiscrete([2, 3], start=[1, 0]),
    "box": gym.spaces.Box(low=np.array([-1.0, 0.0], dtype=np.float32), high=np.array([1.0, 2.0], dtype=np.float32)),
}
# (P, N) = (1, 2) actions as the environment took them, and their features computed by hand
ACTIONS = {
    "discrete": (torch.tensor([[-1, 1]]), [[[1, 0, 0], [0, 0, 1]]]),
    "multi_discrete": (torch.tensor([[[2, 0], [1, 2]]]), [[[0, 1, 1, 0, 0], [1, 0, 0, 0, 1]]]),
    "box": (torch.tensor([[[-3.0, 0.5], [0.25, 7.0]]]), [[[-1.0, 0.5], [0.25, 2.0]]]),
}


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_action_features_are_the_one_hots_of_action_minus_start_and_the_clipped_box(kind):
    features = ActionFeatures(space_info(SPACES[kind]))
    action, expected = ACTIONS[kind]
    got = features(action)
    assert got.dtype == torch.float32
    assert torch.equal(got, torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("kind", sorted(SPACES))
def test_the_scripted_features_equal_the_eager_ones(kind):
    f = ActionFeatures(space_info(SPACES[kind]))
    action, _ = ACTIONS[kind]
    scripted = torch.jit.script(action_features)
    assert torch.equal(scripted(action, f.kind, f.nvec, f.start, f.low, f.high), f(action))


def test_network_input_appends_the_previous_inputs_zeroed_at_episode_starts():
    obs = torch.tensor([[[0.5, -0.5], [1.0, 2.0]]])  # (1, 2, 2)
    prev_a = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]])
    prev_r = torch.tensor([[[3.0], [-2.0]]])
    start = torch.tensor([[False, True]])
    x = network_input(obs, prev_a, prev_r, start)
    assert torch.equal(x, torch.tensor([[[0.5, -0.5, 0.0, 1.0, 0.0, 3.0], [1.0, 2.0, 0.0, 0.0, 0.0, 0.0]]]))
    assert torch.equal(network_input(obs, None, prev_r, None), torch.cat([obs, prev_r], -1))
    assert network_input(obs, None, None, start) is obs
    scripted = torch.jit.script(network_input)
    assert torch.equal(scripted(obs, prev_a, prev_r, start.float()), x)
