"""Burn-in's cost: milliseconds per exploit, and its share of a round's wall time in the default job.

Issue 4's target: recomputing the recipient's LSTM states at an exploit (``pbt.hidden_state: burn_in``, replaying
each environment's current episode through the new weights; Kapturowski et al. 2019, R2D2) costs under 1% of a
round's wall time in the default job.

Setup: the shipped default job (``src/rpbt/configs/default.yaml``: population 8, 8 envs per member, 128-step
rollouts, 4 minibatches x 4 epochs, encoder [64] + LSTM(64) actor and quantile critic, ``perturbation_interval``
5), as the local backend builds it: one batched :class:`rpbt.agent.ppo.RecurrentPPO` with an episode history of
``pbt.burn_in_max_steps`` (512) attached. Measured in one process, with ``torch.set_num_threads(--threads)``:

- **round**: wall time of ``perturbation_interval`` PPO updates of the whole population (after one warm-up
  update), plus the time spent inside the episode-history step hook during those updates (burn-in's running cost:
  it records every observation);
- **exploit**: one recipient's whole transfer, :func:`rpbt.pbt.transfer.exploit`, with ``burn_in`` on a history
  of 512 steps in each of the 8 environments (synthetic episodes of 512 real observations cycled from the run;
  CartPole's episodes are at most 200 steps, so this is the worst case the window allows), against the peer: the
  same transfer without a history (restore + explored hyperparameters + zero states: what an exploit costs
  without burn-in). Each is repeated ``--repeats`` times; medians are reported;
- **share**: (exploits per round x (exploit with burn-in - exploit without) + history-hook time per round) / round
  time, with exploits per round = max(1, floor(quantile_fraction x population)) (truncation selection, every
  member ready).

Prints the numbers and the ratio, and writes ``benchmarks/results/burn_in_cost.json``.

Usage::

    python benchmarks/burn_in_cost.py              # default job, 1 thread
    python benchmarks/burn_in_cost.py --threads 2 --repeats 50
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from rpbt.agent.ppo import RecurrentPPO
from rpbt.config import load_config
from rpbt.pbt.transfer import EpisodeHistory, attach_history, burn_in_states, exploit

RESULTS = Path(__file__).resolve().parent / "results" / "burn_in_cost.json"


class TimedHook:
    """Wraps a step hook and adds up the wall time spent in it."""

    def __init__(self, hook):
        self.hook, self.seconds, self.calls = hook, 0.0, 0

    def __call__(self, *args):
        t0 = time.perf_counter()
        self.hook(*args)
        self.seconds += time.perf_counter() - t0
        self.calls += 1


def fill_history(learner: RecurrentPPO, hist: EpisodeHistory, steps: int, source: torch.Tensor) -> None:
    """Give every environment a running episode of ``steps`` observations (real ones, cycled from ``source``
    (K, D)), recorded through the history's own step hook; the next step continues every episode."""
    P, N = learner.population, learner.num_envs
    starts = torch.ones(P, N, dtype=torch.bool)
    offsets = 37 * torch.arange(P * N)
    for t in range(steps):
        hist(learner, source[(t + offsets) % len(source)].view(P, N, -1), starts if t == 0 else ~starts)
    learner.next_episode_start[:] = False


def time_exploits(learner: RecurrentPPO, recipient: int, donor: int, repeats: int, burn_in: bool) -> list[float]:
    """Wall seconds of ``repeats`` transfers of ``donor`` into ``recipient`` (after one warm-up call)."""
    state, hp = learner.snapshot(donor), learner.get_hparams(donor)
    out = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        exploit(learner, recipient, state, hp, strategy="burn_in" if burn_in else "zero")
        out.append(time.perf_counter() - t0)
    return out[1:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--repeats", type=int, default=20, help="exploits timed per variant (default 20)")
    ap.add_argument("--history", type=int, default=512, help="history steps per environment (default 512)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = load_config(None, [f"pbt.burn_in_max_steps={max(args.history, 1)}"])
    P, interval = cfg.pbt.population_size, cfg.pbt.perturbation_interval
    exploits_per_round = max(1, math.floor(cfg.pbt.quantile_fraction * P))

    learner = RecurrentPPO(cfg, list(range(P)))
    hist = attach_history(learner, cfg.pbt.burn_in_max_steps)
    timed = TimedHook(hist)
    learner.step_hooks[learner.step_hooks.index(hist)] = timed
    learner.train_update()  # warm-up
    timed.seconds, timed.calls = 0.0, 0
    # Real observations to build the synthetic episodes from: what the history recorded during the warm-up.
    source = hist.obs[:min(hist.steps, hist.max_steps)].reshape(-1, learner.obs_dim).clone()
    saved = (hist.obs.clone(), hist.start.clone(), hist.steps, learner.next_episode_start.clone(),
             {k: (h.clone(), c.clone()) for k, (h, c) in learner.hidden_states.items()})

    # Exploits before the round ...
    fill_history(learner, hist, args.history, source)
    assert int(hist.length[1].min()) == args.history
    burn = time_exploits(learner, 1, 0, args.repeats, burn_in=True)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        burn_in_states(learner, 1)
    burn_only = (time.perf_counter() - t0) / args.repeats

    # ... the peer: the same transfer without any history (no burn-in to compute) ...
    learner.episode_obs_history = None
    plain = time_exploits(learner, 1, 0, args.repeats, burn_in=False)
    learner.episode_obs_history = hist
    # (the synthetic episodes are not the environments' real ones: put the real state back before training)
    hist.obs.copy_(saved[0])
    hist.start.copy_(saved[1])
    hist.steps = saved[2]
    learner.next_episode_start.copy_(saved[3])
    for k, (h, c) in saved[4].items():
        learner.hidden_states[k][0].copy_(h)
        learner.hidden_states[k][1].copy_(c)

    # ... one round of the default job ...
    t0 = time.perf_counter()
    for _ in range(interval):
        learner.train_update()
    round_s = time.perf_counter() - t0
    hook_s = timed.seconds

    # ... and the exploits again after it (the machine's load may have changed).
    fill_history(learner, hist, args.history, source)
    burn += time_exploits(learner, 1, 0, args.repeats, burn_in=True)

    burn_ms, plain_ms = 1000 * statistics.median(burn), 1000 * statistics.median(plain)
    added_ms = burn_ms - plain_ms
    share = (exploits_per_round * added_ms / 1000 + hook_s) / round_s
    result = {
        "config": "src/rpbt/configs/default.yaml", "population": P, "num_envs": cfg.env.num_envs,
        "num_steps": cfg.agent.num_steps, "perturbation_interval": interval, "history_steps": args.history,
        "threads": args.threads, "repeats": args.repeats, "exploits_per_round": exploits_per_round,
        "exploit_with_burn_in_ms_median": burn_ms, "exploit_without_history_ms_median": plain_ms,
        "burn_in_states_ms_mean": 1000 * burn_only, "burn_in_added_ms_per_exploit": added_ms,
        "round_s": round_s, "history_hook_s_per_round": hook_s, "history_hook_calls": timed.calls,
        "share_of_round": share, "target_share": 0.01, "meets_target": share < 0.01,
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "cpus": os.cpu_count()},
    }
    print(f"exploit with burn-in ({learner.num_envs} envs x {args.history} steps): {burn_ms:.1f} ms "
          f"(burn_in_states alone {1000 * burn_only:.1f} ms); without history: {plain_ms:.1f} ms; "
          f"added by burn-in: {added_ms:.1f} ms per exploit")
    print(f"round of the default job ({interval} updates of {P} members): {round_s:.2f} s, of which "
          f"{1000 * hook_s:.1f} ms in the history hook")
    print(f"burn-in share of a round ({exploits_per_round} exploits + hook): {100 * share:.3f}% "
          f"(ratio burn-in time / round time = {share:.5f}; target < 1%: {'met' if share < 0.01 else 'NOT met'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
