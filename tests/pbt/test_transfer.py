"""Exploit as one transfer, and the hidden-state strategies (keep, zero, reset_episodes, burn_in).

The burn-in reference is computed independently of :mod:`rpbt.pbt.transfer`: a recorder around the runner's step
keeps every raw observation and episode-start flag the policy saw, and a fresh single-member policy holding the
donor's state (weights and observation normalizer) steps its networks one observation at a time from a zero state
(``PopulationPolicy.step``, the acting path, not the replay path that burn-in uses).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rpbt.agent.ppo import collect, make_policy, update
from rpbt.agent.rollout import compute_gae
from rpbt.checkpoint import hparam_key
from rpbt.config import HPARAM_NAMES
from rpbt.envs.runner import CarriedState, EnvRunner
from rpbt.pbt.transfer import burn_in_states, exploit
from tests.conftest import Learner, tiny_config


class Recorder:
    """Wraps a runner's step, keeping every raw observation (P, N, D) and episode-start flag (P, N) the policy saw."""

    def __init__(self, runner: EnvRunner):
        self.obs: list[torch.Tensor] = []
        self.starts: list[torch.Tensor] = []
        step = runner.step

        def recording(actions):
            self.obs.append(runner.carried.next_obs.clone())
            self.starts.append(runner.carried.episode_start.clone())
            return step(actions)

        runner.step = recording

    def prefix(self, carried: CarriedState, m: int, n: int) -> list[torch.Tensor]:
        """Raw observations of env (m, n)'s current episode; empty when its next step starts a new one."""
        if bool(carried.episode_start[m, n]):
            return []
        t0 = max(t for t, s in enumerate(self.starts) if bool(s[m, n]))
        return [o[m, n] for o in self.obs[t0:]]


def trained(cfg, updates: int, population: int = 3):
    learner = Learner(cfg, list(range(population)))
    rec = Recorder(learner.runner)
    for _ in range(updates):
        learner.train_update()
    return learner, rec


@torch.no_grad()
def reference_states(cfg, donor_state, prefixes, window=None):
    """States after stepping the donor's networks over each env's prefix from zero, one observation at a time.

    prefixes: per env a list of raw observations (D,). Returns {name: (h, c) or (h,)} each (L, N, H).
    """
    ref = make_policy(cfg, [0])
    ref.restore(0, donor_state)
    n_envs, dim = cfg.env.num_envs, ref.obs_dim
    out = {name: tuple(torch.zeros_like(t[0]) for t in st) for name, st in ref.initial_state(n_envs).items()}
    for n, seq in enumerate(prefixes):
        if window is not None:
            seq = seq[-window:]
        states = ref.initial_state(n_envs)
        for o in seq:
            x = torch.zeros(1, n_envs, dim)
            x[0, n] = o
            _, _, states = ref.step(ref.normalize_obs(x), states, torch.zeros(1, n_envs, dtype=torch.bool))
        for name, st in states.items():
            for j, t in enumerate(st):
                out[name][j][:, n] = t[0, :, n]
    return out


def explored(learner, donor, **changes):
    hp = learner.policy.get_hparams(donor)
    hp.update(changes)
    return hp


def states_of(learner):
    return {k: tuple(t.clone() for t in st) for k, st in learner.carried.hidden.items()}


def transfer(learner, recipient, donor_state, new_hparams, **kwargs):
    return exploit(learner.policy, learner.runner, recipient, donor_state, new_hparams, **kwargs)


# ------------------------------------------------------------------------------------------ burn_in


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("max_steps", [512, 5])
def test_burn_in_equals_fresh_forward_pass_of_new_weights_over_the_episode_prefix(max_steps, cell):
    # Two recurrent layers and twin critics: every carried state (actor, critic0, critic1) and layer is checked.
    cfg = tiny_config(f"pbt.burn_in_max_steps={max_steps}", "agent.network.lstm_num_layers=2",
                      "agent.critic.twin=true", f"agent.network.cell={cell}")
    learner, rec = trained(cfg, updates=3)
    donor, recipient = 0, 2
    donor_state = learner.policy.snapshot(donor)
    prefixes = [rec.prefix(learner.carried, recipient, n) for n in range(cfg.env.num_envs)]
    assert any(len(p) > 0 for p in prefixes), "test needs a running episode"
    window = max_steps if max_steps < 512 else None
    expected_truncated = sum(len(p) > max_steps for p in prefixes)
    if window is not None:
        assert expected_truncated > 0, "test needs an episode longer than burn_in_max_steps"
    stale = states_of(learner)

    m = transfer(learner, recipient, donor_state, explored(learner, donor, learning_rate=1e-3), strategy="burn_in")

    ref = reference_states(cfg, donor_state, prefixes, window)
    assert set(ref) == {"actor", "critic0", "critic1"}
    for name, state_ref in ref.items():
        state = learner.carried.hidden[name]
        assert len(state) == (2 if cell == "lstm" else 1)
        assert state[0].shape == (3, 2, cfg.env.num_envs, 16)
        for t, t_ref in zip(state, state_ref):
            assert float((t[recipient] - t_ref).abs().max()) < 1e-5, name
        # The stale states were different (the test would catch "burn-in did nothing").
        assert float((stale[name][0][recipient] - state_ref[0]).abs().max()) > 1e-3
        # Other members are untouched.
        for other in (0, 1):
            assert all(torch.equal(t[other], t_stale[other]) for t, t_stale in zip(state, stale[name]))
    assert m["pbt/burn_in_truncated"] == expected_truncated
    # Right after a burn-in restore the carried states are the burned-in ones: nothing to measure.
    assert m["pbt/hidden_state_drift"] == 0.0
    assert m["pbt/policy_kl_at_exploit"] == 0.0
    assert m["pbt/value_gap_at_exploit"] == 0.0


def test_burn_in_window_and_pending_episode_start_by_hand():
    # One member, three envs fed by hand for 12 steps: env 0 runs all 12 (window 8: its last 8 are replayed from
    # zero, and it is counted), env 1 starts an episode at t=7 that ends at the last step (its next step starts a
    # new episode: zero state, not counted), env 2 starts one at t=11 (a one-step prefix).
    cfg = tiny_config("env.num_envs=3", "pbt.burn_in_max_steps=8")
    learner = make_policy(cfg, [0])
    hist = CarriedState.initial(learner.initial_state(3), torch.zeros(1, 3, learner.obs_dim), history_steps=8)
    obs = torch.randn(12, 3, learner.obs_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a non-trivial normalizer, which burn-in must apply
        learner.obs_rms.mean.fill_(0.3)
        learner.obs_rms.var.fill_(2.0)
    for t in range(12):
        hist.record(obs[t].unsqueeze(0), torch.tensor([[t == 0, t in (0, 7), t in (0, 11)]]))
    hist.episode_start[:] = torch.tensor([[False, True, False]])
    burned, truncated = burn_in_states(learner, hist, 0)
    assert truncated == 1
    ref = reference_states(cfg, learner.snapshot(0), [list(obs[:, 0]), [], [obs[11, 2]]], window=8)
    for name, (h_ref, c_ref) in ref.items():
        h, c = burned[name]
        assert float((h - h_ref).abs().max()) < 1e-5 and float((c - c_ref).abs().max()) < 1e-5
        assert float(h_ref[:, 0].abs().max()) > 1e-3 and float(h_ref[:, 2].abs().max()) > 1e-3
        assert torch.count_nonzero(h[:, 1]) == 0 and torch.count_nonzero(c[:, 1]) == 0
    # The window holds each env's last min(length, 8) observations, oldest first, left-aligned.
    raw, kept = hist.history_window(0)
    assert hist.episode_lengths()[0].tolist() == [12, 5, 1] and kept.tolist() == [8, 5, 1]
    torch.testing.assert_close(raw[0], obs[4:, 0])
    torch.testing.assert_close(raw[1, :5], obs[7:, 1])
    torch.testing.assert_close(raw[2, 0], obs[11, 2])
    assert torch.count_nonzero(raw[1, 5:]) == 0


@pytest.mark.parametrize("chunks", [[5, 7], [3, 9, 4], [12], [1, 1, 10]])
def test_record_steps_equals_one_record_call_per_step(chunks):
    # A rollout recorded at once (what collect does) leaves the same ring, episode starts and step count as the
    # same steps recorded one by one, also when a chunk is longer than the window (W = 8) and wraps around it.
    P, N, D, W, T = 2, 3, 4, 8, sum(chunks)
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(P, T, N, D, generator=gen)
    prev = torch.randn(P, T, N, 2, generator=gen)
    starts = torch.rand(P, T, N, generator=gen) < 0.2
    starts[:, 0] = True
    hidden = {"actor": (torch.zeros(P, 1, N, 5), torch.zeros(P, 1, N, 5))}
    one = CarriedState.initial(hidden, torch.zeros(P, N, D), history_steps=W, prev_action_dim=1, prev_reward_dim=1)
    many = CarriedState.initial(hidden, torch.zeros(P, N, D), history_steps=W, prev_action_dim=1,
                                prev_reward_dim=1)
    for t in range(T):
        one.record(obs[:, t], starts[:, t], prev[:, t])
    at = 0
    for k in chunks:
        many.record_steps(obs[:, at:at + k], starts[:, at:at + k], prev[:, at:at + k])
        at += k
    for name in ("history_obs", "history_prev", "history_start", "history_steps"):
        assert torch.equal(getattr(one, name), getattr(many, name)), name
    assert int(many.history_steps[0]) == T and many.episode_lengths().min() >= 1
    with pytest.raises(ValueError, match="needs prev"):
        many.record_steps(obs[:, :2], starts[:, :2])


def test_burn_in_without_history_is_an_error_and_unknown_strategies_are_refused():
    cfg = tiny_config()
    policy = make_policy(cfg, [0, 1])
    runner = EnvRunner(cfg.env, policy.seeds, policy.initial_state(cfg.env.num_envs), history_steps=0)
    assert runner.carried.history_length == 0
    with pytest.raises(RuntimeError, match="no burn-in history"):
        exploit(policy, runner, 1, policy.snapshot(0), policy.get_hparams(0), strategy="burn_in")
    with pytest.raises(ValueError, match="pbt.hidden_state"):
        exploit(policy, runner, 1, policy.snapshot(0), {}, strategy="stale")
    runner.close()


# ------------------------------------------------------------------------------------------ keep, zero


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_keep_leaves_every_state_bit_identical_and_its_drift_is_measured(cell):
    cfg = tiny_config(f"agent.network.cell={cell}")
    learner, _ = trained(cfg, updates=2)
    before = states_of(learner)
    assert any(float(st[0][2].abs().max()) > 0 for st in before.values())
    m = transfer(learner, 2, learner.policy.snapshot(0), explored(learner, 0), strategy="keep")
    for name, st in learner.carried.hidden.items():
        assert len(st) == (2 if cell == "lstm" else 1)
        assert all(torch.equal(t, t_before) for t, t_before in zip(st, before[name]))
    assert m["pbt/hidden_state_drift"] > 0.0
    assert m["pbt/value_gap_at_exploit"] > 0.0
    assert m["pbt/policy_kl_at_exploit"] >= 0.0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_zero_keeps_the_batch_shape_and_zeroes_only_the_recipient(cell):
    cfg = tiny_config("agent.network.lstm_num_layers=2", "env.num_envs=3", f"agent.network.cell={cell}")
    learner, _ = trained(cfg, updates=2)
    before = states_of(learner)
    m = transfer(learner, 1, learner.policy.snapshot(0), explored(learner, 0), strategy="zero")
    for name, st in learner.carried.hidden.items():
        assert len(st) == (2 if cell == "lstm" else 1)
        for j, t in enumerate(st):
            assert t.shape == (3, 2, 3, 16)  # (P, num_layers, num_envs, hidden_size)
            assert torch.count_nonzero(t[1]) == 0
            for other in (0, 2):
                assert torch.equal(t[other], before[name][j][other])
    # Zero against the burned-in state: ||0 - b|| / ||b|| = 1 whenever an episode is running.
    assert m["pbt/hidden_state_drift"] == pytest.approx(1.0)
    assert m["pbt/value_gap_at_exploit"] > 0.0


# ------------------------------------------------------------------------------------------ reset_episodes


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_reset_episodes_resets_environments_after_the_cut_episodes_were_bootstrapped(cell):
    cfg = tiny_config("agent.update_epochs=1", f"agent.network.cell={cell}")
    learner = Learner(cfg, [0, 1, 2])
    policy, carried = learner.policy, learner.carried
    learner.train_update()
    rollout = learner.collect()
    r, donor, N, T = 1, 0, cfg.env.num_envs, cfg.agent.num_steps
    running = ~carried.episode_start[r]
    assert bool(running.any()), "test needs an episode running at the exploit"

    # The cut episodes' last transition is bootstrapped with V(s_T): last_values is the value of the observation
    # they would have continued from (under the weights and states of that rollout), and GAE's last advantage
    # uses it. The rollout is learned from before the exploit, as in a round.
    with torch.no_grad():
        _, raws, _ = policy.step(policy.normalize_obs(carried.next_obs), carried.hidden, carried.episode_start)
        v_next = policy.values_from_raw(raws).min(0).values
    torch.testing.assert_close(rollout.last_values[r], v_next[r])
    gamma, lam = policy.hparam("gamma").float(), policy.hparam("gae_lambda").float()
    values = rollout.values.min(0).values
    adv, _ = compute_gae(rollout.rewards, values, rollout.dones, rollout.terminated, rollout.truncation_values,
                         rollout.last_values, gamma, lam)
    for n in running.nonzero().flatten().tolist():
        assert not bool(rollout.dones[r, T - 1, n])
        by_hand = rollout.rewards[r, T - 1, n] + gamma[r] * v_next[r, n] - values[r, T - 1, n]
        torch.testing.assert_close(adv[r, T - 1, n], by_hand)
    learner.update(rollout)

    # What a reset of the recipient's environments gives (copies of them, reset the same way).
    copies = [copy.deepcopy(e) for e in learner.runner.envs.envs[r * N:(r + 1) * N]]
    expected = torch.as_tensor(np.stack([e.reset()[0] for e in copies]), dtype=torch.float32)
    others_obs = carried.next_obs.clone()
    donor_episodes = int(policy.episodes[donor])

    m = transfer(learner, r, policy.snapshot(donor), explored(learner, donor), strategy="reset_episodes")

    torch.testing.assert_close(carried.next_obs[r], expected)
    assert bool(carried.episode_start[r].all())
    for other in (0, 2):
        assert torch.equal(carried.next_obs[other], others_obs[other])
    # The cut episodes were not recorded as finished: the episode count is the donor's, untouched.
    assert int(policy.episodes[r]) == donor_episodes
    assert float(carried.running_return[r].abs().max()) == 0.0 and int(carried.running_length[r].max()) == 0
    for st in carried.hidden.values():
        assert len(st) == (2 if cell == "lstm" else 1) and all(torch.count_nonzero(t[r]) == 0 for t in st)
    assert carried.episode_lengths()[r].max() == 0
    assert m["pbt/hidden_state_drift"] == 0.0 and m["pbt/value_gap_at_exploit"] == 0.0

    # The next rollout starts every recipient env with a fresh episode from the reset observation.
    rec = Recorder(learner.runner)
    nxt = learner.collect()
    assert bool(nxt.episode_starts[r, 0].all())
    torch.testing.assert_close(rec.obs[0][r], expected)


# ------------------------------------------------------------------------------------------ the whole transfer


@pytest.mark.parametrize("optimizer_state", ["copy", "reset"])
def test_exploit_copies_every_field_but_the_explored_hparams_and_the_explored_lr_is_in_force(optimizer_state):
    cfg = tiny_config("agent.update_epochs=1", f"pbt.optimizer_state={optimizer_state}")
    learner, _ = trained(cfg, updates=2)
    donor, r = 0, 2
    donor_state = learner.policy.snapshot(donor)
    donor_lr = float(donor_state.tensors[hparam_key("learning_rate")])
    new = explored(learner, donor, learning_rate=donor_lr * 0.5, ent_coef=0.02)

    transfer(learner, r, donor_state, new, strategy="zero", optimizer_state=optimizer_state)

    got = learner.policy.snapshot(r)
    assert set(got.tensors) == set(donor_state.tensors)
    changed = {hparam_key("learning_rate"), hparam_key("ent_coef")}
    for key, value in donor_state.tensors.items():
        if key in changed:
            continue
        if optimizer_state == "reset" and key.startswith("optimizer."):
            assert torch.count_nonzero(got.tensors[key]) == 0, key
            continue
        assert torch.equal(got.tensors[key], value), key
    assert torch.equal(got.rng, donor_state.rng)
    assert got.hparams() == pytest.approx(new)
    assert set(HPARAM_NAMES) >= set(new)
    # Zero: every env of the recipient carries a zero state.
    for h, c in learner.carried.hidden.values():
        assert torch.count_nonzero(h[r]) == 0 and torch.count_nonzero(c[r]) == 0

    # The learning rate in force is the explored one: with the same rollout, gradients and Adam moments, one Adam
    # step moves the parameters in proportion to the learning rate. A twin learner given 3x the explored rate
    # must move exactly 3x as far; had the donor's rate come back with its state, the ratio would be 1.5.
    rollout = collect(learner.policy, learner.runner)
    policy = learner.policy
    twin = copy.deepcopy(policy)
    twin.set_hparams(r, {"learning_rate": 3 * new["learning_rate"]})
    before = {n: p[r].detach().clone() for n, p in policy.trainable()}
    metrics = update(policy, policy.optimizer, rollout)
    update(twin, twin.optimizer, rollout)
    assert float(metrics["train/learning_rate"][r]) == pytest.approx(new["learning_rate"])
    twin_params = dict(twin.trainable())
    moved = 0
    for n, p in policy.trainable():
        d1 = p[r].detach() - before[n]
        d3 = twin_params[n][r].detach() - before[n]
        torch.testing.assert_close(d3, 3 * d1, rtol=1e-3, atol=1e-7)
        moved += int(torch.count_nonzero(d1))
    assert moved > 0


def _weights(policy) -> set[str]:
    return {name for name, _ in policy.named_parameters()}


@pytest.mark.parametrize("optimizer_state", ["copy", "reset"])
def test_weights_only_moves_every_weight_and_the_recipient_keeps_the_rest_of_its_own_state(optimizer_state):
    # VGS on and twin critics, so gradient-scaler statistics and every critic's weights are in the state.
    cfg = tiny_config("agent.update_epochs=1", "agent.vgs.enabled=true", "agent.vgs.warmup=1",
                      "agent.critic.twin=true", "pbt.transfer=weights_only", f"pbt.optimizer_state={optimizer_state}")
    learner, _ = trained(cfg, updates=2)
    learner.policy.generators[2].manual_seed(12345)  # the recipient's stream differs from the donor's
    donor, r = 0, 2
    donor_state = learner.policy.snapshot(donor)
    before = learner.policy.snapshot(r)
    weights = _weights(learner.policy)
    assert weights and weights < set(donor_state.tensors)
    assert any(k.startswith("critics.1.") for k in weights) and any(k.startswith("policy_head.") for k in weights)
    kept = set(donor_state.tensors) - weights
    assert {"obs_rms.mean", "obs_rms.var", "return_normalizer.var", "vgs.step", "updates",
            "episode_returns"} <= kept and any(k.startswith("optimizer.exp_avg_sq") for k in kept)
    # The two members differ in what must stay (else the test would not see a copy).
    for key in ("obs_rms.mean", "return_normalizer.var"):
        assert not torch.equal(donor_state.tensors[key], before.tensors[key]), key
    donor_lr = float(donor_state.tensors[hparam_key("learning_rate")])
    new = explored(learner, donor, learning_rate=donor_lr * 0.5, ent_coef=0.02)

    measurements = transfer(learner, r, donor_state, new, optimizer_state=optimizer_state,
                            transfer="weights_only", rng_seed=777)

    got = learner.policy.snapshot(r)
    assert set(got.tensors) == set(donor_state.tensors)
    for key in weights:
        assert torch.equal(got.tensors[key], donor_state.tensors[key]), key
    changed = {hparam_key(name) for name in new}
    for key in kept - changed:
        if optimizer_state == "reset" and key.startswith("optimizer."):
            assert torch.count_nonzero(got.tensors[key]) == 0, key
            continue
        assert torch.equal(got.tensors[key], before.tensors[key]), key
    assert optimizer_state == "reset" or any(torch.count_nonzero(got.tensors[k]) > 0 for k in kept
                                             if k.startswith("optimizer.exp_avg"))
    assert got.hparams() == pytest.approx(new)
    assert torch.equal(got.rng, before.rng)  # its own generator: not the donor's, not re-seeded
    assert measurements["pbt/hidden_state_drift"] == 0.0  # burn-in (the default), with the recipient's statistics
    # The donor is untouched.
    after_donor = learner.policy.snapshot(donor)
    assert all(torch.equal(after_donor.tensors[k], v) for k, v in donor_state.tensors.items())


def test_weights_only_refuses_a_donor_state_without_the_weights_and_an_unknown_transfer():
    from rpbt.checkpoint import CheckpointError, MemberState

    cfg = tiny_config()
    learner, _ = trained(cfg, updates=1, population=2)
    state = learner.policy.snapshot(0)
    before = learner.policy.snapshot(1)
    partial = MemberState({k: v for k, v in state.tensors.items() if not k.startswith("policy_head.")}, state.rng)
    with pytest.raises(CheckpointError, match="policy_head"):
        transfer(learner, 1, partial, {}, transfer="weights_only")
    with pytest.raises(ValueError, match="pbt.transfer"):
        transfer(learner, 1, state, {}, transfer="optimizer_only")
    after = learner.policy.snapshot(1)
    assert all(torch.equal(after.tensors[k], v) for k, v in before.tensors.items())  # nothing written

@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_lstm_replay_agrees_with_the_trunks_own_sequence(cell):
    # burn_in_states replays PopLSTM (PopGRU) through torch.nn.LSTM's (GRU's) fused loop; the generic path (the
    # trunk's own ``sequence``, used for any other trunk class) must give the same final states for ragged lengths.
    from rpbt.pbt import transfer

    cfg = tiny_config("agent.network.lstm_num_layers=2", f"agent.network.cell={cell}")
    learner = make_policy(cfg, [0, 1, 2])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # nonzero biases: the GRU's b_hn sits inside the reset gate's product
        for name, p in learner.named_parameters():
            if "bias" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    obs = torch.randn(1, 2, 9, learner.obs_dim, generator=g)
    kept = torch.tensor([9, 4])
    obs[0, 1, 4:] = 0.0
    for name in learner.state_names():
        trunk = learner.trunk(name)
        fast = transfer._final_states_torch_lstm(trunk, 1, obs, kept)
        generic = transfer._final_states_generic(trunk, 1, obs, kept)
        assert len(fast) == len(generic) == (2 if cell == "lstm" else 1)
        assert fast[0].shape == (2, 2, 16)
        for a, b in zip(fast, generic):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_burn_in_draws_nothing_from_the_global_rng():
    cfg = tiny_config()
    learner, _ = trained(cfg, updates=1)
    state = torch.random.get_rng_state()
    transfer(learner, 1, learner.policy.snapshot(0), explored(learner, 0), strategy="burn_in")
    assert torch.equal(state, torch.random.get_rng_state())


# ------------------------------------------------------------------------------------------ previous action and reward


class InputRecorder(Recorder):
    """A :class:`Recorder` that also keeps the action each step sent and the reward it returned, so the previous
    action and reward fed with every observation can be rebuilt by hand."""

    def __init__(self, runner: EnvRunner):
        self.actions: list[torch.Tensor] = []
        self.rewards: list[torch.Tensor] = []
        super().__init__(runner)
        step = runner.step

        def recording(actions):
            self.actions.append(actions.clone())
            result = step(actions)
            self.rewards.append(result.reward.clone())
            return result

        runner.step = recording

    def prefix_inputs(self, carried: CarriedState, m: int, n: int, nvec) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(raw observation (D,), previous action one-hot and reward (A + 1,)) of env (m, n)'s current episode."""
        if bool(carried.episode_start[m, n]):
            return []
        t0 = max(t for t, s in enumerate(self.starts) if bool(s[m, n]))
        out = []
        for t in range(t0, len(self.obs)):
            if t == t0:  # an episode's first step: no previous action or reward
                width = sum(nvec) if nvec else 2
                prev = torch.zeros(width + 1)
            else:
                a = self.actions[t - 1][m, n]
                hot = torch.cat([torch.nn.functional.one_hot(a[k], size).float() for k, size in enumerate(nvec)]) \
                    if nvec else torch.nn.functional.one_hot(a, 2).float()
                prev = torch.cat([hot, self.rewards[t - 1][m, n].view(1)])
            out.append((self.obs[t][m, n], prev))
        return out


@torch.no_grad()
def reference_states_with_inputs(cfg, donor_state, prefixes, window=None):
    """As :func:`reference_states`, stepping the donor's networks one (observation, previous action, previous
    reward) at a time, the input assembled by hand: normalized observation, then the one-hot, then the reward."""
    ref = make_policy(cfg, [0])
    ref.restore(0, donor_state)
    n_envs = cfg.env.num_envs
    out = {name: tuple(torch.zeros_like(t[0]) for t in st) for name, st in ref.initial_state(n_envs).items()}
    for n, seq in enumerate(prefixes):
        if window is not None:
            seq = seq[-window:]
        states = ref.initial_state(n_envs)
        for raw, prev in seq:
            x = torch.zeros(1, n_envs, ref.obs_dim)
            x[0, n] = raw
            inp = torch.cat([ref.normalize_obs(x), torch.zeros(1, n_envs, prev.shape[0])], -1)
            inp[0, n, ref.obs_dim:] = prev
            _, _, states = ref.step(inp, states, torch.zeros(1, n_envs, dtype=torch.bool))
        for name, st in states.items():
            for j, t in enumerate(st):
                out[name][j][:, n] = t[0, :, n]
    return out


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("env_id,max_steps,device,cell", [
    ("popgym-PositionOnlyCartPoleEasy-v0", 512, "cpu", "lstm"),
    ("popgym-PositionOnlyCartPoleEasy-v0", 5, "cpu", "lstm"),
    ("popgym-MineSweeperEasy-v0", 512, "cpu", "lstm"),
    ("popgym-MineSweeperEasy-v0", 5, "cpu", "gru"),
    pytest.param("popgym-MineSweeperEasy-v0", 5, "cuda", "lstm", marks=CUDA),
    pytest.param("popgym-MineSweeperEasy-v0", 5, "cuda", "gru", marks=CUDA),
])
def test_burn_in_with_previous_action_and_reward_reproduces_the_carried_state(env_id, max_steps, device, cell):
    cfg = tiny_config(f"env.id={env_id}", f"pbt.burn_in_max_steps={max_steps}", "agent.network.prev_action=true",
                      "agent.network.prev_reward=true", "agent.critic.twin=true", "agent.num_steps=32",
                      f"agent.network.cell={cell}")
    learner = Learner(cfg, [0, 1, 2], device=torch.device(device))
    rec = InputRecorder(learner.runner)
    for _ in range(3):
        learner.train_update()
    policy = learner.policy
    nvec = policy.nvec
    recipient = 2
    prefixes = [rec.prefix_inputs(learner.carried, recipient, n, nvec) for n in range(cfg.env.num_envs)]
    assert any(len(p) > 1 for p in prefixes), "test needs a running episode past its first step"
    window = max_steps if max_steps < 512 else None
    if window is not None:
        assert any(len(p) > max_steps for p in prefixes), "test needs an episode longer than the window"

    # Exploit: burn-in under the donor's weights equals stepping them one (observation, previous action, previous
    # reward) at a time over each running episode, from zero.
    donor_state = policy.snapshot(0)
    stale = states_of(learner)
    m = transfer(learner, recipient, donor_state, explored(learner, 0), strategy="burn_in")
    ref = reference_states_with_inputs(cfg, donor_state, prefixes, window)
    for name, state_ref in ref.items():
        for t, t_ref in zip(learner.carried.hidden[name], state_ref):
            assert float((t.cpu()[recipient] - t_ref).abs().max()) < 1e-5, name
        assert float((stale[name][0][recipient].cpu() - state_ref[0]).abs().max()) > 1e-3
    assert m["pbt/hidden_state_drift"] == 0.0 and m["pbt/policy_kl_at_exploit"] == 0.0
    # The previous inputs matter: the same prefixes with them zeroed give other states.
    zeroed = [[(raw, torch.zeros_like(prev)) for raw, prev in p] for p in prefixes]
    ref0 = reference_states_with_inputs(cfg, donor_state, zeroed, window)
    assert float((ref0["actor"][0] - ref["actor"][0]).abs().max()) > 1e-4


@pytest.mark.parametrize("strategy", ["burn_in", "keep", "zero", "reset_episodes"])
def test_every_exploit_measures_the_stale_state_against_the_burned_in_one(strategy):
    from rpbt.pbt.transfer import exploit
    from tests.conftest import Learner

    cfg = tiny_config()
    learner = Learner(cfg, [0, 1, 2])
    for _ in range(2):
        learner.train_update()
    donor = learner.policy.snapshot(0)
    m = exploit(learner.policy, learner.runner, 2, donor, learner.policy.get_hparams(0), strategy=strategy)
    assert {"pbt/stale_state_drift", "pbt/stale_policy_kl_at_exploit", "pbt/stale_value_gap_at_exploit"} <= set(m)
    # the recipient's own states were computed by other weights: burn-in corrects a real drift
    assert m["pbt/stale_state_drift"] > 0.0 and m["pbt/stale_value_gap_at_exploit"] > 0.0
    if strategy == "burn_in":
        assert m["pbt/hidden_state_drift"] == 0.0
    if strategy == "keep":  # keep leaves the stale state: both comparisons are the same one
        assert m["pbt/hidden_state_drift"] == pytest.approx(m["pbt/stale_state_drift"])
    learner.close()


# ------------------------------------------------------------------------------------------ an independent reference


def _np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_trunk_states(member_state, prefix, name, cell, num_layers, obs_clip):
    """The state of trunk ``name`` after ``prefix`` (a list of raw observations (D,)) from zero, in NumPy float64
    from the member state's tensors alone: observation normalization, the tanh MLP encoder, then the cell's
    equations as the PyTorch documentation gives them (LSTM gates i, f, g, o; GRU gates r, z, n with
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))). Returns a tuple of (L, H) arrays: (h, c) or (h,)."""
    t = {k: v.double().numpy() for k, v in member_state.tensors.items()}
    mean, var = t["obs_rms.mean"], t["obs_rms.var"]
    prefix_key = "actor" if name == "actor" else f"critics.{name[len('critic'):]}.trunk"
    enc = []
    k = 0
    while f"{prefix_key}.encoder.layers.{k}.weight" in t:
        enc.append((t[f"{prefix_key}.encoder.layers.{k}.weight"], t[f"{prefix_key}.encoder.layers.{k}.bias"]))
        k += 1
    H = t[f"{prefix_key}.{cell}.weight_hh.0"].shape[0]
    h = np.zeros((num_layers, H))
    c = np.zeros((num_layers, H))
    for raw in prefix:
        x = np.clip((raw.double().numpy() - mean) / np.sqrt(var + 1e-8), -obs_clip, obs_clip)
        for w, b in enc:
            x = np.tanh(x @ w + b)
        for layer in range(num_layers):
            w_ih, w_hh = t[f"{prefix_key}.{cell}.weight_ih.{layer}"], t[f"{prefix_key}.{cell}.weight_hh.{layer}"]
            if cell == "lstm":
                z = x @ w_ih + h[layer] @ w_hh + t[f"{prefix_key}.lstm.bias.{layer}"]
                i, f, g, o = np.split(z, 4)
                c[layer] = _np_sigmoid(f) * c[layer] + _np_sigmoid(i) * np.tanh(g)
                h[layer] = _np_sigmoid(o) * np.tanh(c[layer])
            else:
                gi = x @ w_ih + t[f"{prefix_key}.gru.bias_ih.{layer}"]
                gh = h[layer] @ w_hh + t[f"{prefix_key}.gru.bias_hh.{layer}"]
                r = _np_sigmoid(gi[:H] + gh[:H])
                zz = _np_sigmoid(gi[H:2 * H] + gh[H:2 * H])
                n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
                h[layer] = (1 - zz) * n + zz * h[layer]
            x = h[layer]
    return (h, c) if cell == "lstm" else (h,)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_burn_in_equals_an_independent_numpy_implementation(cell):
    cfg = tiny_config("agent.network.lstm_num_layers=2", f"agent.network.cell={cell}", "pbt.burn_in_max_steps=512")
    learner, rec = trained(cfg, updates=2)
    donor, recipient = 0, 2
    donor_state = learner.policy.snapshot(donor)
    prefixes = [rec.prefix(learner.carried, recipient, n) for n in range(cfg.env.num_envs)]
    assert any(len(p) > 3 for p in prefixes), "test needs a running episode"
    transfer(learner, recipient, donor_state, explored(learner, donor), strategy="burn_in")
    checked = 0
    for name, state in learner.carried.hidden.items():
        assert len(state) == (2 if cell == "lstm" else 1)
        for n, prefix in enumerate(prefixes):
            expected = numpy_trunk_states(donor_state, prefix, name, cell, 2, cfg.agent.obs_clip)
            for t, ref in zip(state, expected):
                got = t[recipient][:, n].double().numpy()
                assert np.abs(got - ref).max() < 1e-5, (name, n)
            checked += len(prefix) > 0
    assert checked > 0
