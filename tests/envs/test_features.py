"""rpbt.envs.features: the previous action / reward features, against hand-computed one-hots, eager and scripted."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rpbt.envs.factory import space_info
from rpbt.envs.features import ActionFeatures, action_features, network_input
from tests.conftest import Learner, tiny_config

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


class StepLog:
    """Wraps a runner's step: the actions each step sent (P, N[, K]) and the rewards and episode ends it returned."""

    def __init__(self, runner):
        self.actions, self.rewards, self.dones = [], [], []
        step = runner.step

        def logged(actions):
            self.actions.append(actions.clone())
            result = step(actions)
            self.rewards.append(result.reward.clone())
            self.dones.append(result.done.clone())
            return result

        runner.step = logged


def _one_hot(actions: torch.Tensor, nvec) -> torch.Tensor:
    if nvec is None:
        return torch.nn.functional.one_hot(actions, 2).float()
    return torch.cat([torch.nn.functional.one_hot(actions[..., k], n).float() for k, n in enumerate(nvec)], -1)


@pytest.mark.parametrize("env_id", ["popgym-PositionOnlyCartPoleEasy-v0", "popgym-MineSweeperEasy-v0"])
def test_previous_action_and_reward_are_fed_stored_and_replayed(env_id):
    cfg = tiny_config(f"env.id={env_id}", "agent.num_steps=48", "agent.network.prev_action=true",
                      "agent.network.prev_reward=true")
    learner = Learner(cfg, [0, 1])
    policy = learner.policy
    log = StepLog(learner.runner)
    learner.collect()
    rollout = learner.collect()
    nvec = policy.nvec
    D, A = policy.obs_dim, policy.action_dim
    assert policy.input_dim == D + A + 1 and rollout.obs.shape[-1] == D + A + 1
    # What was fed at step t of the second rollout: the action and reward of global step T + t - 1, zero where an
    # episode starts.
    T = cfg.agent.num_steps
    fed_action = torch.stack([_one_hot(log.actions[T + t - 1], nvec) for t in range(T)], 1)  # (P, T, N, A)
    fed_reward = torch.stack([log.rewards[T + t - 1] for t in range(T)], 1).unsqueeze(-1)
    starts = rollout.episode_starts
    keep = (~starts).unsqueeze(-1).float()
    assert bool(starts[:, 1:].any()), "test needs an episode start inside the rollout"
    torch.testing.assert_close(rollout.obs[..., D:D + A], fed_action * keep)
    torch.testing.assert_close(rollout.obs[..., D + A:], fed_reward * keep)
    assert float(fed_action[starts].abs().sum()) > 0  # the zeroing at starts is the policy's doing
    # Replay from the stored states reproduces the log-probabilities and values of acting.
    with torch.no_grad():
        head, raws = policy.sequence(rollout.obs, rollout.initial_states, rollout.episode_starts)
        logp, _ = policy.log_prob_entropy(head, rollout.actions)
    assert float((logp - rollout.log_probs).abs().max()) < 1e-5
    assert float((policy.values_from_raw(raws) - rollout.values).abs().max()) < 1e-5
    if nvec is not None:
        assert rollout.actions.shape == (2, T, cfg.env.num_envs, len(nvec))
    # The previous inputs change what the policy does: zeroing them changes the head's output.
    zeroed = rollout.obs.clone()
    zeroed[..., D:] = 0.0
    with torch.no_grad():
        head0, _ = policy.sequence(zeroed, rollout.initial_states, rollout.episode_starts)
    assert float((head0 - head).abs().max()) > 1e-4
