"""rpbt.agent.policy: one acting path. Collection, ``Policy.predict`` / ``action_distribution`` and the exported
actor compute what :meth:`PopulationPolicy.act` computes, for every kind of action space, previous inputs fed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpbt.agent.ppo import collect
from rpbt.envs.features import ActionFeatures
from tests.conftest import Learner, tiny_config
from tests.test_api import _policy_of

PREV = ["agent.network.prev_action=true", "agent.network.prev_reward=true"]
CASES = {
    "discrete": [],
    "multi_discrete": ["env.id=popgym-MineSweeperEasy-v0"],
    "box": ["env.id=Pendulum-v1", "env.kwargs={max_episode_steps: 30}"],
}


@pytest.fixture(scope="module", params=sorted(CASES))
def learner(request):
    learner = Learner(tiny_config(*CASES[request.param], *PREV, "run.torch_threads=1"), [0, 1])
    learner.train_update()  # non-trivial weights, statistics, previous actions and rewards
    yield learner
    learner.close()


@torch.no_grad()
def test_collection_acts_through_act(learner):
    policy, carried = learner.policy, learner.runner.carried
    before = {k: (h.clone(), c.clone()) for k, (h, c) in carried.hidden.items()}
    raw, start = carried.next_obs.clone(), carried.episode_start.clone()
    prev_a, prev_r = carried.prev_action.clone(), carried.prev_reward.clone()
    rollout = collect(policy, learner.runner, num_steps=1)  # updates the statistics with `raw`, then acts
    out = policy.act(raw, before, prev_a, prev_r, start, values=True)
    assert torch.equal(rollout.obs[:, 0], out.inputs)
    assert torch.equal(rollout.log_probs[:, 0], policy.log_prob(out.head, rollout.actions[:, 0]))
    assert torch.equal(rollout.values[:, :, 0], policy.values_from_raw(out.values_raw))
    for name, (h, c) in out.state.items():
        assert torch.equal(h, carried.hidden[name][0]) and torch.equal(c, carried.hidden[name][1])
    actor_only = policy.act(raw, before, prev_a, prev_r, start)  # without values: the actor alone, same numbers
    assert torch.equal(actor_only.head, out.head) and list(actor_only.state) == ["actor"]
    assert actor_only.values_raw is None


@torch.no_grad()
def test_predict_and_the_exported_actor_equal_act(learner, tmp_path):
    policy = _policy_of(learner, member=1)
    single, spec = policy.learner, policy.action_spec
    B = 3
    rng = np.random.default_rng(0)
    env = policy.make_env()
    obs = np.stack([env.observation_space.sample() for _ in range(B)]).astype(np.float32).reshape(B, -1)
    taken = np.stack([env.action_space.sample() for _ in range(B)])
    env.close()
    L, H = policy.num_layers, policy.hidden_size
    h = rng.normal(size=(L, B, H)).astype(np.float32)
    c = rng.normal(size=(L, B, H)).astype(np.float32)
    reward = rng.normal(size=B).astype(np.float32)
    start = np.array([False, True, False])
    feats = ActionFeatures(spec)(torch.as_tensor(taken).reshape(B, -1) if spec.continuous else torch.as_tensor(taken))
    hidden = {"actor": (torch.as_tensor(h)[None], torch.as_tensor(c)[None])}
    out = single.act(torch.as_tensor(obs).view(1, B, -1), hidden,
                     feats.view(1, B, -1), torch.as_tensor(reward).view(1, B, 1), torch.as_tensor(start).view(1, B))

    state = policy.initial_state(B)
    state.h, state.c, state.prev_action = h, c, policy._action_features(taken)
    params, new_state = policy.action_distribution(obs, state, episode_start=start, prev_reward=reward)
    assert np.array_equal(params["mean" if spec.continuous else "logits"], out.head[0].numpy())
    assert np.array_equal(new_state.h, out.state["actor"][0][0].numpy())

    actor = torch.jit.load(str(policy.export(tmp_path / "actor.pt", "torchscript")))
    exported = actor(torch.as_tensor(obs), torch.as_tensor(h), torch.as_tensor(c), torch.as_tensor(start).float(),
                     prev_action=torch.as_tensor(taken), prev_reward=torch.as_tensor(reward))
    assert torch.allclose(exported[0], out.head[0], atol=1e-5, rtol=0)  # its own products: rounding differs
    assert torch.allclose(exported[-2], out.state["actor"][0][0], atol=1e-5, rtol=0)
