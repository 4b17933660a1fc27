"""Evaluation: trading metrics by hand, deterministic evaluation against an independent loop, the adversarial hook,
validation scoring in the runner, load_member and ``rpbt evaluate``."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from rpbt.agent.policy import PopulationPolicy
from rpbt.config import ConfigError
from rpbt.envs.trading import episode_starts, make_trading_env
from rpbt.evaluation.policy import evaluate_members, evaluate_policy, load_member, member_policy_head
from rpbt.pbt.backends.local import LocalBackend
from rpbt.pbt.runner import PopulationRunner
from rpbt.pbt.scoring import ScoreSource
from rpbt.run.rundir import RunDirError
from tests.conftest import Learner, policy_alone, tiny_config, trading_config


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------------------------------- metrics


# --------------------------------------------------------------------------------------------------- evaluate_policy


def _trained_learner(cfg, updates=2) -> Learner:
    learner = Learner(cfg, list(range(cfg.pbt.population_size)))
    for _ in range(updates):
        learner.train_update()
    return learner


def _reference_returns(policy, member, env_cfg, split, starts, transform=None):
    """An independent loop: one env at a time, the policy's full step (actor and critics)."""
    out = []
    P, D = policy.population, policy.obs_dim
    for s in starts:
        env = make_trading_env(env_cfg, split)
        raw, _ = env.reset(options={"start": s})
        states = {n: policy.trunk(n).lstm.initial_state(1) for n in policy.state_names()}
        start_flag = torch.ones(P, 1, dtype=torch.bool)
        total, done = 0.0, False
        while not done:
            full = torch.zeros(P, 1, D)
            full[member, 0] = torch.as_tensor(raw)
            obs = policy.normalize_obs(full)
            if transform is not None:
                obs[member, 0] = transform(obs[member, 0])
            with torch.no_grad():
                head, _, states = policy.step(obs, states, start_flag)
            start_flag = torch.zeros(P, 1, dtype=torch.bool)
            raw, reward, term, trunc, _ = env.step(int(head[member, 0].argmax()))
            total += reward
            done = term or trunc
        out.append(total)
    return out


def test_evaluate_policy_matches_an_independent_loop_and_leaves_the_learner_untouched():
    cfg = trading_config()
    learner = _trained_learner(cfg)
    policy = learner.policy
    before = copy.deepcopy(policy.state_dict())
    carried = {k: v.clone() for k, v in learner.carried.tensors().items()}  # hidden states, next obs, history ...
    rng = [g.get_state() for g in policy.generators]
    result = evaluate_policy(policy, 1, cfg.env, "validation")
    probe = make_trading_env(cfg.env, "validation")
    starts = episode_starts(probe.split_slice, probe.window, probe.episode_length, 3)
    assert [ep.start for ep in result.episodes] == starts
    assert result.returns == pytest.approx(_reference_returns(policy, 1, cfg.env, "validation", starts), abs=1e-9)
    for ep in result.episodes:
        assert ep.length == 32 and ep.truncated and not ep.terminated
        assert ep.equity[0] == 1.0 and ep.equity[-1] == pytest.approx(math.exp(ep.total_return))
        assert list(ep.bars) == list(range(ep.start, ep.start + 33))
        assert set(np.unique(ep.positions[1:])) <= {-1.0, 0.0, 1.0}
    # Nothing about training changed: weights, normalizer statistics, the carried state (hidden states), RNG.
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert any(k.startswith("hidden.") for k in carried)
    for k, v in learner.carried.tensors().items():
        assert torch.equal(v, carried[k]), k
    assert all(torch.equal(g.get_state(), s) for g, s in zip(policy.generators, rng))
    # Batched evaluation of both members equals member-by-member evaluation.
    both = evaluate_members(policy, [0, 1], cfg.env, "validation")
    assert both[1].returns == result.returns
    assert both[0].returns == evaluate_policy(policy, 0, cfg.env, "validation").returns


def test_obs_perturbation_hook():
    cfg = trading_config()
    policy = _trained_learner(cfg, updates=1).policy
    seen = []

    def identity(lrn, member, obs, states):
        seen.append((member, obs.clone(), {k: (h.shape, c.shape) for k, (h, c) in states.items()}))
        return obs

    plain = evaluate_policy(policy, 1, cfg.env, "validation", episodes=2)
    hooked = evaluate_policy(policy, 1, cfg.env, "validation", episodes=2, obs_perturbation=identity)
    assert hooked.returns == plain.returns
    member, obs0, shapes = seen[0]
    L, H = cfg.agent.network.lstm_num_layers, cfg.agent.network.lstm_hidden_size
    assert member == 1 and obs0.shape == (2, policy.obs_dim) and shapes == {"actor": ((L, 2, H), (L, 2, H))}
    env = make_trading_env(cfg.env, "validation")
    raw0, _ = env.reset(options={"start": hooked.episodes[0].start})
    full = torch.zeros(2, 1, policy.obs_dim)
    full[1, 0] = torch.as_tensor(raw0)
    assert torch.allclose(obs0[0], policy.normalize_obs(full)[1, 0])  # normalized with the member's statistics

    # Replacing the observation is the same as an independent loop that feeds the replaced observation.
    const = torch.tensor([3.0, -1.0])

    def attack(lrn, member, obs, states):
        return const.expand_as(obs).clone()

    attacked = evaluate_policy(policy, 1, cfg.env, "validation", episodes=2, obs_perturbation=attack)
    starts = [ep.start for ep in attacked.episodes]
    ref = _reference_returns(policy, 1, cfg.env, "validation", starts, transform=lambda o: const)
    assert attacked.returns == pytest.approx(ref, abs=1e-9)

    # Gradients flow through member_policy_head inside the hook (what a PGD attack needs).
    grads = []

    def fgsm(lrn, member, obs, states):
        x = obs.clone().requires_grad_(True)
        logits = member_policy_head(lrn, member, x, states["actor"])
        logits.logsumexp(-1).sum().backward()
        grads.append(x.grad)
        return obs + 0.1 * x.grad.sign()

    evaluate_policy(policy, 1, cfg.env, "validation", episodes=2, obs_perturbation=fgsm)
    assert grads and grads[0].shape == (2, policy.obs_dim)

    def bad(lrn, member, obs, states):
        return obs[:1]

    with pytest.raises(ValueError, match="obs_perturbation returned shape"):
        evaluate_policy(policy, 1, cfg.env, "validation", episodes=2, obs_perturbation=bad)


def test_member_policy_head_equals_the_batched_forward():
    cfg = trading_config()
    policy = _trained_learner(cfg, updates=1).policy
    obs = torch.randn(2, 3, policy.obs_dim)
    h, c = policy.actor.lstm.initial_state(3)
    h, c = torch.randn_like(h), torch.randn_like(c)
    with torch.no_grad():
        feats, _ = policy.actor.step(obs, (h, c), torch.zeros(2, 3, dtype=torch.bool))
        full = policy.policy_head(feats)
        one = member_policy_head(policy, 1, obs[1], (h[1], c[1]))
    assert torch.allclose(one, full[1], atol=1e-6)


def test_evaluate_errors():
    cfg = trading_config()
    policy = policy_alone(cfg, [0, 1])
    with pytest.raises(ValueError, match="distinct local indices"):
        evaluate_members(policy, [0, 0], cfg.env)
    with pytest.raises(ValueError, match="distinct local indices"):
        evaluate_members(policy, [2], cfg.env)
    with pytest.raises(ValueError, match="outside the validation split"):
        evaluate_policy(policy, 0, cfg.env, "validation", starts=[0])
    plain = tiny_config()
    with pytest.raises(ValueError, match="trading environment only"):
        evaluate_policy(policy_alone(plain, [0]), 0, plain.env, starts=[5])


# --------------------------------------------------------------------------------------------------- PBT scoring


def _no_time(per_member):
    """Metric rows without the wall-clock key, NaN made comparable."""
    def clean(v):
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return {m: [{k: clean(v) for k, v in row.items() if k != "time/fps"} for row in rows]
            for m, rows in per_member.items()}


def test_validation_scoring_is_deterministic_and_differs_from_training_returns():
    cfg = trading_config()
    assert ScoreSource.from_config(cfg).kind == "validation"
    assert ScoreSource.from_config(tiny_config()).kind == "training"
    hp = [{}, {}]
    a, b = LocalBackend(cfg, hp), LocalBackend(cfg, hp)
    try:
        ma = a.train(2)
        mb = b.train(2)
        first = a.evaluate_members([0, 1])
        assert a.evaluate_members([0, 1]) == first  # same member state, same score
        assert a.evaluate(1) == first[1]
        assert b.evaluate_members([0, 1]) == first  # an identical run scores identically
        assert len(first[0]) == 3
        # Validation returns are not the training returns the training-source score would use.
        info = a.member_info()
        for m in (0, 1):
            assert info[m]["recent_returns"], "tiny config must finish training episodes"
            assert np.mean(first[m]) != pytest.approx(np.mean(info[m]["recent_returns"]))
        # Evaluating does not perturb training: a backend that evaluated trains on identically.
        assert _no_time(ma) == _no_time(mb)
        assert _no_time(a.train(2)) == _no_time(b.train(2))
        # ... and after more training the score moves.
        assert a.evaluate_members([0, 1]) != first
    finally:
        a.close()
        b.close()


def test_runner_scores_trading_members_on_validation_and_load_member(tmp_path):
    run = tmp_path / "run"
    cfg = trading_config(f"run.dir={run}")
    runner = PopulationRunner(cfg, run)
    runner.start()
    runner.run(progress=False)
    events = _events(run)
    last = max(e["round"] for e in events if e["type"] == "round")
    scores = next(e for e in events if e["type"] == "round" and e["round"] == last)["scores"]
    recipients = {e["recipient"] for e in events if e["type"] == "exploit" and e["round"] == last}
    checked = 0
    for m in range(2):
        if m in recipients:
            continue  # its checkpoint holds the donor's state, not the state that was scored
        loaded_cfg, policy = load_member(run, m)
        assert isinstance(policy, PopulationPolicy) and policy.device == torch.device("cpu")
        assert policy.member_ids == [m] and loaded_cfg.env.id == "trading"
        returns = evaluate_policy(policy, 0, loaded_cfg.env, "validation", seed=loaded_cfg.run.seed).returns
        assert scores[m] == pytest.approx(float(np.mean(returns)), abs=1e-12)
        checked += 1
    assert checked >= 1
    import csv

    with (run / "members" / "0" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["pbt/score"]]
    assert rows and all(float(r["eval/validation_return"]) == pytest.approx(float(r["pbt/score"])) for r in rows)
    with pytest.raises(RunDirError, match="member 5 does not exist"):
        load_member(run, 5)


def test_score_source_config():
    cfg = trading_config("pbt.score_source=training")
    assert ScoreSource.from_config(cfg).kind == "training"
    with pytest.raises(ConfigError, match="score_source"):
        tiny_config("pbt.score_source=validation")


# --------------------------------------------------------------------------------------------------- CLI


def test_process_backend_scores_trading_members_on_validation_like_local(tmp_path):
    local_runner = PopulationRunner(trading_config(f"run.dir={tmp_path / 'l'}"), tmp_path / "l")
    local_runner.start()
    local_runner.run(progress=False)
    proc_runner = PopulationRunner(
        trading_config(f"run.dir={tmp_path / 'p'}", "backend.kind=process", "backend.num_workers=2"), tmp_path / "p")
    proc_runner.start()
    proc_runner.run(progress=False)
    local_scores = [e["scores"] for e in _events(tmp_path / "l") if e["type"] == "round"]
    proc_scores = [e["scores"] for e in _events(tmp_path / "p") if e["type"] == "round"]
    assert len(proc_scores) == len(local_scores)
    for a, b in zip(local_scores, proc_scores):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9)
