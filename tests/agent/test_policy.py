"""rpbt.agent.policy: one acting path. Collection, ``Policy.predict`` / ``action_distribution`` and the exported
actor compute what :meth:`PopulationPolicy.act` computes, for every kind of action space, previous inputs fed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rpbt.agent.policy import resolve_device
from rpbt.agent.ppo import collect
from rpbt.cli import main
from rpbt.config import ConfigError
from rpbt.envs.features import ActionFeatures
from tests.conftest import TINY, Learner, tiny_config
from tests.test_api import _policy_of

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
FULL = ("agent.vgs.enabled=true", "agent.vgs.warmup=0", "agent.critic.kind=categorical", "agent.critic.twin=true",
        "agent.adversarial.enabled=true", "agent.adversarial.steps=2", "agent.adversarial.epsilon=0.1")
PREV_MINESWEEPER = ("env.id=popgym-MineSweeperEasy-v0", "agent.network.prev_action=true",
                    "agent.network.prev_reward=true")

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


def _poison(learner: Learner, what: str) -> None:
    """Make every observation (or reward) of member 0 NaN, from the first step on."""
    runner = learner.runner
    step = runner.step
    if what == "obs":
        runner.carried.next_obs[0] = float("nan")

    def poisoned(actions):
        result = step(actions)
        if what == "obs":
            runner.carried.next_obs[0] = float("nan")
        else:
            result.reward[0] = float("nan")
        return result

    runner.step = poisoned


def _member_tensors(learner: Learner, member: int) -> dict[str, torch.Tensor]:
    out = {f"policy.{k}": v[member].detach().cpu().clone() for k, v in learner.policy.state_dict().items()}
    out.update({f"carried.{k}": v[member].detach().cpu().clone() for k, v in learner.carried.tensors().items()})
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("what", ["obs", "reward"])
@pytest.mark.parametrize("extra", [(), FULL, PREV_MINESWEEPER], ids=["plain", "vgs_categorical_twin_sappo",
                                                        "multi_discrete_prev_inputs"])
def test_a_non_finite_member_never_changes_another_members_tensors(device, what, extra):
    cfg = tiny_config("pbt.population_size=2", *extra)
    clean = Learner(cfg, [0, 1], device=torch.device(device))
    poisoned = Learner(cfg, [0, 1], device=torch.device(device))
    _poison(poisoned, what)
    for _ in range(2):
        clean.train_update()
        metrics = poisoned.train_update()
    assert not math.isfinite(float(metrics["train/loss"][0])), "the injection must reach member 0's loss"
    assert not all(torch.isfinite(p[0]).all() for p in poisoned.policy.parameters()), "member 0 must be poisoned"
    assert math.isfinite(float(metrics["train/loss"][1]))
    want, got = _member_tensors(clean, 1), _member_tensors(poisoned, 1)
    assert set(want) == set(got)
    for k in want:
        assert torch.equal(want[k], got[k]), f"member 1's {k} changed because member 0 went non-finite"


def test_device_setting_is_resolved_or_refused_clearly(capsys):
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="agent.device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="agent.device.*no CUDA"):
            resolve_device("cuda:0")
        assert main(["train", *TINY, "agent.device=cuda", "run.dir=/nonexistent/never"]) == 2
        err = capsys.readouterr().err
        assert "agent.device" in err and "Traceback" not in err
