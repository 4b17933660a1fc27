"""The critic inside the learner: twin-critic minimum, value clipping per head kind, training with every kind,
exploit moving return-normalizer and gradient-scaler statistics, VGS metrics.

The pure distributional functions are tested in test_distributional.py and the scaler's formula in test_vgs.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rpbt.agent.ppo as ppo_module
from rpbt.agent.critic import ValueHead
from rpbt.agent.policy import PopulationPolicy
from rpbt.checkpoint import MemberState
from rpbt.pbt.transfer import exploit
from tests.conftest import Learner, tiny_config

KINDS = ["scalar", "quantile", "categorical"]


# --------------------------------------------------------------------------------------------------- helpers


def _independent_mean(head: ValueHead, raw: torch.Tensor) -> torch.Tensor:
    """The head's mean computed here, not by ValueHead.value."""
    if head.kind == "scalar":
        return raw[..., 0]
    if head.kind == "quantile":
        return raw.sum(-1) / raw.shape[-1]
    probs = raw.exp() / raw.exp().sum(-1, keepdim=True)
    return (probs * head.support).sum(-1)


def _head(kind: str, **kw) -> ValueHead:
    head = ValueHead(1, 3, kind, **kw)
    head.reset_parameters([torch.Generator().manual_seed(0)])
    return head


def _two_hot_np(x: float, atoms: np.ndarray) -> np.ndarray:
    """Reference projection of one scalar onto sorted atoms, written as a loop."""
    out = np.zeros(len(atoms))
    x = min(max(x, atoms[0]), atoms[-1])
    for k in range(len(atoms) - 1):
        if atoms[k] <= x <= atoms[k + 1]:
            w = (x - atoms[k]) / (atoms[k + 1] - atoms[k])
            out[k] += 1 - w
            out[k + 1] += w
            return out
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------- twin critics


def test_twin_critic_rollout_truncation_and_last_values_are_the_min_of_critics_evaluated_separately(monkeypatch):
    # CartPole cut at 5 steps: several time-limit truncations inside a 16-step rollout. Observation normalization
    # off so a final observation is fed to the critics exactly as the environment returned it.
    cfg = tiny_config("env.id=CartPole-v1", "env.kwargs={max_episode_steps: 5}", "agent.critic.twin=true",
                      "agent.normalize_observations=false")
    learner = Learner(cfg, [0, 1])
    policy = learner.policy
    learner.train_update()  # return scale moves away from 1, so the conversion to return units is exercised
    scale = policy.return_normalizer.scale.float()
    assert not torch.allclose(scale, torch.ones_like(scale))

    record = []
    env_step = learner.runner.envs.step

    def recording_step(actions):
        out = env_step(actions)
        record.append((np.asarray(out[2]), np.asarray(out[3]), out[4].get("final_obs")))
        return out

    monkeypatch.setattr(learner.runner.envs, "step", recording_step)
    rollout = learner.collect()
    P, T, N, D = rollout.obs.shape
    assert rollout.values.shape == (2, P, T, N)

    per_critic, per_critic_trunc, per_critic_last = [], [], []
    with torch.no_grad():
        for k, critic in enumerate(policy.critics):
            h, c = (s.clone() for s in rollout.initial_states[f"critic{k}"])
            values = torch.zeros(P, T, N)
            trunc_values = torch.zeros(P, T, N)
            for t in range(T):
                feat, (h, c) = critic.trunk.step(rollout.obs[:, t], (h, c), rollout.episode_starts[:, t])
                values[:, t] = _independent_mean(critic.head, critic.head(feat)) * scale.view(P, 1)
                term, trunc, final_obs = record[t]
                cut = torch.as_tensor(trunc & ~term).view(P, N)
                if cut.any():
                    final = torch.as_tensor(np.stack([np.asarray(final_obs[i], np.float32) if cut.view(-1)[i]
                                                      else np.zeros(D, np.float32) for i in range(P * N)]))
                    f_feat, _ = critic.trunk.step(final.view(P, N, D), (h, c), torch.zeros(P, N, dtype=torch.bool))
                    v = _independent_mean(critic.head, critic.head(f_feat)) * scale.view(P, 1)
                    trunc_values[:, t] = torch.where(cut, v, torch.zeros_like(v))
            feat, _ = critic.trunk.step(learner.carried.next_obs, (h, c), learner.carried.episode_start)
            last = _independent_mean(critic.head, critic.head(feat)) * scale.view(P, 1)
            per_critic.append(values)
            per_critic_trunc.append(trunc_values)
            per_critic_last.append(last)

    assert sum(int((torch.as_tensor(tr) & ~torch.as_tensor(te)).sum()) for te, tr, _ in record) >= 4
    for k in range(2):
        torch.testing.assert_close(rollout.values[k], per_critic[k], atol=1e-5, rtol=1e-5)
    v_min = torch.minimum(per_critic[0], per_critic[1])
    # the two critics really differ, each being the smaller one somewhere (else "min" would be untested)
    assert (per_critic[0] < per_critic[1]).any() and (per_critic[1] < per_critic[0]).any()
    torch.testing.assert_close(rollout.truncation_values, torch.minimum(*per_critic_trunc), atol=1e-5, rtol=1e-5)
    assert (rollout.truncation_values != 0).sum() >= 4
    torch.testing.assert_close(rollout.last_values, torch.minimum(*per_critic_last), atol=1e-5, rtol=1e-5)

    # GAE is computed on the minimum of the two critics
    seen = {}
    gae = ppo_module.compute_gae

    def spy(rewards, values, dones, terminated, truncation_values, last_values, gamma, lam):
        seen.update(values=values.clone(), trunc=truncation_values.clone(), last=last_values.clone())
        return gae(rewards, values, dones, terminated, truncation_values, last_values, gamma, lam)

    monkeypatch.setattr(ppo_module, "compute_gae", spy)
    learner.update(rollout)
    torch.testing.assert_close(seen["values"], v_min, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen["trunc"], torch.minimum(*per_critic_trunc), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen["last"], torch.minimum(*per_critic_last), atol=1e-5, rtol=1e-5)


def test_twin_critics_have_their_own_encoder_and_lstm_and_both_learn():
    learner = Learner(tiny_config("agent.critic.twin=true"), [0])
    assert learner.policy.state_names() == ["actor", "critic0", "critic1"]
    before = {k: v.clone() for k, v in learner.policy.state_dict().items() if k.startswith("critics.")}
    names = {k.split(".", 2)[2] for k in before}
    for name in names:  # same structure, different initial weights
        a, b = before["critics.0." + name], before["critics.1." + name]
        assert a.shape == b.shape
        if "bias" not in name:
            assert not torch.equal(a, b), name
    learner.train_update()
    after = learner.policy.state_dict()
    for k in ["critics.0.trunk.lstm.weight_hh.0", "critics.1.trunk.lstm.weight_hh.0", "critics.0.head.linear.weight",
              "critics.1.head.linear.weight"]:
        assert not torch.equal(before[k], after[k]), k


# --------------------------------------------------------------------------------------------------- value clipping


def test_scalar_value_clipping_hand_computed():
    head = _head("scalar")
    raw = torch.tensor([[[2.0], [2.0], [1.1]]], requires_grad=True)  # (P=1, B=3, K=1)
    old = torch.tensor([[1.0, 1.0, 1.0]])
    target = torch.tensor([[0.0, 3.0, 3.0]])
    loss = head.loss(raw, target, old, clip_range_vf=0.5)
    # sample 0: unclipped (2-0)^2 = 4, clipped (1.5-0)^2 = 2.25 -> 4
    # sample 1: unclipped (2-3)^2 = 1, clipped (1.5-3)^2 = 2.25 -> 2.25 (no gradient: the clipped value is constant)
    # sample 2: inside the range: both (1.1-3)^2 = 3.61
    torch.testing.assert_close(loss, torch.tensor([[4.0, 2.25, 3.61]]))
    loss.sum().backward()
    torch.testing.assert_close(raw.grad[..., 0], torch.tensor([[4.0, 0.0, -3.8]]))
    torch.testing.assert_close(head.loss(raw, target, old, None), torch.tensor([[4.0, 1.0, 3.61]]))


def test_quantile_value_clipping_shifts_every_quantile_hand_computed():
    head = _head("quantile", num_quantiles=2)  # tau = 0.25, 0.75; kappa = 1
    raw = torch.tensor([[[1.0, 3.0], [1.0, 3.0]]], requires_grad=True)  # mean 2
    old = torch.tensor([[1.0, 1.0]])  # clip 0.5: the clipped mean is 1.5, every quantile moves by -0.5
    target = torch.tensor([[0.0, 3.0]])
    loss = head.loss(raw, target, old, clip_range_vf=0.5)
    # target 0: unclipped u = (-1, -3): 0.75 * 0.5 + 0.25 * 2.5 = 1.0;
    #           shifted (0.5, 2.5), u = (-0.5, -2.5): 0.75 * 0.125 + 0.25 * 2.0 = 0.59375 -> 1.0
    # target 3: unclipped u = (2, 0): 0.25 * 1.5 + 0 = 0.375;
    #           shifted u = (2.5, 0.5): 0.25 * 2.0 + 0.75 * 0.125 = 0.59375 -> 0.59375
    torch.testing.assert_close(loss, torch.tensor([[1.0, 0.59375]]))
    loss.sum().backward()
    # where the clipped loss wins, moving every quantile together changes nothing: gradients sum to zero
    assert raw.grad[0, 1].sum().abs() < 1e-6
    assert raw.grad[0, 0].sum().abs() > 0.1
    # inside the clip range the loss is the unclipped one
    inside = head.loss(raw.detach(), target, torch.tensor([[1.8, 1.8]]), clip_range_vf=0.5)
    torch.testing.assert_close(inside, head.unclipped_loss(raw.detach(), target))


def test_categorical_shift_moves_the_mean_by_exactly_delta_inside_the_support():
    head = _head("categorical", num_atoms=21, v_min=-5.0, v_max=5.0)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 64, 21, generator=gen)
    logits[..., :5] = -1e4  # no mass within 2.5 of either edge: any |delta| <= 2.5 keeps every mass inside
    logits[..., -5:] = -1e4
    delta = (torch.rand(1, 64, generator=gen) - 0.5) * 5.0
    moved = head.shift(logits, delta)
    probs = torch.softmax(moved, -1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 64), atol=1e-5, rtol=0)
    torch.testing.assert_close(head.value(moved), head.value(logits) + delta, atol=1e-4, rtol=0)
    # an integer number of atom spacings moves the distribution rigidly
    rigid = torch.softmax(head.shift(logits, torch.full((1, 64), 1.0)), -1)
    torch.testing.assert_close(rigid[..., 2:], torch.softmax(logits, -1)[..., :-2], atol=1e-6, rtol=0)
    # outside the support the mass is clipped to the edge atom: the mean moves less than delta
    full = torch.zeros(1, 1, 21)
    assert head.value(head.shift(full, torch.tensor([[4.0]]))).item() < head.value(full).item() + 4.0 - 0.5


def test_categorical_value_clipping_against_a_loop_implementation():
    head = _head("categorical", num_atoms=5, v_min=-2.0, v_max=2.0)
    atoms = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    logits = torch.tensor([[[-30.0, 0.2, 1.5, 0.3, -30.0], [-30.0, 0.2, 1.5, 0.3, -30.0], [0.0, 0.0, 0.0, 0.0, 0.0]]])
    old = torch.tensor([[-0.6, 0.7, 0.0]])
    target = torch.tensor([[0.9, 0.9, 0.4]])  # sample 0 moves away from it (clipped wins), sample 1 towards it
    clip = 0.25
    loss = head.loss(logits, target, old, clip_range_vf=clip)

    expected = []
    for i in range(3):
        p = np.exp(logits[0, i].double().numpy())
        p /= p.sum()
        mean = float((p * atoms).sum())
        delta = float(np.clip(mean - old[0, i], -clip, clip)) - (mean - float(old[0, i]))
        shifted = sum(p[j] * _two_hot_np(atoms[j] + delta, atoms) for j in range(5))
        tgt = _two_hot_np(float(target[0, i]), atoms)
        unclipped = -(tgt * np.log(p)).sum()
        clipped = -(tgt * np.log(np.maximum(shifted, 1e-8) / np.maximum(shifted, 1e-8).sum())).sum()
        expected.append(max(unclipped, clipped))
        if i < 2:  # the mass sits on the inner atoms, so the shifted mean is the clipped mean
            assert abs((shifted * atoms).sum() - (float(old[0, i]) + np.clip(mean - float(old[0, i]), -clip, clip))) \
                < 1e-6
    torch.testing.assert_close(loss, torch.tensor([expected], dtype=torch.float32), atol=1e-5, rtol=1e-5)
    # both branches of the max occur in this example (else the test would not see the clipped loss)
    plain = head.unclipped_loss(logits, target)
    assert (loss > plain + 1e-4).any() and torch.isclose(loss, plain).any()


@pytest.mark.parametrize("kind", KINDS)
def test_clipping_reference_is_the_heads_output_at_collection_even_after_the_return_scale_changed(kind, monkeypatch):
    # Before any weight change (first minibatch of the first epoch) the replayed mean equals the clipping
    # reference, although the return normalizer's scale changes inside learn().
    cfg = tiny_config(f"agent.critic.kind={kind}", "agent.clip_range_vf=0.2")
    learner = Learner(cfg, [0, 1])
    learner.train_update()
    calls = []
    head = learner.policy.critics[0].head
    original = head.loss

    def spy(raw, target, old_value, clip_range_vf):
        calls.append((head.value(raw).detach(), old_value.clone(), clip_range_vf))
        return original(raw, target, old_value, clip_range_vf)

    monkeypatch.setattr(head, "loss", spy)
    scale_before = learner.policy.return_normalizer.scale.clone()
    learner.train_update()
    assert not torch.allclose(learner.policy.return_normalizer.scale, scale_before)
    value, old, clip = calls[0]
    assert clip == pytest.approx(0.2)
    torch.testing.assert_close(value, old, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("twin", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_learner_trains_with_every_head_kind(kind, twin, monkeypatch):
    cfg = tiny_config(f"agent.critic.kind={kind}", f"agent.critic.twin={str(twin).lower()}",
                      "agent.clip_range_vf=0.5", "agent.critic.cvar_alpha=0.25", "agent.num_steps=32")
    learner = Learner(cfg, [0, 1])
    policy = learner.policy
    # record each head's CVaR and mean on the same predictions the learner measures
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for k, critic in enumerate(policy.critics):
        original = critic.head.cvar

        def spy(raw, alpha, _k=k, _head=critic.head, _orig=original):
            out = _orig(raw, alpha)
            seen.setdefault(_k, []).append((out.detach().clone(), _head.value(raw).detach().clone()))
            return out

        monkeypatch.setattr(critic.head, "cvar", spy)
    weights = policy.critics[0].head.linear.weight.clone()
    for _ in range(3):
        seen.clear()
        m = learner.train_update()
        for key in ["train/value_loss", "train/value_mse", "train/value_cvar", "train/loss"]:
            assert key in m and m[key].shape == (2,), key
            assert torch.isfinite(m[key]).all(), key
        assert (m["train/value_loss"] >= 0).all() and (m["train/value_mse"] >= 0).all()
        for k in seen:
            for cvar, mean in seen[k]:
                assert (cvar <= mean + 1e-5).all()  # CVaR never exceeds the mean, per sample
                if kind == "scalar":
                    torch.testing.assert_close(cvar, mean)
        # the metric is the smaller critic's batch-mean CVaR in return units
        scale = policy.return_normalizer.scale.double()
        per_critic = [torch.stack([c.double().mean((1, 2)) for c, _ in seen[k]]).mean(0) for k in sorted(seen)]
        means = [torch.stack([v.double().mean((1, 2)) for _, v in seen[k]]).mean(0) for k in sorted(seen)]
        assert len(per_critic) == (2 if twin else 1)
        assert (m["train/value_cvar"] <= torch.stack(means).min(0).values * scale + 1e-5).all()
        if not twin:  # one minibatch per epoch: the metric is the mean of the recorded CVaRs
            torch.testing.assert_close(m["train/value_cvar"], per_critic[0] * scale, atol=1e-5, rtol=1e-4)
    assert not torch.equal(weights, policy.critics[0].head.linear.weight)


def test_value_loss_sums_the_twin_critics_losses(monkeypatch):
    learner = Learner(tiny_config("agent.critic.twin=true"), [0])
    losses = []
    for critic in learner.policy.critics:
        original = critic.head.loss

        def spy(raw, target, old, clip, _orig=original):
            out = _orig(raw, target, old, clip)
            losses.append(out.detach().mean((1, 2)))
            return out

        monkeypatch.setattr(critic.head, "loss", spy)
    m = learner.train_update()
    # 2 epochs x 1 minibatch x 2 critics, in order critic0, critic1 per minibatch
    per_mb = [losses[i] + losses[i + 1] for i in range(0, len(losses), 2)]
    torch.testing.assert_close(m["train/value_loss"], torch.stack(per_mb).double().mean(0), atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------------------------------- exploit


def _stat_keys(policy: PopulationPolicy) -> list[str]:
    return [k for k in policy.state_dict() if k.startswith(("return_normalizer.", "vgs."))]


@pytest.mark.parametrize("optimizer_state", ["copy", "reset"])
@pytest.mark.parametrize("through_bytes", [False, True])
def test_exploit_moves_return_normalizer_and_gradient_scaler_statistics(optimizer_state, through_bytes):
    cfg = tiny_config("agent.vgs.enabled=true", "agent.vgs.warmup=1")
    donor_learner = Learner(cfg, [0, 1])
    for _ in range(3):
        donor_learner.train_update()
    recipient_learner = Learner(cfg.model_copy(update={"run": cfg.run.model_copy(update={"seed": 7})}), [0, 1])
    recipient_learner.train_update()
    recipient = recipient_learner.policy
    donor = donor_learner.policy.snapshot(1)
    if through_bytes:  # across shards a member state travels as bytes
        donor = MemberState.from_bytes(donor.to_bytes())

    keys = _stat_keys(recipient)
    for part in ["return_normalizer.mean", "return_normalizer.var", "return_normalizer.count", "vgs.step"]:
        assert part in keys, part
    assert sum(k.startswith("vgs.m_") for k in keys) == sum(k.startswith("vgs.s_") for k in keys) > 4
    before = {k: v.clone() for k, v in recipient.state_dict().items()}
    for k in keys:  # different statistics before the transfer, so equality afterwards means they moved
        assert not torch.equal(before[k][0], donor.tensors[k]), k

    exploit(recipient, recipient_learner.runner, 0, donor, {"learning_rate": 3e-4}, strategy="zero",
            optimizer_state=optimizer_state)
    after = recipient.state_dict()
    for k in keys:
        assert after[k][0].dtype == donor.tensors[k].dtype
        assert torch.equal(after[k][0], donor.tensors[k]), k
        assert torch.equal(after[k][1], before[k][1]), k  # the other member is untouched
    torch.testing.assert_close(recipient.return_normalizer.scale[0], donor_learner.policy.return_normalizer.scale[1])
    assert recipient.get_hparams(0)["learning_rate"] == pytest.approx(3e-4)
    # the next update continues the donor's statistics: vgs step counts on from the donor's
    recipient_learner.train_update()
    steps_per_update = cfg.agent.update_epochs * cfg.agent.num_minibatches
    assert int(recipient.vgs.step[0]) == int(donor.tensors["vgs.step"]) + steps_per_update


# --------------------------------------------------------------------------------------------------- VGS in the learner


def test_vgs_metrics_appear_only_when_enabled_and_warmup_is_the_identity():
    base = tiny_config()
    off = Learner(base, [0, 1])
    m_off = off.train_update()
    assert not any(k.startswith("vgs/") for k in m_off)
    assert not any(k.startswith("vgs.") for k in off.policy.state_dict())

    # during warm-up the scaler multiplies by exactly 1: the update equals the one without it
    warm = Learner(tiny_config("agent.vgs.enabled=true", "agent.vgs.warmup=100"), [0, 1])
    m_warm = warm.train_update()
    for key in ["vgs/mean_scale", "vgs/min_scale"]:
        assert m_warm[key].shape == (2,)
        torch.testing.assert_close(m_warm[key], torch.ones(2, dtype=torch.float64))
    for k, v in off.policy.state_dict().items():
        torch.testing.assert_close(warm.policy.state_dict()[k], v, atol=0, rtol=0, msg=k)

    # after warm-up (alpha large) gradients are shrunk, within [min_scale, 1], and the update differs
    cfg = tiny_config("agent.vgs.enabled=true", "agent.vgs.warmup=0", "agent.vgs.alpha=10", "agent.vgs.min_scale=0.2")
    on = Learner(cfg, [0, 1])
    m_on = on.train_update()
    assert int(on.policy.vgs.step[0]) == cfg.agent.update_epochs * cfg.agent.num_minibatches
    assert ((m_on["vgs/min_scale"] >= 0.2 - 1e-6) & (m_on["vgs/min_scale"] <= m_on["vgs/mean_scale"])).all()
    assert (m_on["vgs/mean_scale"] < 1).all()
    assert all(math.isfinite(float(x)) for x in m_on["train/value_loss"])
    assert not torch.equal(on.policy.critics[0].head.linear.weight, off.policy.critics[0].head.linear.weight)
