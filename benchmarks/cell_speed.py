"""Seconds per PPO update (collect + learn) of the LSTM and the GRU cell, same config otherwise.

Both learners live in one process and their updates alternate (LSTM, GRU, LSTM, ...), so a machine shared with other
work slows both alike; the medians and their ratio are printed as JSON. Usage:

    python benchmarks/cell_speed.py --config configs/popgym/RepeatPreviousEasy.yaml --updates 8 [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from rpbt.agent.ppo import auxiliary_losses, make_policy, make_runner, train_iteration
from rpbt.config import load_config


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns (and prints) the medians, their ratio and the setting."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="a config file (default: the default job)")
    parser.add_argument("--updates", type=int, default=8, help="timed updates per cell (after one warm-up update)")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. pbt.population_size=8")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    learners = {}
    for cell in ("lstm", "gru"):
        cfg = load_config(args.config, list(args.overrides) + [f"agent.network.cell={cell}", "backend.kind=local"])
        policy = make_policy(cfg, list(range(cfg.pbt.population_size)))
        learners[cell] = (policy, make_runner(cfg, policy), auxiliary_losses(cfg))
    times: dict[str, list[float]] = {cell: [] for cell in learners}
    for k in range(args.updates + 1):
        for cell, (policy, runner, aux) in learners.items():
            start = time.perf_counter()
            train_iteration(policy, runner, aux)
            if k > 0:
                times[cell].append(time.perf_counter() - start)
    med = {cell: statistics.median(t) for cell, t in times.items()}
    result = {"seconds_per_update_median": med, "gru_over_lstm": med["gru"] / med["lstm"],
              "population": cfg.pbt.population_size, "env": cfg.env.id, "num_envs": cfg.env.num_envs,
              "num_steps": cfg.agent.num_steps, "updates": args.updates}
    for _, runner, _ in learners.values():
        runner.close()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
