"""The spike study: environment copies, member clones, episode tracking, statistics, and the command end to end."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from rpbt.agent.ppo import collect
from rpbt.cli import main
from rpbt.config import ConfigError, EnvConfig
from rpbt.envs.factory import make_env
from rpbt.pbt.transfer import exploit
from rpbt.studies.spike import (
    RunningEpisodes,
    clone_member,
    geo_ci,
    load_study_config,
    mean_ci,
    run_seed,
    t_quantile,
)
from tests.conftest import TINY, Learner, tiny_config

SHIPPED = "configs/spike_study.yaml"
# The shipped study config shrunk to seconds (the TINY sizes, two seeds, two updates after each exploit).
SMALL = TINY + ["run.torch_threads=null", "pbt.burn_in=2", "pbt.perturbation_interval=2",
                "run.total_env_steps=160", "spike_study.seeds=2", "spike_study.updates_after=2",
                "spike_study.max_exploits_per_seed=1"]


@pytest.mark.parametrize("spec", [
    {"id": "CartPole-v1"},
    {"id": "popgym-PositionOnlyCartPoleEasy-v0"},
    {"id": "popgym-PositionOnlyCartPoleEasy-v0", "observation_noise_std": 0.1},
])
def test_a_deep_copied_environment_steps_exactly_like_the_original(spec):
    env = make_env(EnvConfig(**spec))
    env.reset(seed=3)
    for _ in range(4):
        env.step(0)
    twin = copy.deepcopy(env)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(120):  # through at least one episode end and reset
        action = int(rng.integers(2))
        a, b = env.step(action), twin.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
        if a[2] or a[3]:
            ended += 1
            np.testing.assert_array_equal(env.reset()[0], twin.reset()[0])
    assert ended > 0


def _trained(cfg, updates=2, population=3):
    learner = Learner(cfg, list(range(population)))
    for _ in range(updates):
        learner.train_update()
    return learner


def test_clone_continues_exactly_where_the_member_stands_and_takes_the_same_transfer():
    cfg = tiny_config()
    learner = _trained(cfg)
    clone = clone_member(learner.policy, learner.runner, 1)
    # Same member state, and every carried tensor (LSTM states, pending observation, counters, history).
    ref = learner.policy.snapshot(1)
    got = clone.policy.snapshot(0)
    for k, v in ref.tensors.items():
        assert torch.equal(got.tensors[k], v), k
    assert torch.equal(got.rng, ref.rng)
    mine = clone.runner.carried.tensors()
    for k, v in learner.carried.tensors().items():
        assert torch.equal(mine[k][0], v[1]), k

    # The same transfer in the clone and in the real learner leaves the same member and carried states.
    donor_state, hp = learner.policy.snapshot(0), dict(learner.policy.get_hparams(0), learning_rate=5e-4)
    m_clone = exploit(clone.policy, clone.runner, 0, donor_state, hp, strategy="burn_in")
    m_real = exploit(learner.policy, learner.runner, 1, donor_state, hp, strategy="burn_in")
    assert m_clone == pytest.approx(m_real, abs=1e-6)
    for k, v in learner.policy.snapshot(1).tensors.items():
        assert torch.equal(clone.policy.snapshot(0).tensors[k], v), k
    for name, (h, _c) in learner.carried.hidden.items():
        torch.testing.assert_close(clone.runner.carried.hidden[name][0][0], h[1], atol=1e-6, rtol=0)

    # Then both act alike: the clone's own environment copies see the same experience as the member's envs.
    real, alone = learner.collect(), collect(clone.policy, clone.runner)
    assert torch.equal(alone.actions[0], real.actions[1])
    assert torch.equal(alone.rewards[0], real.rewards[1])
    torch.testing.assert_close(alone.obs[0], real.obs[1], atol=1e-5, rtol=0)
    # The original learner's environments were not advanced by the clone (they are copies).
    assert not torch.equal(clone.runner.carried.next_obs[0], learner.carried.next_obs[0])


def test_running_episode_returns_are_those_of_the_episodes_running_at_the_exploit():
    cfg = tiny_config("env.num_envs=4")
    learner = _trained(cfg, updates=1)
    clone = clone_member(learner.policy, learner.runner, 2)
    running = (~clone.runner.carried.episode_start[0]).nonzero().flatten().tolist()
    assert running
    start_returns = clone.runner.carried.running_return[0].clone()
    tracker = RunningEpisodes(clone.runner)
    rollouts = []
    for _ in range(6):
        rollouts.append(collect(clone.policy, clone.runner))
    rewards = torch.cat([r.rewards[0] for r in rollouts])  # (6T, N)
    dones = torch.cat([r.dones[0] for r in rollouts])
    expected = {}
    for n in running:  # by hand: return so far + rewards up to and including the episode's first end
        ends = dones[:, n].nonzero().flatten()
        if len(ends):
            expected[n] = float(start_returns[n]) + float(rewards[: int(ends[0]) + 1, n].double().sum())
    assert expected, "test needs an episode that ends"
    assert tracker.returns == pytest.approx(expected)
    assert tracker.pending == set(running) - set(expected)


def test_t_quantiles_and_confidence_interval_match_tables():
    # Student's t 97.5% quantiles from standard tables.
    for df, q in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)]:
        assert t_quantile(0.975, df) == pytest.approx(q, abs=2e-4)
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])  # sd = sqrt(2.5); half width = 2.7764 * sqrt(2.5) / sqrt(5)
    assert ci["mean"] == 3.0 and ci["n"] == 5
    assert ci["high"] - 3.0 == pytest.approx(2.7764 * np.sqrt(2.5) / np.sqrt(5), abs=1e-3)
    assert mean_ci([2.0])["low"] is None and mean_ci([])["mean"] is None
    with pytest.raises(ValueError):
        t_quantile(0.3, 4)
    # Ratios: the interval of the logs, exponentiated (ratios 1/2 and 2 have geometric mean 1).
    g = geo_ci([0.5, 2.0])
    assert g["mean"] == pytest.approx(1.0)
    assert g["high"] == pytest.approx(np.exp(12.7062 * np.log(2.0) * np.sqrt(2) / np.sqrt(2)), rel=1e-3)


def test_study_config_section_and_errors(tmp_path):
    cfg, st = load_study_config(SHIPPED)
    assert st.seeds == 5 and st.updates_after == 5 and cfg.pbt.population_size == 4
    cfg, st = load_study_config(SHIPPED, ["spike_study.seeds=2", "pbt.population_size=6"])
    assert st.seeds == 2 and cfg.pbt.population_size == 6
    with pytest.raises(ConfigError, match="spike_study.seedz"):
        load_study_config(SHIPPED, ["spike_study.seedz=2"])
    with pytest.raises(ConfigError, match="spike_study.strategies"):
        load_study_config(SHIPPED, ["spike_study.strategies=[keep, stale]"])
    assert main(["spike-study", SHIPPED, "spike_study.updates_after=0"]) == 2


def test_same_seed_same_study_records(tmp_path):
    cfg, st = load_study_config(SHIPPED, SMALL)
    a = run_seed(cfg, st, 0, tmp_path / "a", log=lambda *_: None)
    b = run_seed(cfg, st, 0, tmp_path / "b", log=lambda *_: None)
    assert len(a) == 1
    assert json.dumps([r.to_dict() for r in a]) == json.dumps([r.to_dict() for r in b])


@pytest.mark.parametrize("transfer", ["whole_state", "weights_only"])
def test_the_study_s_clones_take_the_run_s_transfer(tmp_path, monkeypatch, transfer):
    """Every exploit the study makes on its clones moves what the run's own exploits move (pbt.transfer)."""
    import rpbt.studies.spike as spike

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("transfer", "whole_state"))
        return exploit(*args, **kwargs)

    monkeypatch.setattr(spike, "exploit", spy)
    cfg, st = load_study_config(SHIPPED, SMALL + [f"pbt.transfer={transfer}"])
    assert len(run_seed(cfg, st, 0, tmp_path / "a", log=lambda *_: None)) == 1
    assert seen and set(seen) == {transfer}


def test_spike_study_command_writes_json_table_and_plot(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["spike-study", SHIPPED, *SMALL, f"spike_study.out_dir={out}"]) == 0
    doc = json.loads((out / "spike_study.json").read_text())
    assert (out / "spike_study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "spike_study.md").read_text()
    assert "| keep |" in table and "| burn_in |" in table and "| control |" in table
    assert "spike_study.md" not in capsys.readouterr().err
    records = doc["records"]
    assert len(records) == 2 and {r["seed"] for r in records} == {0, 1}  # 1 exploit in each of 2 seeds
    for r in records:
        assert set(r["arms"]) == {"keep", "zero", "reset_episodes", "burn_in", "control"}
        for e in r["arms"].values():
            assert len(e["value_loss"]) == 2
            assert e["relative_value_loss"] == pytest.approx([v / r["donor_value_loss"] for v in e["value_loss"]])
        assert r["arms"]["burn_in"]["measurements"]["pbt/hidden_state_drift"] == 0.0
        assert r["arms"]["zero"]["measurements"]["pbt/hidden_state_drift"] in (0.0, pytest.approx(1.0))
        assert r["arms"]["burn_in"]["ratio_vs_burn_in"] == [1.0, 1.0]
        assert set(r["common_rollout"]) == {"keep", "zero", "burn_in"}
        # burn_in's carried state is the replay start the acting used: its replayed loss is the reference.
        assert r["common_rollout"]["burn_in"]["all"] > 0
    summ = doc["summary"]["arms"]
    assert len(summ["keep"]["relative_value_loss"]) == 2 and summ["keep"]["relative_value_loss"][0]["n"] == 2
    assert "common_rollout_vs_burn_in" in summ["zero"]
    # The summary's geometric means are those of the records (per seed: one exploit each here).
    for k in range(2):
        per_seed = [r["arms"]["keep"]["relative_value_loss"][k] for r in sorted(records, key=lambda r: r["seed"])]
        assert summ["keep"]["relative_value_loss"][k]["mean"] == pytest.approx(float(np.exp(np.log(per_seed).mean())))
    # The exploit events of the real runs are in each seed's run directory.
    events = [json.loads(x) for x in (out / "runs" / "seed_0" / "events.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "exploit" for e in events) >= 1
