"""The recurrent PPO learner: GAE, episode-start resets, replay, batching, per-member hyperparameters, Adam."""

from __future__ import annotations

import copy

import pytest
import torch

from rpbt.agent.networks import PopLSTM
from rpbt.agent.optim import PopulationAdam, clip_grad_norm_per_member
from rpbt.agent.rollout import compute_gae
from tests.conftest import Learner, tiny_config


def test_gae_hand_computed_with_truncation_termination_and_two_gammas():
    # One env, T = 5: steps 0-1 are an episode cut by a time limit at t=1 (value of the final observation 2.0),
    # steps 2-3 an episode that terminates at t=3, step 4 starts a third episode still running (last value 3.0).
    rewards = torch.ones(2, 5, 1)
    values = torch.tensor([0.5, 0.4, 0.3, 0.2, 0.1]).view(1, 5, 1).repeat(2, 1, 1)
    dones = torch.tensor([0, 1, 0, 1, 0], dtype=torch.bool).view(1, 5, 1).repeat(2, 1, 1)
    terminated = torch.tensor([0, 0, 0, 1, 0], dtype=torch.bool).view(1, 5, 1).repeat(2, 1, 1)
    trunc_values = torch.tensor([0, 2.0, 0, 0, 0]).view(1, 5, 1).repeat(2, 1, 1)
    last_values = torch.full((2, 1), 3.0)
    gamma = torch.tensor([0.9, 0.5])
    lam = torch.tensor([0.8, 1.0])
    adv, ret = compute_gae(rewards, values, dones, terminated, trunc_values, last_values, gamma, lam)
    # Member 0 (gamma 0.9, lambda 0.8), by hand:
    #   A4 = 1 + 0.9*3 - 0.1 = 3.6            (bootstrap on the rollout's last value)
    #   A3 = 1 + 0 - 0.2 = 0.8                (terminated: no bootstrap)
    #   A2 = (1 + 0.9*0.2 - 0.3) + 0.72*0.8 = 0.88 + 0.576 = 1.456
    #   A1 = 1 + 0.9*2.0 - 0.4 = 2.4          (truncated: bootstrap on V(final obs), recursion cut)
    #   A0 = (1 + 0.9*0.4 - 0.5) + 0.72*2.4 = 0.86 + 1.728 = 2.588
    # Member 1 (gamma 0.5, lambda 1.0):
    #   A4 = 1 + 1.5 - 0.1 = 2.4; A3 = 0.8; A2 = (1 + 0.1 - 0.3) + 0.5*0.8 = 1.2
    #   A1 = 1 + 1.0 - 0.4 = 1.6; A0 = (1 + 0.2 - 0.5) + 0.5*1.6 = 1.5
    expected = torch.tensor([[2.588, 2.4, 1.456, 0.8, 3.6], [1.5, 1.6, 1.2, 0.8, 2.4]]).unsqueeze(-1)
    torch.testing.assert_close(adv, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(ret, expected + values, atol=1e-6, rtol=0)


def test_lstm_step_and_sequence_reset_state_at_episode_starts():
    torch.manual_seed(0)
    lstm = PopLSTM(population=2, input_size=3, hidden_size=5, num_layers=2)
    lstm.reset_parameters([torch.Generator().manual_seed(i) for i in range(2)])
    x = torch.randn(2, 6, 4, 3)
    state = (torch.randn(2, 2, 4, 5), torch.randn(2, 2, 4, 5))
    zero = lstm.initial_state(4)
    # step: env 0 starts an episode, so its state is replaced by zero; the others keep theirs.
    start = torch.tensor([[True, False, False, False]] * 2)
    out, _ = lstm.step(x[:, 0], state, start)
    out_zero, _ = lstm.step(x[:, 0], zero, torch.zeros(2, 4))
    out_kept, _ = lstm.step(x[:, 0], state, torch.zeros(2, 4))
    torch.testing.assert_close(out[:, 0], out_zero[:, 0])
    torch.testing.assert_close(out[:, 1:], out_kept[:, 1:])
    assert not torch.allclose(out[:, 0], out_kept[:, 0])
    # sequence: an episode starting at t=3 equals a fresh replay of x[3:] from zero.
    starts = torch.zeros(2, 6, 4, dtype=torch.bool)
    starts[:, 3] = True
    seq, _ = lstm.sequence(x, state, starts)
    fresh, _ = lstm.sequence(x[:, 3:], zero, torch.zeros(2, 3, 4))
    torch.testing.assert_close(seq[:, 3:], fresh, atol=1e-6, rtol=0)
    # and the step-by-step acting path equals the replay path
    s = state
    outs = []
    for t in range(6):
        o, s = lstm.step(x[:, t], s, starts[:, t])
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), seq, atol=1e-6, rtol=0)


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


@pytest.mark.parametrize("env_id", ["popgym-PositionOnlyCartPoleEasy-v0", "Pendulum-v1"])
def test_first_epoch_replay_reproduces_rollout_log_probs(env_id):
    learner = Learner(tiny_config(f"env.id={env_id}", "agent.num_steps=48"), [0, 1, 2])
    learner.collect()  # advance so the rollout starts from nonzero carried states
    rollout = learner.collect()
    assert any(h.abs().sum() > 0 for h, _ in rollout.initial_states.values())
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


def test_population_adam_matches_torch_adam_per_member():
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3, 4, 5, generator=gen))
    b = torch.nn.Parameter(torch.randn(3, 5, generator=gen))
    lrs = torch.tensor([1e-3, 3e-2, 0.0])
    refs = [(torch.nn.Parameter(w[i].detach().clone()), torch.nn.Parameter(b[i].detach().clone())) for i in range(3)]
    ref_opts = [torch.optim.Adam(list(r), lr=float(lrs[i]), eps=1e-5) for i, r in enumerate(refs)]
    opt = PopulationAdam([("w", w), ("b", b)], population=3, eps=1e-5)
    for _step in range(6):
        gw, gb = torch.randn(3, 4, 5, generator=gen), torch.randn(3, 5, generator=gen)
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step(lrs)
        for i, (rw, rb) in enumerate(refs):
            rw.grad, rb.grad = gw[i].clone(), gb[i].clone()
            ref_opts[i].step()
    for i, (rw, rb) in enumerate(refs):
        torch.testing.assert_close(w[i], rw, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b[i], rb, atol=1e-6, rtol=1e-5)


def test_grad_clipping_is_per_member_like_torch():
    gen = torch.Generator().manual_seed(1)
    params = [torch.nn.Parameter(torch.zeros(2, 3, 3)), torch.nn.Parameter(torch.zeros(2, 3))]
    params[0].grad = torch.randn(2, 3, 3, generator=gen) * torch.tensor([10.0, 0.01]).view(2, 1, 1)
    params[1].grad = torch.randn(2, 3, generator=gen)
    refs = [[copy.deepcopy(p.grad[i]) for p in params] for i in range(2)]
    max_norm = torch.tensor([0.5, 100.0])
    clip_grad_norm_per_member(params, max_norm)
    for i in range(2):
        ps = [torch.nn.Parameter(torch.zeros_like(g)) for g in refs[i]]
        for p, g in zip(ps, refs[i]):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(ps, float(max_norm[i]))
        for p, ref in zip(params, ps):
            torch.testing.assert_close(p.grad[i], ref.grad)


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


def test_to_segments_layout_by_hand():
    from rpbt.agent.rollout import to_segments

    x = torch.arange(2 * 6 * 3).view(2, 6, 3)  # x[p, t, n] = 18p + 3t + n
    y = to_segments(x, 2)  # K = 3 segments of 2 steps per environment
    assert y.shape == (2, 2, 9)
    for p in range(2):
        for k in range(3):
            for n in range(3):
                for step in range(2):
                    assert int(y[p, step, k * 3 + n]) == 18 * p + 3 * (2 * k + step) + n
    assert torch.equal(to_segments(x, 6), x)


def _segment_learner(length=8):
    return Learner(tiny_config("agent.num_steps=32", f"agent.bptt_length={length}", "env.num_envs=2",
                               "agent.num_minibatches=2"), [0, 1])


def test_first_epoch_segments_start_from_the_acting_states_and_reproduce_log_probs():
    from rpbt.agent.networks import log_prob_entropy
    from rpbt.agent.rollout import take_envs, to_segments

    learner = _segment_learner()
    learner.collect()
    rollout = learner.collect()
    policy = learner.policy
    h, _ = rollout.segment_states["actor"]
    assert h.shape[2] == 4 * 2  # K = 32 / 8 segments for each of the 2 environments
    assert torch.equal(h[:, :, :2], rollout.initial_states["actor"][0])  # segment 0 starts at the rollout's start
    idx = torch.arange(8).repeat(2, 1)
    states = {n: tuple(take_envs(s, idx) for s in rollout.segment_states[n]) for n in policy.state_names()}
    head, raws = policy.sequence(to_segments(rollout.obs, 8), states, to_segments(rollout.episode_starts, 8))
    logp, _ = log_prob_entropy(head, to_segments(rollout.actions, 8), False, None)
    assert float((logp - to_segments(rollout.log_probs, 8)).abs().max()) < 1e-5
    values = policy.values_from_raw(raws)
    assert float((values - torch.stack([to_segments(v, 8) for v in rollout.values])).abs().max()) < 1e-5


def test_refreshed_segment_states_equal_stepping_the_current_weights_through_the_rollout():
    from rpbt.agent.ppo import refresh_segment_states

    learner = _segment_learner()
    learner.collect()
    rollout = learner.collect()
    policy = learner.policy
    # Unchanged weights: the refresh reproduces the states recorded while acting.
    same = refresh_segment_states(policy, rollout, 8)
    for name, (h, c) in rollout.segment_states.items():
        assert float((same[name][0] - h).abs().max()) < 1e-5 and float((same[name][1] - c).abs().max()) < 1e-5
    learner.update(rollout)  # new weights
    fresh = refresh_segment_states(policy, rollout, 8)
    # Independent reference: the acting path, one step at a time over the stored observations, from the start.
    with torch.no_grad():
        states = {k: (h.clone(), c.clone()) for k, (h, c) in rollout.initial_states.items()}
        for t in range(32):
            if t % 8 == 0:
                k = t // 8
                for name, (h, c) in states.items():
                    torch.testing.assert_close(fresh[name][0][:, :, k * 2:(k + 1) * 2], h, atol=1e-5, rtol=0)
                    torch.testing.assert_close(fresh[name][1][:, :, k * 2:(k + 1) * 2], c, atol=1e-5, rtol=0)
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
