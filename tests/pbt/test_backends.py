"""Backends: local, process and Ray give the same decisions; a dead worker is restarted from the committed
checkpoints; SIGKILL of a whole run followed by ``rpbt resume``; truncated checkpoints are refused."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rpbt.checkpoint import CheckpointError, MemberState
from rpbt.cli import main
from rpbt.pbt.backends.commands import MemberInfo, Restore
from rpbt.pbt.backends.process import BackendError
from rpbt.pbt.runner import PopulationRunner
from tests.conftest import TINY, tiny_config

# Seed 2 with P=4 in two shards [0, 1] | [2, 3] exploits both inside a shard (index copy) and across shards
# (bytes), and every member has finished episodes (no None scores) from round 1 on. One update per round, 6 rounds.
# torch_threads=1 everywhere: intra-op thread counts change float rounding, shard sizes do not.
DECIDE = ["run.torch_threads=1", "pbt.perturbation_interval=1", "pbt.burn_in=1", "run.total_env_steps=192",
          "run.seed=2", "pbt.quantile_fraction=0.25"]
REPO = Path(__file__).resolve().parents[2]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def _decisions(events: list[dict]) -> list[tuple]:
    return [(e["round"], e["recipient"], e["donor"], e["old_hparams"], e["new_hparams"], e["resampled"])
            for e in events if e["type"] == "exploit"]


def _scores(events: list[dict]) -> list[list]:
    return [e["scores"] for e in events if e["type"] == "round"]


def _run(tmp: Path, *overrides: str) -> tuple[PopulationRunner, list[dict]]:
    cfg = tiny_config(f"run.dir={tmp}", *DECIDE, *overrides)
    runner = PopulationRunner(cfg, tmp)
    runner.start()
    runner.run(progress=False)
    return runner, _events(tmp)


def _assert_same_run(reference: list[dict], other: list[dict]) -> None:
    assert _decisions(other) == _decisions(reference)
    ref_scores, scores = _scores(reference), _scores(other)
    assert len(scores) == len(ref_scores)
    for a, b in zip(ref_scores, scores):
        assert b == pytest.approx(a, rel=1e-6, abs=1e-9)
    ref_m = [e["measurements"] for e in reference if e["type"] == "exploit"]
    m = [e["measurements"] for e in other if e["type"] == "exploit"]
    for a, b in zip(ref_m, m):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7)


def _metrics(run_dir: Path, member: int) -> list[dict]:
    with (run_dir / "members" / str(member) / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _kill_on(backend, shards, commands: tuple[str, ...]) -> list[tuple[int, int]]:
    """SIGKILL the worker of the first of ``shards`` that is sent one of ``commands``, right after sending it.

    Returns [(shard, pid)] once it has happened. Restarted workers get new handles, which are not patched.
    """
    killed: list[tuple[int, int]] = []
    for shard in ([shards] if isinstance(shards, int) else shards):
        handle = backend._handles[shard]

        def send(command, handle=handle, original=handle.send, shard=shard):
            original(command)
            if command.name in commands and not killed:
                killed.append((shard, handle.pid))
                os.kill(handle.pid, signal.SIGKILL)

        handle.send = send
    return killed


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory) -> list[dict]:
    _, events = _run(tmp_path_factory.mktemp("local") / "run")
    decisions = _decisions(events)
    same = [d for d in decisions if d[1] // 2 == d[2] // 2]
    assert same and len(same) < len(decisions), "the config must exploit inside and across the two shards"
    assert all(s is not None for scores in _scores(events) for s in scores)
    return events


# ------------------------------------------------------------------------------------------------- layout


# ------------------------------------------------------------------------------------------------- same results


def test_process_backend_gives_the_local_decisions_and_scores(tmp_path, local_reference):
    runner, events = _run(tmp_path / "run", "backend.kind=process", "backend.num_workers=2")
    _assert_same_run(local_reference, events)
    assert not [e for e in events if e["type"] == "failure"]
    # the committed checkpoints hold the same member states as the local run would have written
    state = json.loads((tmp_path / "run" / "checkpoints" / "runner.json").read_text())
    assert state["round"] == runner.total_rounds


def test_ray_backend_gives_the_local_decisions_and_survives_a_killed_actor(tmp_path, local_reference):
    if os.environ.get("RPBT_REQUIRE_RAY"):  # CI: a missing Ray is a failure, not a skip
        import ray
    else:
        ray = pytest.importorskip("ray", reason="the optional 'ray' package is not installed "
                                                "(pip install 'rpbt[ray]')")
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # a local instance with 2 CPUs
    try:
        runner, events = _run(tmp_path / "ray", "backend.kind=ray", "backend.num_workers=2",
                              "backend.num_cpus_per_shard=1")
        _assert_same_run(local_reference, events)
        assert ray.is_initialized(), "a Ray instance the user started is left running"

        # an actor killed mid-round is recreated from the committed checkpoint and the round replayed
        cfg = tiny_config(f"run.dir={tmp_path / 'ray_kill'}", *DECIDE, "backend.kind=ray", "backend.num_workers=2")
        runner = PopulationRunner(cfg, tmp_path / "ray_kill")
        runner.start()
        runner.play_round()
        backend = runner.backend
        handle = backend._handles[1]
        original = handle.send

        def send(command):
            original(command)
            if command.name == "train":
                ray.kill(handle.actor, no_restart=True)

        handle.send = send
        runner.run(progress=False)
        events = _events(tmp_path / "ray_kill")
        failures = [e for e in events if e["type"] == "failure"]
        assert [(f["round"], f["shard"], f["members"], f["action"]) for f in failures] == [(2, 1, [2, 3], "restart")]
        assert [e["round"] for e in events if e["type"] == "round"] == list(range(1, runner.total_rounds + 1))
        for m in range(4):
            assert [int(r["update"]) for r in _metrics(tmp_path / "ray_kill", m)] == list(
                range(1, runner.total_updates + 1))
    finally:
        ray.shutdown()


# ------------------------------------------------------------------------------------------------- failures


def test_exploits_of_different_shards_run_together_with_the_one_after_another_result(monkeypatch):
    # Shards [0, 1] | [2, 3]. Three exploits from donor 0: into 1 (same shard: an index copy, no snapshot
    # leaves the worker), into 3 and into 2 (across shards: donor 0's bytes, fetched once). Shard 1 has two, so
    # they take two waves; the first sends to both shards at once. Then member 3 (just overwritten) is itself
    # overwritten by 1 and gives to 2 in the same call, in that order: 2 must get 3's state as it was before the call.
    # Measurements and member states equal the local backend's snapshots-then-exploits one after another.
    from rpbt.config import member_hparams
    from rpbt.pbt.backends.local import LocalBackend
    from rpbt.pbt.backends.process import ProcessBackend

    cfg = tiny_config(*DECIDE, "backend.kind=process", "backend.num_workers=2")
    hp = [dict(member_hparams(cfg), learning_rate=1e-3 * (m + 1)) for m in range(4)]
    new_hp = [dict(hp[0], learning_rate=5e-4 * (k + 1)) for k in range(5)]
    local, sharded = LocalBackend(cfg, hp), ProcessBackend(cfg, hp)
    sent: list[dict] = []
    real_run_all = sharded._run_all
    monkeypatch.setattr(sharded, "_run_all", lambda commands: sent.append(
        {k: command.name for k, command in commands.items()}) or real_run_all(commands))
    try:
        for backend in (local, sharded):
            backend.train(1)
        first = [(1, 0, new_hp[0]), (3, 0, new_hp[1]), (2, 0, new_hp[2])]
        second = [(3, 1, new_hp[4]), (2, 3, new_hp[3])]
        sent.clear()
        out = [backend.exploit_many(first) for backend in (local, sharded)]
        assert sent == [{0: "snapshot"}, {0: "exploit_local", 1: "exploit"}, {1: "exploit"}]
        for backend in (local, sharded):  # 1 and 3 now train apart (different learning rates)
            backend.train(1)
        before_3 = local.snapshot(3)
        sent.clear()
        for k, backend in enumerate((local, sharded)):
            out[k] += backend.exploit_many(second)
        assert sent[-3:] == [{0: "snapshot", 1: "snapshot"}, {1: "exploit"}, {1: "exploit"}]
        assert out[0] == out[1] and len(out[1]) == 5 and "pbt/stale_state_drift" in out[1][0]
        for m in range(4):
            a, b = local.snapshot(m), sharded.snapshot(m)
            assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors), m
            assert a.hparams() == b.hparams()
        lr = {m: local.snapshot(m).hparams()["learning_rate"] for m in range(4)}
        assert (lr[1], lr[2], lr[3]) == (new_hp[0]["learning_rate"], new_hp[3]["learning_rate"],
                                         new_hp[4]["learning_rate"])
        # 2 got 3's weights from before the call, not the copy of 1 that 3 holds now
        weights = [k for k in before_3.tensors if k.startswith(("actor.", "critics.", "policy_head."))]
        assert weights
        now_2, now_3 = sharded.snapshot(2), sharded.snapshot(3)
        assert all(torch.equal(now_2.tensors[k], before_3.tensors[k]) for k in weights)
        assert not all(torch.equal(now_3.tensors[k], before_3.tensors[k]) for k in weights)
    finally:
        local.close()
        sharded.close()


def test_weights_only_exploits_keep_the_recipients_own_state_inside_a_shard_and_across_shards():
    # Shards [0, 1] | [2, 3]: 1 <- 0 inside a shard (the donor's state never leaves the worker), 3 <- 0 across shards
    # (the donor's bytes are restored in the other worker). Each recipient ends with every weight of the donor and
    # its own normalizers, optimizer moments and step, counters and generator, on the process backend as on the
    # local one.
    from rpbt.config import member_hparams
    from rpbt.pbt.backends.local import LocalBackend
    from rpbt.pbt.backends.process import ProcessBackend

    cfg = tiny_config(*DECIDE, "backend.kind=process", "backend.num_workers=2", "pbt.transfer=weights_only")
    hp = [dict(member_hparams(cfg), learning_rate=1e-3 * (m + 1)) for m in range(4)]
    new_hp = [dict(hp[0], learning_rate=5e-4 * (k + 1)) for k in range(2)]
    local, sharded = LocalBackend(cfg, hp), ProcessBackend(cfg, hp)
    try:
        for backend in (local, sharded):
            backend.train(2)
        before = {m: sharded.snapshot(m) for m in range(4)}
        weights = {n for n, _ in local.shard.policy.named_parameters()}
        kept = set(before[0].tensors) - weights - {"hp_learning_rate"}
        assert {"obs_rms.mean", "obs_rms.var", "optimizer.step_count", "updates"} <= kept
        for backend in (local, sharded):
            backend.exploit_many([(1, 0, new_hp[0]), (3, 0, new_hp[1])])
        for r, k in ((1, 0), (3, 1)):
            got = sharded.snapshot(r)
            for key in weights:
                assert torch.equal(got.tensors[key], before[0].tensors[key]), (r, key)
            for key in kept:
                assert torch.equal(got.tensors[key], before[r].tensors[key]), (r, key)
            assert not torch.equal(got.tensors["obs_rms.mean"], before[0].tensors["obs_rms.mean"])
            assert got.hparams()["learning_rate"] == new_hp[k]["learning_rate"]
            assert torch.equal(got.rng, before[r].rng)
        for m in range(4):
            a, b = local.snapshot(m), sharded.snapshot(m)
            assert all(torch.equal(a.tensors[key], b.tensors[key]) for key in a.tensors), m
            assert torch.equal(a.rng, b.rng)
    finally:
        local.close()
        sharded.close()

def test_killed_worker_restarts_from_committed_checkpoint_and_the_run_completes(tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = tiny_config(f"run.dir={run}", *DECIDE, "backend.kind=process", "backend.num_workers=2")
    runner = PopulationRunner(cfg, run)
    runner.start()
    backend = runner.backend
    loaded: list[str] = []
    real_from_bytes = MemberState.from_bytes.__func__

    def spy(cls, data, source="<bytes>"):
        loaded.append(source)
        return real_from_bytes(cls, data, source)

    monkeypatch.setattr(MemberState, "from_bytes", classmethod(spy))
    try:
        runner.play_round()
        # round 2: shard 1's worker dies while training
        killed = _kill_on(backend, 1, ("train",))
        runner.play_round()
        assert killed and backend.worker_pid(1) != killed[0][1]
        assert sorted(Path(s).name for s in loaded if "round_000001" in s) == ["member_2.pt", "member_3.pt"]
        # round 3: the recipient's worker dies while receiving the exploit: its shard is replayed from the
        # round-2 checkpoint (still on disk while the exploit is pending), then the exploit is done again
        killed = _kill_on(backend, [0, 1], ("exploit", "exploit_local"))
        exploits = runner.play_round()
        assert len(exploits) == 1 and killed and killed[0][0] == exploits[0]["recipient"] // 2
        shard3 = killed[0][0]
        assert sorted(Path(s).name for s in loaded if "round_000002" in s) == [
            f"member_{m}.pt" for m in backend.shards[shard3]]
        runner.run(progress=False)
    finally:
        runner.close()
    expected = [0, 1]
    expected[shard3] += 1
    assert backend.failures == expected
    events = _events(run)
    failures = [e for e in events if e["type"] == "failure"]
    assert [(f["round"], f["shard"], f["members"], f["action"]) for f in failures] == [
        (2, 1, [2, 3], "restart"), (3, shard3, backend.shards[shard3], "restart")]
    assert all("SIGKILL" in f["cause"] for f in failures)
    assert [e["round"] for e in events if e["type"] == "round"] == list(range(1, runner.total_rounds + 1))
    assert events[-1]["type"] == "end"
    # every member continued from its checkpoint: its update counter never restarts and no update is lost
    folder = run / "checkpoints" / json.loads((run / "checkpoints" / "runner.json").read_text())["checkpoint_dir"]
    for m in range(4):
        assert [int(r["update"]) for r in _metrics(run, m)] == list(range(1, runner.total_updates + 1))
        assert int(MemberState.load(folder / f"member_{m}.pt").tensors["updates"]) == runner.total_updates


def test_truncated_checkpoint_is_refused_and_too_many_failures_stop_the_run(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = tiny_config(f"run.dir={run}", *DECIDE, "backend.kind=process", "backend.num_workers=2",
                      "backend.max_failures=1")
    runner = PopulationRunner(cfg, run)
    runner.start()
    path = run / "checkpoints" / "round_000001" / "member_3.pt"
    try:
        runner.play_round()
        # an error raised inside a worker comes back with its own type and leaves every pipe in step
        with pytest.raises(CheckpointError, match="state sent for member 0"):
            runner.backend._run_all({0: Restore(0, b"not a member state"), 1: MemberInfo()})
        assert sorted(runner.backend.member_info()) == [0, 1, 2, 3]
        assert runner.backend.failures == [0, 0]
        data = path.read_bytes()
        # 1st death of shard 1: its restart finds a half-written checkpoint and refuses to load it
        path.write_bytes(data[: len(data) // 2])
        _kill_on(runner.backend, 1, ("train",))
        with pytest.raises(CheckpointError, match=r"round_000001/member_3\.pt: cannot read member state"):
            runner.play_round()
        # 2nd death of shard 1: more than backend.max_failures=1, the run stops naming shard, members and cause
        path.write_bytes(data)
        _kill_on(runner.backend, 1, ("train",))
        with pytest.raises(BackendError) as info:
            runner.play_round()
    finally:
        runner.close()
    msg = str(info.value)
    assert "shard 1" in msg and "[2, 3]" in msg and "max_failures=1" in msg and "SIGKILL" in msg
    failures = [e for e in _events(run) if e["type"] == "failure"]
    assert [(f["round"], f["shard"], f["members"], f["action"]) for f in failures] == [
        (2, 1, [2, 3], "restart"), (2, 1, [2, 3], "stop")]
    # rpbt resume refuses the truncated checkpoint with one clear line naming the file
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"round_000001/member_3\.pt: cannot read member state"):
        MemberState.load(path)
    capsys.readouterr()
    assert main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "cannot read member state" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------- SIGKILL + resume


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
def test_sigkill_of_the_whole_run_then_resume_loses_no_round(tmp_path):
    run = tmp_path / "run"
    args = [*TINY, *DECIDE, "run.total_env_steps=320", "backend.kind=process", "backend.num_workers=2",
            f"run.dir={run}"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "rpbt.cli", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runner_json = run / "checkpoints" / "runner.json"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill during round 3 (or its commit), at whatever moment that is
            if runner_json.is_file() and json.loads(runner_json.read_text())["round"] >= 2:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.05)
        else:
            pytest.fail("the run did not commit round 2 in time")
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    # the workers die with the driver (no orphans holding CPUs)
    deadline = time.time() + 15
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert workers and not any(_alive(w) for w in workers)

    committed = json.loads(runner_json.read_text())["round"]
    done = subprocess.run([sys.executable, "-m", "rpbt.cli", "resume", str(run)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    events = _events(run)
    total = 10
    rounds = [e["round"] for e in events if e["type"] == "round"]
    assert rounds == list(range(1, total + 1))  # each round exactly once: the interrupted one was replayed
    types = [e["type"] for e in events]
    assert types.count("start") == 1 and types.count("resume") == 1 and types[-1] == "end"
    resume_at = types.index("resume")
    assert events[resume_at]["round"] == committed
    assert [e["round"] for e in events[:resume_at] if e["type"] == "round"] == list(range(1, committed + 1))
    assert all(e["round"] <= committed for e in events[:resume_at])  # the half-played round was dropped
    state = json.loads(runner_json.read_text())
    assert state["round"] == total
    assert sorted(p.name for p in (run / "checkpoints").glob("round_*")) == sorted(state["history"])
    assert state["history"] == [state["checkpoint_dir"], f"round_{total - 1:06d}"]  # run.keep_checkpoints: 2
    for m in range(4):
        assert [int(r["update"]) for r in _metrics(run, m)] == list(range(1, total + 1))
        assert int(MemberState.load(run / "checkpoints" / state["checkpoint_dir"] / f"member_{m}.pt")
                   .tensors["updates"]) == total
    assert json.loads((run / "summary.json").read_text())["round"] == total


# ------------------------------------------------------------------------------------------------- auto


def _env_lambda():  # noqa: D401 - a module-level callable: pickle sends it by reference
    import gymnasium as gym

    return gym.make("CartPole-v1")


def test_auto_is_process_on_a_multicore_cpu_run_and_local_otherwise():
    """``backend.kind: auto`` resolves from the machine and the run (hand-listed cases of explain_kind's rules)."""
    from rpbt.pbt import backends

    cfg = tiny_config("backend.kind=auto", "agent.device=cpu")
    assert backends.explain_kind(cfg, cpus=2) == ("process", "auto: 2 usable CPUs")
    assert backends.explain_kind(cfg, cpus=1) == ("local", "auto: 1 usable CPU")
    gpu = tiny_config("backend.kind=auto", "agent.device=auto")
    assert backends.resolve_kind(gpu, cpus=8, cuda_available=True) == "local"
    assert backends.resolve_kind(gpu, cpus=8, cuda_available=False) == "process"
    cfg.env.with_env_fn(_env_lambda)  # a callable object is called where it was given
    assert backends.explain_kind(cfg, cpus=2)[0] == "local"
    assert "env_fn" in backends.explain_kind(cfg, cpus=2)[1]
    for kind in ("local", "process", "ray"):
        assert backends.explain_kind(tiny_config(f"backend.kind={kind}"), cpus=1) == (kind, "")


def _python(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="auto picks the process backend only with 2+ CPUs")
def test_auto_workers_do_not_run_an_unguarded_script_again(tmp_path):
    """A script that calls rpbt.train at its top level, without a main guard: auto trains on worker processes,
    which do not import the script again, so its top-level code runs once (spawn's default would run it in every
    worker)."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os, rpbt\n"
        "with open('ran.txt', 'a') as f:\n    f.write(f'{os.getpid()}\\n')\n"
        f"run = rpbt.train(overrides={TINY!r} + ['pbt.population_size=2', 'backend.kind=auto',\n"
        "                 'agent.device=cpu', 'run.dir=run'])\n")
    _python([script.name], tmp_path)
    assert len((tmp_path / "ran.txt").read_text().split()) == 1
    start = _events(tmp_path / "run")[0]
    assert (start["backend"], start["num_workers"]) == ("process", 2)
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="auto picks the process backend only with 2+ CPUs")
def test_auto_falls_back_to_one_process_when_the_workers_cannot_build_the_environment(tmp_path):
    """An environment the script registers does not exist in auto's workers (they do not import the script):
    auto warns, trains in the script's process (backend local) and records why."""
    script = tmp_path / "train_registered.py"
    script.write_text(
        "import warnings, gymnasium as gym, rpbt\n"
        "from rpbt.pbt.backends import AutoBackendWarning\n"
        "if __name__ == '__main__':\n"
        "    gym.register('GuardedCartPole-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv')\n"
        "    with warnings.catch_warnings(record=True) as caught:\n"
        "        warnings.simplefilter('always')\n"
        f"        run = rpbt.train(overrides={TINY!r} + ['pbt.population_size=2', 'backend.kind=auto',\n"
        "                         'agent.device=cpu', 'env.id=GuardedCartPole-v0', 'run.dir=run'])\n"
        "    print([str(w.message) for w in caught if w.category is AutoBackendWarning])\n")
    out = _python([script.name], tmp_path)
    assert "worker processes did not start (EnvError" in out and "training in this process" in out
    start = _events(tmp_path / "run")[0]
    assert (start["backend"], start["backend_reason"]) == ("local", "auto: the worker processes did not start")
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="auto picks the process backend only with 2+ CPUs")
def test_the_rpbt_command_with_auto_trains_on_worker_processes_with_the_local_decisions(tmp_path, local_reference,
                                                                                         capsys):
    """The ``rpbt`` command (guarded main) with the default ``auto`` on a 2+ CPU machine: process backend, one
    worker per CPU (capped at P), recorded in the start event and printed; the decisions and scores are local's."""
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if o != "backend.kind=local"]
    assert main(["train", *overrides, *DECIDE, f"run.dir={run_dir}", "agent.device=cpu"]) == 0
    events = _events(run_dir)
    workers = min(4, len(os.sched_getaffinity(0)))
    assert events[0]["type"] == "start" and events[0]["backend"] == "process"
    assert events[0]["num_workers"] == workers
    assert events[0]["backend_reason"] == f"auto: {len(os.sched_getaffinity(0))} usable CPUs"
    assert f"(backend process, {workers} worker processes; auto: " in capsys.readouterr().out
    _assert_same_run(local_reference, events)
