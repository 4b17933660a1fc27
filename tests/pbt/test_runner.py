"""End to end: the round loop writes the run directory; same seed, same run; CLI; resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from rpbt.cli import main
from rpbt.pbt.runner import PopulationRunner
from rpbt.pbt.scoring import score_returns
from tests.conftest import TINY, tiny_config


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


WALL_CLOCK = ("time", "train_s", "transfer_s")  # the only event fields allowed to differ between equal runs


def _strip_time(events):
    return [{k: v for k, v in e.items() if k not in WALL_CLOCK} for e in events]


def test_same_seed_same_events_and_scores(tmp_path):
    outs = []
    for name in ["a", "b"]:
        cfg = tiny_config(f"run.dir={tmp_path / name}")
        runner = PopulationRunner(cfg, tmp_path / name)
        runner.start()
        runner.run(progress=False)
        outs.append(_strip_time(_events(tmp_path / name)))
    assert outs[0] == outs[1]
    cfg = tiny_config(f"run.dir={tmp_path / 'c'}", "run.seed=1")
    runner = PopulationRunner(cfg, tmp_path / "c")
    runner.start()
    runner.run(progress=False)
    assert _strip_time(_events(tmp_path / "c")) != outs[0]


def test_score_is_mean_or_cvar_of_the_last_k_returns():
    cfg = tiny_config("pbt.score_window=4")
    assert score_returns([100.0, 1.0, 2.0, 3.0, 6.0], cfg.pbt) == pytest.approx(3.0)
    assert score_returns([], cfg.pbt) is None
    cvar = tiny_config("pbt.score_window=4", "pbt.score=cvar", "pbt.score_cvar_alpha=0.5")
    assert score_returns([100.0, 1.0, 2.0, 3.0, 6.0], cvar.pbt) == pytest.approx(1.5)  # mean of worst 2 of 4


def test_cli_train_config_and_bad_key(tmp_path, capsys):
    run = tmp_path / "cli"
    assert main(["train", *TINY, f"run.dir={run}"]) == 0
    assert (run / "summary.json").is_file()
    # a second train with the same run.dir numbers a new directory instead of overwriting
    assert main(["train", *TINY, f"run.dir={run}"]) == 0
    assert (tmp_path / "cli_2" / "summary.json").is_file()
    capsys.readouterr()
    assert main(["config", "pbt.population_size=3"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["pbt"]["population_size"] == 3 and printed["agent"]["critic"]["num_quantiles"] == 32
    assert main(["train", "agent.learnig_rate=1"]) == 2
    err = capsys.readouterr().err
    assert "agent.learnig_rate" in err and "unknown key" in err


def test_exploit_forks_the_recipients_rng_deterministically():
    from rpbt.pbt.backends.local import LocalBackend

    draws = []
    for _ in range(2):
        backend = LocalBackend(tiny_config(), [{}] * 4)
        backend.train(1)
        donor = backend.snapshot(3)
        backend.exploit(0, donor, donor.hparams())
        backend.exploit(1, donor, donor.hparams())
        gens = backend.shard.policy.generators
        first = [torch.rand(3, generator=gens[m]).tolist() for m in (0, 1, 3)]
        assert first[0] != first[2] and first[1] != first[2] and first[0] != first[1]
        draws.append(first)
        backend.close()
    assert draws[0] == draws[1]


def test_a_restored_member_starts_fresh_episodes_seeded_by_its_progress():
    from rpbt.pbt.backends.local import LocalBackend

    backend = LocalBackend(tiny_config(), [{}] * 4)
    start_obs = backend.shard.runner.carried.next_obs.clone()
    backend.train(2)
    state = backend.snapshot(1)
    backend.restore(1, state)
    carried = backend.shard.runner.carried
    assert bool(carried.episode_start[1].all())
    assert all(float(h[1].abs().sum()) == 0.0 for h, _ in carried.hidden.values())
    # not the episodes the run started with, and the same for the same restored progress
    assert not torch.equal(carried.next_obs[1], start_obs[1])
    again = LocalBackend(tiny_config(), [{}] * 4)
    again.restore(1, state)
    assert torch.equal(again.shard.runner.carried.next_obs[1], carried.next_obs[1])
    backend.close()
    again.close()


def test_a_budget_that_ends_before_anyone_is_ready_warns_that_pbt_will_never_act(tmp_path, capsys):
    from rpbt.pbt.runner import NoExploitWarning

    # TINY: 192 env steps per member = 6 updates; burn_in 50 is never reached
    with pytest.warns(NoExploitWarning, match=r"first ready point is update 50 .* the run has 6 updates"):
        runner = PopulationRunner(tiny_config("pbt.burn_in=50", f"run.dir={tmp_path / 'a'}"), tmp_path / "a")
        runner.start()
        runner.close()
    capsys.readouterr()
    assert main(["train", *TINY, "pbt.perturbation_interval=7", f"run.dir={tmp_path / 'b'}"]) == 0
    assert "rpbt: warning: no member is ever ready: the first ready point is update 7" in capsys.readouterr().err


def test_truncation_groups_of_one_member_are_said_once_at_the_start(tmp_path, capsys):
    """pbt.quantile_fraction 0.25 at a population of 4 (0.2 at 5..9) rounds truncation selection's top and bottom
    groups to one member: every exploit copies the single best member. The start says so, once; a population of 8
    (the default job's) does not, and neither does tournament selection, which has no groups."""
    import warnings

    from rpbt.config import Config
    from rpbt.pbt.runner import SingleDonorWarning, single_donor_warning

    assert single_donor_warning(Config().pbt) is None  # the default job: groups of 2 of 8
    message = single_donor_warning(tiny_config().pbt)  # TINY: population 4, quantile_fraction 0.25
    assert message is not None and message.startswith("pbt.quantile_fraction 0.25 at pbt.population_size 4:")
    assert "groups of 1 member (max(1, floor(0.25 x 4)) = 1)" in message and "single best member" in message
    assert "pbt.quantile_fraction >= 0.5 or pbt.population_size >= 8" in message
    q02 = single_donor_warning(tiny_config("pbt.population_size=9", "pbt.quantile_fraction=0.2").pbt)
    assert q02 is not None and "floor(0.2 x 9)" in q02
    assert "pbt.quantile_fraction >= 0.23 or pbt.population_size >= 10" in q02
    assert single_donor_warning(tiny_config("pbt.population_size=10", "pbt.quantile_fraction=0.2").pbt) is None
    assert single_donor_warning(tiny_config("pbt.quantile_fraction=0.5").pbt) is None
    assert single_donor_warning(tiny_config("pbt.exploit=tournament").pbt) is None
    assert single_donor_warning(tiny_config("pbt.population_size=3").pbt) is None  # one a side is all 3 allow

    with pytest.warns(SingleDonorWarning) as caught:
        runner = PopulationRunner(tiny_config(f"run.dir={tmp_path / 'a'}"), tmp_path / "a")
        runner.start()
        runner.close()
    assert [str(w.message) for w in caught if w.category is SingleDonorWarning] == [message]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = PopulationRunner(tiny_config("pbt.population_size=8", f"run.dir={tmp_path / 'b'}"), tmp_path / "b")
        runner.start()
        runner.close()
    assert not [w for w in caught if issubclass(w.category, SingleDonorWarning)]
    capsys.readouterr()
    assert main(["train", *TINY, "run.total_env_steps=64", f"run.dir={tmp_path / 'c'}"]) == 0
    err = capsys.readouterr().err
    assert err.count(f"rpbt: warning: {message}\n") == 1 and err.count("rpbt: warning") == 1, err


def test_ttest_and_pb2_run_records_refused_exploits_and_resumes_with_the_model(tmp_path):
    run = tmp_path / "r"
    cfg = tiny_config(f"run.dir={run}", "pbt.ttest=true", "pbt.ttest_window=2", "pbt.explore=pb2",
                      "pbt.pb2.candidates=16", "pbt.pb2.min_data=2", "pbt.score_since_exploit=true",
                      "pbt.score_window=2", "run.total_env_steps=384")
    runner = PopulationRunner(cfg, run)
    runner.start()
    for _ in range(3):
        runner.play_round()
    committed = runner.scheduler.state_dict()
    marks = [record.episode_mark for record in runner.members]
    runner.close()
    assert committed["pb2"]["data"], "PB2's observations are committed with the round"
    resumed = PopulationRunner(cfg, run)
    resumed.resume()
    assert resumed.scheduler.state_dict() == json.loads(json.dumps(committed))
    assert [record.episode_mark for record in resumed.members] == marks
    resumed.run(progress=False)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    tested = [e for e in events if e["type"] in ("exploit", "exploit_refused")]
    assert tested, "some pair must have been tested"
    for e in tested:
        if e["type"] == "exploit":
            assert e["ttest"]["p"] < 0.05 and e["explore"] in ("perturb", "pb2")
        else:
            assert e["reason"] in ("not significant", "too few returns")
