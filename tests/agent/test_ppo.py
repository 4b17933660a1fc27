"""The recurrent PPO learner: GAE, episode-start resets, replay, batching, per-member hyperparameters, Adam."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import Learner, tiny_config


def test_acting_resets_hidden_state_at_episode_start():
    learner = Learner(tiny_config("agent.num_steps=64"), [0, 1])
    rollout = learner.collect()
    policy = learner.policy
    starts = rollout.episode_starts
    found = 0
    for p in range(2):
        for n in range(learner.runner.num_envs):
            ts = [t for t in range(1, 64) if starts[p, t, n]]
            if not ts:
                continue
            t0 = ts[0]
            t1 = next((t for t in ts[1:]), 64)
            # Replay the episode from a zero state on its own observations: the log-probs of the actions taken
            # while acting must match, which holds only if acting reset the state at t0.
            obs = rollout.obs[:, t0:t1, n:n + 1]
            h0 = policy.actor.lstm.initial_state(1)
            feat, _ = policy.actor.sequence(obs, h0, torch.zeros(2, t1 - t0, 1))
            logits = policy.policy_head(feat)[p, :, 0]
            logp = torch.log_softmax(logits, -1).gather(-1, rollout.actions[p, t0:t1, n].unsqueeze(-1)).squeeze(-1)
            torch.testing.assert_close(logp, rollout.log_probs[p, t0:t1, n], atol=1e-5, rtol=0)
            found += 1
    assert found > 0, "no mid-rollout episode start: lengthen the rollout"


@pytest.mark.parametrize("env_id,cell", [("popgym-PositionOnlyCartPoleEasy-v0", "lstm"), ("Pendulum-v1", "lstm"),
                                         ("popgym-PositionOnlyCartPoleEasy-v0", "gru"), ("Pendulum-v1", "gru")])
def test_first_epoch_replay_reproduces_rollout_log_probs(env_id, cell):
    learner = Learner(tiny_config(f"env.id={env_id}", "agent.num_steps=48", f"agent.network.cell={cell}"), [0, 1, 2])
    learner.collect()  # advance so the rollout starts from nonzero carried states
    rollout = learner.collect()
    assert all(len(st) == (2 if cell == "lstm" else 1) for st in rollout.initial_states.values())
    assert any(st[0].abs().sum() > 0 for st in rollout.initial_states.values())
    policy = learner.policy
    head, raws = policy.sequence(rollout.obs, rollout.initial_states, rollout.episode_starts)
    from rpbt.agent.networks import log_prob_entropy

    log_std = policy.policy_head.log_std if policy.continuous else None
    logp, _ = log_prob_entropy(head, rollout.actions, policy.continuous, log_std)
    assert (logp - rollout.log_probs).abs().max() < 1e-5
    values = policy.values_from_raw(raws)
    assert (values - rollout.values).abs().max() < 1e-5


def _params(learner: Learner) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in learner.policy.named_parameters()}


def test_population_equals_members_trained_alone():
    cfg = tiny_config("agent.num_steps=32", "agent.num_minibatches=2", "env.num_envs=4")
    hps = [{"learning_rate": 1e-3}, {"learning_rate": 3e-3, "ent_coef": 0.0}, {"learning_rate": 5e-4}]
    batched = Learner(cfg, [0, 1, 2], hps)
    batched.train_update()
    together = _params(batched)
    for i in range(3):
        alone = Learner(cfg, [i], [hps[i]])
        alone.train_update()
        for name, p in _params(alone).items():
            assert (p[0] - together[name][i]).abs().max() < 1e-4, name
        assert torch.equal(alone.policy.env_steps, batched.policy.env_steps[i:i + 1])


def test_per_member_learning_rate_moves_only_that_member():
    cfg = tiny_config()
    a = Learner(cfg, [0, 1], [{"learning_rate": 1e-3}, {"learning_rate": 1e-3}])
    b = Learner(cfg, [0, 1], [{"learning_rate": 1e-2}, {"learning_rate": 1e-3}])
    start = _params(a)
    a.train_update()
    b.train_update()
    pa, pb = _params(a), _params(b)
    moved = False
    for name in pa:
        assert torch.equal(pa[name][1], pb[name][1]), f"member 1's {name} depends on member 0's learning rate"
        moved |= not torch.allclose(pa[name][0], pb[name][0])
        assert not torch.equal(start[name][0], pa[name][0]) or "log_std" in name
    assert moved


def test_hyperparameter_setters_take_effect_next_update_and_reject_unknown_names():
    learner = Learner(tiny_config(), [0, 1])
    learner.policy.set_hparams(1, {"clip_range": 0.05, "learning_rate": 7e-4})
    metrics = learner.train_update()
    assert metrics["train/clip_range"].tolist() == pytest.approx([0.2, 0.05])
    assert metrics["train/learning_rate"].tolist() == pytest.approx([1e-3, 7e-4])
    with pytest.raises(KeyError, match="learnig_rate"):
        learner.policy.set_hparams(0, {"learnig_rate": 1.0})


def test_metrics_use_sb3_keys_and_are_per_member():
    learner = Learner(tiny_config("agent.num_steps=64"), [0, 1])
    m = learner.train_update()
    for key in ["rollout/ep_rew_mean", "rollout/ep_len_mean", "train/value_loss", "train/policy_gradient_loss",
                "train/entropy_loss", "train/approx_kl", "train/clip_fraction", "train/explained_variance",
                "train/learning_rate", "time/fps", "train/value_mse"]:
        assert m[key].shape == (2,), key
    assert torch.isfinite(m["rollout/ep_rew_mean"]).all()
    assert (m["train/entropy_loss"] < 0).all()  # minus the entropy of a non-degenerate policy


# ------------------------------------------------------------------------------------------ segment replay


def _segment_learner(length=8, cell="lstm"):
    return Learner(tiny_config("agent.num_steps=32", f"agent.bptt_length={length}", "env.num_envs=2",
                               "agent.num_minibatches=2", f"agent.network.cell={cell}"), [0, 1])


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_first_epoch_segments_start_from_the_acting_states_and_reproduce_log_probs(cell):
    from rpbt.agent.networks import log_prob_entropy
    from rpbt.agent.rollout import take_envs, to_segments

    learner = _segment_learner(cell=cell)
    learner.collect()
    rollout = learner.collect()
    policy = learner.policy
    h = rollout.segment_states["actor"][0]
    assert h.shape[2] == 4 * 2  # K = 32 / 8 segments for each of the 2 environments
    assert torch.equal(h[:, :, :2], rollout.initial_states["actor"][0])  # segment 0 starts at the rollout's start
    idx = torch.arange(8).repeat(2, 1)
    states = {n: tuple(take_envs(s, idx) for s in rollout.segment_states[n]) for n in policy.state_names()}
    head, raws = policy.sequence(to_segments(rollout.obs, 8), states, to_segments(rollout.episode_starts, 8))
    logp, _ = log_prob_entropy(head, to_segments(rollout.actions, 8), False, None)
    assert float((logp - to_segments(rollout.log_probs, 8)).abs().max()) < 1e-5
    values = policy.values_from_raw(raws)
    assert float((values - torch.stack([to_segments(v, 8) for v in rollout.values])).abs().max()) < 1e-5


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_refreshed_segment_states_equal_stepping_the_current_weights_through_the_rollout(cell):
    from rpbt.agent.ppo import refresh_segment_states

    learner = _segment_learner(cell=cell)
    learner.collect()
    rollout = learner.collect()
    policy = learner.policy
    # Unchanged weights: the refresh reproduces the states recorded while acting.
    same = refresh_segment_states(policy, rollout, 8)
    for name, st in rollout.segment_states.items():
        assert len(st) == len(same[name]) == (2 if cell == "lstm" else 1)
        assert all(float((a - b).abs().max()) < 1e-5 for a, b in zip(same[name], st))
    learner.update(rollout)  # new weights
    fresh = refresh_segment_states(policy, rollout, 8)
    # Independent reference: the acting path, one step at a time over the stored observations, from the start.
    with torch.no_grad():
        states = {k: tuple(t.clone() for t in st) for k, st in rollout.initial_states.items()}
        for t in range(32):
            if t % 8 == 0:
                k = t // 8
                for name, st in states.items():
                    for j, part in enumerate(st):
                        torch.testing.assert_close(fresh[name][j][:, :, k * 2:(k + 1) * 2], part, atol=1e-5, rtol=0)
            _, _, states = policy.step(rollout.obs[:, t], states, rollout.episode_starts[:, t])
    moved = max(float((fresh[n][0] - rollout.segment_states[n][0]).abs().max()) for n in fresh)
    assert moved > 1e-4, "the update must have changed the states the refresh computes"


def test_segment_replay_trains_and_its_config_is_checked():
    from rpbt.config import ConfigError

    learner = _segment_learner()
    metrics = learner.train_update()
    assert torch.isfinite(metrics["train/loss"]).all()
    assert (metrics["train/approx_kl"] >= 0).all()
    with pytest.raises(ConfigError, match="bptt_length"):
        tiny_config("agent.num_steps=32", "agent.bptt_length=12")
    with pytest.raises(ConfigError, match="segments"):
        tiny_config("agent.num_steps=32", "agent.bptt_length=16", "env.num_envs=1", "agent.num_minibatches=4")
