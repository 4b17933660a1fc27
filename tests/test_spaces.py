"""Action and observation spaces: MultiDiscrete actions (independent categoricals), the action spec, and the previous
action and reward as inputs (fed while acting, stored in the rollout, replayed).

References are computed independently: ``torch.distributions`` for log-probabilities, entropies and KLs; one-hots
with ``torch.nn.functional.one_hot`` from the actions and rewards a wrapper around the runner's step saw.
"""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from rpbt.agent.distribution import ActionDistribution
from rpbt.agent.networks import kl_divergence as rpbt_kl
from rpbt.agent.networks import log_prob_entropy
from rpbt.agent.ppo import make_policy
from rpbt.envs.factory import EnvError, space_info
from rpbt.envs.features import ActionFeatures
from rpbt.evaluation.policy import evaluate_policy, load_member
from tests.conftest import TINY, Learner, tiny_config

NVEC = (8, 3, 5)


def _split(logits: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(logits, list(NVEC), dim=-1))


def test_multi_discrete_log_prob_entropy_and_kl_are_sums_over_independent_categoricals():
    g = torch.Generator().manual_seed(0)
    p_logits = torch.randn(2, 4, 3, sum(NVEC), generator=g)
    q_logits = torch.randn(2, 4, 3, sum(NVEC), generator=g)
    actions = torch.stack([torch.randint(n, (2, 4, 3), generator=g) for n in NVEC], -1)
    logp, entropy = log_prob_entropy(p_logits, actions, False, None, NVEC)
    kl = rpbt_kl(p_logits, q_logits, False, None, NVEC)
    parts_p, parts_q = _split(p_logits), _split(q_logits)
    ref_logp = sum(Categorical(logits=lp).log_prob(actions[..., k]) for k, lp in enumerate(parts_p))
    ref_ent = sum(Categorical(logits=lp).entropy() for lp in parts_p)
    ref_kl = sum(kl_divergence(Categorical(logits=lp), Categorical(logits=lq)) for lp, lq in zip(parts_p, parts_q))
    assert logp.shape == entropy.shape == kl.shape == (2, 4, 3)
    torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, ref_ent, atol=1e-5, rtol=0)
    torch.testing.assert_close(kl, ref_kl, atol=1e-5, rtol=0)


def test_multi_discrete_actions_are_per_component_inverse_cdf_samples_and_modes():
    cfg = tiny_config()
    policy = make_policy(cfg, [0, 1])
    policy.distribution = ActionDistribution.of(sum(NVEC), False, NVEC)  # the sampling code only reads this
    g = torch.Generator().manual_seed(1)
    head = torch.randn(2, 6, sum(NVEC), generator=g)
    noise = torch.rand(2, 6, len(NVEC), generator=g)
    sampled = policy.actions(head, noise)
    mode = policy.actions(head)
    assert sampled.shape == mode.shape == (2, 6, 3)
    for k, part in enumerate(_split(head)):
        probs = torch.softmax(part, -1).double()
        # the smallest index whose cumulative probability reaches the uniform draw
        ref = torch.searchsorted(probs.cumsum(-1), noise[..., k].double().unsqueeze(-1)).squeeze(-1)
        assert torch.equal(sampled[..., k], ref.clamp_max(NVEC[k] - 1))
        assert torch.equal(mode[..., k], part.argmax(-1))
    assert policy.draw_noise(6).shape == (2, 6, 3)


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


def test_sa_ppo_perturbs_only_the_observation_of_a_multi_discrete_policy_fed_previous_inputs():
    from rpbt.agent.adversary import SAPPO, make_obs_perturbation

    cfg = tiny_config("env.id=popgym-MineSweeperEasy-v0", "agent.network.prev_action=true",
                      "agent.network.prev_reward=true", "agent.adversarial.enabled=true",
                      "agent.adversarial.epsilon=0.5")
    learner = Learner(cfg, [0, 1])
    learner.train_update()
    rollout = learner.collect()
    policy = learner.policy
    idx = torch.arange(cfg.env.num_envs).repeat(2, 1)
    with torch.no_grad():
        head, _ = policy.sequence(rollout.obs, rollout.initial_states, rollout.episode_starts)
    out = SAPPO(cfg).losses(policy, rollout, idx, head)
    assert bool(torch.isfinite(out["loss"]).all()) and float(out["sa_ppo/robust_kl"].min()) > 0
    # Online: the hook's perturbation has the observation's width, and a zero radius changes nothing.
    seen = {}

    def spy(learner_, member, obs, states):
        seen.update(obs=obs.shape, prev=states["prev"].shape)
        return obs

    evaluate_policy(policy, 0, cfg.env, episodes=2, obs_perturbation=spy)
    assert seen == {"obs": (2, policy.obs_dim), "prev": (2, policy.input_dim - policy.obs_dim)}
    clean = evaluate_policy(policy, 0, cfg.env, episodes=2).returns
    zero = evaluate_policy(policy, 0, cfg.env, episodes=2, obs_perturbation=make_obs_perturbation("pgd", 0.0)).returns
    attacked = evaluate_policy(policy, 0, cfg.env, episodes=2,
                               obs_perturbation=make_obs_perturbation("pgd", 1.0, steps=2)).returns
    assert zero == clean and len(attacked) == 2
    learner.close()


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
