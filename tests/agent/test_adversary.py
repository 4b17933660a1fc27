"""SA-PPO (rpbt.agent.adversary): attacks on replayed sequences, the robust KL regularizer, schedules, evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from rpbt.agent.adversary import (
    SAPPO,
    SequencePolicy,
    attack_sequences,
    make_obs_perturbation,
    noise_generators,
    random_like_norm,
    scheduled_epsilon,
)
from rpbt.agent.networks import kl_divergence
from rpbt.agent.policy import PopulationPolicy
from rpbt.agent.ppo import make_policy
from rpbt.agent.rollout import take_envs
from rpbt.evaluation.policy import evaluate_policy
from rpbt.pbt.transfer import exploit
from tests.conftest import Learner, tiny_config

NOISY = "env.id=popgym-NoisyPositionOnlyCartPoleEasy-v0"
CPU = torch.device("cpu")


def _params(learner: Learner) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in learner.policy.named_parameters()}


def _sharpen(policy: PopulationPolicy, gain: float = 300.0) -> None:
    """Scale the policy head so the freshly initialized policy is far from uniform (a sensitive fixed network)."""
    with torch.no_grad():
        policy.policy_head.linear.weight.mul_(gain)


def _replay(policy: PopulationPolicy, rollout, idx: torch.Tensor):
    """Replay the sequences of environments ``idx`` (P, b) from the rollout's stored states (as ``update`` does)."""
    states = {n: tuple(take_envs(s, idx) for s in rollout.initial_states[n]) for n in policy.state_names()}
    return policy.sequence(take_envs(rollout.obs, idx), states, take_envs(rollout.episode_starts, idx))


def _sappo(learner: Learner) -> SAPPO:
    """The learner's SA-PPO loss term (its only auxiliary loss)."""
    (aux,) = learner.aux_losses
    assert isinstance(aux, SAPPO)
    return aux


def _losses(learner: Learner, rollout, idx: torch.Tensor, head: torch.Tensor, call: int = 1):
    """SA-PPO's loss and metrics for one minibatch; ``call`` numbers the minibatches of the update from 1."""
    return _sappo(learner).losses(learner.policy, rollout, idx, head, call)


def _replay_batch(policy: PopulationPolicy, rollout, envs: int):
    """The first ``envs`` sequences of every member: obs (P, T, b, D), starts (P, T, b), actor state, idx."""
    idx = torch.arange(envs).repeat(policy.population, 1)
    obs = take_envs(rollout.obs, idx)
    starts = take_envs(rollout.episode_starts, idx)
    state = tuple(take_envs(s, idx) for s in rollout.initial_states["actor"])
    return obs, starts, state, idx


def _rollout_with_live_states(learner: Learner):
    """A rollout whose stored initial states are non-zero (the second rollout of a run)."""
    learner.collect()
    rollout = learner.collect()
    h, _ = rollout.initial_states["actor"]
    assert h.abs().sum() > 0
    return rollout


# --------------------------------------------------------------------------------------------------- exactness


def test_epsilon_zero_is_plain_ppo_exactly_and_mixed_population_isolates_members():
    base = ["pbt.population_size=2", "agent.update_epochs=2", "env.num_envs=4", "agent.num_minibatches=2"]
    plain = Learner(tiny_config(*base, "agent.adversarial.enabled=false"), [0, 1])
    zero = Learner(tiny_config(*base, "agent.adversarial.enabled=true", "agent.adversarial.epsilon=0"), [0, 1])
    mixed = Learner(tiny_config(*base, "agent.adversarial.enabled=true", "agent.adversarial.epsilon=0.3"),
                    [0, 1])
    assert plain.aux_losses == [] and isinstance(_sappo(zero), SAPPO)
    mixed.policy.set_hparams(0, {"adversarial.epsilon": 0.0})  # member 0: radius 0, member 1: radius 0.3
    for _ in range(2):
        m_plain = plain.train_update()
        m_zero = zero.train_update()
        m_mixed = mixed.train_update()
    p_plain, p_zero, p_mixed = _params(plain), _params(zero), _params(mixed)
    for name in p_plain:
        assert torch.equal(p_plain[name], p_zero[name]), name
        assert torch.equal(p_plain[name][0], p_mixed[name][0]), name  # member 0 untouched by member 1's attack
    assert any(not torch.equal(p_plain[n][1], p_mixed[n][1]) for n in p_plain)  # member 1 was regularized
    assert torch.equal(m_plain["train/loss"], m_zero["train/loss"])
    assert torch.equal(m_plain["train/loss"][0], m_mixed["train/loss"][0])
    assert torch.equal(m_zero["sa_ppo/robust_kl"], torch.zeros(2, dtype=torch.float64))
    assert float(m_mixed["sa_ppo/robust_kl"][0]) == 0.0 and float(m_mixed["sa_ppo/robust_kl"][1]) > 0.0
    assert "sa_ppo/robust_kl" not in m_plain
    # the members' own generators (minibatches, actions) were not consumed by the attack's random starts
    for g_plain, g_mixed in zip(plain.policy.generators, mixed.policy.generators):
        assert torch.equal(g_plain.get_state(), g_mixed.get_state())


def test_same_config_and_seed_give_the_same_sa_ppo_run():
    cfg = tiny_config("pbt.population_size=2", "agent.adversarial.enabled=true", "agent.adversarial.epsilon=0.2")
    a, b = Learner(cfg, [0, 1]), Learner(cfg, [0, 1])
    for _ in range(2):
        ma, mb = a.train_update(), b.train_update()
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert torch.equal(ma["sa_ppo/robust_kl"], mb["sa_ppo/robust_kl"])


def test_sa_ppo_members_train_the_same_alone_or_batched():
    cfg = tiny_config("agent.num_steps=32", "agent.num_minibatches=2", "env.num_envs=4", NOISY,
                      "agent.adversarial.enabled=true", "agent.adversarial.steps=3")
    hps = [{"adversarial.epsilon": 0.3, "adversarial.ratio": 0.5}, {"adversarial.epsilon": 0.1},
           {"adversarial.epsilon": 0.0}]
    batched = Learner(cfg, [0, 1, 2], hps)
    m_batched = batched.train_update()
    together = _params(batched)
    for i in range(3):
        alone = Learner(cfg, [i], [hps[i]])
        m_alone = alone.train_update()
        for name, p in _params(alone).items():
            assert (p[0] - together[name][i]).abs().max() < 1e-4, name
        torch.testing.assert_close(m_alone["sa_ppo/robust_kl"][0], m_batched["sa_ppo/robust_kl"][i],
                                   rtol=1e-3, atol=1e-9)


# --------------------------------------------------------------------------------------------------- the ball


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_every_perturbation_stays_in_its_ball(attack, norm):
    learner = Learner(tiny_config("pbt.population_size=3", NOISY), [0, 1, 2])
    _sharpen(learner.policy)
    rollout = learner.collect()
    obs, starts, state, _ = _replay_batch(learner.policy, rollout, 2)
    eps = torch.tensor([0.05, 0.3, 0.0])
    policy = SequencePolicy.from_learner(learner.policy, state, starts)
    gens = noise_generators([1, 2, 3], 7)
    # an oversized step stresses the projection; bounds that exclude part of the clean data stress the clipping
    low = torch.full_like(obs[:1, :1, :1], -0.2)
    high = torch.full_like(obs[:1, :1, :1], 0.4)
    for step_size, lo, hi in [(None, None, None), (5.0, None, None), (0.5, low, high)]:
        res = attack_sequences(policy, obs, eps, attack=attack, norm=norm, steps=4, step_size=step_size,
                               generators=gens, low=lo, high=hi)
        d = res.delta
        size = d.abs().amax(-1) if norm == "linf" else d.norm(dim=-1)  # one ball per observation vector
        assert (size <= eps.view(3, 1, 1) + 1e-6).all()
        assert float(size[1].max()) > 0.5 * 0.3  # the attack does move
        assert torch.equal(d[2], torch.zeros_like(d[2]))  # radius 0: no perturbation
        if lo is not None:
            x = obs + d
            assert (x >= torch.minimum(lo, obs) - 1e-6).all() and (x <= torch.maximum(hi, obs) + 1e-6).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_reaches_a_higher_kl_than_random_noise_of_the_same_norm(norm):
    # CartPole-v1's 4-dimensional observation (random signs hit 1 of 16 corners of the L-inf ball)
    learner = Learner(tiny_config("pbt.population_size=2", "env.id=CartPole-v1"), [0, 1])
    _sharpen(learner.policy)
    rollout = learner.collect()
    obs, starts, state, _ = _replay_batch(learner.policy, rollout, 2)
    policy = SequencePolicy.from_learner(learner.policy, state, starts)
    eps = torch.tensor([0.3, 0.3])
    res = attack_sequences(policy, obs, eps, attack="pgd", norm=norm, steps=10, generators=noise_generators([0, 1], 1))
    with torch.no_grad():
        clean = policy(obs)
        random_kl = torch.stack([
            policy.kl(clean, policy(obs + random_like_norm(res.delta, norm, noise_generators([0, 1], 100 + r))))
            .mean((1, 2)) for r in range(5)]).mean(0)
    attack_kl = res.kl.mean((1, 2))
    # same norm per observation vector, as the metric's baseline
    rnd = random_like_norm(res.delta, norm, noise_generators([0, 1], 3))
    size = (lambda x: x.abs().amax(-1)) if norm == "linf" else (lambda x: x.norm(dim=-1))
    torch.testing.assert_close(size(rnd), size(res.delta), atol=1e-6, rtol=1e-5)
    assert (attack_kl > 3.0 * random_kl).all(), (attack_kl, random_kl)
    # and more steps of PGD do better than the one-step FGSM (same start distribution)
    fgsm = attack_sequences(policy, obs, eps, attack="fgsm", norm=norm, generators=noise_generators([0, 1], 1))
    assert (attack_kl >= fgsm.kl.mean((1, 2))).all()


# --------------------------------------------------------------------------------------------------- hidden states


def test_attacks_replay_from_the_stored_states_and_episode_starts():
    learner = Learner(tiny_config("pbt.population_size=2", NOISY, "agent.num_steps=32"), [0, 1])
    pol = learner.policy
    _sharpen(pol)
    rollout = _rollout_with_live_states(learner)
    obs, starts, state, _ = _replay_batch(pol, rollout, 2)
    eps = torch.tensor([0.2, 0.2])
    policy = SequencePolicy.from_learner(pol, state, starts)
    res = attack_sequences(policy, obs, eps, generators=noise_generators([5, 6], 0))

    # independent reference: the module API (RecurrentTrunk.sequence + PolicyHead) from the stored state
    with torch.no_grad():
        def heads(x, s):
            return pol.policy_head(pol.actor.sequence(x, s, starts)[0])

        ref_kl = kl_divergence(heads(obs, state), heads(obs + res.delta, state), False, None)
        zero = pol.actor.lstm.initial_state(2)
        zero_kl = kl_divergence(heads(obs, zero), heads(obs + res.delta, zero), False, None)
    assert float(ref_kl.mean()) > 1e-4  # a sensitive network: differences are well above float noise
    torch.testing.assert_close(res.kl, ref_kl, atol=1e-8, rtol=1e-3)
    torch.testing.assert_close(res.clean_head, heads(obs, state), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(res.kl, zero_kl, atol=0, rtol=1e-2)  # dropping the states changes the objective
    # an attack bound to zero states finds a different perturbation
    res_zero = attack_sequences(SequencePolicy.from_learner(pol, zero, starts), obs, eps,
                                generators=noise_generators([5, 6], 0))
    assert not torch.allclose(res_zero.delta, res.delta)


def test_regularizer_uses_the_rollouts_stored_states():
    learner = Learner(tiny_config("pbt.population_size=2", NOISY, "agent.adversarial.enabled=true",
                                  "agent.adversarial.epsilon=0.2"), [0, 1])
    pol, sappo = learner.policy, _sappo(learner)
    _sharpen(pol)
    rollout = _rollout_with_live_states(learner)
    idx = torch.arange(2).repeat(2, 1)
    head, _ = _replay(pol, rollout, idx)
    out = _losses(learner, rollout, idx, head)  # the first minibatch of an update
    # the same call on a copy whose stored states were dropped gives a different regularizer
    zeroed = {k: (torch.zeros_like(h), torch.zeros_like(c)) for k, (h, c) in rollout.initial_states.items()}
    original = rollout.initial_states
    rollout.initial_states = zeroed
    head0, _ = _replay(pol, rollout, idx)
    out0 = _losses(learner, rollout, idx, head0)  # same call index: same random starts as the first call
    rollout.initial_states = original
    assert not torch.allclose(out["sa_ppo/robust_kl"], out0["sa_ppo/robust_kl"], rtol=1e-3, atol=0)
    # and it equals the KL of the same attack computed independently from the stored states
    gens = [noise_generators([s], 0x5A, 0, 1)[0] for s in pol.seeds]
    obs, starts, state, _ = _replay_batch(pol, rollout, 2)
    from rpbt.agent.adversary import normalized_bounds

    low, high = normalized_bounds(pol, sappo.low_raw, sappo.high_raw)
    res = attack_sequences(SequencePolicy.from_learner(pol, state, starts), obs,
                           sappo.epsilon(pol), generators=gens, low=low, high=high)
    torch.testing.assert_close(out["sa_ppo/robust_kl"], res.kl.mean((1, 2)), atol=1e-7, rtol=1e-4)

    # As an AuxiliaryLoss it is called with (epoch, minibatch): the call index of the update's k-th minibatch
    # (epoch * num_minibatches + minibatch + 1) keys the random starts, so a repeated call gives the same loss and
    # another minibatch position another draw.
    assert learner.cfg.agent.num_minibatches == 1
    loss, metrics = sappo(pol, rollout, idx, head, 0, 0)
    torch.testing.assert_close(loss, out["loss"], atol=0, rtol=0)
    assert "loss" not in metrics
    for k, v in metrics.items():
        torch.testing.assert_close(v, out[k], atol=0, rtol=0, equal_nan=True, msg=k)
    second = _losses(learner, rollout, idx, head, call=2)
    loss2, metrics2 = sappo(pol, rollout, idx, head, 1, 0)  # epoch 1, minibatch 0: the update's second call
    torch.testing.assert_close(loss2, second["loss"], atol=0, rtol=0)
    torch.testing.assert_close(metrics2["sa_ppo/robust_kl"], second["sa_ppo/robust_kl"], atol=0, rtol=0)
    assert not torch.equal(second["sa_ppo/random_kl"], out["sa_ppo/random_kl"])  # other draws


# --------------------------------------------------------------------------------------------------- regularizer


def test_regularizer_gradient_reaches_the_actor_only_through_the_perturbed_branch():
    learner = Learner(tiny_config("pbt.population_size=2", NOISY, "agent.adversarial.enabled=true",
                                  "agent.adversarial.epsilon=0.3", "agent.adversarial.robust_kl_coef=1.0"),
                      [0, 1])
    pol = learner.policy
    _sharpen(pol)
    rollout = learner.collect()
    idx = torch.arange(2).repeat(2, 1)
    head, _ = _replay(pol, rollout, idx)
    clean = head.detach().requires_grad_(True)  # stands for the clean branch
    out = _losses(learner, rollout, idx, clean)
    assert (out["loss"] > 0).all()
    out["loss"].sum().backward()
    assert clean.grad is None  # the clean branch is detached
    for name, p in pol.actor.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert (p.grad.flatten(1).abs().sum(1) > 0).all(), name  # every member's slice
    assert pol.policy_head.linear.weight.grad.abs().sum() > 0
    for critic in pol.critics:  # no value term by default
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in critic.parameters())


def test_value_term_reaches_the_critic():
    learner = Learner(tiny_config("pbt.population_size=2", NOISY, "agent.adversarial.enabled=true",
                                  "agent.adversarial.epsilon=0.3", "agent.adversarial.value_coef=1.0"), [0, 1])
    rollout = learner.collect()
    idx = torch.arange(2).repeat(2, 1)
    head, _ = _replay(learner.policy, rollout, idx)
    out = _losses(learner, rollout, idx, head)
    assert (out["sa_ppo/value_diff"] > 0).all()
    out["loss"].sum().backward()
    assert learner.policy.critics[0].trunk.encoder.layers[0].weight.grad.abs().sum() > 0


def test_ratio_warmup_and_coefficient_gate_the_regularizer_per_member():
    learner = Learner(tiny_config("pbt.population_size=3", NOISY, "env.num_envs=4",
                                  "agent.adversarial.enabled=true", "agent.adversarial.epsilon=0.3",
                                  "agent.adversarial.warmup=1"), [0, 1, 2])
    pol, sappo = learner.policy, _sappo(learner)
    _sharpen(pol)
    rollout = learner.collect()
    idx = torch.arange(4).repeat(3, 1)
    head, _ = _replay(pol, rollout, idx)
    out = _losses(learner, rollout, idx, head)  # updates = 0 < warmup for everyone
    assert torch.equal(out["loss"], torch.zeros(3)) and torch.equal(out["sa_ppo/active"], torch.zeros(3))
    pol.updates.fill_(1)
    pol.set_hparams(0, {"adversarial.ratio": 0.0})
    pol.set_hparams(1, {"adversarial.ratio": 0.25})  # ceil(0.25 * 4) = 1 sequence
    pol.set_hparams(2, {"adversarial.ratio": 1.0, "adversarial.robust_kl_coef": 0.5})
    out = _losses(learner, rollout, idx, head)  # the first minibatch of update 1
    assert out["sa_ppo/active"].tolist() == [0.0, 1.0, 1.0]
    assert out["loss"][0].item() == 0.0
    torch.testing.assert_close(out["loss"][2], 0.5 * out["sa_ppo/robust_kl"][2])
    # member 1's regularizer is the attack KL of its first sequence alone: recompute it on that sequence
    obs, starts, state, _ = _replay_batch(pol, rollout, 1)
    gens = [noise_generators([s], 0x5A, 1, 1)[0] for s in pol.seeds]
    from rpbt.agent.adversary import normalized_bounds, random_in_ball

    low, high = normalized_bounds(pol, sappo.low_raw, sappo.high_raw)
    eps = sappo.epsilon(pol) * torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)
    # the random start is drawn for the whole minibatch (4 sequences) and cut, whatever the other members' ratios
    start = random_in_ball((3, obs.shape[1], 4, obs.shape[3]), eps.float().view(3, 1, 1, 1), "linf", gens)
    res = attack_sequences(SequencePolicy.from_learner(pol, state, starts), obs, eps, low=low, high=high,
                           init_delta=start[:, :, :1])
    torch.testing.assert_close(out["sa_ppo/robust_kl"][1], res.kl[1].mean(), atol=1e-7, rtol=1e-4)
    assert math.isfinite(float(out["sa_ppo/attack_kl_gain"][1]))
    assert math.isnan(float(out["sa_ppo/attack_kl_gain"][0]))


# --------------------------------------------------------------------------------------------------- schedule


def test_epsilon_schedule_values_at_known_steps():
    eps = torch.full((5,), 0.2, dtype=torch.float64)
    steps = torch.tensor([0, 250, 500, 1000, 4000])
    torch.testing.assert_close(scheduled_epsilon(eps, steps, 1000, "constant"), eps)
    torch.testing.assert_close(scheduled_epsilon(eps, steps, 1000, "linear"),
                               torch.tensor([0.0, 0.05, 0.1, 0.2, 0.2], dtype=torch.float64))
    c = 0.2 * (1 - math.cos(math.pi / 4)) / 2  # 0.0292893
    torch.testing.assert_close(scheduled_epsilon(eps, steps, 1000, "cosine"),
                               torch.tensor([0.0, c, 0.1, 0.2, 0.2], dtype=torch.float64))
    with pytest.raises(ValueError, match="epsilon_schedule"):
        scheduled_epsilon(eps, steps, 1000, "step")
    # in training: after the first rollout a member has 2 envs * 16 steps of the 192-step budget
    learner = Learner(tiny_config("pbt.population_size=2", "agent.adversarial.enabled=true",
                                  "agent.adversarial.epsilon=0.3", "agent.adversarial.epsilon_schedule=linear"),
                      [0, 1])
    learner.policy.set_hparams(1, {"adversarial.epsilon": 0.6})
    m = learner.train_update()
    torch.testing.assert_close(m["sa_ppo/epsilon"], torch.tensor([0.3 * 32 / 192, 0.6 * 32 / 192],
                                                                 dtype=torch.float64), atol=1e-7, rtol=0)


def test_schedule_position_moves_with_the_member_on_exploit_and_checkpoint():
    cfg = tiny_config("pbt.population_size=2", "agent.adversarial.enabled=true", "agent.adversarial.epsilon=0.4",
                      "agent.adversarial.epsilon_schedule=linear")
    learner = Learner(cfg, [0, 1])
    pol, sappo = learner.policy, _sappo(learner)
    learner.train_update()
    pol.env_steps[1] = 96  # member 1 is further along its run (e.g. restored from a longer lineage)
    pol.set_hparams(1, {"adversarial.epsilon": 0.2})
    before = sappo.epsilon(pol)
    torch.testing.assert_close(before, torch.tensor([0.4 * 32 / 192, 0.2 * 96 / 192], dtype=torch.float64))
    donor = pol.snapshot(1)
    exploit(pol, learner.runner, 0, donor, {"adversarial.epsilon": 0.25}, strategy="zero")
    # the recipient continues the donor's schedule position with its explored final radius
    torch.testing.assert_close(sappo.epsilon(pol),
                               torch.tensor([0.25 * 96 / 192, 0.2 * 96 / 192], dtype=torch.float64))
    fresh = make_policy(cfg, [0], device=CPU)  # no environments: a policy alone holds the member state
    fresh.restore(0, type(donor).from_bytes(donor.to_bytes()))
    torch.testing.assert_close(SAPPO(cfg).epsilon(fresh), torch.tensor([0.2 * 96 / 192], dtype=torch.float64))


def test_config_searches_adversarial_hyperparameters_by_either_name():
    cfg = tiny_config("agent.adversarial.enabled=true")
    from rpbt.config import config_from_dict

    data = cfg.to_dict()
    data["pbt"]["search_space"] = {"agent.adversarial.epsilon": {"type": "float", "low": 0.01, "high": 0.3},
                                   "adversarial.robust_kl_coef": {"type": "float", "low": 0.01, "high": 1.0,
                                                                  "scale": "log"}}
    parsed = config_from_dict(data)
    assert set(parsed.pbt.search_space) == {"adversarial.epsilon", "adversarial.robust_kl_coef"}


# --------------------------------------------------------------------------------------------------- evaluation


def test_sa_ppo_perturbs_only_the_observation_of_a_multi_discrete_policy_fed_previous_inputs():
    from rpbt.agent.adversary import SAPPO

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
