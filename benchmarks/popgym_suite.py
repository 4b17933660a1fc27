"""POPGym suite: PBT against random search and a fixed configuration at equal compute, on POPGym memory tasks.

For each selected environment (``--envs``, POPGym names without the ``popgym-`` / ``-v0`` wrapping; default:
:data:`DEFAULT_ENVS`) and each seed (``--seeds``), three arms are trained with the same env steps per member
(``--steps``) and the same population size (``--population``), each as one ``rpbt.train`` run directory
``OUT/<env>/<arm>/seed<k>``:

- ``pbt``: rpbt as shipped (the config's ``pbt`` section: default search space, truncation selection, burn-in
  hidden-state strategy; Jaderberg et al. 2017).
- ``random_search``: the same run with ``pbt.burn_in`` set beyond the last update, so no member is ever *ready*
  and the scheduler never exploits nor explores (:mod:`rpbt.pbt.scheduler`: ready needs ``updates >= burn_in``;
  explore only follows an exploit). Every member still starts from its own draw of the same prior
  (``pbt.search_space``) and, as a population is a batch whose members share no tensors, trains exactly as it
  would alone: a plain sweep of P independently sampled configurations, trained side by side.
- ``fixed``: as ``random_search``, but with the search space replaced by a single dimension over
  ``adversarial.epsilon``, a hyperparameter read only by SA-PPO, which these configs leave off
  (``agent.adversarial.enabled: false``): every hyperparameter that acts on learning stays at its default, so
  the P members are P independent seeds of the default configuration. (``pbt.search_space`` may not be empty,
  and a categorical dimension may not repeat a value, so an inert dimension is the way to search nothing.)

Every arm of an environment reads the same config: ``configs/popgym/<Env>.yaml`` when it exists (settings chosen
from the environment's episode length, memory horizon and spaces, see each file), else the shipped default job;
then the suite's keys (env.id, run.*, pbt.population_size, backend.*) and ``--override`` items. Members are seeded
from ``run.seed`` = the seed and their index, so member m of the three arms of one seed sees the same
environment seeds and initial weights.

Metrics per run (all returns on POPGym's scale: every POPGym environment scales its rewards so that an episode's
return lies in [-1, 1]; Morad et al. 2023, "POPGym: Benchmarking Partially Observable Reinforcement Learning",
ICLR 2023):

- ``mmer``: POPGym's max-mean episodic reward: the maximum over training updates of the mean return of the
  last 100 finished training episodes (``rollout/ep_rew_mean``, as RLlib's smoothed ``episode_reward_mean`` that
  POPGym reports), taken over the best member at each update (max over members).
- ``eval_return``: mean return of ``--eval-episodes`` (100) fresh deterministic episodes (``rpbt.evaluate``: the
  mode of the action distribution; environment seeds from ``EVAL_SEED_OFFSET + seed``, not those of training)
  of the member ``summary.json`` names best at the end (highest PBT score, the mean of its last
  ``pbt.score_window`` episodes); ``eval_std`` their standard deviation.
- ``auc``: area under the best-so-far curve (the running max over updates of the best member's
  ``rollout/ep_rew_mean``) divided by the env steps it spans: the curve's mean height, in return units
  (in [-1, 1]; higher = good sooner). Its last value is the MMER.
- ``wall_time_s``: training seconds (``summary.json``'s run clock: time of interrupted rounds and between a kill
  and its resume not counted) and ``eval_time_s``.

Per arm: mean over seeds and a 95% interval, mean +- t_{0.975, n-1} * s / sqrt(n) (Student t over the n seeds;
none for n = 1).

Outputs under ``--out`` (default ``benchmarks/results/popgym_suite``): ``suite.json`` (options, versions, every
run's metrics, per-arm aggregates), ``suite.md`` (one table row per environment and arm) and
``plots/<env>.png`` (best-so-far score vs env steps per member, one line per arm: mean over seeds with the 95%
band).

Stopping and restarting: a finished run directory (``summary.json`` at its last round) is skipped, one with a
committed round is resumed (``rpbt.resume``), one with nothing committed is trained again; a finished run's
evaluation file is reused. A run directory whose ``config.yaml`` differs from what the suite would train now
(another ``--steps``, ``--population``, ``--override`` or config file) stops the suite with a
:class:`SuiteError` rather than mixing budgets: use another ``--out``. ``--deadline-s`` stops starting new runs
after that many seconds; ``--report-only`` only aggregates what is finished (for several suite processes run side
by side on disjoint ``--envs``).

Usage::

    python benchmarks/popgym_suite.py --envs RepeatPreviousEasy --steps 20000 --population 4 --seeds 1
    python benchmarks/popgym_suite.py --steps 500000 --population 8 --seeds 3 \\
        --envs RepeatPreviousEasy,RepeatFirstEasy,CountRecallEasy,NoisyPositionOnlyCartPoleEasy
    python benchmarks/popgym_suite.py --backend process --workers 8 --deadline-s 28800
    python benchmarks/popgym_suite.py --report-only
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs" / "popgym"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "popgym_suite"

#: The default environment set (issue 15): POPGym Easy unless the name says otherwise.
DEFAULT_ENVS: tuple[str, ...] = (
    "RepeatPreviousEasy", "RepeatFirstEasy", "CountRecallEasy", "AutoencodeEasy", "HigherLowerEasy",
    "MultiarmedBanditEasy", "NoisyPositionOnlyCartPoleEasy", "PositionOnlyPendulumEasy", "RepeatPreviousMedium",
    "BattleshipEasy", "MineSweeperEasy",
)
ARMS: tuple[str, ...] = ("pbt", "random_search", "fixed")
#: ``pbt.burn_in`` of the arms without PBT: beyond any run's last update, so no member is ever ready.
NEVER_READY = 10**9
#: The ``fixed`` arm's search space: one dimension over a hyperparameter only SA-PPO reads (off in these configs).
INERT_SEARCH_SPACE = {"adversarial.epsilon": {"type": "float", "low": 0.01, "high": 0.1}}
#: Evaluation episodes are seeded from EVAL_SEED_OFFSET + seed: environment seeds training never used.
EVAL_SEED_OFFSET = 1_000_003
#: POPGym's return scale: every environment's episodic return lies in [-1, 1].
RETURN_RANGE = (-1.0, 1.0)
#: Config keys whose difference does not make a run directory another experiment.
#: (The backend is compared: a resume keeps the run's own backend, and wall times of two backends do not mix.)
IGNORED_KEYS = ("run.dir", "run.progress", "run.tensorboard", "run.torch_threads", "agent.device")


class SuiteError(RuntimeError):
    """The suite cannot go on as asked (unknown environment, a run directory of another experiment)."""


# --------------------------------------------------------------------------------------------------- configs


def env_id(name: str) -> str:
    """POPGym's Gymnasium id of ``name`` (``RepeatPreviousEasy`` -> ``popgym-RepeatPreviousEasy-v0``)."""
    return f"popgym-{name}-v0"


def check_envs(names: Sequence[str]) -> None:
    """Raise :class:`SuiteError` naming every name that is not a registered POPGym id in the installed popgym."""
    import gymnasium as gym
    import popgym  # noqa: F401  (registers the popgym-* ids)

    missing = [n for n in names if env_id(n) not in gym.registry]
    if missing:
        known = sorted(k[len("popgym-"):-len("-v0")] for k in gym.registry if k.startswith("popgym-"))
        raise SuiteError(f"not POPGym environments in the installed popgym: {', '.join(missing)}; known: "
                         f"{', '.join(known)}")


def config_path(name: str) -> Optional[Path]:
    """``configs/popgym/<name>.yaml`` when it exists, else None (the shipped default job)."""
    path = CONFIG_DIR / f"{name}.yaml"
    return path if path.is_file() else None


def arm_values(arm: str) -> dict[str, Any]:
    """The dotted keys that make ``arm`` out of the environment's config (see the module docstring)."""
    if arm == "pbt":
        return {}
    if arm == "random_search":
        return {"pbt.burn_in": NEVER_READY}
    if arm == "fixed":
        return {"pbt.burn_in": NEVER_READY, "pbt.search_space": INERT_SEARCH_SPACE}
    raise SuiteError(f"unknown arm {arm!r}; arms: {', '.join(ARMS)}")


def run_config(args: argparse.Namespace, name: str, arm: str, seed: int) -> Any:
    """The validated :class:`rpbt.config.Config` of one run: env config, suite keys, ``--override`` items, arm."""
    from rpbt.api import resolve_config

    values: dict[str, Any] = {
        "env.id": env_id(name), "run.total_env_steps": args.steps, "pbt.population_size": args.population,
        "run.seed": seed, "run.dir": str(run_dir(args.out, name, arm, seed)), "run.progress": False,
        "run.tensorboard": False, "run.torch_threads": args.torch_threads, "backend.kind": args.backend,
    }
    if args.workers is not None:
        values["backend.num_workers"] = args.workers
    cfg = resolve_config(config_path(name), list(args.override), values)
    if cfg.agent.adversarial.enabled and arm == "fixed":
        raise SuiteError("the fixed arm searches adversarial.epsilon as an inert dimension; it is not inert with "
                         "agent.adversarial.enabled: true")
    return resolve_config(cfg, (), arm_values(arm))


def run_dir(out: Path, name: str, arm: str, seed: int) -> Path:
    return Path(out) / name / arm / f"seed{seed}"


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "search_space":
            flat.update(_flat(v, key + "."))
        else:
            flat[key] = v
    return flat


def config_difference(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The dotted keys (not :data:`IGNORED_KEYS`) whose values differ between two resolved config dicts."""
    a, b = _flat(saved), _flat(wanted)
    return sorted(k for k in set(a) | set(b) if k not in IGNORED_KEYS and a.get(k) != b.get(k))


# --------------------------------------------------------------------------------------------------- running


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_state(path: Path) -> str:
    """``finished`` (the committed round has the whole budget and ``summary.json`` is of that round),
    ``committed`` (some round committed: resume it), ``fresh`` (nothing committed: train)."""
    import yaml

    runner = _read_json(path / "checkpoints" / "runner.json")
    if runner is None:
        return "fresh"
    try:
        total = int(yaml.safe_load((path / "config.yaml").read_text())["run"]["total_env_steps"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return "committed"
    summary = _read_json(path / "summary.json") or {}
    if runner.get("env_steps", 0) >= total and summary.get("round") == runner.get("round"):
        return "finished"
    return "committed"


def code_version() -> str:
    """The repository's commit (``git rev-parse HEAD``) with ``+dirty`` when tracked files differ from it, or
    ``unknown`` outside a git checkout."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


_LOADED_VERSION: Optional[str] = None  # the checkout's version when this process first trained: the code it runs


def record_code_version(path: Path) -> None:
    """Append the code version that trains (or resumes) the run at ``path`` to the file beside it,
    ``.<run name>.commits`` (one per line; outside the run directory, which a fresh ``rpbt.train`` replaces), so a
    report can say which commit produced each run. The version is read once per suite process (the code it has
    loaded), not at each run: a checkout that moves on while the suite runs does not change the suite's code."""
    global _LOADED_VERSION
    if _LOADED_VERSION is None:
        _LOADED_VERSION = code_version()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.commits", "a") as f:
        f.write(_LOADED_VERSION + "\n")


def read_code_versions(path: Path) -> list[str]:
    """The code versions :func:`record_code_version` wrote for the run at ``path``, in order, without repeats."""
    try:
        lines = (path.parent / f".{path.name}.commits").read_text().split()
    except OSError:
        return []
    return list(dict.fromkeys(lines))


def train_one(args: argparse.Namespace, name: str, arm: str, seed: int) -> str:
    """Bring one run directory to its end: skip, resume or train. Returns what was done."""
    return train_run(run_config(args, name, arm, seed))


def train_run(cfg: Any) -> str:
    """Bring the run directory ``cfg.run.dir`` of the validated config ``cfg`` to its end: skip it (finished),
    resume it (a round committed) or train it; a run directory trained with another config is a
    :class:`SuiteError`. Returns what was done. (Shared with ``benchmarks/exploit_ablation.py``.)"""
    import yaml

    import rpbt
    from rpbt.run.rundir import RunDirectory

    path = Path(cfg.run.dir)
    state = run_state(path)
    if state != "fresh" and (path / "config.yaml").is_file():
        diff = config_difference(yaml.safe_load((path / "config.yaml").read_text()), cfg.to_dict())
        if diff:
            raise SuiteError(f"{path} was trained with another config ({', '.join(diff[:6])}"
                             f"{' ...' if len(diff) > 6 else ''} differ); use another --out or delete it")
    if state == "finished":
        return "skipped (finished)"
    if state == "committed":
        record_code_version(path)
        run = rpbt.resume(path, announce=False)
        if (_read_json(path / "summary.json") or {}).get("round") != run.summary.get("round"):
            # killed between the last commit and its summary.json: a resume of a finished run plays no round and
            # so writes none; write the summary it returned (the same content the commit would have written)
            RunDirectory(path, cfg.pbt.population_size, tensorboard=False).write_summary(run.summary)
        return "resumed"
    if path.is_dir() and not RunDirectory(path, cfg.pbt.population_size).is_run_dir():
        # killed before config.yaml and events.jsonl were both written: rpbt.train would refuse to replace it
        other = [p.name for p in path.iterdir() if p.name != "config.yaml" and not p.name.startswith(".")]
        if other:
            raise SuiteError(f"{path} holds {', '.join(sorted(other)[:4])} but is not an rpbt run directory; "
                             f"move it away")
        probe = RunDirectory(path, cfg.pbt.population_size, tensorboard=False)
        probe.lock()  # RunDirError when a process still uses it
        probe.unlock()
        shutil.rmtree(path)
    record_code_version(path)
    rpbt.train(cfg, overwrite=path.exists(), announce=False)  # a run killed before its first commit: again
    return "trained"


def evaluate_one(args: argparse.Namespace, path: Path, seed: int) -> tuple[dict[str, Any], float]:
    """The best member's deterministic evaluation report (reused when already written with the same episodes and
    seed) and the seconds it took (0 when reused)."""
    import rpbt

    summary = json.loads((path / "summary.json").read_text())
    eval_seed = EVAL_SEED_OFFSET + seed
    cached = path / "evaluation" / f"test_member{summary['best_member']}.json"
    if cached.is_file():
        report = json.loads(cached.read_text())
        if report.get("episodes") == args.eval_episodes and report.get("seed") == eval_seed:
            return report, 0.0
    t0 = time.perf_counter()
    report = rpbt.evaluate(path, episodes=args.eval_episodes, seed=eval_seed)
    return report, time.perf_counter() - t0


# --------------------------------------------------------------------------------------------------- metrics


def read_curves(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per update: env steps per member (U,) and the best member's ``rollout/ep_rew_mean`` (U,), NaN before any
    member has finished an episode. Reads every ``members/<i>/metrics.csv`` (columns by name)."""
    per_member: list[dict[int, tuple[int, float]]] = []
    for csv_path in sorted((path / "members").glob("*/metrics.csv")):
        rows: dict[int, tuple[int, float]] = {}
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                value = row.get("rollout/ep_rew_mean") or "nan"
                rows[int(row["update"])] = (int(row["env_steps"]), float(value))
        per_member.append(rows)
    if not per_member:
        raise SuiteError(f"{path}: no members/<i>/metrics.csv")
    updates = sorted(set().union(*per_member))
    steps = np.array([next(m[u][0] for m in per_member if u in m) for u in updates], dtype=np.int64)
    values = np.array([[m[u][1] if u in m else math.nan for m in per_member] for u in updates])
    with np.errstate(all="ignore"):
        best = np.where(np.isnan(values).all(1), math.nan, np.nanmax(np.where(np.isnan(values), -np.inf, values), 1))
    return steps, best


def best_so_far(best: np.ndarray) -> np.ndarray:
    """Running max of ``best`` (U,), NaN until its first finite value."""
    out = np.full_like(best, math.nan)
    running = -math.inf
    for i, v in enumerate(best):
        if not math.isnan(v):
            running = max(running, v)
        if running > -math.inf:
            out[i] = running
    return out


def area_under(steps: np.ndarray, curve: np.ndarray) -> float:
    """Trapezoidal area under ``curve`` over ``steps`` divided by the span: the curve's mean height. The steps
    before its first finite value count at POPGym's minimum return (-1): no episode finished yet is no credit."""
    y = np.where(np.isnan(curve), RETURN_RANGE[0], curve)
    if len(steps) < 2:
        return float(y[-1]) if len(y) else math.nan
    x = steps.astype(np.float64)
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


def run_metrics(args: argparse.Namespace, name: str, arm: str, seed: int) -> Optional[dict[str, Any]]:
    """One finished run's metrics (see the module docstring), evaluating its best member if not yet done; None
    when the run is not finished."""
    path = run_dir(args.out, name, arm, seed)
    if run_state(path) != "finished":
        return None
    summary = json.loads((path / "summary.json").read_text())
    steps, best = read_curves(path)
    curve = best_so_far(best)
    finite = curve[~np.isnan(curve)]
    report, eval_time = evaluate_one(args, path, seed)
    exploits = sum(1 for line in (path / "events.jsonl").read_text().splitlines()
                   if line.strip() and json.loads(line).get("type") == "exploit")
    mmer = float(finite[-1]) if len(finite) else math.nan
    lo, hi = RETURN_RANGE
    for label, v in (("MMER", mmer), ("evaluation return", report["mean_return"])):
        if not math.isnan(v) and not lo - 1e-6 <= v <= hi + 1e-6:
            raise SuiteError(f"{path}: {label} {v} outside POPGym's return range [{lo}, {hi}]")
    return {
        "seed": seed, "run_dir": str(path), "env_steps": int(summary["env_steps"]), "mmer": mmer,
        "eval_return": float(report["mean_return"]), "eval_std": float(report["std_return"]),
        "eval_episodes": int(report["episodes"]), "best_member": int(summary["best_member"]),
        "best_score": summary.get("best_score"), "best_hparams": summary.get("hparams"),
        "auc": area_under(steps, curve), "exploits": exploits,
        "wall_time_s": float(summary["wall_time_s"]), "eval_time_s": round(eval_time, 2),
        "code_versions": read_code_versions(path),
        "curve": {"env_steps": steps.tolist(), "best_so_far": [None if math.isnan(v) else float(v) for v in curve]},
    }


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:  # two-sided 95% values (Student 1908 tables)
        table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
        return table.get(df, 1.96 + 2.5 / df)


def interval(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "ci95", "n", "values"}``: the mean over seeds and the half width of its 95% Student-t interval
    (None for fewer than 2 finite values)."""
    v = np.array([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    n = len(v)
    mean = float(v.mean()) if n else None
    ci = float(t_quantile(n - 1) * v.std(ddof=1) / math.sqrt(n)) if n >= 2 else None
    return {"mean": mean, "ci95": ci, "n": n, "values": [float(x) for x in v]}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-arm summary of its finished runs (one per seed)."""
    return {key: interval([r[key] for r in runs]) for key in ("mmer", "eval_return", "auc", "wall_time_s")}


# --------------------------------------------------------------------------------------------------- outputs


def _fmt(stat: dict[str, Any], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "n/a"
    if stat["ci95"] is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['ci95']:.{digits}f}"


def markdown_table(results: dict[str, Any]) -> str:
    """One row per environment and arm: MMER, evaluation return, AUC, training wall time, seeds finished."""
    lines = ["| environment | arm | MMER | eval return (best member) | AUC of best-so-far | wall time (s) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for name, env in results["envs"].items():
        for arm, data in env["arms"].items():
            agg = data["aggregate"]
            lines.append(f"| {name} | {arm} | {_fmt(agg['mmer'])} | {_fmt(agg['eval_return'])} | {_fmt(agg['auc'])} "
                         f"| {_fmt(agg['wall_time_s'], 0)} | {len(data['runs'])}/{data['seeds_asked']} |")
    return ("Mean over seeds ± half width of the 95% Student-t interval (none with one seed). MMER: max over "
            "training of the best member's mean return of its last 100 episodes; eval return: the best member "
            "at the end, mean of the deterministic evaluation episodes; AUC: mean height of the best-so-far "
            "curve over env steps. Returns on POPGym's [-1, 1] scale.\n\n" + "\n".join(lines) + "\n")


def plot_env(name: str, env: dict[str, Any], path: Path) -> Optional[Path]:
    """``path``: best-so-far score vs env steps per member, one line per arm (mean over seeds, 95% band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = False
    for arm, data in env["arms"].items():
        curves = [r["curve"] for r in data["runs"]]
        if not curves:
            continue
        n = min(len(c["env_steps"]) for c in curves)
        x = np.array(curves[0]["env_steps"][:n], dtype=np.float64)
        y = np.array([[math.nan if v is None else v for v in c["best_so_far"][:n]] for c in curves])
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no episode finished yet
            mean = np.nanmean(y, 0)
            k = (~np.isnan(y)).sum(0)
            sd = np.nanstd(y, 0, ddof=1) if len(y) > 1 else np.zeros(n)
            half = np.array([t_quantile(int(m) - 1) * s / math.sqrt(m) if m >= 2 else 0.0 for m, s in zip(k, sd)])
        line = ax.plot(x, mean, label=f"{arm} ({len(curves)} seeds)")[0]
        if len(curves) > 1:
            ax.fill_between(x, mean - half, mean + half, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("best-so-far mean return (last 100 episodes)")
    ax.set_title(f"{name}: best member, mean over seeds, 95% band")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform(), "cpus": str(os.cpu_count())}
    for pkg in ("rpbt", "torch", "popgym", "gymnasium"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def report(args: argparse.Namespace, envs: Sequence[str], actions: dict[str, str]) -> dict[str, Any]:
    """Collect every finished run of ``envs``, write ``suite.json``, ``suite.md`` and the plots; returns the JSON."""
    results: dict[str, Any] = {
        "options": {"envs": list(envs), "steps": args.steps, "population": args.population, "seeds": args.seeds,
                    "backend": args.backend, "workers": args.workers, "override": list(args.override),
                    "eval_episodes": args.eval_episodes, "torch_threads": args.torch_threads,
                    "arms": list(args.arms)},
        "versions": versions(), "written": time.strftime("%Y-%m-%d %H:%M:%S"), "actions": actions, "envs": {},
    }
    for name in envs:
        env: dict[str, Any] = {"env_id": env_id(name),
                               "config": str(config_path(name).relative_to(REPO)) if config_path(name) else None,
                               "arms": {}}
        for arm in args.arms:
            runs = [m for seed in range(args.seeds) if (m := run_metrics(args, name, arm, seed)) is not None]
            env["arms"][arm] = {"seeds_asked": args.seeds, "runs": runs, "aggregate": aggregate(runs)}
        plot = plot_env(name, env, Path(args.out) / "plots" / f"{name}.png")
        env["plot"] = str(plot) if plot else None
        results["envs"][name] = env
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(results, indent=1))
    (out / "suite.md").write_text(markdown_table(results))
    return results


# --------------------------------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", default=",".join(DEFAULT_ENVS),
                   help="comma-separated POPGym names (popgym-<NAME>-v0); default: the whole default set")
    p.add_argument("--steps", type=int, default=500_000, help="env steps per member (run.total_env_steps)")
    p.add_argument("--population", type=int, default=8, help="members per run, the same in every arm")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (run.seed = 0 .. SEEDS-1)")
    p.add_argument("--train-seeds", default=None, metavar="K,K,...",
                   help="train only these of the seeds 0 .. SEEDS-1 (e.g. to split a suite between processes "
                        "without two of them on one run); the report still covers every seed")
    p.add_argument("--backend", choices=("local", "process", "ray"), default="local")
    p.add_argument("--workers", type=int, default=None, help="backend.num_workers (process/ray shards)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="suite directory (run directories and reports)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    p.add_argument("--eval-episodes", type=int, default=100, help="deterministic evaluation episodes at the end")
    p.add_argument("--torch-threads", type=int, default=1, help="run.torch_threads of every run")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every run of every arm (repeatable)")
    p.add_argument("--deadline-s", type=float, default=None,
                   help="start no new run after this many seconds (finished runs are reported; rerun to go on)")
    p.add_argument("--report-only", action="store_true", help="train nothing; aggregate the finished runs")
    args = p.parse_args(argv)
    args.envs = [e.strip() for e in args.envs.split(",") if e.strip()]
    args.arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    for arm in args.arms:
        arm_values(arm)
    for flag in ("steps", "population", "seeds", "eval_episodes", "torch_threads"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.train_seeds is None:
        args.train_seeds = list(range(args.seeds))
    else:
        try:
            args.train_seeds = [int(k) for k in args.train_seeds.split(",") if k.strip()]
        except ValueError:
            p.error(f"--train-seeds: expected comma-separated integers, got {args.train_seeds!r}")
        if not all(0 <= k < args.seeds for k in args.train_seeds):
            p.error(f"--train-seeds: every seed must be in 0 .. {args.seeds - 1} (--seeds {args.seeds})")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    global _LOADED_VERSION
    _LOADED_VERSION = _LOADED_VERSION or code_version()  # at start, before the checkout can move on
    args = parse_args(argv)
    try:
        check_envs(args.envs)
        actions: dict[str, str] = {}
        t0 = time.monotonic()
        if not args.report_only:
            for name in args.envs:           # environment-major: a time-boxed suite finishes whole environments
                for seed in args.train_seeds:
                    for arm in args.arms:
                        key = f"{name}/{arm}/seed{seed}"
                        if args.deadline_s is not None and time.monotonic() - t0 > args.deadline_s:
                            actions[key] = "not started (deadline)"
                            continue
                        start = time.monotonic()
                        try:
                            actions[key] = train_one(args, name, arm, seed)
                        except SuiteError:
                            raise
                        except Exception as err:  # a failed run (member faults, a worker lost): go on with the rest
                            actions[key] = f"failed: {type(err).__name__}: {err}"
                        print(f"popgym_suite: {key}: {actions[key]} ({time.monotonic() - start:.0f} s)", flush=True)
        results = report(args, args.envs, actions)
    except SuiteError as err:
        print(f"popgym_suite: error: {err}", file=sys.stderr)
        return 2
    print(markdown_table(results))
    print(f"popgym_suite: wrote {Path(args.out) / 'suite.json'}, suite.md and plots/")
    return 1 if any(a.startswith("failed") for a in actions.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
