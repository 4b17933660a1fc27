"""Critic kinds: scalar vs quantile vs categorical value heads on position-only CartPole, fixed budget, several seeds.

For each kind in ``--kinds`` (default: scalar, quantile, categorical) the script trains one population-batched
learner (:class:`rpbt.agent.policy.PopulationPolicy` and its :class:`rpbt.envs.runner.EnvRunner`, trained with
:func:`rpbt.agent.ppo.train_iteration`) holding ``--seeds`` members (member ids 0..S-1) for ``--steps``
environment steps per member, **without PBT** (no exploit, no explore: every member keeps the default config's
hyperparameters). Members of one learner are seeded independently: member m's weights, environments and action
sampling derive from ``run.seed`` and m only (``rpbt.seeding.member_seed``), so a member trains exactly as it
would alone, and member m of every kind sees the same environment seeds and starts from the same encoder / LSTM
weights (the value heads differ in shape, so their initial weights cannot be the same).

Configuration: the shipped default job (``src/rpbt/configs/default.yaml``: POPGym
``popgym-PositionOnlyCartPoleEasy-v0``, 8 envs per member, 128-step rollouts, 4 minibatches, 4 epochs, LSTM(64)
actor and critic, lr 1e-3, return normalization on, no value clipping) with ``agent.critic.kind`` set per kind,
``agent.device=cpu`` (the learner's tensors; environments always run on the CPU) and the extra ``--override
key=value`` items applied to every kind (``--override agent.device=cuda`` moves the learners to a GPU).

Measured per kind:

- ``final_scores``: per seed, the mean return of the member's last 20 finished episodes after the budget;
- ``score_mean`` / ``score_std`` over seeds, and a small learning curve (mean over seeds of the last-20 score every
  ``--curve-every`` updates);
- ``wall_s``: wall-clock seconds of the training loop (collect + learn, construction excluded), and env steps/s;
- ``value_*``: the last update's ``train/value_loss``, ``train/value_mse``, ``train/value_cvar`` and
  ``train/explained_variance`` (mean over seeds), and the fraction of normalized lambda-return targets outside the
  categorical support [v_min, v_max] at the end (how much the two-hot projection clips).

Each kind runs in a fresh process (``multiprocessing`` spawn), one after another, never two at once, with
``torch.set_num_threads(--threads)`` (default 1). The printed table gives the ratio of each kind's score and wall
time to the scalar critic's (the baseline, measured in the same run). Results go to
``benchmarks/results/critic_kinds.json``.

Usage::

    python benchmarks/critic_kinds.py                          # 5 seeds x 150k env steps per member per kind
    python benchmarks/critic_kinds.py --steps 20000 --seeds 2  # a quick run
    python benchmarks/critic_kinds.py --override agent.critic.twin=true
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "critic_kinds.json"
KINDS = ("scalar", "quantile", "categorical")
SCORE_EPISODES = 20


def _set_threads(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_kind(kind: str, seeds: int, steps: int, threads: int, overrides: list[str], curve_every: int
             ) -> dict[str, Any]:
    """Train one learner of ``seeds`` members with critic ``kind`` for ``steps`` env steps per member."""
    _set_threads(threads)
    import numpy as np
    import torch

    from rpbt.agent.policy import resolve_device
    from rpbt.agent.ppo import auxiliary_losses, collect, make_policy, make_runner, train_iteration, update
    from rpbt.agent.rollout import compute_gae
    from rpbt.config import load_config

    cfg = load_config(None, [f"agent.critic.kind={kind}", "agent.device=cpu", "run.progress=false",
                             "run.tensorboard=false"] + list(overrides))
    policy = make_policy(cfg, list(range(seeds)), device=resolve_device(cfg.agent.device))
    runner = make_runner(cfg, policy)
    aux = auxiliary_losses(cfg)
    per_update = cfg.env.num_envs * cfg.agent.num_steps
    updates = max(1, math.ceil(steps / per_update))
    curve: list[dict[str, Any]] = []
    metrics: dict[str, Any] = {}
    outside = float("nan")
    t0 = time.perf_counter()
    for u in range(1, updates + 1):
        if u == updates:  # last update: measure how many normalized targets fall outside the categorical support
            rollout = collect(policy, runner)
            with torch.no_grad():
                values = rollout.values.min(0).values
                _, returns = compute_gae(rollout.rewards, values, rollout.dones, rollout.terminated,
                                         rollout.truncation_values, rollout.last_values,
                                         policy.hparam("gamma").float(), policy.hparam("gae_lambda").float())
            metrics = update(policy, policy.optimizer, rollout, aux)
            scale = policy.return_normalizer.scale.float().view(-1, 1, 1)
            norm = returns / scale
            c = cfg.agent.critic
            outside = float(((norm < c.v_min) | (norm > c.v_max)).float().mean())
        else:
            metrics = train_iteration(policy, runner, aux)
        if u % curve_every == 0 or u == updates:
            scores = [policy.recent_returns(i, SCORE_EPISODES) for i in range(seeds)]
            curve.append({"update": u, "env_steps_per_member": int(policy.env_steps[0]),
                          "score_mean": float(np.mean([s.mean() if len(s) else np.nan for s in scores]))})
    wall = time.perf_counter() - t0
    final = []
    for i in range(seeds):
        r = policy.recent_returns(i, SCORE_EPISODES)
        final.append(float(r.mean()) if len(r) else float("nan"))
    runner.close()

    def last(key: str) -> Optional[float]:
        return float(metrics[key].double().mean()) if key in metrics else None

    return {
        "kind": kind,
        "seeds": seeds,
        "member_ids": list(range(seeds)),
        "updates": updates,
        "device": str(policy.device),
        "env_steps_per_member": int(policy.env_steps[0]),
        "final_scores": final,
        "score_mean": float(np.nanmean(final)),
        "score_std": float(np.nanstd(final)),
        "wall_s": wall,
        "env_steps_per_s": seeds * int(policy.env_steps[0]) / wall,
        "value_loss": last("train/value_loss"),
        "value_mse": last("train/value_mse"),
        "value_cvar": last("train/value_cvar"),
        "explained_variance": last("train/explained_variance"),
        "return_scale": [float(x) for x in policy.return_normalizer.scale],
        "targets_outside_support": outside,
        "curve": curve,
    }


def _worker(queue: "mp.Queue", *args: Any) -> None:
    try:
        queue.put(("ok", run_kind(*args)))
    except BaseException as err:  # report, do not hang the parent
        import traceback

        queue.put(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


def run_isolated(*args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(queue, *args))
    proc.start()
    status, payload = queue.get()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"benchmark worker failed: {payload}")
    return payload


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150_000, help="env steps per member (default: the default job's)")
    ap.add_argument("--seeds", type=int, default=5, help="members (independent seeds) per kind")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--curve-every", type=int, default=25, help="updates between learning-curve points")
    ap.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                    help="extra config override applied to every kind (repeatable)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        ap.error("--seeds and --steps must be >= 1")

    results = {}
    for kind in args.kinds:
        print(f"[critic_kinds] {kind}: {args.seeds} seeds x {args.steps} env steps ...", flush=True)
        results[kind] = run_isolated(kind, args.seeds, args.steps, args.threads, args.override, args.curve_every)
        r = results[kind]
        print(f"[critic_kinds] {kind}: score {r['score_mean']:.4f} +- {r['score_std']:.4f}  wall {r['wall_s']:.1f}s",
              flush=True)

    base = results.get("scalar")
    print()
    header = f"{'kind':<12}{'score mean':>11}{'std':>8}{'vs scalar':>10}{'wall s':>9}{'vs scalar':>10}" \
             f"{'expl.var':>9}{'outside':>9}  per-seed scores"
    print(header)
    print("-" * len(header))
    for kind, r in results.items():
        s_ratio = r["score_mean"] / base["score_mean"] if base and base["score_mean"] else float("nan")
        w_ratio = r["wall_s"] / base["wall_s"] if base else float("nan")
        r["score_ratio_vs_scalar"] = s_ratio
        r["wall_ratio_vs_scalar"] = w_ratio
        ev = r["explained_variance"]
        print(f"{kind:<12}{r['score_mean']:>11.4f}{r['score_std']:>8.4f}{s_ratio:>10.3f}{r['wall_s']:>9.1f}"
              f"{w_ratio:>10.3f}{(ev if ev is not None else float('nan')):>9.3f}{r['targets_outside_support']:>9.4f}"
              f"  {' '.join(f'{x:.3f}' for x in r['final_scores'])}")

    out = {
        "benchmark": "critic_kinds",
        "env": "popgym-PositionOnlyCartPoleEasy-v0",
        "config": "src/rpbt/configs/default.yaml (no PBT) + agent.critic.kind per kind",
        "overrides": args.override,
        "steps_per_member": args.steps,
        "seeds": args.seeds,
        "threads": args.threads,
        "score": f"mean return of the last {SCORE_EPISODES} finished episodes per seed",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "results": results,
        "score_mean_over_seeds": {k: r["score_mean"] for k, r in results.items()},
        "median_seed_score": {k: statistics.median(r["final_scores"]) for k, r in results.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
