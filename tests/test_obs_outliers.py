"""Observation outliers: an environment that emits a finite but absurd observation now and then is named, once per
member, on every backend, and ``agent.raw_obs_clip`` keeps it from ruining the observation normalizer.

The environment is ``tests.custom_envs:RpbtSpikyCartPole-v0``: CartPole whose observation index 1 is 1e30 at every
30th step of each environment (so every member sees spikes in several rounds of a tiny run).
"""

from __future__ import annotations

import csv
import json
import warnings

import pytest

from rpbt.cli import main
from rpbt.pbt.runner import ObsOutlierWarning, PopulationRunner
from tests.conftest import TINY, Learner, tiny_config

SPIKY = "env.id=tests.custom_envs:RpbtSpikyCartPole-v0"


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _run(run_dir, *overrides):
    """A tiny run to its end; returns its events and the ObsOutlierWarnings it gave."""
    cfg = tiny_config(f"run.dir={run_dir}", *overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = PopulationRunner(cfg, run_dir)
        runner.start()
        runner.run(progress=False)
    return _events(run_dir), [w for w in caught if issubclass(w.category, ObsOutlierWarning)]


def test_a_spiking_env_warns_once_per_member_naming_env_and_index_and_counts_in_the_events(tmp_path):
    run = tmp_path / "run"
    events, warned = _run(run, SPIKY)
    rounds = [e for e in events if e["type"] == "round"]
    assert len(rounds) == 3 and all(sum(e["obs_outliers"]) > 0 for e in rounds)  # spikes in every round ...
    assert len(warned) == 4  # ... but one warning per member
    for m, w in enumerate(sorted(warned, key=lambda w: str(w.message).split("member ")[1])):
        msg = str(w.message)
        assert "env 'tests.custom_envs:RpbtSpikyCartPole-v0'" in msg and f"member {m} " in msg
        assert "observation index 1 at 1e+30" in msg and "agent.raw_obs_clip" in msg
    firsts = [e for e in events if e["type"] == "obs_outlier"]
    assert sorted(e["member"] for e in firsts) == [0, 1, 2, 3]
    for e in firsts:
        assert e["env"] == "tests.custom_envs:RpbtSpikyCartPole-v0" and e["index"] == 1
        assert e["value"] == pytest.approx(1e30, rel=1e-6) and e["count"] >= 1 and e["round"] == 1
    # every spike is counted: each environment spikes at its steps 30, 60, 90 (96 steps per environment)
    assert [sum(e["obs_outliers"][m] for e in rounds) for m in range(4)] == [3 * 2] * 4
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["obs_outliers"] == [6, 6, 6, 6]
    with (run / "members" / "0" / "metrics.csv").open() as f:
        assert not [c for c in next(csv.reader(f)) if "outlier" in c]  # the events hold them, not the metrics


def test_the_default_job_gives_no_outlier_warning(tmp_path):
    events, warned = _run(tmp_path / "run")  # POPGym's position-only CartPole, TINY overrides
    assert not warned
    assert not [e for e in events if e["type"] == "obs_outlier"]
    assert all(e["obs_outliers"] == [0, 0, 0, 0] for e in events if e["type"] == "round")


def test_the_process_backend_warns_in_the_driver_as_one_cli_line_per_member(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", *TINY, SPIKY, "backend.kind=process", "backend.num_workers=2", f"run.dir={run}"]
    assert main(args) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "observation index" in x]
    assert len(lines) == 4 and all(x.startswith("rpbt: warning: env 'tests.custom_envs:RpbtSpikyCartPole-v0'")
                                   for x in lines)
    assert sorted(int(x.split("member ")[1].split()[0]) for x in lines) == [0, 1, 2, 3]
    firsts = [e for e in _events(run) if e["type"] == "obs_outlier"]
    assert sorted(e["member"] for e in firsts) == [0, 1, 2, 3] and all(e["index"] == 1 for e in firsts)


def test_raw_obs_clip_keeps_the_normalizer_sane_and_is_off_by_default():
    means = {}
    for clip in (None, 5.0):
        learner = Learner(tiny_config(SPIKY, *([f"agent.raw_obs_clip={clip}"] if clip else [])), [0, 1])
        try:
            for _ in range(4):  # 64 steps per environment: two spikes each
                learner.train_update()
            means[clip] = learner.policy.obs_rms.mean[:, 1].abs().max().item()
            var = learner.policy.obs_rms.var[:, 1].max().item()
        finally:
            learner.close()
    assert means[None] > 1e27  # off by default: the spikes drag the running mean away (the 2.7e28)
    assert means[5.0] < 1.0 and var < 5.0 ** 2  # clipped before the statistics: the cart velocity's scale
