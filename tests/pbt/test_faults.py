"""Member faults: a member whose observations or rewards turn non-finite is caught, named and handled.

The environment is ``tests.nan_env:NanCartPole-v0`` (a user's custom environment through Gymnasium's
``module:EnvId`` form), which returns a NaN observation or reward now and then from its own seeded generator.
"""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch

from rpbt.checkpoint import MemberState
from rpbt.cli import main
from rpbt.pbt.runner import MemberFaultError, ObsOutlierWarning, PopulationRunner
from tests.conftest import TINY, tiny_config

ENV = "env.id=tests.nan_env:NanCartPole-v0"


def _events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _run(run_dir, *overrides):
    cfg = tiny_config(ENV, "run.total_env_steps=384", f"run.dir={run_dir}", *overrides)
    runner = PopulationRunner(cfg, run_dir)
    runner.start()
    return runner, runner.run(progress=False)


def test_restore_policy_puts_a_faulty_member_back_and_the_run_goes_on_clean(tmp_path):
    run = tmp_path / "run"
    runner, summary = _run(run, "env.kwargs={p: 0.003, what: obs}", "run.on_member_fault=restore",
                           "run.max_member_faults=10")
    events = _events(run)
    faults = [e for e in events if e["type"] == "member_fault"]
    assert faults, "the seeded NaN environment must fault at least once"
    for f in faults:
        assert f["quantity"] == "observation"
        assert f["action"] == ("copied member 0" if f["round"] == 1 else f"restored from round {f['round'] - 1}")
        # a faulty member neither scores nor donates in that round
        rnd = next(e for e in events if e["type"] == "round" and e["round"] == f["round"])
        assert rnd["scores"][f["member"]] is None
        assert not any(e["type"] == "exploit" and e["round"] == f["round"] and e["donor"] == f["member"]
                       for e in events)
    assert events[-1]["type"] == "end"
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    for m in range(4):
        ms = MemberState.load(run / "checkpoints" / state["checkpoint_dir"] / f"member_{m}.pt")
        for k, v in ms.tensors.items():
            assert torch.isfinite(v.double()).all(), f"member {m}'s committed {k} is not finite"
    assert summary["best_score"] is not None


def test_error_policy_stops_at_the_first_fault_naming_env_member_update_and_quantity(tmp_path):
    with pytest.raises(MemberFaultError) as err:
        _run(tmp_path / "run", "env.kwargs={p: 0.003, what: reward}", "run.on_member_fault=error")
    msg = str(err.value)
    assert "tests.nan_env:NanCartPole-v0" in msg and "member 1" in msg and "update 2" in msg
    assert "non-finite reward" in msg and "on_member_fault is 'error'" in msg


@pytest.mark.parametrize("policy", ["restore", "error"])
def test_every_member_faulting_in_one_update_is_named_with_its_quantity(tmp_path, policy):
    # p = 1: every member's first observation after a step is NaN, so all four fault in update 1; under restore no
    # healthy member is left to copy, under error the first fault stops the run. Either way the error names them all.
    run = tmp_path / "run"
    with pytest.raises(MemberFaultError) as err:
        _run(run, "env.kwargs={p: 1.0, what: obs}", f"run.on_member_fault={policy}")
    msg = str(err.value)
    for m in range(4):
        assert f"member {m} produced a non-finite observation at update 1" in msg, msg
    assert "tests.nan_env:NanCartPole-v0" in msg
    reason = "on_member_fault is 'error'" if policy == "error" else "no healthy member to copy"
    assert reason in msg and "members 0, 1, 2, 3" in msg
    stops = [e for e in _events(run) if e["type"] == "member_fault"]
    assert [e["member"] for e in stops] == [0, 1, 2, 3]
    assert all(e["action"] == "stop" and e["quantity"] == "observation" for e in stops)


def test_too_many_faults_of_one_member_stop_the_run_with_exit_code_2_and_nothing_corrupt_committed(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", *TINY, ENV, "env.kwargs={p: 0.02, what: obs}", "run.total_env_steps=384", f"run.dir={run}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "run.max_member_faults (3) reached" in err and "non-finite observation" in err
    assert "Traceback" not in err
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    for m in range(4):
        ms = MemberState.load(run / "checkpoints" / state["checkpoint_dir"] / f"member_{m}.pt")
        assert all(torch.isfinite(v.double()).all() for v in ms.tensors.values())
    stops = [e for e in _events(run) if e["type"] == "member_fault" and e["action"] == "stop"]
    assert [e["faults"] for e in stops if "reason" in e] == [3]
    # every member that faulted in the stopping round is named in the message, not only the one at the limit
    assert all(f"member {e['member']} produced a non-finite observation at update {e['update']}" in err
               for e in stops)


def test_a_restore_after_a_fault_does_not_replay_the_failed_attempt_and_a_plain_restore_does():
    from rpbt.pbt.backends.local import LocalBackend

    backend = LocalBackend(tiny_config(), [{}] * 2)
    try:
        backend.train(1)
        state = backend.snapshot(1)

        def attempt(retry):  # restore member 1, train one update; its weights after it
            backend.restore(1, state, retry=retry)
            backend.train(1)
            return backend.snapshot(1).tensors

        plain, plain_again, first_retry, second_retry = attempt(0), attempt(0), attempt(1), attempt(2)
    finally:
        backend.close()
    weights = [k for k in plain if k.startswith("actor")] or list(plain)
    assert all(torch.equal(plain[k], plain_again[k]) for k in plain)  # a resume is deterministic
    for a, b in ((plain, first_retry), (first_retry, second_retry)):
        assert any(not torch.equal(a[k], b[k]) for k in weights), "a retry replayed the attempt before it"


def test_faults_leave_each_members_own_env_step_count_in_the_events_and_summary(tmp_path):
    run = tmp_path / "run"
    runner, summary = _run(run, "env.kwargs={p: 0.004, what: obs}", "run.on_member_fault=restore",
                           "run.max_member_faults=10")
    events = _events(run)
    assert any(e["type"] == "member_fault" for e in events) and events[-1]["type"] == "end"
    rounds = [e for e in events if e["type"] == "round"]
    assert any(min(e["member_env_steps"]) < e["env_steps"] for e in rounds)  # a restored member lags
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    committed = [int(MemberState.load(run / "checkpoints" / state["checkpoint_dir"] / f"member_{m}.pt")
                     .tensors["env_steps"]) for m in range(4)]
    assert summary["member_env_steps"] == committed  # after the last round's exploits, which copy counters too
    assert max(committed) == summary["env_steps"]


def test_a_fault_before_the_first_commit_copies_a_healthy_member_into_its_lineage_with_its_own_generator(tmp_path):
    from rpbt.seeding import fault_retry_seed, restore_env_seeds

    run = tmp_path / "run"
    runner, _ = _run(run, "env.kwargs={p: 0.0015, what: obs}", "run.on_member_fault=restore", "pbt.burn_in=4",
                     "run.total_env_steps=128", "run.keep_checkpoints=5")
    first = next(e for e in _events(run) if e["type"] == "member_fault")
    assert first["round"] == 1 and first["action"] == "copied member 0"
    m = first["member"]
    state = json.loads((run / "checkpoints" / "runner.json").read_text())
    assert state["lineage"][m][0] == {"round": 1, "member": 0}
    copy = MemberState.load(run / "checkpoints" / "round_000001" / f"member_{m}.pt")
    donor = MemberState.load(run / "checkpoints" / "round_000001" / "member_0.pt")
    assert not torch.equal(copy.rng, donor.rng)  # a fork, not the donor's stream
    # the retry's seeds differ from a plain restore's and from another retry's
    assert restore_env_seeds(7, 64, 4, retry=1) != restore_env_seeds(7, 64, 4)
    assert restore_env_seeds(7, 64, 4, retry=1) != restore_env_seeds(7, 64, 4, retry=2)
    assert fault_retry_seed(0, m, 64, 1) != fault_retry_seed(0, m, 64, 2)


SPIKY = "env.id=tests.custom_envs:RpbtSpikyCartPole-v0"


def _spiky_events(run_dir):
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def _spiky_run(run_dir, *overrides):
    """A tiny run to its end; returns its events and the ObsOutlierWarnings it gave."""
    cfg = tiny_config(f"run.dir={run_dir}", *overrides)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runner = PopulationRunner(cfg, run_dir)
        runner.start()
        runner.run(progress=False)
    return _spiky_events(run_dir), [w for w in caught if issubclass(w.category, ObsOutlierWarning)]


def test_a_spiking_env_warns_once_per_member_naming_env_and_index_and_counts_in_the_events(tmp_path):
    run = tmp_path / "run"
    events, warned = _spiky_run(run, SPIKY)
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
    events, warned = _spiky_run(tmp_path / "run")  # POPGym's position-only CartPole, TINY overrides
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
    firsts = [e for e in _spiky_events(run) if e["type"] == "obs_outlier"]
    assert sorted(e["member"] for e in firsts) == [0, 1, 2, 3] and all(e["index"] == 1 for e in firsts)
