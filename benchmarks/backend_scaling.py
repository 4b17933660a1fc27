"""Backend scaling: the default job's population of 8, local backend (one shard) vs process backend (2 workers).

Issue 5's target: on this 2-core machine, ``backend.kind: process`` with 2 workers (two shards of 4 members, one
torch thread each) trains at least 1.6x the environment steps per second of ``backend.kind: local`` (one batched
learner of 8 members, torch's default thread count: all cores).

Setup: the shipped default job (``src/rpbt/configs/default.yaml``: POPGym position-only CartPole, population 8,
8 envs per member, 128-step rollouts, 4 minibatches x 4 epochs, LSTM(64) actor and quantile critic,
``perturbation_interval`` 5, truncation selection with burn-in exploits), played by
:class:`rpbt.pbt.runner.PopulationRunner` end to end (train, score, exploit, checkpoint commit) into two throw-away
run directories. Both runners are built first (worker start-up is not timed), then their rounds are played
*alternately* (local round, process round, local round, ...), so that a change in the machine's load during the
run hits both arms alike. The first ``--warmup`` rounds of each arm are not timed.

A third arm, ``local_1thread`` (the local backend with ``torch.set_num_threads(1)``), is the same learner without
intra-op threads: it separates the gain from running two shards in parallel from the cost of torch's own threading
on tiny recurrent batches (skip it with ``--no-local-1thread``). torch's thread count is a process-wide setting,
so it is set before each local round.

Measured per arm: env steps per second = population x env steps per member per round x timed rounds / summed wall
time of the timed rounds. Printed: both rates and the ratio process / local; written to
``benchmarks/results/backend_scaling.json`` with the per-round times, the load average before and after, and the
thread counts.

What bounds the ratio: one batched learner of 8 members costs only about 1.5x one of 4 (the network work is
batched, the environments' Python stepping is not), so two shards on two cores can reach at most about that factor
over the one-thread local learner even with both cores free; the ratio against torch's default thread count also
measures how badly torch's intra-op threads do on tiny recurrent batches when the cores are shared.

Usage::

    python benchmarks/backend_scaling.py                 # 1 warm-up + 3 timed rounds per arm
    python benchmarks/backend_scaling.py --rounds 5 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from rpbt.config import load_config
from rpbt.pbt.runner import PopulationRunner

RESULTS = Path(__file__).resolve().parent / "results" / "backend_scaling.json"


def _runner(kind: str, run_dir: Path, total_rounds: int, workers: int) -> PopulationRunner:
    overrides = [f"backend.kind={kind}", f"run.dir={run_dir}", "run.progress=false", "run.tensorboard=false"]
    if kind == "process":
        overrides.append(f"backend.num_workers={workers}")
    cfg = load_config(None, overrides)
    steps_per_round = cfg.pbt.perturbation_interval * cfg.env.num_envs * cfg.agent.num_steps
    cfg.run.total_env_steps = total_rounds * steps_per_round
    runner = PopulationRunner(cfg, run_dir)
    runner.start()
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per arm")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds per arm first")
    parser.add_argument("--workers", type=int, default=2, help="process backend workers")
    parser.add_argument("--no-local-1thread", action="store_true", help="skip the local 1-thread arm")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    total = args.warmup + args.rounds
    tmp = Path(tempfile.mkdtemp(prefix="rpbt_backend_scaling_"))
    load_before = os.getloadavg()
    default_threads = torch.get_num_threads()
    threads = {"local": default_threads, "local_1thread": 1, "process": default_threads}
    arms = ["local", "process"] if args.no_local_1thread else ["local", "local_1thread", "process"]
    runners: dict[str, PopulationRunner] = {}
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    try:
        t0 = time.perf_counter()
        for arm in arms:
            runners[arm] = _runner("process" if arm == "process" else "local", tmp / arm, total, args.workers)
        startup = time.perf_counter() - t0
        print(f"start-up of all arms: {startup:.1f} s", flush=True)
        for r in range(total):
            for arm, runner in runners.items():
                torch.set_num_threads(threads[arm])
                t = time.perf_counter()
                runner.play_round()
                dt = time.perf_counter() - t
                if r >= args.warmup:
                    times[arm].append(dt)
                print(f"round {r + 1} {arm:13s} {dt:7.2f} s" + ("  (warm-up)" if r < args.warmup else ""),
                      flush=True)
        cfg = runners["local"].cfg
        process_backend = runners["process"].backend
        process_threads = process_backend.threads
        shards = process_backend.shards
    finally:
        for runner in runners.values():
            runner.close()
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    P = cfg.pbt.population_size
    steps_per_round = cfg.pbt.perturbation_interval * cfg.env.num_envs * cfg.agent.num_steps  # per member
    rate = {arm: P * steps_per_round * len(ts) / sum(ts) for arm, ts in times.items()}
    ratio = rate["process"] / rate["local"]
    print(f"local         (1 shard of {P}, {default_threads} torch threads): {rate['local']:8.0f} env steps/s")
    if "local_1thread" in rate:
        print(f"local_1thread (1 shard of {P}, 1 torch thread):  {rate['local_1thread']:8.0f} env steps/s")
    print(f"process       ({len(shards)} shards {[len(s) for s in shards]}, {process_threads} thread each): "
          f"{rate['process']:8.0f} env steps/s")
    print(f"ratio process / local: {ratio:.2f}x  (target >= 1.6x)")
    if "local_1thread" in rate:
        print(f"ratio process / local_1thread: {rate['process'] / rate['local_1thread']:.2f}x")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} CPUs "
          "(other processes on the machine slow both arms)")
    out = {
        "benchmark": "backend_scaling",
        "config": "default job (src/rpbt/configs/default.yaml)",
        "population_size": P,
        "env_steps_per_member_per_round": steps_per_round,
        "warmup_rounds": args.warmup,
        "timed_rounds": args.rounds,
        "local": {"shards": 1, "torch_threads": default_threads, "round_seconds": times["local"],
                  "env_steps_per_s": rate["local"]},
        "local_1thread": ({"shards": 1, "torch_threads": 1, "round_seconds": times["local_1thread"],
                           "env_steps_per_s": rate["local_1thread"]} if "local_1thread" in rate else None),
        "ratio_process_over_local_1thread": (rate["process"] / rate["local_1thread"]
                                             if "local_1thread" in rate else None),
        "process": {"shards": len(shards), "shard_sizes": [len(s) for s in shards],
                    "torch_threads_per_worker": process_threads, "round_seconds": times["process"],
                    "env_steps_per_s": rate["process"]},
        "ratio_process_over_local": ratio,
        "target_ratio": 1.6,
        "startup_seconds_both": startup,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "time": time.time(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
