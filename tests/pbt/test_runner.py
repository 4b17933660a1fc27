"""End to end: the round loop writes the run directory; same seed, same run; CLI; resume."""

from __future__ import annotations

import csv
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


def test_tiny_run_writes_every_run_directory_file(tmp_path):
    cfg = tiny_config(f"run.dir={tmp_path / 'run'}", "run.tensorboard=true")
    runner = PopulationRunner(cfg, tmp_path / "run")
    runner.start()
    summary = runner.run(progress=False)
    run = tmp_path / "run"
    assert yaml.safe_load((run / "config.yaml").read_text())["pbt"]["population_size"] == 4
    events = _events(run)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end"
    rounds = [e for e in events if e["type"] == "round"]
    assert [e["round"] for e in rounds] == list(range(1, runner.total_rounds + 1))
    exploits = [e for e in events if e["type"] == "exploit"]
    assert exploits, "the tiny config must exploit at least once"
    for e in exploits:
        assert {"recipient", "donor", "old_hparams", "new_hparams", "recipient_score", "donor_score",
                "measurements", "hidden_state"} <= set(e)
        assert e["recipient"] != e["donor"]
    # wall-clock accounting: each round's training time, each round's transfer time (the same on its exploit lines,
    # within the round's own clock)
    assert all(0 < e["train_s"] <= e["time"] for e in rounds)
    for r in {e["round"] for e in exploits}:
        spent = {e["transfer_s"] for e in exploits if e["round"] == r}
        assert len(spent) == 1 and spent.pop() > 0
    for m in range(4):
        with (run / "members" / str(m) / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == runner.total_updates
        for key in ["round", "env_steps", "rollout/ep_rew_mean", "train/value_loss", "train/approx_kl",
                    "train/learning_rate", "time/fps", "pbt/score", "pbt/hp/learning_rate"]:
            assert key in rows[0], key
        assert list((run / "members" / str(m) / "tb").glob("events.out.tfevents.*"))
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["round"] == runner.total_rounds
    assert sorted(p.name for p in (run / "checkpoints" / state["checkpoint_dir"]).iterdir()) == [
        f"member_{m}.pt" for m in range(4)] + ["runner.json"]
    # the last run.keep_checkpoints (default 2) committed rounds are kept, each with its runner state
    kept = [f"round_{r:06d}" for r in (runner.total_rounds, runner.total_rounds - 1)]
    assert state["history"] == kept
    assert sorted(p.name for p in (run / "checkpoints").glob("round_*")) == sorted(kept)
    assert json.loads((run / "checkpoints" / kept[1] / "runner.json").read_text())["round"] == runner.total_rounds - 1
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk["best_member"] == summary["best_member"]
    assert {"best_score", "hparams", "lineage", "scores"} <= set(on_disk)
    # The lineage of the best member is a chain of real exploits.
    for link in on_disk["lineage"]:
        assert any(e["round"] == link["round"] and e["donor"] == link["member"] for e in exploits)


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


def test_resume_continues_from_last_completed_round(tmp_path, capsys):
    run = tmp_path / "r"
    cfg = tiny_config(f"run.dir={run}")
    runner = PopulationRunner(cfg, run)
    runner.start()
    runner.play_round()
    runner.play_round()
    # simulate a kill after round 2 committed while round 3 was half recorded
    runner.backend.train(1)
    runner.rundir.write_event({"type": "round", "round": 3, "scores": [], "hparams": []})
    with (run / "events.jsonl").open("a") as f:
        f.write('{"type": "exploit", "rou')
    runner.close()
    assert main(["resume", str(run)]) == 0
    events = _events(run)
    rounds = [e["round"] for e in events if e["type"] == "round"]
    assert rounds == list(range(1, runner.total_rounds + 1))
    assert [e["type"] for e in events].count("resume") == 1
    assert json.loads((run / "summary.json").read_text())["round"] == runner.total_rounds
    assert main(["resume", str(tmp_path / "nothing")]) == 2
    assert f"no rpbt run directory at {tmp_path / 'nothing'}" in capsys.readouterr().err


def test_resume_falls_back_past_a_corrupted_latest_round_and_says_so(tmp_path, capsys):
    run = tmp_path / "r"
    cfg = tiny_config(f"run.dir={run}", "run.total_env_steps=256")  # 4 rounds
    runner = PopulationRunner(cfg, run)
    runner.start()
    for _ in range(3):
        runner.play_round()
    runner.close()
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["history"] == ["round_000003", "round_000002"]
    bad = run / "checkpoints" / "round_000003" / "member_2.pt"
    bad.write_bytes(bad.read_bytes()[:100])  # a corrupted latest checkpoint
    (run / "checkpoints" / ".runner.json.abc123.tmp").write_text("{")  # a write cut short by a kill
    assert main(["resume", str(run)]) == 0
    captured = capsys.readouterr()
    assert "round 3 skipped, resuming from round 2" in captured.err and str(bad) in captured.err
    assert "resuming" in captured.out and "after round 2/4" in captured.out
    events = _events(run)
    resume = [e for e in events if e["type"] == "resume"]
    assert len(resume) == 1 and resume[0]["round"] == 2
    assert [(s["round"], s["folder"]) for s in resume[0]["skipped"]] == [(3, "round_000003")]
    assert str(bad) in resume[0]["skipped"][0]["reason"]
    assert [e["round"] for e in events if e["type"] == "round"] == [1, 2, 3, 4]  # round 3 replayed once
    times = [e["time"] for e in events]
    assert times == sorted(times)  # the run's clock continues from the resumed round's
    for m in range(4):
        with (run / "members" / str(m) / "metrics.csv").open() as f:
            assert [int(r["update"]) for r in csv.DictReader(f)] == list(range(1, 9))
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["round"] == 4 and state["history"] == ["round_000004", "round_000003"]
    assert sorted(p.name for p in (run / "checkpoints").glob("round_*")) == ["round_000003", "round_000004"]
    assert not list(run.rglob("*.tmp"))
    from rpbt.checkpoint import MemberState

    assert int(MemberState.load(bad).tensors["updates"]) == 6  # the replayed round rewrote the folder
    # When no kept round restores, resume stops naming every round's problem and changes nothing.
    for folder in ("round_000004", "round_000003"):
        (run / "checkpoints" / folder / "member_0.pt").write_bytes(b"junk")
    before = (run / "events.jsonl").read_text()
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "none of the kept rounds can be restored" in err and "round 4:" in err and "round 3:" in err
    assert "Traceback" not in err and (run / "events.jsonl").read_text() == before


def test_a_resume_is_deterministic_given_its_commit(tmp_path, capsys):
    """The resume contract (README): two resumes of the same committed round play the same rounds, bit for bit."""
    import shutil

    run = tmp_path / "r"
    runner = PopulationRunner(tiny_config(f"run.dir={run}", "run.total_env_steps=256"), run)  # 4 rounds
    runner.start()
    runner.play_round()
    runner.play_round()
    runner.backend.train(1)  # killed mid-round 3: its work is lost, the resume starts from round 2's commit
    runner.close()
    copies = [tmp_path / "a", tmp_path / "b"]
    for c in copies:
        shutil.copytree(run, c)
        assert main(["resume", str(c)]) == 0
    capsys.readouterr()
    a, b = (_strip_time(_events(c)) for c in copies)
    assert a == b and [e["round"] for e in a if e["type"] == "round"] == [1, 2, 3, 4]

    def metrics(c, m):
        with (c / "members" / str(m) / "metrics.csv").open() as f:
            return [{k: v for k, v in r.items() if k not in ("time", "time/fps")} for r in csv.DictReader(f)]

    for m in range(4):
        assert metrics(copies[0], m) == metrics(copies[1], m)


def test_keep_checkpoints_bounds_the_round_folders(tmp_path):
    run = tmp_path / "k"
    runner = PopulationRunner(tiny_config(f"run.dir={run}", "run.keep_checkpoints=1"), run)
    runner.start()
    runner.run(progress=False)
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["history"] == [state["checkpoint_dir"]]
    assert [p.name for p in (run / "checkpoints").glob("round_*")] == [state["checkpoint_dir"]]


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


def test_overwrite_only_replaces_an_idle_run_directory_and_a_failed_start_writes_nothing(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("my thesis")
    assert main(["train", *TINY, f"run.dir={precious}", "--overwrite"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (precious / "thesis.txt").read_text() == "my thesis"
    # a bad env id fails before the run directory is created
    assert main(["train", *TINY, f"run.dir={tmp_path / 'bad'}", "env.id=NoSuchEnv-v0"]) == 2
    assert not (tmp_path / "bad").exists()
    # a run directory held by another process is neither overwritten nor resumed
    run = tmp_path / "busy"
    assert main(["train", *TINY, f"run.dir={run}"]) == 0
    from rpbt.run.rundir import RunDirectory

    holder = RunDirectory(run, 4)
    holder.lock()
    try:
        assert main(["resume", str(run)]) == 2
        assert "another rpbt process" in capsys.readouterr().err
        assert main(["train", *TINY, f"run.dir={run}", "--overwrite"]) == 2
        assert (run / "summary.json").is_file()
    finally:
        holder.close()
    assert main(["train", *TINY, f"run.dir={run}", "--overwrite"]) == 0


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
