"""SA-PPO robustness: vanilla recurrent PPO members against SA-PPO members, clean and under PGD attack.

Two arms trained for the same budget from the same seeds (same member ids, so the same initial weights and the
same training environment seeds):

- ``vanilla``: rpbt's recurrent PPO (:func:`rpbt.agent.ppo.train_iteration`), ``agent.adversarial.enabled=false``;
- ``sa_ppo``: the same learner with the SA-PPO robust KL regularizer (Zhang et al. 2020) on, as its auxiliary loss
  (:class:`rpbt.agent.adversary.SAPPO`), ``agent.adversarial.{epsilon, robust_kl_coef, steps, warmup,
  epsilon_schedule}`` from the flags below.

Each arm is one population-batched learner (a :class:`rpbt.agent.policy.PopulationPolicy` and its
:class:`rpbt.envs.runner.EnvRunner`, on ``--device``, default ``cpu``) of ``--members`` members (no PBT: every
member keeps its hyperparameters, so the arms differ only by the regularizer). After training, every member is evaluated
deterministically on ``--episodes`` episodes (same evaluation seeds for every member and arm: common random numbers)
clean and under an online PGD attack (``rpbt.agent.adversary.make_obs_perturbation``: at every step, ``--pgd-steps``
L-inf PGD steps on the normalized observation, maximizing KL(pi(.|s, h) || pi(.|s + delta, h)) through the running
LSTM state) at each of ``--attack-eps``. Returns are POPGym's (1/200 per step survived, at most 1.0).

Environment: POPGym ``popgym-NoisyPositionOnlyCartPoleEasy-v0`` (cart position and pole angle only, Gaussian
observation noise sigma 0.1, episodes of at most 200 steps). Network and PPO settings: rpbt's ``default.yaml``
(8 envs x 128 steps per update per member, 4 minibatches, 4 epochs, LSTM(64) actor and critic, quantile critic).

Printed: a table per arm (mean +- std over members of the per-member mean return, clean and attacked), the ratio
attacked / clean within each arm, the ratio SA-PPO / vanilla of the attacked returns (the peer measured in the same
run), and the training cost ratio (SA-PPO wall time / vanilla wall time). JSON: ``benchmarks/results/
sappo_robustness.json`` (per member returns, training curves, SA-PPO metrics, timings, the command line).

Every arm runs in its own process (``multiprocessing`` spawn) with ``torch.set_num_threads(--threads)``; with
``--parallel`` both arms run at once (one core each), otherwise one after the other.

Usage::

    python benchmarks/sappo_robustness.py                           # 60 updates (61,440 env steps) per member
    python benchmarks/sappo_robustness.py --updates 5 --episodes 2  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

ENV_ID = "popgym-NoisyPositionOnlyCartPoleEasy-v0"
RESULTS = Path(__file__).resolve().parent / "results" / "sappo_robustness.json"


def _overrides(args: argparse.Namespace, adversarial: bool) -> list[str]:
    out = [
        f"env.id={ENV_ID}",
        f"pbt.population_size={args.members}",
        f"run.seed={args.seed}",
        f"run.total_env_steps={args.updates * 8 * 128}",
        "run.progress=false",
        "run.tensorboard=false",
        f"agent.adversarial.enabled={'true' if adversarial else 'false'}",
        f"agent.device={args.device}",
    ]
    if adversarial:
        out += [
            f"agent.adversarial.epsilon={args.train_eps}",
            f"agent.adversarial.robust_kl_coef={args.robust_kl_coef}",
            f"agent.adversarial.steps={args.train_steps}",
            f"agent.adversarial.warmup={args.warmup}",
            f"agent.adversarial.epsilon_schedule={args.schedule}",
            "agent.adversarial.attack=pgd",
            "agent.adversarial.norm=linf",
        ]
    return out


def run_arm(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train one arm and evaluate it (runs in a fresh process)."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from rpbt.agent.adversary import make_obs_perturbation
    from rpbt.agent.policy import resolve_device
    from rpbt.agent.ppo import auxiliary_losses, make_policy, make_runner, train_iteration
    from rpbt.config import load_config
    from rpbt.evaluation.policy import evaluate_members

    cfg = load_config(None, _overrides(args, name == "sa_ppo"))
    members = list(range(args.members))
    policy = make_policy(cfg, members, device=resolve_device(cfg.agent.device))
    runner = make_runner(cfg, policy)
    aux = auxiliary_losses(cfg)
    curve, sa_metrics = [], []
    t0 = time.perf_counter()
    for u in range(args.updates):
        m = train_iteration(policy, runner, aux)
        curve.append([float(x) for x in m["rollout/ep_rew_mean"].tolist()])
        if "sa_ppo/robust_kl" in m:
            sa_metrics.append({k: [float(x) for x in v.tolist()] for k, v in m.items() if k.startswith("sa_ppo/")})
        if args.verbose and (u + 1) % 10 == 0:
            print(f"[{name}] update {u + 1}/{args.updates} ep_rew_mean "
                  f"{np.nanmean(curve[-1]):.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    train_s = time.perf_counter() - t0
    runner.close()

    t1 = time.perf_counter()
    local = list(range(policy.population))
    evals: dict[str, list[list[float]]] = {}
    clean = evaluate_members(policy, local, cfg.env, "validation", episodes=args.episodes, seed=args.eval_seed)
    evals["clean"] = [clean[i].returns for i in local]
    for eps in args.attack_eps:
        hook = make_obs_perturbation("pgd", eps, norm="linf", steps=args.pgd_steps, seed=args.eval_seed)
        res = evaluate_members(policy, local, cfg.env, "validation", episodes=args.episodes, seed=args.eval_seed,
                               obs_perturbation=hook)
        evals[f"pgd_{eps:g}"] = [res[i].returns for i in local]
    eval_s = time.perf_counter() - t1
    return {
        "arm": name,
        "overrides": _overrides(args, name == "sa_ppo"),
        "device": str(policy.device),
        "env_steps_per_member": int(policy.env_steps[0]),
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "returns": evals,
        "training_curve_ep_rew_mean": curve,
        "last_sa_ppo_metrics": sa_metrics[-1] if sa_metrics else None,
        "mean_sa_ppo_metrics_last10": ({k: float(np.nanmean([row[k] for row in sa_metrics[-10:]]))
                                        for k in sa_metrics[-1]} if sa_metrics else None),
    }


def _member_means(rows: list[list[float]]) -> list[float]:
    return [sum(r) / len(r) for r in rows]


def _fmt(values: list[float]) -> str:
    import numpy as np

    return f"{np.mean(values):.3f} +- {np.std(values):.3f}"


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--updates", type=int, default=60, help="PPO updates per member (1024 env steps each)")
    p.add_argument("--members", type=int, default=4, help="members (seeds) per arm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-eps", type=float, default=0.3, help="SA-PPO training radius (normalized units)")
    p.add_argument("--robust-kl-coef", type=float, default=0.3)
    p.add_argument("--train-steps", type=int, default=3, help="PGD steps of the training attack")
    p.add_argument("--warmup", type=int, default=5, help="updates before the regularizer starts")
    p.add_argument("--schedule", default="constant", choices=["constant", "linear", "cosine"])
    p.add_argument("--attack-eps", type=float, nargs="+", default=[0.3, 1.0],
                   help="evaluation PGD radii (normalized observation units, L-inf)")
    p.add_argument("--pgd-steps", type=int, default=10, help="PGD steps of the evaluation attack")
    p.add_argument("--episodes", type=int, default=10, help="evaluation episodes per member and condition")
    p.add_argument("--eval-seed", type=int, default=1234)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="torch device of the learners: cpu (default), cuda, auto")
    p.add_argument("--parallel", action="store_true", help="run the two arms at once (one process each)")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    t0 = time.time()
    ctx = mp.get_context("spawn")
    arms = ["vanilla", "sa_ppo"]
    if args.parallel:
        with ctx.Pool(2) as pool:
            results = dict(zip(arms, pool.starmap(run_arm, [(a, args) for a in arms])))
    else:
        results = {}
        for a in arms:
            with ctx.Pool(1) as pool:
                results[a] = pool.apply(run_arm, (a, args))

    conditions = ["clean"] + [f"pgd_{e:g}" for e in args.attack_eps]
    summary: dict[str, Any] = {}
    print(f"\nSA-PPO robustness on {ENV_ID}: {args.members} members per arm, {args.updates} updates "
          f"({args.updates * 1024} env steps) per member, {args.episodes} eval episodes per member and condition")
    header = f"{'arm':<8} " + " ".join(f"{c:>17}" for c in conditions) + "   train s"
    print(header)
    for a in arms:
        means = {c: _member_means(results[a]["returns"][c]) for c in conditions}
        summary[a] = {c: {"mean": sum(v) / len(v), "per_member": v} for c, v in means.items()}
        print(f"{a:<8} " + " ".join(f"{_fmt(means[c]):>17}" for c in conditions)
              + f"   {results[a]['train_seconds']:.0f}")
    print("\nratios (mean over members of the per-member mean return):")
    for a in arms:
        clean = summary[a]["clean"]["mean"]
        for c in conditions[1:]:
            r = summary[a][c]["mean"] / clean if clean else float("nan")
            summary[a][f"ratio_{c}_over_clean"] = r
            print(f"  {a:<8} {c} / clean = {r:.3f}")
    for c in conditions:
        v = summary["vanilla"][c]["mean"]
        r = summary["sa_ppo"][c]["mean"] / v if v else float("nan")
        summary[f"ratio_sa_ppo_over_vanilla_{c}"] = r
        print(f"  sa_ppo / vanilla ({c}) = {r:.3f}")
    cost = results["sa_ppo"]["train_seconds"] / results["vanilla"]["train_seconds"]
    summary["train_time_ratio_sa_ppo_over_vanilla"] = cost
    print(f"  training wall time sa_ppo / vanilla = {cost:.2f}")
    if results["sa_ppo"]["mean_sa_ppo_metrics_last10"]:
        m = results["sa_ppo"]["mean_sa_ppo_metrics_last10"]
        print(f"  SA-PPO last 10 updates: robust_kl {m['sa_ppo/robust_kl']:.4g}, attack_kl_gain "
              f"{m['sa_ppo/attack_kl_gain']:.3g}, epsilon {m['sa_ppo/epsilon']:.3g}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join([Path(sys.argv[0]).name] + (list(argv) if argv else sys.argv[1:])),
               "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "env_id": ENV_ID, "summary": summary, "arms": results, "wall_seconds": time.time() - t0}
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"\nwrote {args.out} ({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
