"""Segment length: how ``agent.bptt_length`` trades speed against return, against whole-rollout replay.

Runs rpbt's learner on the learner-throughput benchmark's task and settings (``learner_throughput.rpbt_config``:
POPGym's position-only CartPole, 8 envs x 128 steps per member, 4 epochs x 4 minibatches, LSTM(64) actor and
scalar critic, one torch thread), one arm per segment length L in ``--lengths`` and one with whole-rollout replay
(``agent.bptt_length=null``, the peer), for a population (``--population``, default 8) and for one member, each in
its own fresh process, one after another (``learner_throughput.run_rpbt``). A 128-step rollout has 128 / L
segments per environment, so L must divide 128.

Printed per arm: env steps per second, the ratio against whole-rollout replay measured in the same run, and the
population's mean return of each member's last 20 episodes after ``--steps`` env steps per member (mean +- standard
error over members; one member: its own return). Written to ``benchmarks/results/segment_length.json``.

What it is for: picking the default ``agent.bptt_length`` by measurement (issue 13). Shorter segments mean fewer
sequential LSTM steps per minibatch (cheaper where per-call overhead dominates: one member) but truncate
backpropagation through time sooner and start more segments from stored states (refreshed once per epoch).

Usage::

    python benchmarks/segment_length.py                        # L = 8, 16, 32, 64 and whole, 100k steps
    python benchmarks/segment_length.py --steps 20000 --lengths 16 32
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import learner_throughput as lt  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "segment_length.json"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[8, 16, 32, 64], help="segment lengths (divide 128)")
    p.add_argument("--steps", type=int, default=100_000, help="env steps per member (default 100000)")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-single", action="store_true", help="skip the one-member arms")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    bad = [n for n in args.lengths if n < 1 or lt.NUM_STEPS % n]
    if bad:
        p.error(f"--lengths {bad}: a segment length must divide the rollout's {lt.NUM_STEPS} steps")
    sizes = [args.population] + ([] if args.no_single else [1])
    settings = [(str(n), f"agent.bptt_length={n}") for n in args.lengths] + [("whole", "agent.bptt_length=null")]
    runs: dict[str, dict[str, Any]] = {}
    for size in sizes:
        for label, override in settings:
            name = f"P{size}_L{label}"
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
            runs[name] = lt._in_fresh_process(lt.run_rpbt, size, args.seed, args.steps, args.threads, (), "cpu",
                                              (override,))
    print(f"\n{'arm':<14} {'env steps/s':>12} {'vs whole':>9}  return (last {lt.RETURN_WINDOW})")
    for size in sizes:
        whole = runs[f"P{size}_Lwhole"]["env_steps_per_s"]
        for label, _ in settings:
            r = runs[f"P{size}_L{label}"]
            mean, se = lt._mean_se(r["returns_last20"])
            r["ratio_vs_whole"] = r["env_steps_per_s"] / whole
            print(f"P{size} L={label:<8} {r['env_steps_per_s']:>12,.0f} {r['ratio_vs_whole']:>8.2f}x  "
                  f"{mean:.3f} +- {se:.3f} (n={len(r['returns_last20'])}); load {r['loadavg_1min_before_after']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                    "machine": {"platform": platform.platform(), "processor": platform.processor()},
                                    "versions": lt._versions()}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
