"""PB2 vs perturb (PBT's explore) at populations 4 and 8 on POPGym environments, equal compute; replay vs the
original best member.

For every environment in ``--envs``, population in ``--pops``, seed in ``--seeds`` and explore in
(``perturb``, ``pb2``) the script trains one PBT run with the real round loop (:class:`rpbt.pbt.runner.
PopulationRunner`, local backend, one torch thread) on the same small config (below), so both explores get the same
env steps per member, the same population and the same seed: equal compute (PB2's GP time is extra wall time, and
is reported). After each run it replays the run's best member (``rpbt replay``, :mod:`rpbt.pbt.replay`) with two
seeds: seed 0 starts from the weights the lineage started from, seed 1 from fresh ones.

Measured per run (scores are ``pbt/score``: the mean return of the member's last ``pbt.score_window`` training
episodes, as the scheduler sees them):

- ``final_best``: the best member's score after the last round; ``final_mean``: the population's mean score;
- ``auc_best``: the best score averaged over rounds (how soon the population got good);
- ``cpu_s``: process CPU seconds of the run (training, scheduler and GP; the steadier figure on a shared machine)
  and ``wall_s``; ``exploits`` and ``pb2_explores`` (how many explores the GP chose);
- replay: ``replay_seed0`` / ``replay_seed1`` final scores and ``original`` (the best member's final score);
  ``lineage_length`` (exploits in the best member's ancestry; 0 means its schedule never changed hands).

The small config (a CPU budget, not a benchmark of final performance): 4 envs per member, 64-step rollouts, 2
minibatches, 4 epochs, LSTM(32) with a 32-unit encoder, a 16-quantile critic, ``pbt.perturbation_interval=4``,
``pbt.burn_in=4``, ``pbt.score_window=10``, the default search space (learning_rate, ent_coef log; clip_range,
gae_lambda linear), truncation exploit, ``--steps`` env steps per member (default 20480 = 80 updates = 20 rounds).

Prints, per environment and population, the mean over seeds of each measure for both explores and the ratio
pb2 / perturb (n/a when perturb's is not positive) with the difference, then replay / original. Results (every run,
the config, the command, versions, load average) go to ``--out`` (default
``benchmarks/results/pbt_variants.json``), written after every run; ``--resume`` skips runs already in it.

Usage::

    python benchmarks/pbt_variants.py                   # 3 envs x pops 4, 8 x 3 seeds x 2 explores (~30 min, 1 core)
    python benchmarks/pbt_variants.py --steps 4096 --seeds 1 --envs popgym-PositionOnlyCartPoleEasy-v0  # quick
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Optional  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "pbt_variants.json"
DEFAULT_ENVS = ("popgym-PositionOnlyCartPoleEasy-v0", "popgym-VelocityOnlyCartpoleEasy-v0",
                "popgym-RepeatFirstEasy-v0")
EXPLORES = ("perturb", "pb2")
CONFIG = ["env.num_envs=4", "agent.num_steps=64", "agent.num_minibatches=2", "agent.update_epochs=4",
          "agent.network.encoder_sizes=[32]", "agent.network.lstm_hidden_size=32", "agent.critic.num_quantiles=16",
          "pbt.perturbation_interval=4", "pbt.burn_in=4", "pbt.score_window=10", "agent.device=cpu",
          "run.progress=false", "run.tensorboard=false"]


def _key(env: str, pop: int, seed: int, explore: str) -> str:
    return f"{env}|{pop}|{seed}|{explore}"


def run_one(env: str, pop: int, seed: int, explore: str, steps: int, workdir: Path) -> dict[str, Any]:
    """One PBT run and the replay of its best member; returns the measures (see the module docstring)."""
    import torch

    from rpbt.config import load_config
    from rpbt.pbt.replay import lineage_schedule, replay_run
    from rpbt.pbt.runner import PopulationRunner

    torch.set_num_threads(1)
    run_dir = workdir / f"{env}_p{pop}_s{seed}_{explore}"
    overrides = CONFIG + [f"env.id={env}", f"pbt.population_size={pop}", f"pbt.explore={explore}",
                          f"run.total_env_steps={steps}", f"run.seed={seed}", f"run.dir={run_dir}"]
    cfg = load_config(None, overrides)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    runner = PopulationRunner(cfg, run_dir)
    runner.start()
    t0, c0 = time.perf_counter(), time.process_time()
    summary = runner.run(progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    rounds = [e for e in events if e["type"] == "round"]
    exploits = [e for e in events if e["type"] == "exploit"]
    best_per_round = [max((s for s in e["scores"] if s is not None), default=math.nan) for e in rounds]
    final_scores = [s for s in rounds[-1]["scores"] if s is not None]
    schedule = lineage_schedule(run_dir)
    t1 = time.perf_counter()
    _, replay = replay_run(run_dir, workdir / f"{run_dir.name}_replay", seeds=2,
                           overrides=["run.progress=false", "run.tensorboard=false"], overwrite=True)
    replay_wall = time.perf_counter() - t1
    return {
        "env": env, "population": pop, "seed": seed, "explore": explore, "env_steps_per_member": summary["env_steps"],
        "rounds": len(rounds), "final_best": summary["best_score"], "final_mean": statistics.fmean(final_scores),
        "auc_best": statistics.fmean(b for b in best_per_round if not math.isnan(b)),
        "best_per_round": best_per_round, "wall_s": wall, "cpu_s": cpu, "exploits": len(exploits),
        "pb2_explores": sum(e.get("explore") == "pb2" for e in exploits),
        "best_member": summary["best_member"], "best_hparams": summary["hparams"],
        "lineage_length": len(schedule.lineage), "original": schedule.scores[-1],
        "replay_seed0": replay["scores"][0], "replay_seed1": replay["scores"][1], "replay_wall_s": replay_wall,
    }


def _mean(xs: list[Optional[float]]) -> Optional[float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return statistics.fmean(xs) if xs else None


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.2f}" if a is not None and b is not None and b > 0 else "n/a"


def summarize(results: dict[str, dict[str, Any]], envs, pops, seeds) -> tuple[list[dict[str, Any]], str]:
    """Rows of the comparison table (means over seeds) and the table as Markdown."""
    rows, lines = [], []
    lines.append("| env | P | measure | perturb | pb2 | pb2 / perturb | pb2 - perturb |")
    lines.append("|---|---|---|---|---|---|---|")
    for env in envs:
        for pop in pops:
            runs = {e: [results[_key(env, pop, s, e)] for s in seeds if _key(env, pop, s, e) in results]
                    for e in EXPLORES}
            if not all(runs.values()):
                continue
            row: dict[str, Any] = {"env": env, "population": pop, "seeds": len(runs["pb2"])}
            for measure in ("final_best", "final_mean", "auc_best", "cpu_s"):
                a, b = (_mean([r[measure] for r in runs[e]]) for e in EXPLORES)
                row[measure] = {"perturb": a, "pb2": b}
                lines.append(f"| {env.removeprefix('popgym-')} | {pop} | {measure} | {a:.3f} | {b:.3f} | "
                             f"{_ratio(b, a)} | {b - a:+.3f} |")
            rows.append(row)
    lines.append("")
    lines.append("| env | P | explore | original best (final) | replay seed 0 | replay seed 1 | replay 0 / original "
                 "| replay 1 / original | mean lineage length |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for env in envs:
        for pop in pops:
            for e in EXPLORES:
                rs = [results[_key(env, pop, s, e)] for s in seeds if _key(env, pop, s, e) in results]
                if not rs:
                    continue
                o, r0, r1 = (_mean([r[k] for r in rs]) for k in ("original", "replay_seed0", "replay_seed1"))
                ll = _mean([r["lineage_length"] for r in rs])
                lines.append(f"| {env.removeprefix('popgym-')} | {pop} | {e} | {o:.3f} | {r0:.3f} | {r1:.3f} | "
                             f"{_ratio(r0, o)} | {_ratio(r1, o)} | {ll:.1f} |")
    return rows, "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS))
    parser.add_argument("--pops", nargs="+", type=int, default=[4, 8])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20480, help="env steps per member (default 20480)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workdir", type=Path, default=None, help="run directories (default: next to --out)")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    workdir = args.workdir or args.out.with_suffix("").with_name(args.out.stem + "_runs")
    workdir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    if args.resume and args.out.is_file():
        results = json.loads(args.out.read_text()).get("runs", {})
    import numpy
    import scipy
    import sklearn
    import torch

    meta = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "config": CONFIG, "envs": args.envs, "pops": args.pops, "seeds": seeds, "steps": args.steps,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": numpy.__version__, "scipy": scipy.__version__, "sklearn": sklearn.__version__},
            "machine": platform.machine(), "cpus": os.cpu_count()}
    t_all = time.perf_counter()
    for env in args.envs:
        for pop in args.pops:
            for seed in seeds:
                for explore in EXPLORES:
                    key = _key(env, pop, seed, explore)
                    if key in results:
                        continue
                    load = os.getloadavg()[0]
                    res = run_one(env, pop, seed, explore, args.steps, workdir)
                    res["load_before"] = load
                    results[key] = res
                    print(f"{env} P={pop} seed={seed} {explore:7s} final best {res['final_best']:.3f} "
                          f"auc {res['auc_best']:.3f} ({res['cpu_s']:.0f} cpu s; replay {res['replay_seed0']:.3f} / "
                          f"{res['replay_seed1']:.3f} vs {res['original']:.3f})", flush=True)
                    rows, table = summarize(results, args.envs, args.pops, seeds)
                    args.out.write_text(json.dumps({**meta, "runs": results, "table": rows, "markdown": table,
                                                    "total_wall_s": time.perf_counter() - t_all}, indent=1))
    rows, table = summarize(results, args.envs, args.pops, seeds)
    print(table)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
