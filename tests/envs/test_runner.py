"""EnvRunner.step's bookkeeping against the same Gymnasium environments stepped and counted by hand."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rpbt.envs.runner import CarriedState, EnvRunner
from rpbt.seeding import env_seeds
from tests.conftest import Learner, tiny_config


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


def test_carried_state_tensor_form_round_trips_and_declares_every_field():
    learner = Learner(tiny_config("pbt.population_size=3", "pbt.burn_in_max_steps=8"), [0, 1, 2])
    learner.collect()
    carried = learner.carried
    flat = carried.tensors()
    assert {"hidden.actor.h", "hidden.critic0.c", "next_obs", "episode_start", "running_return", "running_length",
            "history_obs", "history_start", "history_steps"} <= set(flat)
    for k, v in flat.items():
        assert v.shape[0] == 3, f"{k} lacks the member dimension"
    back = CarriedState.from_tensors({k: v.clone() for k, v in flat.items()})
    for k, v in back.tensors().items():
        assert torch.equal(v, flat[k]), k
    # every field of the dataclass is in the tensor form (a new field cannot be missed)
    import dataclasses

    names = {f.name for f in dataclasses.fields(CarriedState)} - {"hidden"}
    assert names <= set(flat)


def test_member_view_clone_set_and_reset():
    learner = Learner(tiny_config("pbt.population_size=3"), [0, 1, 2])
    learner.collect()
    carried = learner.carried
    before = {k: v.clone() for k, v in carried.tensors().items()}
    copy1 = carried.clone_member(1)
    copy1.running_return.fill_(123.0)
    assert torch.equal(carried.running_return, before["running_return"]), "a clone must not share storage"
    view2 = carried.member(2)
    view2.running_length.fill_(77)
    assert (carried.running_length[2] == 77).all() and torch.equal(carried.running_length[0],
                                                                    before["running_length"][0])
    carried.set_member(0, carried.clone_member(1))
    for k, v in carried.tensors().items():
        assert torch.equal(v[0], v[1]), k
    carried.reset_member(1)
    assert bool(carried.episode_start[1].all())
    assert all(float(h[1].abs().sum()) == 0 and float(c[1].abs().sum()) == 0 for h, c in carried.hidden.values())
    assert float(carried.running_return[1].abs().sum()) == 0
    assert (carried.episode_lengths()[1] == 0).all()
    with pytest.raises(ValueError, match="shape"):
        carried.set_member(0, carried.map(lambda t: t[:2]))


def test_runner_clone_steps_exactly_like_the_original():
    learner = Learner(tiny_config("pbt.population_size=2"), [0, 1])
    learner.collect()
    clone = learner.runner.clone_member(1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        actions = torch.randint(0, learner.policy.action_dim, (2, learner.runner.num_envs), generator=gen)
        a = learner.runner.step(actions)
        b = clone.step(actions[1:2])
        assert torch.equal(a.reward[1:2], b.reward) and torch.equal(a.done[1:2], b.done)
        assert torch.equal(learner.carried.next_obs[1:2], clone.carried.next_obs)
        assert torch.equal(learner.carried.running_return[1:2], clone.carried.running_return)
