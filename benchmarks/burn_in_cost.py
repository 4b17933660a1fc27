"""Burn-in's cost: milliseconds per exploit, and its share of a round's wall time in the default job.

Issue 4's target: recomputing the recipient's LSTM states at an exploit (``pbt.hidden_state: burn_in``, replaying
each environment's current episode through the new weights; Kapturowski et al. 2019, R2D2) costs under 1% of a
round's wall time in the default job.

Setup: the shipped default job (``src/rpbt/configs/default.yaml``: population 8, 8 envs per member, 128-step
rollouts, 4 minibatches x 4 epochs, encoder [64] + LSTM(64) actor and quantile critic, ``perturbation_interval``
5), as the local backend builds it: one batched :class:`rpbt.agent.policy.PopulationPolicy` and its
:class:`rpbt.envs.runner.EnvRunner`, whose carried state keeps a burn-in history of ``pbt.burn_in_max_steps``
(512) raw observations per environment. Measured in one process, with ``torch.set_num_threads(--threads)``, on
``--device`` (default ``cpu``; environments always run on the CPU):

- **round**: wall time of ``perturbation_interval`` PPO updates of the whole population (after one warm-up
  update), plus the time spent recording the burn-in history during those updates
  (:meth:`rpbt.envs.runner.CarriedState.record_steps`, called by :func:`rpbt.agent.ppo.collect` once per rollout
  with its T steps: burn-in's running cost);
- **exploit**: one recipient's whole transfer, :func:`rpbt.pbt.transfer.exploit`, with ``burn_in`` on a history
  of 512 steps in each of the 8 environments (synthetic episodes of 512 real observations cycled from the run;
  CartPole's episodes are at most 200 steps, so this is the worst case the window allows), against the peer: the
  same transfer without a history (a carried state whose history has width 0: restore + explored hyperparameters
  + zero states: what an exploit costs without burn-in). Each is repeated ``--repeats`` times; medians are
  reported;
- **share**: (exploits per round x (exploit with burn-in - exploit without) + history-recording time per round) /
  round time, with exploits per round = max(1, floor(quantile_fraction x population)) (truncation selection, every
  member ready).

Prints the numbers and the ratio, and writes ``benchmarks/results/burn_in_cost.json``.

``--job`` measures the same share on the real default job instead, as ``rpbt train`` runs it (the default backend:
worker processes on a multi-core CPU, whose rounds are shorter and whose exploits of different shards overlap):
the sum of every round's ``transfer_s`` (the donors' snapshots and every exploit, burn-in included, from
``events.jsonl``) over the run's training time (the ``end`` event's clock), both from the same run. That counts the
whole exploit, not only what burn-in adds; the history recording stays inside the rounds' training time.

Usage::

    python benchmarks/burn_in_cost.py              # default job's layout, 1 thread
    python benchmarks/burn_in_cost.py --threads 2 --repeats 50
    python benchmarks/burn_in_cost.py --job        # the real default job (about 1-3 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from rpbt.agent.policy import PopulationPolicy, resolve_device
from rpbt.agent.ppo import auxiliary_losses, make_policy, make_runner, train_iteration
from rpbt.config import load_config
from rpbt.envs.runner import CarriedState, EnvRunner
from rpbt.pbt.transfer import burn_in_states, exploit

RESULTS = Path(__file__).resolve().parent / "results" / "burn_in_cost.json"
RESULTS_JOB = RESULTS.with_name("burn_in_cost_job.json")


class TimedRecord:
    """Wraps a carried state's :meth:`~rpbt.envs.runner.CarriedState.record_steps` and adds up the wall time spent
    in it (synchronizing an accelerator before and after, so its queued work is counted where it is spent; on an
    accelerator this adds two host synchronizations per rollout to the round)."""

    def __init__(self, carried: CarriedState):
        self.record, self.seconds, self.calls = carried.record_steps, 0.0, 0
        self.device = carried.history_obs.device

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, *args):
        self._sync()
        t0 = time.perf_counter()
        self.record(*args)
        self._sync()
        self.seconds += time.perf_counter() - t0
        self.calls += 1


def fill_history(carried: CarriedState, record, steps: int, source: torch.Tensor) -> None:
    """Give every environment a running episode of ``steps`` observations (real ones, cycled from ``source``
    (K, D)), recorded through the carried state's own ``record`` (passed untimed); the next step continues every
    episode."""
    P, N = carried.episode_start.shape
    starts = torch.ones(P, N, dtype=torch.bool)
    offsets = (37 * torch.arange(P * N)).to(source.device)
    for t in range(steps):
        record(source[(t + offsets) % len(source)].view(P, N, -1), starts if t == 0 else ~starts)
    carried.episode_start[:] = False


def time_exploits(policy: PopulationPolicy, runner: EnvRunner, recipient: int, donor: int, repeats: int,
                  burn_in: bool) -> list[float]:
    """Wall seconds of ``repeats`` transfers of ``donor`` into ``recipient`` (after one warm-up call)."""
    state, hp = policy.snapshot(donor), policy.get_hparams(donor)
    out = []
    for _ in range(repeats + 1):
        _sync(policy)
        t0 = time.perf_counter()
        exploit(policy, runner, recipient, state, hp, strategy="burn_in" if burn_in else "zero")
        _sync(policy)
        out.append(time.perf_counter() - t0)
    return out[1:]


def _sync(policy: PopulationPolicy) -> None:
    if policy.device.type == "cuda":
        torch.cuda.synchronize(policy.device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--repeats", type=int, default=20, help="exploits timed per variant (default 20)")
    ap.add_argument("--history", type=int, default=512, help="history steps per environment (default 512)")
    ap.add_argument("--device", default="cpu", help="torch device of the learner: cpu (default), cuda, auto")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"JSON output (default {RESULTS}, or {RESULTS_JOB.name} beside it with --job)")
    ap.add_argument("--job", action="store_true", help="measure the share on the real default job (rpbt train)")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="with --job: a config override for the job (repeatable)")
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = RESULTS_JOB if args.job else RESULTS
    if args.job:
        return job_share(args)
    torch.set_num_threads(args.threads)

    cfg = load_config(None, [f"pbt.burn_in_max_steps={max(args.history, 1)}", f"agent.device={args.device}"])
    P, interval = cfg.pbt.population_size, cfg.pbt.perturbation_interval
    exploits_per_round = max(1, math.floor(cfg.pbt.quantile_fraction * P))

    policy = make_policy(cfg, list(range(P)), device=resolve_device(cfg.agent.device))
    runner = make_runner(cfg, policy)
    aux = auxiliary_losses(cfg)
    carried = runner.carried
    W = carried.history_length
    assert W == cfg.pbt.burn_in_max_steps
    timed = TimedRecord(carried)
    carried.record_steps = timed  # collect() records each rollout's raw observations through it
    train_iteration(policy, runner, aux)  # warm-up
    timed.seconds, timed.calls = 0.0, 0
    # Real observations to build the synthetic episodes from: what the history recorded during the warm-up.
    recorded = int(carried.history_steps[0])
    source = carried.history_obs[:, :min(recorded, W)].reshape(-1, policy.obs_dim).clone()
    saved = {k: v.clone() for k, v in carried.tensors().items()}

    # Exploits before the round ...
    fill_history(carried, carried.record, args.history, source)
    assert int(carried.episode_lengths()[1].min()) == args.history
    burn = time_exploits(policy, runner, 1, 0, args.repeats, burn_in=True)
    _sync(policy)
    t0 = time.perf_counter()
    for _ in range(args.repeats):
        burn_in_states(policy, carried, 1)
    _sync(policy)
    burn_only = (time.perf_counter() - t0) / args.repeats

    # ... the peer: the same transfer without any history (no burn-in to compute): the same carried state with a
    # history of width 0 (every other field shared) ...
    runner.carried = dataclasses.replace(carried, history_obs=carried.history_obs[:, :0])
    assert runner.carried.history_length == 0
    plain = time_exploits(policy, runner, 1, 0, args.repeats, burn_in=False)
    runner.carried = carried
    # (the synthetic episodes are not the environments' real ones: put the real state back before training)
    for k, v in carried.tensors().items():
        v.copy_(saved[k])

    # ... one round of the default job ...
    _sync(policy)
    t0 = time.perf_counter()
    for _ in range(interval):
        train_iteration(policy, runner, aux)
    _sync(policy)
    round_s = time.perf_counter() - t0
    hook_s = timed.seconds

    # ... and the exploits again after it (the machine's load may have changed).
    fill_history(runner.carried, runner.carried.record, args.history, source)
    burn += time_exploits(policy, runner, 1, 0, args.repeats, burn_in=True)

    burn_ms, plain_ms = 1000 * statistics.median(burn), 1000 * statistics.median(plain)
    added_ms = burn_ms - plain_ms
    share = (exploits_per_round * added_ms / 1000 + hook_s) / round_s
    result = {
        "config": "src/rpbt/configs/default.yaml", "population": P, "num_envs": cfg.env.num_envs,
        "num_steps": cfg.agent.num_steps, "perturbation_interval": interval, "history_steps": args.history,
        "threads": args.threads, "device": str(policy.device), "repeats": args.repeats,
        "exploits_per_round": exploits_per_round,
        "exploit_with_burn_in_ms_median": burn_ms, "exploit_without_history_ms_median": plain_ms,
        "burn_in_states_ms_mean": 1000 * burn_only, "burn_in_added_ms_per_exploit": added_ms,
        "round_s": round_s, "history_hook_s_per_round": hook_s, "history_hook_calls": timed.calls,
        "share_of_round": share, "target_share": 0.01, "meets_target": share < 0.01,
        "machine": _machine(),
    }
    print(f"exploit with burn-in ({runner.num_envs} envs x {args.history} steps): {burn_ms:.1f} ms "
          f"(burn_in_states alone {1000 * burn_only:.1f} ms); without history: {plain_ms:.1f} ms; "
          f"added by burn-in: {added_ms:.1f} ms per exploit")
    print(f"round of the default job ({interval} updates of {P} members): {round_s:.2f} s, of which "
          f"{1000 * hook_s:.1f} ms recording the burn-in history")
    print(f"burn-in share of a round ({exploits_per_round} exploits + history recording): {100 * share:.3f}% "
          f"(ratio burn-in time / round time = {share:.5f}; target < 1%: {'met' if share < 0.01 else 'NOT met'})")
    return _write(args.out, result)


def _machine() -> dict:
    return {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
            "cpus": os.cpu_count()}


def _write(out: Path, result: dict) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written to {out}")
    return 0


def job_share(args: argparse.Namespace) -> int:
    """The real default job through :func:`rpbt.train` (its default backend); the share of its training time
    spent in transfers, from its own events. Writes ``--out`` with ``"mode": "job"``."""
    import tempfile

    import rpbt

    overrides = ["run.progress=false", f"run.torch_threads={args.threads}", *args.override]
    with tempfile.TemporaryDirectory() as tmp:
        run = rpbt.train(None, overrides=[f"run.dir={tmp}/run", *overrides], announce=False)
        events = [json.loads(line) for line in (run.dir / "events.jsonl").read_text().splitlines() if line.strip()]
    start = next(e for e in events if e["type"] == "start")
    end = next(e for e in reversed(events) if e["type"] == "end")
    rounds = [e for e in events if e["type"] == "round"]
    exploits = [e for e in events if e["type"] == "exploit"]
    transfer = {e["round"]: float(e["transfer_s"]) for e in exploits}  # one value per round with exploits
    train_s = sum(float(e["train_s"]) for e in rounds)
    transfer_s, total_s = sum(transfer.values()), float(end["time"])
    share = transfer_s / total_s
    result = {
        "mode": "job", "config": "src/rpbt/configs/default.yaml", "overrides": overrides,
        "backend": start.get("backend"), "num_workers": start.get("num_workers"),
        "backend_reason": start.get("backend_reason"), "rounds": len(rounds), "exploits": len(exploits),
        "rounds_with_exploits": len(transfer), "training_time_s": total_s, "train_s": train_s,
        "transfer_s": transfer_s, "transfer_ms_per_exploit": 1000 * transfer_s / max(len(exploits), 1),
        "round_s_mean": total_s / max(len(rounds), 1), "share_of_run": share, "target_share": 0.01,
        "meets_target": share < 0.01,
        "machine": _machine(),
    }
    print(f"default job on backend {result['backend']} ({result['num_workers']} workers): {len(rounds)} rounds, "
          f"{len(exploits)} exploits in {len(transfer)} rounds, {total_s:.1f} s of training "
          f"({result['round_s_mean']:.2f} s per round, {train_s:.1f} s in the backends' training)")
    print(f"transfers (snapshots + exploits, burn-in included): {transfer_s:.2f} s, "
          f"{result['transfer_ms_per_exploit']:.1f} ms per exploit")
    print(f"share of the run's training time: {100 * share:.3f}% (ratio transfer time / training time = {share:.5f}; "
          f"target < 1%: {'met' if share < 0.01 else 'NOT met'})")
    return _write(args.out, result)


if __name__ == "__main__":
    sys.exit(main())
