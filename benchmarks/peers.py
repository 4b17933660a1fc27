"""rpbt against the tools a user would pick instead: Ray Tune PBT over RLlib PPO, AgileRL, and a fixed sb3-contrib run.

Every arm trains the same task, with the same population size, the same env-step budget per member, the same
rollout shape (8 envs x 128 steps = 1,024 env steps per update), the same LSTM (64 cells) and the same
hyperparameter ranges (rpbt's default ``pbt.search_space``: learning rate 1e-4..3e-3 log, entropy coefficient
1e-4..3e-2 log, clip range 0.1..0.3, GAE lambda 0.8..0.99), as a subprocess in its own virtual environment:

- ``rpbt``: ``rpbt.api.train`` of the task's config (the shipped default job for PositionOnlyCartPoleEasy,
  ``configs/popgym/<task>.yaml`` otherwise) with only the budget, population, seed and ``run.torch_threads=1``
  changed; default backend choice (``auto``: one worker process per CPU).
- ``ray_tune_pbt``: Ray Tune ``PopulationBasedTraining`` over RLlib PPO (new API stack) with RLlib's default LSTM
  module, configured after RLlib's own LSTM PPO example (``rllib/examples/algorithms/ppo/
  stateless_cartpole_ppo_with_lstm.py``, ray-project/ray commit d88e9e9: ``use_lstm``, ``vf_share_layers``, a
  ``MeanStdFilter`` env-to-module connector) and Tune's PBT example (``python/ray/tune/examples/
  pbt_ppo_example.py``); perturbation every 5 training iterations (5 x 1,024 env steps, rpbt's
  ``pbt.perturbation_interval``), quantile fraction 0.25, resample probability 0.25; the cores shared by all
  trials (``--ray-trial-cpus shared``: cores / population CPUs per trial, every trial at once) or a fixed number.
- ``ray_tune_pb2``: the same with Tune's ``PB2`` (Parker-Holder et al. 2020, "Provably Efficient Online
  Hyperparameter Optimization with Population-Based Bandits"): a GP bandit over the same ranges (``hyperparam_bounds``,
  linear: PB2 has no log scale) picks a recipient's hyperparameters instead of a random perturbation, after Tune's
  ``python/ray/tune/examples/pb2_ppo_example.py``; rpbt's ``pbt.explore: pb2`` is its counterpart.
- ``agilerl``: AgileRL's population of PPO agents with its recurrent encoder, tournament selection (size 2,
  elitism) and mutations, after its recurrent PPO tutorial (``docs/tutorials/gymnasium/
  agilerl_recurrent_ppo_tutorial.rst``): ``RSNorm`` observation normalization, ``BPTTSequenceType.CHUNKED``
  sequences of 16; the RL hyperparameter mutations over rpbt's ranges; architecture mutations off (the network
  size stays matched); a generation every 5 updates per member.
- ``sb3_fixed``: sb3-contrib ``RecurrentPPO`` with rpbt's default hyperparameters, one independent run per member
  (no tuning), two members at a time (one per CPU): the floor every tuner must beat.

Metrics, all from the same run (``summarize``): the best-so-far curve (running max over time of the best member's
mean return over its last 100 training episodes, against wall-clock seconds since the arm's process started and
against total env steps of the population); the wall-clock seconds and total env steps until it first reaches the
task's target; the best member's (highest last 100-episode mean) deterministic evaluation over ``--eval-episodes``
episodes, episode j reset with seed ``EVAL_SEED + j`` in every tool; CPU seconds (user + system) and peak resident
memory of the arm's whole process tree, sampled once a second from ``/proc``.

Usage::

    python benchmarks/peers.py --setup                      # make the peers' venvs (pinned, torch 2.13.0 CPU)
    python benchmarks/peers.py --tasks PositionOnlyCartPoleEasy --seeds 1 --cap-s 900
    python benchmarks/peers.py --tasks RepeatPreviousEasy --arms rpbt,ray_tune_pbt --budget 100000

Outputs: ``benchmarks/results/peers/<task>/<arm>/seed<k>/`` (each arm's curve.jsonl, result.json and log),
``benchmarks/results/peers_<task>.json`` (everything, with the pinned versions) and ``docs/img/peers_<task>.png``
(best-so-far vs wall-clock and vs env steps, one line per arm). Findings: ``docs/peers.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
IMG = REPO / "docs" / "img"
REQUIREMENTS = REPO / "benchmarks" / "peers"
#: Evaluation episode j of every tool is reset with seed EVAL_SEED + j (seeds training never used).
EVAL_SEED = 1_000_003
ARMS: tuple[str, ...] = ("rpbt", "ray_tune_pbt", "ray_tune_pb2", "agilerl", "sb3_fixed")
#: Each peer's virtual environment (git-ignored) and its pinned requirements file under benchmarks/peers/.
VENVS = {"ray_tune_pbt": ".venv-peers-rllib", "ray_tune_pb2": ".venv-peers-rllib", "agilerl": ".venv-peers-agilerl",
         "sb3_fixed": ".venv-peers-sb3"}
REQUIREMENT_FILES = {"ray_tune_pbt": "requirements-rllib.txt", "ray_tune_pb2": "requirements-rllib.txt",
                     "agilerl": "requirements-agilerl.txt",
                     "sb3_fixed": "requirements-sb3.txt"}
#: Packages whose versions each arm records in its result.
VERSION_PACKAGES = ("torch", "numpy", "gymnasium", "popgym", "ray", "agilerl", "sb3-contrib", "stable-baselines3")

#: rpbt's default job, shared by every arm (src/rpbt/configs/default.yaml).
ROLLOUT = {"num_envs": 8, "num_steps": 128, "num_minibatches": 4, "update_epochs": 4, "lstm": 64, "encoder": 64,
           "bptt": 16, "perturbation_interval": 5, "quantile_fraction": 0.25}
DEFAULT_HP = {"learning_rate": 1e-3, "ent_coef": 0.01, "clip_range": 0.2, "gae_lambda": 0.95, "gamma": 0.99,
              "vf_coef": 0.5, "max_grad_norm": 0.5}
#: rpbt's default pbt.search_space (name: (low, high, scale)); the peers search the same ranges.
SEARCH_SPACE = {"learning_rate": (1e-4, 3e-3, "log"), "ent_coef": (1e-4, 3e-2, "log"),
                "clip_range": (0.1, 0.3, "linear"), "gae_lambda": (0.8, 0.99, "linear")}

#: task name -> gymnasium id, target (best member's last-100 mean return), rpbt config file (None: default job),
#: whether the networks see the previous action (rpbt's configs/popgym files feed it, as POPGym's baselines do),
#: and the task's own values of DEFAULT_HP (``hp``: where every arm starts or, for gamma, what every arm uses).
TASKS: dict[str, dict[str, Any]] = {
    "PositionOnlyCartPoleEasy": {"env_id": "popgym-PositionOnlyCartPoleEasy-v0", "target": 0.95, "config": None},
    "RepeatPreviousEasy": {"env_id": "popgym-RepeatPreviousEasy-v0", "target": 0.95,
                           "config": "configs/popgym/RepeatPreviousEasy.yaml", "prev_action": True},
    # AgileRL's recurrent PPO tutorial task: Gymnasium Pendulum-v1 with the angular velocity zeroed (RL Zoo's
    # MaskVelocityWrapper; observation (cos, sin, 0), torque in [-2, 2], 200 steps, return about -1,500..0). The
    # tutorial's gamma 0.9 and entropy coefficient 0 (also the RL Zoo's for PendulumNoVel-v1) are every arm's start;
    # the tutorial's TARGET_SCORE (200) is not a Pendulum return, so the target is stated: -400, the pendulum swung
    # up and held in most episodes (set before any arm was run on it).
    "PendulumNoVel": {"env_id": "peers_envs:PendulumNoVel-v1", "target": -400.0, "config": None,
                      "hp": {"gamma": 0.9, "ent_coef": 0.0}},
}


def task_hp(task: str) -> dict[str, float]:
    """DEFAULT_HP with the task's own values (``TASKS[task]["hp"]``)."""
    return DEFAULT_HP | TASKS[task].get("hp", {})


class PeersError(RuntimeError):
    """The benchmark cannot go on as asked (unknown task or arm, a peer's venv missing)."""


# ------------------------------------------------------------------------------------------------ pure metrics


def best_so_far(rows: Sequence[dict[str, Any]], t0: float) -> list[tuple[float, int, float]]:
    """The population's best-so-far curve from an arm's curve rows.

    Args:
        rows: dicts with ``t`` (unix seconds), ``member`` (any hashable id), ``delta_steps`` (env steps this row
            accounts for, summed over the population in time order) and ``ret100`` (the member's mean return of
            its last 100 finished training episodes; None or NaN before its first episode).
        t0: unix seconds the arm's process started; times are returned relative to it.

    Returns ``[(seconds, total_env_steps, best)]``, one point per row in time order, ``best`` the running max over
    rows so far of ``ret100`` (``-inf`` until the first finite value).
    """
    out: list[tuple[float, int, float]] = []
    steps, best = 0, -math.inf
    for r in sorted(rows, key=lambda r: r["t"]):
        steps += int(r["delta_steps"])
        v = r.get("ret100")
        if v is not None and math.isfinite(v):
            best = max(best, float(v))
        out.append((float(r["t"]) - t0, steps, best))
    return out


def time_to_target(curve: Sequence[tuple[float, int, float]], target: float) -> tuple[Optional[float], Optional[int]]:
    """Seconds and total env steps at the first point of a best-so-far ``curve`` whose value is >= ``target``;
    ``(None, None)`` when it never gets there."""
    for t, steps, best in curve:
        if best >= target:
            return t, steps
    return None, None


def window_mean(history: Sequence[tuple[float, int]], window: int = 100) -> Optional[float]:
    """Mean return of the last ``window`` episodes from per-iteration ``(mean, n_episodes)`` pairs, oldest first.

    RLlib's ``env_runners/episode_return_mean`` with ``num_env_runners=0`` is the mean over the episodes finished
    in that iteration only (NaN with none), not over the last 100; this rebuilds the last-100 mean every other tool
    reports: the newest iterations whole, the oldest one needed counted for the episodes still missing, with its
    own mean (returns inside an iteration are not reported one by one). None before any episode."""
    total, count = 0.0, 0
    for mean, n in reversed(history):
        if n <= 0 or mean is None or not math.isfinite(mean):
            continue
        take = min(n, window - count)
        total += mean * take
        count += take
        if count >= window:
            break
    return total / count if count else None


def mean_stderr(values: Sequence[float]) -> tuple[Optional[float], Optional[float]]:
    """Mean and standard error (sample std / sqrt(n)) of ``values``; stderr None for fewer than 2 values."""
    if not values:
        return None, None
    a = np.asarray(values, dtype=np.float64)
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else None
    return float(a.mean()), se


def summarize(arm_dir: Path, target: float, usage: dict[str, float]) -> dict[str, Any]:
    """One arm's metrics from its directory (``curve.jsonl``, ``result.json``, the orchestrator's ``t0``)."""
    rows = [json.loads(line) for line in (arm_dir / "curve.jsonl").read_text().splitlines() if line.strip()] \
        if (arm_dir / "curve.jsonl").exists() else []
    result = json.loads((arm_dir / "result.json").read_text()) if (arm_dir / "result.json").exists() else {}
    t0 = float(json.loads((arm_dir / "t0.json").read_text())["t0"])
    curve = best_so_far(rows, t0)
    t_target, s_target = time_to_target(curve, target)
    returns = result.get("eval", {}).get("returns", [])
    ev_mean, ev_se = mean_stderr(returns)
    return {
        "status": result.get("status", "failed: no result.json (see log.txt)"),
        "time_to_target_s": t_target, "env_steps_to_target": s_target,
        "cpu_s_to_target": cpu_at(usage.get("cpu_curve", []), t_target),
        "final_best": curve[-1][2] if curve and math.isfinite(curve[-1][2]) else None,
        "total_env_steps": curve[-1][1] if curve else 0,
        "train_end_s": (result["train_end"] - t0) if "train_end" in result else None,
        "eval_mean": ev_mean, "eval_stderr": ev_se, "eval_episodes": len(returns),
        "eval_member": result.get("eval", {}).get("member"),
        "wall_s": usage.get("wall_s"), "cpu_s": usage.get("cpu_s"), "peak_rss_mb": usage.get("peak_rss_mb"),
        "mean_load_1min": usage.get("mean_load_1min"),
        "versions": result.get("versions", {}), "settings": result.get("settings", {}),
        "notes": result.get("notes", []),
        "curve": _thin(curve),
    }


def _thin(curve: Sequence[tuple[float, int, float]], n: int = 400) -> list[list[float]]:
    """At most about ``n`` points of a curve (every k-th and the last), finite values only."""
    pts = [c for c in curve if math.isfinite(c[2])]
    k = max(1, len(pts) // n)
    keep = pts[::k] + ([pts[-1]] if pts and (len(pts) - 1) % k else [])
    return [[round(t, 3), s, round(b, 6)] for t, s, b in keep]


# ------------------------------------------------------------------------------------------------ process tree


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(p.name))
    return kids


def _tree(root: int) -> list[int]:
    kids, out, todo = _children_map(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out


def _sample(pid: int) -> Optional[tuple[float, float]]:
    """(cpu seconds user+system, rss MiB) of one live process, None when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        return cpu, rss
    except (OSError, IndexError, ValueError):
        return None


def run_measured(cmd: list[str], env: dict[str, str], log: Path, limit_s: float) -> dict[str, float]:
    """Run ``cmd``; sample its process tree once a second. Returns wall_s, cpu_s (sum over every process seen of
    its last sampled user+system time; a process's last second before it exits can be missed), peak_rss_mb (max
    over samples of the tree's summed RSS), rc, cpu_curve (``[(seconds, cpu_s so far)]`` per sample) and
    mean_load_1min (the machine's 1-minute load average, mean over the samples: how much else ran). The tree is
    killed after ``limit_s``."""
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True)
        cpu: dict[int, float] = {}
        peak, loads, cpu_curve = 0.0, [], []
        while proc.poll() is None:
            loads.append(_loadavg())
            rss = 0.0
            for pid in _tree(proc.pid):
                s = _sample(pid)
                if s is not None:
                    cpu[pid] = s[0]
                    rss += s[1]
            peak = max(peak, rss)
            cpu_curve.append((time.time() - t0, sum(cpu.values())))
            if time.time() - t0 > limit_s:
                os.killpg(proc.pid, 9)
                break
            time.sleep(1.0)
        rc = proc.wait()
    return {"wall_s": time.time() - t0, "cpu_s": sum(cpu.values()), "peak_rss_mb": peak, "rc": rc,
            "mean_load_1min": float(np.mean([x for x in loads if x is not None] or [np.nan])),
            "cpu_curve": cpu_curve}


def cpu_at(cpu_curve: Sequence[tuple[float, float]], t: Optional[float]) -> Optional[float]:
    """CPU seconds of the arm's process tree at ``t`` seconds after its start, linearly interpolated between the
    once-a-second samples ``[(seconds, cpu_seconds)]``; None for ``t`` None or no samples."""
    if t is None or not cpu_curve:
        return None
    ts, cs = zip(*cpu_curve)
    return float(np.interp(t, ts, cs))


def _loadavg() -> Optional[float]:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# ------------------------------------------------------------------------------------------------ worker helpers


class CurveWriter:
    """Appends curve rows (see :func:`best_so_far`) to ``curve.jsonl``, flushed per row."""

    def __init__(self, path: Path):
        self.path = Path(path)  # opened per row: the writer is pickled with Tune's callbacks

    def row(self, member: Any, delta_steps: int, ret100: Optional[float], t: Optional[float] = None) -> None:
        v = None if ret100 is None or not math.isfinite(float(ret100)) else float(ret100)
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"t": time.time() if t is None else t, "member": member,
                                 "delta_steps": int(delta_steps), "ret100": v}) + "\n")

    def last_values(self) -> dict[Any, float]:
        """Each member's last finite ``ret100`` written so far."""
        last: dict[Any, float] = {}
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            r = json.loads(line)
            if r["ret100"] is not None:
                last[r["member"]] = r["ret100"]
        return last


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def make_env(task: str):
    """The task's Gymnasium environment as the peers see it (POPGym registered on import; ``peers_envs`` found on the
    PYTHONPATH that ``run_arm`` gives every arm). For a task whose rpbt config feeds the previous action
    (``prev_action``), the observation becomes one-hot(observation) concatenated with one-hot(previous action) (zeros
    at an episode's first step): the information rpbt's ``agent.network.prev_action`` gives its network, as POPGym's
    baselines' ``PreviousAction`` wrapper does."""
    import gymnasium as gym
    import popgym  # noqa: F401  (registers popgym-* ids)

    env = gym.make(TASKS[task]["env_id"])
    return _prev_action_wrapper(env) if TASKS[task].get("prev_action") else env


def _prev_action_wrapper(env: Any) -> Any:
    """``env`` (Discrete observations and actions) with one-hot observations followed by the one-hot previous
    action, as one float32 Box of size n_obs + n_act."""
    import gymnasium as gym

    n_obs, n_act = int(env.observation_space.n), int(env.action_space.n)

    class PrevActionOneHot(gym.Wrapper):
        def __init__(self, inner):
            super().__init__(inner)
            self.observation_space = gym.spaces.Box(0.0, 1.0, (n_obs + n_act,), np.float32)

        def _obs(self, obs, action):
            x = np.zeros(n_obs + n_act, np.float32)
            x[int(obs)] = 1.0
            if action is not None:
                x[n_obs + int(action)] = 1.0
            return x

        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            return self._obs(obs, None), info

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return self._obs(obs, action), reward, terminated, truncated, info

    return PrevActionOneHot(env)


def env_action(action: Any, space: Any) -> Any:
    """An action for ``space``: an int for Discrete, a float32 array of the space's shape clipped to its bounds for
    Box (a Gaussian's mean can lie outside them)."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Box):
        a = np.asarray(action, dtype=np.float32).reshape(space.shape)
        return np.clip(a, space.low, space.high)
    return int(np.asarray(action).reshape(-1)[0])


def evaluate(act: Callable[[Any, Any, bool], tuple[Any, Any]], env: Any, episodes: int) -> list[float]:
    """Returns of ``episodes`` deterministic episodes, episode j reset with seed ``EVAL_SEED + j``.

    ``act(obs, state, first)`` -> ``(action, state)``; ``state`` is None at an episode's first call."""
    returns = []
    for j in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED + j)
        state, first, total, done = None, True, 0.0, False
        while not done:
            action, state = act(obs, state, first)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            first, done = False, bool(terminated or truncated)
        returns.append(total)
    return returns


def sample_space(rng: np.random.Generator) -> dict[str, float]:
    """One draw of rpbt's default search space (log-uniform / uniform)."""
    out = {}
    for name, (lo, hi, scale) in SEARCH_SPACE.items():
        out[name] = float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if scale == "log" \
            else float(rng.uniform(lo, hi))
    return out


def _finish(out: Path, status: str, train_end: float, eval_: dict[str, Any], settings: dict[str, Any],
            notes: Sequence[str] = ()) -> None:
    (out / "result.json").write_text(json.dumps({"status": status, "train_end": train_end, "eval": eval_,
                                                 "versions": versions(), "settings": settings,
                                                 "notes": list(notes)}, indent=1))


# ------------------------------------------------------------------------------------------------ arm: rpbt


def worker_rpbt(a: argparse.Namespace, out: Path) -> None:
    """rpbt as shipped: the task's config, only budget / population / seed / threads / run dir changed."""
    import csv

    from rpbt.api import load_policy, resolve_config, train

    task = TASKS[a.task]
    values = {"env.id": task["env_id"], "run.total_env_steps": a.budget, "pbt.population_size": a.population,
              "run.seed": a.seed, "run.dir": str(out / "run"), "run.progress": False, "run.tensorboard": False,
              "run.torch_threads": 1}
    # gamma is not searched: every arm uses the task's; rpbt's searched values start from its search space
    values |= {f"agent.{k}": v for k, v in task.get("hp", {}).items() if k == "gamma"}
    cfg = resolve_config(REPO / task["config"] if task["config"] else None, list(a.override), values)
    t_start = time.time()
    run = train(cfg, overwrite=True, announce=False)
    train_end = time.time()
    writer = CurveWriter(out / "curve.jsonl")
    last: dict[int, float] = {}
    per_update = cfg.env.num_envs * cfg.agent.num_steps
    for m in range(a.population):
        with open(Path(run.dir) / "members" / str(m) / "metrics.csv") as fh:
            for r in csv.DictReader(fh):
                v = float(r["rollout/ep_rew_mean"]) if r.get("rollout/ep_rew_mean") else float("nan")
                # the run's clock is the same for every row of a round (its end): the update's time is the round's
                writer.row(m, per_update, v, t=t_start + float(r["time"]))
                last[m] = v
    best = max(last, key=lambda m: (last[m] if math.isfinite(last[m]) else -math.inf, -m))
    policy = load_policy(run.dir, member=best)
    env = policy.make_env()

    def act(obs, state, first):
        return policy.predict(obs, state, episode_start=first, deterministic=True)

    returns = evaluate(act, env, a.eval_episodes)
    settings = {"config": task["config"] or "shipped default job", "backend": cfg.backend.kind,
                "overrides": values | {o: "" for o in a.override}, "search_space": "default (pbt.search_space)"}
    _finish(out, "ok", train_end, {"member": best, "returns": returns}, settings)


# ------------------------------------------------------------------------------------------------ arm: Ray Tune PBT


def worker_ray_tune_pbt(a: argparse.Namespace, out: Path) -> None:
    """Ray Tune PopulationBasedTraining (arm ray_tune_pbt) or PB2 (arm ray_tune_pb2) over RLlib PPO with RLlib's
    default LSTM module (see the module docstring)."""
    import random

    import ray
    import torch
    from ray import tune
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.algorithms.ppo import PPO, PPOConfig
    from ray.rllib.connectors.env_to_module import MeanStdFilter
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.tune.registry import register_env
    from ray.tune.schedulers import PopulationBasedTraining

    random.seed(a.seed)
    np.random.seed(a.seed)
    task, hp = a.task, task_hp(a.task)
    # an iteration in which no episode ended reports no episode_return_mean (Pendulum's 200-step episodes end in
    # every other iteration of 128 steps per env); Tune's own advice: no strict metric check, and PBT
    # (require_attrs=False) skips such a result and decides at the trial's next result that has the metric
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    register_env("peers_task", lambda cfg: make_env(task))
    ray.init(address="local", num_cpus=a.cores, include_dashboard=False, log_to_driver=False,
             _temp_dir=f"/tmp/rpbt-peers-ray-{os.getpid()}")
    lo = {k: v[0] for k, v in SEARCH_SPACE.items()}
    hi = {k: v[1] for k, v in SEARCH_SPACE.items()}
    space = {"lr": tune.loguniform(lo["learning_rate"], hi["learning_rate"]),
             "entropy_coeff": tune.loguniform(lo["ent_coef"], hi["ent_coef"]),
             "clip_param": tune.uniform(lo["clip_range"], hi["clip_range"]),
             "lambda": tune.uniform(lo["gae_lambda"], hi["gae_lambda"])}
    batch = ROLLOUT["num_envs"] * ROLLOUT["num_steps"]
    config = (
        PPOConfig()
        .environment("peers_task")
        .env_runners(num_env_runners=a.ray_env_runners, num_envs_per_env_runner=ROLLOUT["num_envs"],
                     rollout_fragment_length=ROLLOUT["num_steps"],
                     env_to_module_connector=lambda env, spaces, device: MeanStdFilter())
        .training(train_batch_size=batch, minibatch_size=batch // ROLLOUT["num_minibatches"],
                  num_epochs=ROLLOUT["update_epochs"], lr=space["lr"], entropy_coeff=space["entropy_coeff"],
                  clip_param=space["clip_param"], lambda_=space["lambda"], gamma=hp["gamma"],
                  vf_loss_coeff=hp["vf_coef"], grad_clip=hp["max_grad_norm"], use_kl_loss=False)
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=[ROLLOUT["encoder"]], vf_share_layers=True,
                                                   use_lstm=True, lstm_cell_size=ROLLOUT["lstm"],
                                                   max_seq_len=ROLLOUT["bptt"]))
        .debugging(seed=tune.randint(0, 2**31 - 1))
    )
    # CPUs Tune reserves per trial: with 1 (RLlib's default) only `cores` of the 8 trials run at once and PBT pauses
    # and resumes trials (an Algorithm rebuilt from a checkpoint each time); with cores / population every trial runs
    # at once and the OS shares the cores, as rpbt's workers share them
    trial_cpus = a.cores / a.population if a.ray_trial_cpus == "shared" else float(a.ray_trial_cpus)
    config = config.resources(num_cpus_for_main_process=trial_cpus)
    if a.worker == "ray_tune_pb2":
        from ray.tune.schedulers.pb2 import PB2  # imported apart: it needs scikit-learn

        bounds = {"lr": [lo["learning_rate"], hi["learning_rate"]], "entropy_coeff": [lo["ent_coef"], hi["ent_coef"]],
                  "clip_param": [lo["clip_range"], hi["clip_range"]], "lambda": [lo["gae_lambda"], hi["gae_lambda"]]}
        pbt = PB2(time_attr="training_iteration", perturbation_interval=ROLLOUT["perturbation_interval"],
                  quantile_fraction=ROLLOUT["quantile_fraction"], hyperparam_bounds=bounds, require_attrs=False)
        schedule = {"scheduler": "PB2", "hyperparam_bounds": bounds}
    else:
        pbt = PopulationBasedTraining(time_attr="training_iteration",
                                      perturbation_interval=ROLLOUT["perturbation_interval"],
                                      quantile_fraction=ROLLOUT["quantile_fraction"], resample_probability=0.25,
                                      hyperparam_mutations=space, require_attrs=False)
        schedule = {"scheduler": "PopulationBasedTraining", "resample_probability": 0.25,
                    "hyperparam_mutations": {k: str(v) for k, v in space.items()}}
    writer = CurveWriter(out / "curve.jsonl")

    class Curve(tune.Callback):
        history: dict[str, list[tuple[float, int]]] = {}

        def on_trial_result(self, iteration, trials, trial, result, **info):
            er = result.get("env_runners", {})
            h = self.history.setdefault(trial.trial_id, [])
            h.append((er.get("episode_return_mean", float("nan")), int(er.get("num_episodes", 0))))
            writer.row(trial.trial_id, er.get("num_env_steps_sampled", 0), window_mean(h))

    tuner = tune.Tuner(
        PPO, param_space=config,
        tune_config=tune.TuneConfig(scheduler=pbt, num_samples=a.population, metric="env_runners/episode_return_mean",
                                    mode="max", time_budget_s=a.cap_s),
        run_config=tune.RunConfig(name="pbt", storage_path=str(out / "ray_results"), verbose=0, callbacks=[Curve()],
                                  stop={"num_env_steps_sampled_lifetime": a.budget},
                                  checkpoint_config=tune.CheckpointConfig(
                                      checkpoint_frequency=ROLLOUT["perturbation_interval"], checkpoint_at_end=True,
                                      num_to_keep=None)))
    grid = tuner.fit()
    train_end = time.time()
    notes = []
    last = writer.last_values()
    best = max(last, key=lambda k: last[k]) if last else None
    ckpt = None
    for r in grid:
        if r.metrics and r.metrics.get("trial_id") == best:
            ckpt = r.checkpoint
    status = "ok" if train_end - float(a.t0) < a.cap_s else f"capped at {a.cap_s} s (Tune time_budget_s)"
    returns: list[float] = []
    if ckpt is None:
        notes.append("no checkpoint of the best trial: not evaluated")
    else:
        algo = Algorithm.from_checkpoint(ckpt.path)
        module = algo.get_module()
        filt = [c for c in algo.env_runner._env_to_module.connectors if isinstance(c, MeanStdFilter)][0]._filters[None]
        env = make_env(task)
        continuous = env.action_space.shape != ()

        def act(obs, state, first):
            if state is None:
                state = {k: torch.as_tensor(v)[None] for k, v in module.get_initial_state().items()}
            x = filt(np.asarray(obs, dtype=np.float32)[None], update=False)
            with torch.no_grad():
                o = module.forward_inference({Columns.OBS: torch.as_tensor(x, dtype=torch.float32)[:, None],
                                              Columns.STATE_IN: state})
            inputs = o[Columns.ACTION_DIST_INPUTS][0, 0]
            if continuous:  # a diagonal Gaussian's (mean, log std); RLlib unsquashes [-1, 1] to the bounds
                mean = inputs[: inputs.shape[0] // 2].numpy()
                low, high = env.action_space.low, env.action_space.high
                return env_action(low + (np.clip(mean, -1.0, 1.0) + 1.0) * (high - low) / 2.0, env.action_space), \
                    o[Columns.STATE_OUT]
            return int(inputs.argmax()), o[Columns.STATE_OUT]

        returns = evaluate(act, env, a.eval_episodes)
        notes.append(f"evaluated the best trial's last checkpoint ({Path(ckpt.path).name}; checkpoints every "
                     f"{ROLLOUT['perturbation_interval']} iterations and at the end)")
    ray.shutdown()
    settings = {"algorithm": "RLlib PPO, new API stack, DefaultModelConfig(use_lstm=True)",
                "model": {"fcnet_hiddens": [ROLLOUT["encoder"]], "lstm_cell_size": ROLLOUT["lstm"],
                          "max_seq_len": ROLLOUT["bptt"], "vf_share_layers": True},
                "env_runners": {"num_env_runners": a.ray_env_runners, "num_envs_per_env_runner": ROLLOUT["num_envs"],
                                "rollout_fragment_length": ROLLOUT["num_steps"], "connector": "MeanStdFilter"},
                "training": {"train_batch_size": batch, "minibatch_size": batch // ROLLOUT["num_minibatches"],
                             "num_epochs": ROLLOUT["update_epochs"], "gamma": hp["gamma"],
                             "vf_loss_coeff": hp["vf_coef"], "grad_clip": hp["max_grad_norm"],
                             "use_kl_loss": False},
                "pbt": {"time_attr": "training_iteration", "perturbation_interval": ROLLOUT["perturbation_interval"],
                        "quantile_fraction": ROLLOUT["quantile_fraction"], **schedule, "num_samples": a.population,
                        "initial values": {k: str(v) for k, v in space.items()}},
                "resources": {"ray.init num_cpus": a.cores, "num_cpus_for_main_process (per trial)": trial_cpus,
                              "learner and env runner": "inside the trial's process"},
                "stop": {"num_env_steps_sampled_lifetime": a.budget}, "time_budget_s": a.cap_s}
    _finish(out, status, train_end, {"member": best, "returns": returns}, settings, notes)


# ------------------------------------------------------------------------------------------------ arm: AgileRL


def worker_agilerl(a: argparse.Namespace, out: Path) -> None:
    """AgileRL's evolutionary HPO of recurrent PPO, after its recurrent PPO tutorial (see the module docstring)."""
    import torch
    from agilerl.algorithms import PPO
    from agilerl.algorithms.core.registry import HyperparameterConfig, RLParameter
    from agilerl.hpo.mutation import Mutations
    from agilerl.hpo.tournament import TournamentSelection
    from agilerl.rollouts.on_policy import collect_rollouts_recurrent
    from agilerl.typing import BPTTSequenceType
    from agilerl.utils.utils import make_vect_envs
    from agilerl.wrappers.agent import RSNorm

    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    task, n_envs, hp = a.task, ROLLOUT["num_envs"], task_hp(a.task)
    env = make_vect_envs(make_env=lambda: make_env(task), num_envs=n_envs, should_async_vector=False)
    ranges = {"lr": "learning_rate", "ent_coef": "ent_coef", "clip_coef": "clip_range", "gae_lambda": "gae_lambda"}
    hp_config = HyperparameterConfig(**{k: RLParameter(min=SEARCH_SPACE[v][0], max=SEARCH_SPACE[v][1])
                                        for k, v in ranges.items()})
    net_config = {"latent_dim": ROLLOUT["lstm"], "encoder_config": {"hidden_state_size": ROLLOUT["lstm"],
                                                                     "num_layers": 1},
                  "head_config": {"hidden_size": [ROLLOUT["encoder"]]}}
    learn_step = n_envs * ROLLOUT["num_steps"]
    init_hp = {"batch_size": learn_step // ROLLOUT["num_minibatches"], "lr": hp["learning_rate"],
               "learn_step": learn_step, "gamma": hp["gamma"], "gae_lambda": hp["gae_lambda"],
               "clip_coef": hp["clip_range"], "ent_coef": hp["ent_coef"],
               "vf_coef": hp["vf_coef"], "max_grad_norm": hp["max_grad_norm"],
               "share_encoders": True, "recurrent": True, "target_kl": None,
               "update_epochs": ROLLOUT["update_epochs"], "bptt_sequence_type": BPTTSequenceType.CHUNKED,
               "max_seq_len": ROLLOUT["bptt"], "num_envs": n_envs}
    pop = PPO.population(size=a.population, observation_space=env.single_observation_space,
                         action_space=env.single_action_space, net_config=net_config, hp_config=hp_config,
                         device="cpu", wrapper_cls=RSNorm, **init_hp)
    tournament = TournamentSelection(tournament_size=2, elitism=True, population_size=a.population)
    mutation_p = {"no_mutation": 0.4, "architecture": 0.0, "new_layer_prob": 0.2, "parameters": 0.2,
                  "activation": 0.0, "rl_hp": 0.2, "mutation_sd": 0.1}
    mutations = Mutations(**mutation_p, rand_seed=a.seed, device="cpu")
    writer = CurveWriter(out / "curve.jsonl")
    deadline = float(a.t0) + a.cap_s
    capped = False
    while min(agent.steps for agent in pop) < a.budget:
        for i, agent in enumerate(pop):
            last: tuple = (None, None, None, None)
            gen_scores: list[float] = []
            for _ in range(ROLLOUT["perturbation_interval"]):
                if agent.steps >= a.budget:
                    break
                scores, *rest = collect_rollouts_recurrent(agent, env, last_obs=last[0], last_done=last[1],
                                                           last_scores=last[2], last_info=last[3])
                last = tuple(rest)
                agent.learn()
                agent.steps += agent.learn_step
                gen_scores += list(scores)
                recent = list(agent.scores)[-100:]
                writer.row(f"slot{i}", agent.learn_step, float(np.mean(recent)) if recent else None)
            recent = list(agent.scores)[-100:]
            # PPO.fitness is a copy (a property over metrics.fitness): append to the deque itself
            agent.metrics.fitness.append(float(np.mean(gen_scores)) if gen_scores else
                                         (float(np.mean(recent)) if recent else -math.inf))
        if time.time() > deadline:
            capped = True
            break
        if min(agent.steps for agent in pop) >= a.budget:
            break
        _, pop, _ = tournament.select(pop)
        pop = mutations.mutation(pop)
    train_end = time.time()
    means = [float(np.mean(list(ag.scores)[-100:])) if len(ag.scores) else -math.inf for ag in pop]
    best = int(np.argmax(means))
    agent = pop[best]
    agent.set_training_mode(False)
    inner = agent.agent
    from agilerl.utils.algo_utils import obs_to_tensor

    def act(obs, state, first):
        if state is None:
            state = inner.get_initial_hidden_state(1)
        x = agent.normalize_observation(obs_to_tensor(np.asarray(obs)[None], "cpu"))
        with torch.no_grad():
            # sample=False computes the action distribution without drawing from it; its mode is the argmax of the
            # logits the actor's distribution head keeps (agilerl.networks.distributions.TorchDistribution)
            _, _, _, _, state = inner._get_action_and_values(inner.preprocess_observation(x), None, state,
                                                             sample=False)
        dist = next(mod.dist for mod in inner.actor.modules() if getattr(mod, "dist", None) is not None)
        if dist.mu is not None:  # Box: the Gaussian's mean, clipped as AgileRL's get_action clips in inference
            return env_action(dist.mu.reshape(-1).numpy(), inner.action_space), state
        return int(dist.logits.reshape(-1, dist.logits.shape[-1])[0].argmax()), state

    returns = evaluate(act, make_env(task), a.eval_episodes)
    settings = {"algorithm": "agilerl.algorithms.PPO, recurrent=True, wrapper RSNorm", "net_config": net_config,
                "init_hp": {k: str(v) for k, v in init_hp.items()},
                "hp_config": {k: [SEARCH_SPACE[v][0], SEARCH_SPACE[v][1]] for k, v in ranges.items()},
                "tournament": {"tournament_size": 2, "elitism": True}, "mutations": mutation_p,
                "generation": f"{ROLLOUT['perturbation_interval']} updates per member, then select + mutate",
                "fitness": "mean return of the member's training episodes of the generation (no extra test episodes)",
                "env": f"one SyncVectorEnv of {n_envs} shared by the population, reset at each member's turn (as the "
                       "tutorial's loop)", "torch threads": 1}
    notes = ["evaluation: the mode of the policy (PPO._get_action_and_values(sample=False)) on RSNorm-normalized "
             "observations (statistics frozen)"]
    _finish(out, f"capped at {a.cap_s} s" if capped else "ok", train_end, {"member": best, "returns": returns},
            settings, notes)


# ------------------------------------------------------------------------------------------------ arm: sb3_fixed


def _sb3_settings(task: str) -> dict[str, Any]:
    hp = task_hp(task)
    batch = ROLLOUT["num_envs"] * ROLLOUT["num_steps"]
    return {"n_envs": ROLLOUT["num_envs"], "n_steps": ROLLOUT["num_steps"],
            "batch_size": batch // ROLLOUT["num_minibatches"], "n_epochs": ROLLOUT["update_epochs"],
            "learning_rate": hp["learning_rate"], "ent_coef": hp["ent_coef"],
            "clip_range": hp["clip_range"], "gae_lambda": hp["gae_lambda"],
            "gamma": hp["gamma"], "vf_coef": hp["vf_coef"],
            "max_grad_norm": hp["max_grad_norm"],
            "policy_kwargs": {"lstm_hidden_size": ROLLOUT["lstm"], "n_lstm_layers": 1, "shared_lstm": True,
                              "enable_critic_lstm": False,
                              "net_arch": {"pi": [ROLLOUT["encoder"]], "vf": [ROLLOUT["encoder"]]}}}


def worker_sb3_member(a: argparse.Namespace, out: Path) -> None:
    """One member of sb3_fixed: RecurrentPPO with rpbt's default hyperparameters; saves the model and VecNormalize."""
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

    torch.set_num_threads(1)
    task, m = a.task, a.member
    s = _sb3_settings(task)
    venv = VecNormalize(VecMonitor(DummyVecEnv([lambda: make_env(task)] * ROLLOUT["num_envs"])), gamma=s["gamma"])
    model = RecurrentPPO("MlpLstmPolicy", venv, n_steps=s["n_steps"], batch_size=s["batch_size"],
                         n_epochs=s["n_epochs"], learning_rate=s["learning_rate"], ent_coef=s["ent_coef"],
                         clip_range=s["clip_range"], gae_lambda=s["gae_lambda"], gamma=s["gamma"],
                         vf_coef=s["vf_coef"], max_grad_norm=s["max_grad_norm"], policy_kwargs=s["policy_kwargs"],
                         seed=a.seed * 1000 + m, device="cpu", verbose=0)
    writer = CurveWriter(out / "curve.jsonl")
    deadline = float(a.t0) + a.cap_s
    per_rollout = ROLLOUT["num_envs"] * ROLLOUT["num_steps"]

    class Curve(BaseCallback):
        def _on_step(self) -> bool:
            return time.time() < deadline

        def _on_rollout_end(self) -> None:
            buf = [e["r"] for e in self.model.ep_info_buffer]
            writer.row(f"m{m}", per_rollout, float(np.mean(buf)) if buf else None)

    model.learn(total_timesteps=a.budget, callback=Curve())
    buf = [e["r"] for e in model.ep_info_buffer]
    model.save(out / f"member{m}.zip")
    venv.save(str(out / f"member{m}_vecnormalize.pkl"))
    (out / f"member{m}.json").write_text(json.dumps({"ret100": float(np.mean(buf)) if buf else None,
                                                     "steps": int(model.num_timesteps)}))


def worker_sb3_fixed(a: argparse.Namespace, out: Path) -> None:
    """sb3_fixed: the P members as separate processes, ``--cores`` at a time; then evaluate the best."""
    running: list[subprocess.Popen] = []
    notes = []
    for m in range(a.population):
        if time.time() > float(a.t0) + a.cap_s:
            notes.append(f"member {m} not started: cap reached")
            continue
        while len(running) >= a.cores:
            running = [p for p in running if p.poll() is None]
            time.sleep(0.5)
        cmd = [sys.executable, __file__, "--worker", "sb3_member", "--member", str(m)] + _worker_args(a)
        running.append(subprocess.Popen(cmd, cwd=REPO))
    for p in running:
        p.wait()
    train_end = time.time()
    import torch
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    torch.set_num_threads(1)
    done = {m: json.loads((out / f"member{m}.json").read_text()) for m in range(a.population)
            if (out / f"member{m}.json").exists()}
    best = max(done, key=lambda m: (done[m]["ret100"] if done[m]["ret100"] is not None else -math.inf, -m))
    model = RecurrentPPO.load(out / f"member{best}.zip", device="cpu")
    norm = VecNormalize.load(str(out / f"member{best}_vecnormalize.pkl"), DummyVecEnv([lambda: make_env(a.task)]))

    def act(obs, state, first):
        x = norm.normalize_obs(np.asarray(obs, dtype=np.float32)[None])
        action, state = model.predict(x, state=state, episode_start=np.array([first]), deterministic=True)
        return env_action(action, norm.action_space), state

    returns = evaluate(act, make_env(a.task), a.eval_episodes)
    capped = any(d["steps"] < a.budget for d in done.values()) or len(done) < a.population
    settings = {"algorithm": "sb3_contrib.RecurrentPPO('MlpLstmPolicy'), VecNormalize(obs and reward), VecMonitor",
                **_sb3_settings(a.task),
                "members": f"{a.population} independent runs, {a.cores} at a time (one per CPU)",
                "torch threads": 1}
    _finish(out, f"capped at {a.cap_s} s" if capped else "ok", train_end, {"member": best, "returns": returns},
            settings, notes)


# ------------------------------------------------------------------------------------------------ orchestrator

WORKERS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "rpbt": worker_rpbt, "ray_tune_pbt": worker_ray_tune_pbt, "ray_tune_pb2": worker_ray_tune_pbt,
    "agilerl": worker_agilerl,
    "sb3_fixed": worker_sb3_fixed, "sb3_member": worker_sb3_member}


def _worker_args(a: argparse.Namespace) -> list[str]:
    args = ["--tasks", a.task, "--seed", str(a.seed), "--population", str(a.population), "--budget", str(a.budget),
            "--cap-s", str(a.cap_s), "--cores", str(a.cores), "--eval-episodes", str(a.eval_episodes),
            "--out-dir", str(a.out_dir), "--t0", str(a.t0), "--ray-env-runners", str(a.ray_env_runners),
            "--ray-trial-cpus", str(a.ray_trial_cpus)]
    for o in a.override:
        args += ["--override", o]
    return args


def venv_python(arm: str) -> Path:
    """The interpreter an arm runs in: rpbt's own (this one), or the peer's venv."""
    return Path(sys.executable) if arm == "rpbt" else REPO / VENVS[arm] / "bin" / "python"


def setup(arms: Sequence[str]) -> None:
    """Create each peer's venv (if missing) and install its pinned requirements (``benchmarks/peers/
    requirements-<peer>.lock.txt``, the ``pip freeze`` the results were measured with; else the top-level pins of
    ``requirements-<peer>.txt``) with torch pinned by constraints.txt (torch 2.13.0, the CPU wheel: no CUDA build is
    pulled)."""
    for arm in arms:
        if arm == "rpbt":
            continue
        venv = REPO / VENVS[arm]
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        req = REQUIREMENTS / REQUIREMENT_FILES[arm]
        lock = req.with_suffix(".lock.txt")
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-c", str(REPO / "constraints.txt"),
                        "-r", str(lock if lock.exists() else req)], check=True)


def run_arm(args: argparse.Namespace, task: str, arm: str, seed: int) -> dict[str, Any]:
    """Train one arm as a measured subprocess; returns its summary (status 'blocked: ...' without its venv)."""
    python = venv_python(arm)
    if not python.exists():
        return {"status": f"blocked: {python.parent.parent.name} missing (python benchmarks/peers.py --setup)"}
    out = args.out / task / arm / f"seed{seed}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1")
    # benchmarks/ for peers_envs (a task's env.id can name it: rpbt's worker processes import it by that name)
    paths = [str(REPO / "src")] if arm == "rpbt" else []
    paths += [str(REPO / "benchmarks"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(paths).rstrip(os.pathsep)
    t0 = time.time()
    (out / "t0.json").write_text(json.dumps({"t0": t0}))
    ns = argparse.Namespace(task=task, seed=seed, population=args.population, budget=args.budget, cap_s=args.cap_s,
                            cores=args.cores, eval_episodes=args.eval_episodes, out_dir=out, t0=t0,
                            override=args.override if arm == "rpbt" else [], ray_env_runners=args.ray_env_runners,
                            ray_trial_cpus=args.ray_trial_cpus)
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", arm] + _worker_args(ns)
    usage = run_measured(cmd, env, out / "log.txt", args.cap_s + args.grace_s)
    summary = summarize(out, TASKS[task]["target"], usage)
    if usage["rc"] != 0:
        tail = (out / "log.txt").read_text(errors="replace").strip().splitlines()[-3:]
        summary["status"] = f"failed (exit {usage['rc']}): " + " | ".join(tail)
    return summary


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cores": os.cpu_count(), "platform": platform.platform(),
                            "note": "shared machine: other sessions' jobs may have run at the same time"}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for key in ("model name", "cpu family", "model"):
            line = next(line for line in text.splitlines() if line.split(":")[0].strip() == key)
            info[key] = line.split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return info


def aggregate(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per arm over seeds: mean time / steps to target (over seeds that reached it), how many reached it, mean
    eval; and the rpbt / fastest-peer ratio of mean time to target."""
    agg: dict[str, Any] = {}
    for arm, rs in runs.items():
        hit = [r for r in rs if r.get("time_to_target_s") is not None]
        evals = [r["eval_mean"] for r in rs if r.get("eval_mean") is not None]
        agg[arm] = {"seeds": len(rs), "reached": len(hit),
                    "time_to_target_s": mean_stderr([r["time_to_target_s"] for r in hit])[0],
                    "env_steps_to_target": mean_stderr([r["env_steps_to_target"] for r in hit])[0],
                    "eval_mean": mean_stderr(evals)[0],
                    "cpu_s": mean_stderr([r["cpu_s"] for r in rs if r.get("cpu_s")])[0],
                    "peak_rss_mb": mean_stderr([r["peak_rss_mb"] for r in rs if r.get("peak_rss_mb")])[0]}
    peers = [a for a in agg if a not in ("rpbt", "sb3_fixed") and agg[a]["time_to_target_s"] is not None]
    rp = agg.get("rpbt", {}).get("time_to_target_s")
    if rp is not None and peers:
        fastest = min(peers, key=lambda a: agg[a]["time_to_target_s"])
        agg["ratio"] = {"fastest_peer": fastest, "peer_over_rpbt_time": agg[fastest]["time_to_target_s"] / rp}
    return agg


def merge_runs(path: Path, runs: dict[str, list[dict[str, Any]]], a: argparse.Namespace
               ) -> dict[str, list[dict[str, Any]]]:
    """``runs`` plus the runs an earlier invocation wrote to ``path`` for an (arm, seed) this one did not run, when
    that file has the same budget and population (so one arm, or more seeds, can be run later). Each arm's runs are
    ordered by seed; a run without a ``seed`` key (written before seeds were recorded) counts as seed 0."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return runs
    o = old.get("options", {})
    if (o.get("budget"), o.get("population")) != (a.budget, a.population):
        return runs
    merged: dict[str, list[dict[str, Any]]] = {}
    for arm in {**old.get("runs", {}), **runs}:
        by_seed = {int(r.get("seed", 0)): r for r in old.get("runs", {}).get(arm, [])}
        by_seed.update({int(r.get("seed", 0)): r for r in runs.get(arm, [])})
        merged[arm] = [by_seed[k] for k in sorted(by_seed)]
    return merged


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: ``N`` means seeds 0..N-1, ``a,b,...`` those seeds. Raises ValueError for anything else."""
    if "," in text:
        return [int(x) for x in text.split(",") if x.strip()]
    return list(range(int(text)))


def table(doc: dict[str, Any]) -> str:
    """The markdown table of one task's results JSON: one row per arm and seed, then the ratio."""
    def f(v: Any, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)

    lines = ["| arm | seed | status | time to target (s) | CPU s to target | env steps to target | final best "
             "(last 100) | eval, 100 episodes (+- s.e.) | wall (s) | CPU (s) | peak RSS (MiB) | mean load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for arm, rs in doc["runs"].items():
        for r in rs:
            k = r.get("seed", 0)
            ev = "n/a" if r.get("eval_mean") is None else \
                f"{r['eval_mean']:.3f} +- {f(r.get('eval_stderr'), '.3f')}"
            lines.append(f"| {arm} | {k} | {r.get('status', '')[:40]} | {f(r.get('time_to_target_s'), '.1f')} | "
                         f"{f(r.get('cpu_s_to_target'), '.0f')} | "
                         f"{f(r.get('env_steps_to_target'), ',')} | {f(r.get('final_best'), '.3f')} | {ev} | "
                         f"{f(r.get('wall_s'), '.0f')} | {f(r.get('cpu_s'), '.0f')} | "
                         f"{f(r.get('peak_rss_mb'), '.0f')} | {f(r.get('mean_load_1min'), '.1f')} |")
    ratio = doc.get("aggregate", {}).get("ratio")
    if ratio:
        lines.append(f"\nFastest peer to the target: {ratio['fastest_peer']}, "
                     f"{ratio['peer_over_rpbt_time']:.2f}x rpbt's time.")
    return "\n".join(lines) + "\n"


def plot(task: str, runs: dict[str, list[dict[str, Any]]], target: float, path: Path) -> None:
    """Best-so-far vs wall-clock and vs env steps, one line per arm (each seed drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"rpbt": "C0", "ray_tune_pbt": "C1", "ray_tune_pb2": "C3", "agilerl": "C2", "sb3_fixed": "C7"}
    for arm, rs in runs.items():
        for k, r in enumerate(rs):
            c = np.asarray(r.get("curve") or [], dtype=np.float64)
            if not len(c):
                continue
            label = arm if k == 0 else None
            axes[0].step(c[:, 0], c[:, 2], where="post", color=colors.get(arm), label=label)
            axes[1].step(c[:, 1], c[:, 2], where="post", color=colors.get(arm), label=label)
    xlabels = ("wall-clock seconds since the arm's process started (log)", "env steps, whole population")
    for ax, xl in zip(axes, xlabels):
        ax.axhline(target, color="k", ls=":", lw=1)
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best member's mean return, last 100 episodes (best so far)")
    axes[0].set_xscale("log")
    axes[0].legend(loc="lower right")
    fig.suptitle(f"{task}: rpbt vs Ray Tune PBT + RLlib vs AgileRL vs fixed sb3-contrib (dotted: target)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default="PositionOnlyCartPoleEasy", help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", type=parse_seeds, default=[0], help="N: seeds 0..N-1 per arm; or a list: 1,2")
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--budget", type=int, default=150_000, help="env steps per member (rpbt's run.total_env_steps)")
    p.add_argument("--cap-s", type=float, default=900.0, help="wall-clock cap per arm (training), seconds")
    p.add_argument("--grace-s", type=float, default=600.0, help="extra seconds for evaluation before a kill")
    p.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--ray-env-runners", type=int, default=0, help="RLlib env runners per trial (0: in the trial)")
    p.add_argument("--ray-trial-cpus", default="shared",
                   help="CPUs per Tune trial: 'shared' (cores / population: every trial at once) or a number (1: "
                        "RLlib's default, `cores` trials at a time)")
    p.add_argument("--override", action="append", default=[], help="rpbt key=value (tests: a tiny network)")
    p.add_argument("--out", type=Path, default=RESULTS / "peers")
    p.add_argument("--results", type=Path, default=RESULTS, help="where peers_<task>.json goes")
    p.add_argument("--img", type=Path, default=IMG, help="where peers_<task>.png goes")
    p.add_argument("--setup", action="store_true", help="create the peers' venvs and exit")
    p.add_argument("--report-only", action="store_true", help="redraw table and plot from the results JSON")
    # worker mode (internal)
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--member", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--out-dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--t0", type=float, default=0.0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    arms = [x for x in a.arms.split(",") if x]
    bad = [x for x in arms if x not in ARMS] + [t for t in a.tasks.split(",") if t not in TASKS]
    if bad:
        print(f"peers.py: unknown arm or task {', '.join(bad)}; arms: {', '.join(ARMS)}; tasks: {', '.join(TASKS)}",
              file=sys.stderr)
        return 2
    if a.worker:
        a.task = a.tasks
        WORKERS[a.worker](a, a.out_dir)
        return 0
    if a.setup:
        setup(arms)
        return 0
    if a.report_only:
        for task in a.tasks.split(","):
            doc = json.loads((a.results / f"peers_{task}.json").read_text())
            doc["aggregate"] = aggregate(doc["runs"])
            (a.results / f"peers_{task}.json").write_text(json.dumps(doc, indent=1))
            (a.results / f"peers_{task}.md").write_text(table(doc))
            plot(task, doc["runs"], doc["target"], a.img / f"peers_{task}.png")
            print(table(doc))
        return 0
    for task in a.tasks.split(","):
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for seed in a.seeds:
            for arm in arms:
                print(f"[peers] {task} {arm} seed {seed} ...", flush=True)
                r = run_arm(a, task, arm, seed) | {"seed": seed}
                print(f"[peers]   {r.get('status')}: time to target {r.get('time_to_target_s')} s, eval "
                      f"{r.get('eval_mean')}, wall {r.get('wall_s')}", flush=True)
                runs[arm].append(r)
        runs = merge_runs(a.results / f"peers_{task}.json", runs, a)
        doc = {"task": task, "env_id": TASKS[task]["env_id"], "target": TASKS[task]["target"],
               "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
               "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "aggregate": aggregate(runs), "runs": runs}
        a.results.mkdir(parents=True, exist_ok=True)
        (a.results / f"peers_{task}.json").write_text(json.dumps(doc, indent=1))
        (a.results / f"peers_{task}.md").write_text(table(doc))
        plot(task, runs, TASKS[task]["target"], a.img / f"peers_{task}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
