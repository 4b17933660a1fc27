"""EnvRunner.step's bookkeeping against the same Gymnasium environments stepped and counted by hand."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rpbt.envs.runner import EnvRunner
from rpbt.seeding import env_seeds
from tests.conftest import tiny_config


def test_step_reports_the_episodes_returns_lengths_and_ends_of_plain_gymnasium_envs():
    # CartPole with a 20-step time limit and random actions: episodes end by termination and by truncation.
    cfg = tiny_config("env.id=CartPole-v1", "env.num_envs=3", "env.kwargs={max_episode_steps: 20}")
    P, N = 2, 3
    member_seeds = [11, 12]
    hidden = {"actor": (torch.zeros(P, 1, N, 4), torch.zeros(P, 1, N, 4))}
    runner = EnvRunner(cfg.env, member_seeds, hidden)
    envs = [gym.make("CartPole-v1", max_episode_steps=20) for _ in range(P * N)]
    seeds = [s for ms in member_seeds for s in env_seeds(ms, N)]
    obs = [e.reset(seed=s)[0] for e, s in zip(envs, seeds)]
    assert np.allclose(runner.carried.next_obs.view(P * N, -1).numpy(), np.stack(obs))
    ret, length = [0.0] * (P * N), [0] * (P * N)
    rng = np.random.default_rng(0)
    ends = {"terminated": 0, "truncated": 0}
    for _ in range(120):
        actions = rng.integers(0, 2, size=(P, N))
        result = runner.step(torch.as_tensor(actions))
        expected_finished, expected_final = [], np.zeros((P * N, 4), np.float32)
        for k, (env, a) in enumerate(zip(envs, actions.reshape(-1))):
            o, r, term, trunc, _ = env.step(int(a))
            ret[k] += r
            length[k] += 1
            assert bool(result.terminated.view(-1)[k]) == term
            assert bool(result.truncated.view(-1)[k]) == (trunc and not term)
            assert float(result.reward.view(-1)[k]) == r
            if term or trunc:
                ends["terminated" if term else "truncated"] += 1
                expected_finished.append((k // N, k % N, ret[k], length[k]))
                if trunc and not term:
                    expected_final[k] = o
                ret[k], length[k] = 0.0, 0
                o, _ = env.reset()
            assert np.allclose(runner.carried.next_obs.view(P * N, -1)[k].numpy(), o)
        assert result.finished == expected_finished
        assert torch.equal(runner.carried.episode_start, result.done)
        if result.final_obs is None:
            assert not result.truncated.any()
        else:
            assert np.allclose(result.final_obs.view(P * N, -1).numpy(), expected_final)
        assert runner.carried.running_return.view(-1).tolist() == ret
        assert runner.carried.running_length.view(-1).tolist() == length
    assert ends["terminated"] > 0 and ends["truncated"] > 0  # both ways of ending were exercised
    runner.close()
