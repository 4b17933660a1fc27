"""Chaos resume: SIGKILL `rpbt train` / `rpbt resume` at random moments, resume each time, check nothing is lost.

A small population (the test suite's tiny config: 4 members, 2 envs x 16 steps, 2 updates per round) trains for
``--rounds`` rounds. The script starts ``rpbt train`` in a subprocess (its own session) and SIGKILLs the whole
process group at a seeded random moment: a ``--startup-fraction`` of the kills (default 0.25: every 4th) at a time
uniform in ``0.1 .. --startup-max`` seconds after the launch (so in start-up: imports, data and config checks,
building the learner, a resume's restore and truncation; or early training), otherwise at a time uniform in
``--min-delay .. --max-delay`` seconds after the process says it has started training (``rpbt: run directory`` / ``rpbt:
resuming``), so in a round or in a commit whatever the machine's load. Then it checks the run directory as the
killed process left it and starts the next process: ``rpbt resume RUN_DIR``, or ``rpbt train --overwrite`` when
nothing was committed yet (what the resume error tells a user to do). After ``--kills`` kills (default 20,
``--seed`` 0) a last ``rpbt resume`` runs to the end. If a run ends before all kills are spent, the remaining kills
go to a fresh run.

A kill counts as a **clean resume** when

* the state the kill left is consistent: ``checkpoints/runner.json`` (when present) names kept rounds whose member
  checkpoints all load (``weights_only=True``), the ``round`` lines of committed rounds appear exactly once and in
  order (at most one later, uncommitted round after them), and every member's metrics rows of committed rounds are
  updates ``1..r * interval`` without gap or duplicate;
* the next process does not fail: it is killed by the script or exits 0;
* the committed round never goes backwards.

At the end of each run: the last process exits 0; every round ``1..R`` has exactly one ``round`` line; there is one
``start`` line (first) and one ``end`` line (last); the rounds and the times (the run's clock) of the lines never
decrease; each member's ``metrics.csv`` holds updates ``1..R * interval`` once each with no cut row; runner.json is
at round R, its ``history`` holds ``run.keep_checkpoints`` rounds and only those round folders exist; every member
checkpoint of every kept round loads and the final one has all the updates; summary.json is at round R; and no
temporary file (``.*.tmp``) is left anywhere under the run directory.

Prints one line per kill and ``N/N clean resumes``, and writes JSON (``--out``, default
``benchmarks/results/chaos_resume.json``): settings, per-kill records (command, delay, committed round before and
after, problems) and the final checks. Exit status 0 only when every kill was clean and every run passed.

Usage::

    python benchmarks/chaos_resume.py                         # 20 kills, seed 0
    python benchmarks/chaos_resume.py --kills 3 --rounds 20   # the test suite's version
    python benchmarks/chaos_resume.py --backend process       # kill the driver and its workers
    python benchmarks/chaos_resume.py --ray-cluster --kills 10  # lose Ray nodes instead (see below)

``--ray-cluster`` starts a simulated Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head with no CPUs
and two worker nodes of 2 CPUs) and trains on it (``backend.kind=ray``, two shards spread over the nodes,
``backend.max_failures`` high enough for every loss). Each of the ``--kills`` is then a **node loss**: at a
seeded random moment after training started, a worker node that holds a shard is removed (its raylet and the
shard's actor die) and a fresh node is added in its place; the driver is not touched and must recover by itself.
A loss counts as a **clean recovery** when the run directory stays consistent (the checks above), a ``failure``
event names the lost node, the driver goes on (it commits a later round or finishes with exit 0) and the committed
round never goes backwards; the run's final check is the same. Prints ``N/N clean recoveries``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rpbt.checkpoint import CheckpointError, MemberState  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "chaos_resume.json"
POPULATION = 4
INTERVAL = 2  # updates per round
STEPS_PER_UPDATE = 2 * 16  # env.num_envs x agent.num_steps

TINY = [
    "env.num_envs=2", "agent.num_steps=16", "agent.num_minibatches=1", "agent.update_epochs=2",
    "agent.network.encoder_sizes=[16]", "agent.network.lstm_hidden_size=16", "agent.critic.num_quantiles=8",
    f"pbt.population_size={POPULATION}", f"pbt.perturbation_interval={INTERVAL}", "pbt.burn_in=2",
    "pbt.score_window=5", "run.progress=false", "run.tensorboard=false", "run.torch_threads=1",
]


# ------------------------------------------------------------------------------------------------- reading a run


def _events(run: Path, allow_torn: bool) -> tuple[list[dict], list[str]]:
    path = run / "events.jsonl"
    if not path.is_file():
        return [], []
    lines = path.read_text().splitlines()
    out, problems = [], []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if not (allow_torn and i == len(lines) - 1):
                problems.append(f"events.jsonl line {i + 1} is not JSON: {line[:60]!r}")
    return out, problems


def _metrics(run: Path, member: int) -> list[dict]:
    path = run / "members" / str(member) / "metrics.csv"
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _load_round(run: Path, folder: str) -> list[str]:
    problems = []
    for m in range(POPULATION):
        try:
            MemberState.load(run / "checkpoints" / folder / f"member_{m}.pt")
        except CheckpointError as err:
            problems.append(str(err))
    return problems


def _committed(run: Path) -> Optional[dict]:
    path = run / "checkpoints" / "runner.json"
    return json.loads(path.read_text()) if path.is_file() else None


def check_killed(run: Path) -> tuple[int, list[str]]:
    """(committed round, problems) of a run directory as a SIGKILL left it."""
    problems: list[str] = []
    state = _committed(run)
    r = 0 if state is None else int(state["round"])
    if state is not None:
        for folder in state.get("history") or [state["checkpoint_dir"]]:
            problems += _load_round(run, folder)
    events, bad = _events(run, allow_torn=True)
    problems += bad
    rounds = [e["round"] for e in events if e.get("type") == "round"]
    if rounds[:r] != list(range(1, r + 1)):
        problems.append(f"round lines {rounds[:r + 2]}... do not start with 1..{r} exactly once")
    if len(rounds) > r + 1 or any(x != r + 1 for x in rounds[r:]):
        problems.append(f"after committed round {r} the round lines are {rounds[r:]} (at most one, round {r + 1})")
    for m in range(POPULATION):
        rows = [row for row in _metrics(run, m) if row.get("round") and row["round"].isdigit()
                and int(row["round"]) <= r]
        updates = [int(row["update"]) for row in rows]
        if updates != list(range(1, r * INTERVAL + 1)):
            problems.append(f"member {m}: metrics updates of committed rounds are {updates[:3]}..{updates[-3:]} "
                            f"(expected 1..{r * INTERVAL})")
    return r, problems


def check_final(run: Path, rounds: int, keep: int) -> list[str]:
    """Everything a finished run must hold; an empty list when it does."""
    problems: list[str] = []
    events, bad = _events(run, allow_torn=False)
    problems += bad
    types = [e.get("type") for e in events]
    if types[:1] != ["start"] or types.count("start") != 1:
        problems.append(f"expected one start line, first: {types[:3]}")
    if types[-1:] != ["end"] or types.count("end") != 1:
        problems.append(f"expected one end line, last: {types[-3:]}")
    round_lines = [e["round"] for e in events if e.get("type") == "round"]
    if round_lines != list(range(1, rounds + 1)):
        problems.append(f"round lines are not 1..{rounds} once each: {round_lines}")
    order = [e.get("round", 0) for e in events]
    if order != sorted(order):
        problems.append("the rounds of the event lines decrease somewhere")
    times = [e.get("time", 0.0) for e in events]
    if times != sorted(times):
        problems.append("the times of the event lines decrease somewhere")
    for m in range(POPULATION):
        rows = _metrics(run, m)
        updates = [int(row["update"]) for row in rows]
        if updates != list(range(1, rounds * INTERVAL + 1)):
            problems.append(f"member {m}: metrics updates {updates[:3]}..{updates[-3:]} are not 1..{rounds * INTERVAL}")
        if any(None in row.values() or row.get("time") in (None, "") for row in rows):
            problems.append(f"member {m}: a cut metrics row")
        if any(int(row["round"]) != (int(row["update"]) - 1) // INTERVAL + 1 for row in rows):
            problems.append(f"member {m}: a metrics row in the wrong round")
    state = _committed(run)
    if state is None:
        return problems + ["no checkpoints/runner.json"]
    if state["round"] != rounds:
        problems.append(f"runner.json round {state['round']}, expected {rounds}")
    history = state.get("history") or []
    expected = [f"round_{r:06d}" for r in range(rounds, max(rounds - keep, 0), -1)]
    if history != expected:
        problems.append(f"runner.json history {history}, expected {expected}")
    folders = sorted(p.name for p in (run / "checkpoints").glob("round_*"))
    if folders != sorted(expected):
        problems.append(f"round folders on disk {folders}, expected {sorted(expected)}")
    for folder in history:
        problems += _load_round(run, folder)
    for m in range(POPULATION):
        try:
            s = MemberState.load(run / "checkpoints" / state["checkpoint_dir"] / f"member_{m}.pt")
            if int(s.tensors["updates"]) != rounds * INTERVAL:
                problems.append(f"member {m}: final checkpoint has {int(s.tensors['updates'])} updates")
        except CheckpointError as err:
            problems.append(str(err))
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    if summary.get("round") != rounds:
        problems.append(f"summary.json round {summary.get('round')}, expected {rounds}")
    temps = [str(p.relative_to(run)) for p in run.rglob(".*.tmp")]
    if temps:
        problems.append(f"temporary files left: {temps}")
    return problems


# ------------------------------------------------------------------------------------------------- processes


def _command(run: Path, rounds: int, backend: str, fresh: bool) -> list[str]:
    if not fresh:
        return [sys.executable, "-m", "rpbt.cli", "resume", str(run)]
    extra = [f"backend.kind={backend}"] + (["backend.num_workers=2"] if backend == "process" else [])
    return [sys.executable, "-m", "rpbt.cli", "train", *TINY, *extra, f"run.dir={run}",
            f"run.total_env_steps={rounds * INTERVAL * STEPS_PER_UPDATE}", "--overwrite"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _phase(output: str, run: Path, committed: int) -> str:
    """Where a kill landed, as far as the run directory and the process's output tell."""
    if "rpbt: resuming" not in output and "rpbt: run directory" not in output:
        return "start-up"  # importing, checking, building, restoring, truncating: before the first round
    events, _ = _events(run, allow_torn=True)
    if any(e.get("type") == "round" and e.get("round") == committed + 1 for e in events):
        return "after training a round, before its commit"  # scoring, exploit, checkpoints, runner.json
    return "training a round"


def _launch(cmd: list[str], log) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=log, start_new_session=True)


STARTED = ("rpbt: run directory", "rpbt: resuming")


def _wait_and_kill(proc: subprocess.Popen, out_path: Path, after_start: bool, delay: float,
                   timeout: float = 300.0) -> Optional[int]:
    """Kill ``proc``'s group ``delay`` s after its launch, or after it printed a STARTED line (``after_start``).

    Returns its exit status when it ended by itself first, None when it was killed.
    """
    t0 = time.time()
    if after_start:
        while not any(m in out_path.read_text(errors="replace") for m in STARTED):
            if proc.poll() is not None:
                return proc.returncode
            if time.time() - t0 > timeout:
                break
            time.sleep(0.01)
        t0 = time.time()
    try:
        return proc.wait(timeout=max(delay - (time.time() - t0), 0.001))
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path, n: int = 400) -> str:
    return path.read_text(errors="replace")[-n:] if path.is_file() else ""


def chaos(kills: int, seed: int, rounds: int, backend: str, min_delay: float, max_delay: float, keep: int,
          workdir: Path, verbose: bool = True, startup_fraction: float = 0.25,
          startup_max: float = 4.0) -> dict[str, Any]:
    """Run the whole experiment in ``workdir``; returns the JSON-able record."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    log_path = workdir / "processes.log"
    run_index = 0
    done_kills = 0
    t0 = time.time()
    with log_path.open("ab") as log:
        while done_kills < kills:
            run_index += 1
            run = workdir / f"run_{run_index}"
            committed = 0
            run_kills: list[int] = []
            finished: Optional[subprocess.CompletedProcess] = None
            while done_kills < kills:
                fresh = _committed(run) is None
                cmd = _command(run, rounds, backend, fresh)
                i = done_kills  # kills timed from the launch, spread evenly: every 4th at the default 0.25
                in_startup = int((i + 1) * startup_fraction) > int(i * startup_fraction)
                delay = rng.uniform(0.1, startup_max) if in_startup else rng.uniform(min_delay, max_delay)
                when = f"{delay:.2f}s after {'launch' if in_startup else 'training started'}"
                log.write(f"\n=== kill {done_kills + 1}: {' '.join(cmd[2:4])} ({when})\n".encode())
                log.flush()
                out_path = workdir / "last_process.log"
                with out_path.open("wb") as out:
                    proc = _launch(cmd, out)
                    rc = _wait_and_kill(proc, out_path, not in_startup, delay)
                output = out_path.read_text(errors="replace")
                log.write(output.encode())
                log.flush()
                if rc is not None:  # it ended before the kill: a finished run (or a failure)
                    finished = subprocess.CompletedProcess(cmd, rc)
                    break
                done_kills += 1
                before = committed
                committed, problems = check_killed(run)
                if committed < before:
                    problems.append(f"the committed round went back from {before} to {committed}")
                rec = {"kill": done_kills, "run": run.name, "command": "train" if fresh else "resume",
                       "delay_s": round(delay, 3), "delay_from": "launch" if in_startup else "training started",
                       "committed_before": before, "committed_after": committed,
                       "phase": _phase(output, run, committed), "problems": problems}
                records.append(rec)
                run_kills.append(done_kills)
                if verbose:
                    state = "ok" if not problems else "PROBLEM: " + "; ".join(problems)
                    print(f"kill {done_kills:2d}/{kills}: rpbt {rec['command']:6s} {when:32s} committed round "
                          f"{before:3d} -> {committed:3d}, in {rec['phase']}: {state}", flush=True)
            if finished is None:  # the kills are spent: let the last process finish the run
                cmd = _command(run, rounds, backend, _committed(run) is None)
                log.write(f"\n=== final: {' '.join(cmd[2:4])}\n".encode())
                log.flush()
                proc = _launch(cmd, log)
                finished = subprocess.CompletedProcess(cmd, proc.wait())
            final = [] if finished.returncode == 0 else [
                f"the last process ({' '.join(finished.args[2:4])}) exited {finished.returncode}: {_tail(log_path)}"]
            if finished.returncode != 0 and run_kills:  # the process after the last kill failed: not clean
                records[run_kills[-1] - 1]["problems"].append(f"next process exited {finished.returncode}")
            final += check_final(run, rounds, keep)
            runs.append({"run": run.name, "kills": run_kills, "final_problems": final})
            if verbose:
                print(f"{run.name}: finished with {len(run_kills)} kills, final check "
                      f"{'ok' if not final else 'FAILED: ' + '; '.join(final)}", flush=True)
    clean = sum(1 for r in records if not r["problems"])
    phases: dict[str, int] = {}
    for r in records:
        phases[r["phase"]] = phases.get(r["phase"], 0) + 1
    return {"phases": phases, "kills": kills, "clean_resumes": clean, "seed": seed, "rounds": rounds,
            "backend": backend,
            "population_size": POPULATION, "updates_per_round": INTERVAL, "keep_checkpoints": keep,
            "delay_s": [min_delay, max_delay], "startup_fraction": startup_fraction, "startup_max_s": startup_max,
            "records": records, "runs": runs,
            "all_runs_passed": all(not r["final_problems"] for r in runs), "wall_s": round(time.time() - t0, 1)}


# ------------------------------------------------------------------------------------------------- Ray nodes lost


class RayCluster:
    """A simulated Ray cluster on this machine: a head without CPUs and ``workers`` nodes of 2 CPUs each."""

    def __init__(self, workers: int = 2):
        import ray
        from ray.cluster_utils import Cluster

        self.ray = ray
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(workers):
            self.cluster.add_node(num_cpus=2)
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, log_to_driver=False)  # to see where the shards' actors live
        self.address = self.cluster.address

    def shard_nodes(self) -> list[str]:
        """Node ids of the alive worker nodes that hold a shard's actor."""
        from ray._private import state  # the GCS actor table (ray.util.state needs the dashboard, ray[default])

        actors = state.actors(actor_state_name="ALIVE").values()
        return sorted({a["Address"]["NodeID"] for a in actors if a["ActorClassName"] == "ShardActor"})

    def lose(self, node_id: str) -> None:
        """Remove the worker node ``node_id`` and add a fresh one in its place."""
        node = next(n for n in self.cluster.worker_nodes if n.node_id == node_id)
        self.cluster.remove_node(node)
        self.cluster.add_node(num_cpus=2)

    def shutdown(self) -> None:
        self.ray.shutdown()
        self.cluster.shutdown()


def _ray_command(run: Path, rounds: int, address: str, fresh: bool, losses: int) -> list[str]:
    if not fresh:
        return [sys.executable, "-m", "rpbt.cli", "resume", str(run)]
    return [sys.executable, "-m", "rpbt.cli", "train", *TINY, "backend.kind=ray", f"backend.address={address}",
            "backend.num_workers=2", f"backend.max_failures={losses + 1}", f"run.dir={run}",
            f"run.total_env_steps={rounds * INTERVAL * STEPS_PER_UPDATE}", "--overwrite"]


def check_live(run: Path) -> tuple[int, list[str]]:
    """:func:`check_killed` of a run that is still being written: a commit between reading runner.json and loading
    its kept rounds deletes the oldest of them, as it should, so a check that saw runner.json change meanwhile is
    made again (up to 5 times)."""
    for _ in range(5):
        before = _committed(run)
        committed, problems = check_killed(run)
        if not problems or _committed(run) == before:
            break
    return committed, problems


def _failures(run: Path) -> list[dict]:
    return [e for e in _events(run, allow_torn=True)[0] if e.get("type") == "failure"]


def _wait_for(condition, proc: subprocess.Popen, timeout: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if condition():
            return True
        if proc.poll() is not None:
            return condition()
        time.sleep(0.05)
    return False


def lose_one_node(cluster: RayCluster, proc: subprocess.Popen, run: Path, delay: float) -> Optional[dict[str, Any]]:
    """After ``delay`` s remove a node holding a shard of ``proc``'s run; returns the loss's record (None when the
    run ended first)."""
    if proc.poll() is not None:
        return None
    time.sleep(delay)
    nodes = cluster.shard_nodes()
    if proc.poll() is not None or not nodes:
        return None
    before, _ = check_live(run)
    failures = len(_failures(run))
    node = nodes[int(delay * 1e6) % len(nodes)]
    cluster.lose(node)
    problems: list[str] = []
    if not _wait_for(lambda: len(_failures(run)) > failures, proc, 120):
        problems.append("no failure event after the node was lost")
    elif not any(node in str(f.get("cause")) for f in _failures(run)[failures:]):
        problems.append(f"the failure events do not name the lost node {node}: {_failures(run)[failures:]}")
    if not _wait_for(lambda: check_live(run)[0] > before, proc, 180) and proc.poll() is None:
        problems.append(f"no round committed after round {before} within 180 s of the loss")
    if proc.poll() not in (None, 0):
        problems.append(f"the driver exited {proc.returncode} after the loss")
    committed, more = check_live(run)
    if committed < before:
        more.append(f"the committed round went back from {before} to {committed}")
    return {"node": node, "delay_s": round(delay, 3), "committed_before": before, "committed_after": committed,
            "problems": problems + more}


def node_chaos(losses: int, seed: int, rounds: int, min_delay: float, max_delay: float, keep: int, workdir: Path,
               verbose: bool = True) -> dict[str, Any]:
    """Lose ``losses`` Ray worker nodes while runs train on a simulated cluster; returns the JSON-able record."""
    rng = random.Random(seed)
    cluster = RayCluster()
    records: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    t0 = time.time()
    try:
        while len(records) < losses:
            run = workdir / f"run_{len(runs) + 1}"
            out_path = workdir / f"{run.name}.log"
            with out_path.open("wb") as out:
                proc = _launch(_ray_command(run, rounds, cluster.address, True, losses), out)
                _wait_for(lambda path=out_path: any(m in path.read_text(errors="replace") for m in STARTED), proc, 300)
                run_losses = []
                while len(records) < losses:
                    rec = lose_one_node(cluster, proc, run, rng.uniform(min_delay, max_delay))
                    if rec is None:
                        break
                    records.append({"loss": len(records) + 1, "run": run.name, **rec})
                    run_losses.append(len(records))
                    if verbose:
                        state = "ok" if not rec["problems"] else "PROBLEM: " + "; ".join(rec["problems"])
                        print(f"loss {len(records):2d}/{losses}: node {rec['node'][:12]} lost "
                              f"{rec['delay_s']:.2f}s later, committed round {rec['committed_before']:3d} -> "
                              f"{rec['committed_after']:3d}: {state}", flush=True)
                rc = proc.wait()
            final = [] if rc == 0 else [f"the driver exited {rc}: {_tail(out_path)}"]
            final += check_final(run, rounds, keep)
            runs.append({"run": run.name, "losses": run_losses, "final_problems": final})
            if verbose:
                print(f"{run.name}: finished with {len(run_losses)} node losses, final check "
                      f"{'ok' if not final else 'FAILED: ' + '; '.join(final)}", flush=True)
    finally:
        cluster.shutdown()
    clean = sum(1 for r in records if not r["problems"])
    return {"mode": "ray-cluster node losses", "losses": losses, "clean_recoveries": clean, "seed": seed,
            "rounds": rounds, "population_size": POPULATION, "updates_per_round": INTERVAL, "shards": 2,
            "nodes": "head (0 CPU) + 2 workers (2 CPU)", "delay_s": [min_delay, max_delay], "records": records,
            "runs": runs, "all_runs_passed": all(not r["final_problems"] for r in runs),
            "wall_s": round(time.time() - t0, 1)}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs in all (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments (default 0)")
    parser.add_argument("--rounds", type=int, default=200, help="rounds of a run (default 200)")
    parser.add_argument("--backend", choices=["local", "process"], default="local")
    parser.add_argument("--min-delay", type=float, default=0.05,
                        help="earliest kill after training started, s (default 0.05)")
    parser.add_argument("--max-delay", type=float, default=2.0,
                        help="latest kill after training started, s (default 2)")
    parser.add_argument("--startup-fraction", type=float, default=0.25,
                        help="share of kills timed from the launch instead, spread evenly (default 0.25)")
    parser.add_argument("--startup-max", type=float, default=4.0,
                        help="latest start-up kill after the launch, s (default 4)")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the run directories here (default: a "
                        "temporary folder, deleted)")
    parser.add_argument("--ray-cluster", action="store_true", help="train on a simulated Ray cluster and lose a "
                        "worker node at each of the --kills instead of killing the driver")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.rounds < 1 or not 0 < args.min_delay <= args.max_delay:
        parser.error("need --kills >= 1, --rounds >= 1 and 0 < --min-delay <= --max-delay")
    keep = 2  # run.keep_checkpoints default
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rpbt_chaos_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if args.ray_cluster:
            result = node_chaos(args.kills, args.seed, args.rounds, args.min_delay, args.max_delay, keep, workdir)
        else:
            result = chaos(args.kills, args.seed, args.rounds, args.backend, args.min_delay, args.max_delay, keep,
                           workdir, startup_fraction=args.startup_fraction, startup_max=args.startup_max)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.ray_cluster:
        print(f"{result['clean_recoveries']}/{result['losses']} clean recoveries; "
              f"{sum(not r['final_problems'] for r in result['runs'])}/{len(result['runs'])} runs passed the final "
              f"check ({result['wall_s']} s); written to {args.out}")
        return 0 if result["clean_recoveries"] == result["losses"] and result["all_runs_passed"] else 1
    print("kills landed in: " + ", ".join(f"{k} {v}" for k, v in result["phases"].items()))
    print(f"{result['clean_resumes']}/{result['kills']} clean resumes; "
          f"{sum(not r['final_problems'] for r in result['runs'])}/{len(result['runs'])} runs passed the final "
          f"check ({result['wall_s']} s); written to {args.out}")
    return 0 if result["clean_resumes"] == result["kills"] and result["all_runs_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
