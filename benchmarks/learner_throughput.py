"""Learner throughput: rpbt's population-batched recurrent PPO against sb3-contrib's RecurrentPPO.

Measures, in one run, environment steps per second (collect + update, wall clock, construction excluded) of

- (a) sb3-contrib's ``RecurrentPPO`` (the peer), and
- (b) rpbt's learner: a :class:`rpbt.agent.policy.PopulationPolicy` and its :class:`rpbt.envs.runner.EnvRunner`
  trained by :func:`rpbt.agent.ppo.train_iteration`, built from ``rpbt.config`` with overrides, its tensors on
  ``--device`` (default ``cpu``, like sb3-contrib's; environments always run on the CPU),

on POPGym's ``popgym-PositionOnlyCartPoleEasy-v0`` with 8 envs per member, 128 steps per rollout, 4 minibatches,
4 epochs, LSTM(64) actor and a separate LSTM(64) critic, for

- one member each (sb3-contrib: one model; rpbt: a learner with P = 1), and
- a population of 8 (sb3-contrib: 8 models trained one after another, each with its own seed; rpbt: one batched
  learner with P = 8),

and the mean return of the last 20 finished episodes of every member after ``--steps`` env steps per member.
It prints the ratios (population of 8: aggregate env steps/s rpbt / sb3-contrib; one member: the same ratio) and
writes everything to ``benchmarks/results/learner_throughput.json``. Targets (issue 13): population of 8 at
least 30x, one member at least 10x; and rpbt's default (segment) replay's return not worse than whole-rollout
replay beyond 2 standard errors (arm ``rpbt_pop8_whole``, ``agent.bptt_length=null``). Also: rpbt-only arms for
populations of 32 and 64 (``--large``), and rpbt's fraction of the raw environment limit (a ``SyncVectorEnv`` of
the same number of environments stepped with random actions), measured in the same run.

Every measurement runs in a fresh process (``multiprocessing`` spawn), one after another, never two at once, with
``torch.set_num_threads(--threads)`` (default 1) and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set to the same.

Matched settings (``SHARED_HPARAMS``; rpbt's ``default.yaml`` values): lr 1e-3, gamma 0.99, gae_lambda 0.95,
clip 0.2, ent_coef 0.01, vf_coef 0.5, max_grad_norm 0.5, Adam eps 1e-5, advantage normalization per minibatch,
no value clipping, observation normalization with clip 10 (rpbt: its per-member running normalizer; sb3-contrib:
``VecNormalize(norm_obs=True, norm_reward=False, clip_obs=10)``), scalar squared-error critic (rpbt:
``agent.critic.kind=scalar``, ``agent.critic.normalize_returns=false``; rpbt's default is a quantile critic with
return normalization, which sb3-contrib does not have). sb3-contrib's ``batch_size`` is 8 * 128 / 4 = 256.

Network (``--sb3-arch``):

- ``matched`` (default): the same network as rpbt on both sides: per branch (actor, critic) a Linear(obs, 64) +
  tanh encoder, then LSTM(64), then a linear head on the LSTM output. In sb3-contrib this is a small features
  extractor (:class:`EncoderExtractor`) with ``share_features_extractor=False``, ``lstm_hidden_size=64``,
  ``enable_critic_lstm=True``, ``net_arch=dict(pi=[], vf=[])``.
- ``stock``: sb3-contrib's stock layout, ``policy_kwargs=dict(lstm_hidden_size=64, enable_critic_lstm=True,
  net_arch=dict(pi=[64], vf=[64]))``: LSTM(64) on the raw observation, then Linear(64, 64) + tanh, then the head.
  Same number of layers and widths as rpbt's, the 64-unit layer sits after the LSTM instead of before it.

Remaining differences (not hyperparameters): sb3-contrib's LSTM keeps PyTorch's default initialization (rpbt:
orthogonal, CleanRL style); sb3-contrib's recurrent buffer splits the rollout into padded sequences cut at episode
boundaries and shuffles those into minibatches of ~256 steps, rpbt replays segments of ``agent.bptt_length``
steps from stored states (or, with ``agent.bptt_length=null``, whole env sequences: 2 of the 8 envs
per minibatch) from the stored start state.

Population of 8 for sb3-contrib: 8 models, one after another; its aggregate env steps/s is the sum of their env
steps over the sum of their training times. ``--sb3-pop-steps`` (default: ``--steps``) lets that part use a shorter
budget per model to save time; the sb3-contrib population returns are then returns at that shorter budget (the JSON
says so in ``sb3_pop8.steps_per_member``) and the full-budget sb3-contrib return is the one-member run's.

Usage::

    python benchmarks/learner_throughput.py                 # 100k env steps per member, everything
    python benchmarks/learner_throughput.py --steps 10000   # a quick run
    python benchmarks/learner_throughput.py --profile 5     # cProfile rpbt's train_iteration (P=8), 5 updates

sb3-contrib is a benchmark-only extra (``pip install -e .[bench]``); this script exits with a clear message when
it is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

ENV_ID = "popgym-PositionOnlyCartPoleEasy-v0"
NUM_ENVS = 8
NUM_STEPS = 128
NUM_MINIBATCHES = 4
UPDATE_EPOCHS = 4
LSTM_HIDDEN = 64
ENCODER = 64
RETURN_WINDOW = 20
SHARED_HPARAMS = {
    "learning_rate": 1e-3,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.01,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}
ADAM_EPS = 1e-5
OBS_CLIP = 10.0
TARGETS = {"pop8_min": 30.0, "one_member_min": 10.0}  # issue 13 (issue 2's were 5x, aim 15x, and 2x)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "learner_throughput.json"


# --------------------------------------------------------------------------------------------------- workers


def _set_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def rpbt_config(population: int, seed: int, threads: int, device: str = "cpu", extra: tuple[str, ...] = ()):
    """The rpbt config of this benchmark: the shipped default with the matched overrides, on ``device``, then
    ``extra`` overrides (e.g. ``agent.bptt_length=null`` for whole-rollout replay)."""
    from rpbt.config import load_config

    h = SHARED_HPARAMS
    overrides = [
        f"env.id={ENV_ID}",
        f"env.num_envs={NUM_ENVS}",
        f"agent.num_steps={NUM_STEPS}",
        f"agent.num_minibatches={NUM_MINIBATCHES}",
        f"agent.update_epochs={UPDATE_EPOCHS}",
        f"agent.learning_rate={h['learning_rate']}",
        f"agent.gamma={h['gamma']}",
        f"agent.gae_lambda={h['gae_lambda']}",
        f"agent.clip_range={h['clip_range']}",
        f"agent.ent_coef={h['ent_coef']}",
        f"agent.vf_coef={h['vf_coef']}",
        f"agent.max_grad_norm={h['max_grad_norm']}",
        f"agent.adam_eps={ADAM_EPS}",
        "agent.normalize_advantage=true",
        "agent.normalize_observations=true",
        f"agent.obs_clip={OBS_CLIP}",
        "agent.clip_range_vf=null",
        f"agent.network.encoder_sizes=[{ENCODER}]",
        f"agent.network.lstm_hidden_size={LSTM_HIDDEN}",
        "agent.network.lstm_num_layers=1",
        "agent.critic.kind=scalar",
        "agent.critic.twin=false",
        "agent.critic.normalize_returns=false",
        # A bare learner's size is its member list; the config's population (at least 2 for PBT) is not read by it.
        f"pbt.population_size={max(population, 2)}",
        f"pbt.score_window={RETURN_WINDOW}",
        f"run.seed={seed}",
        f"run.torch_threads={threads}",
        f"agent.device={device}",
        *extra,
    ]
    return load_config(None, overrides), overrides


def _returns_at_entry(steps_done: int, per_member: list[list[float]]) -> dict[str, Any]:
    import numpy as np

    return {"steps_per_member": steps_done,
            "per_member": [float(np.mean(r)) if len(r) else float("nan") for r in per_member]}


def run_rpbt(population: int, seed: int, steps: int, threads: int,
             checkpoints: tuple[int, ...] = (), device: str = "cpu", extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train one rpbt learner of ``population`` members for ``steps`` env steps per member; time the updates.

    ``checkpoints``: budgets (env steps per member) at which the last-20 returns are also recorded (at the first
    update that reaches each one), in ``returns_at``.
    """
    _set_threads(threads)
    import numpy as np

    from rpbt.agent.policy import resolve_device
    from rpbt.agent.ppo import auxiliary_losses, make_policy, make_runner, train_iteration

    cfg, overrides = rpbt_config(population, seed, threads, device, extra)
    policy = make_policy(cfg, list(range(population)), device=resolve_device(cfg.agent.device))
    runner = make_runner(cfg, policy)
    aux = auxiliary_losses(cfg)
    updates = math.ceil(steps / (NUM_ENVS * NUM_STEPS))
    load0 = os.getloadavg()[0]
    pending = sorted(set(checkpoints))
    returns_at: dict[str, Any] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(updates):
        train_iteration(policy, runner, aux)
        done = int(policy.env_steps[0])
        while pending and done >= pending[0]:
            returns_at[str(pending.pop(0))] = _returns_at_entry(
                done, [policy.recent_returns(i, RETURN_WINDOW) for i in range(population)])
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    per_member = [policy.recent_returns(i, RETURN_WINDOW) for i in range(population)]
    env_steps = int(policy.env_steps.sum())
    runner.close()
    return {
        "learner": "rpbt",
        "population": population,
        "device": str(policy.device),
        "seeds": {"run.seed": seed, "members": list(range(population))},
        "updates": updates,
        "steps_per_member": int(policy.env_steps[0]),
        "env_steps_total": env_steps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "env_steps_per_s": env_steps / seconds,
        "env_steps_per_cpu_s": env_steps / cpu_seconds,
        "returns_last20": [float(np.mean(r)) if len(r) else float("nan") for r in per_member],
        "returns_at": returns_at,
        "episodes": [int(e) for e in policy.episodes],
        "loadavg_1min_before_after": [load0, os.getloadavg()[0]],
        "overrides": overrides,
    }


def run_rpbt_process(population: int, seed: int, steps: int, threads: int,
                     checkpoints: tuple[int, ...] = ()) -> dict[str, Any]:
    """As :func:`run_rpbt`, on the process backend (what the default ``backend.kind: auto`` picks on a multi-core
    CPU): one shard per usable CPU (capped at the population), each a batched learner in its own worker process
    with ``threads`` torch threads, all members with the same hyperparameters (the config's). Times
    ``backend.train`` (all shards at once), worker start excluded. ``cpu_seconds`` is this process's CPU time plus the
    workers' whole lives (``os.times`` counts a child once it has exited), so their start-up (imports, learner
    construction) is included: the per-CPU-second figure of this arm is a lower bound."""
    _set_threads(threads)
    import numpy as np

    from rpbt.config import member_hparams
    from rpbt.pbt.backends.process import ProcessBackend

    cfg, overrides = rpbt_config(population, seed, threads, "cpu", ("backend.kind=process",))
    backend = ProcessBackend(cfg, [member_hparams(cfg) for _ in range(population)])
    updates = math.ceil(steps / (NUM_ENVS * NUM_STEPS))
    load0 = os.getloadavg()[0]
    pending = sorted(set(checkpoints))
    returns_at: dict[str, Any] = {}
    c0 = os.times()
    t0 = time.perf_counter()
    done_updates = 0
    while done_updates < updates:  # one update per call only where a return checkpoint falls inside
        n = updates - done_updates
        if pending:
            n = min(n, max(1, math.ceil(pending[0] / (NUM_ENVS * NUM_STEPS)) - done_updates))
        backend.train(n)
        done_updates += n
        done = done_updates * NUM_ENVS * NUM_STEPS
        if pending and done >= pending[0]:
            info = backend.member_info()
            while pending and done >= pending[0]:
                returns_at[str(pending.pop(0))] = _returns_at_entry(
                    done, [info[m]["recent_returns"][-RETURN_WINDOW:] for m in range(population)])
    seconds = time.perf_counter() - t0
    info = backend.member_info()
    workers = backend.num_workers
    backend.close()
    c1 = os.times()
    cpu_seconds = (c1.children_user + c1.children_system - c0.children_user - c0.children_system
                   + c1.user + c1.system - c0.user - c0.system)
    per_member = [info[m]["recent_returns"][-RETURN_WINDOW:] for m in range(population)]
    env_steps = int(sum(info[m]["env_steps"] for m in range(population)))
    return {
        "learner": "rpbt",
        "backend": f"process, {workers} workers x {threads} torch threads",
        "workers": workers,
        "population": population,
        "device": "cpu",
        "seeds": {"run.seed": seed, "members": list(range(population))},
        "updates": updates,
        "steps_per_member": int(info[0]["env_steps"]),
        "env_steps_total": env_steps,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "env_steps_per_s": env_steps / seconds,
        "env_steps_per_cpu_s": env_steps / cpu_seconds if cpu_seconds > 0 else float("nan"),
        "returns_last20": [float(np.mean(r)) if len(r) else float("nan") for r in per_member],
        "returns_at": returns_at,
        "episodes": [int(info[m]["episodes"]) for m in range(population)],
        "loadavg_1min_before_after": [load0, os.getloadavg()[0]],
        "overrides": overrides,
    }


def _encoder_extractor_class():
    """sb3's features extractor equivalent to rpbt's encoder: Linear(obs, 64) + tanh (built lazily: sb3 import)."""
    import torch
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class EncoderExtractor(BaseFeaturesExtractor):
        """Flatten, Linear(obs_dim, features_dim), tanh: rpbt's ``agent.network.encoder_sizes=[64]``."""

        def __init__(self, observation_space, features_dim: int = ENCODER):
            super().__init__(observation_space, features_dim)
            n_in = int(torch.tensor(observation_space.shape).prod())
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, features_dim), torch.nn.Tanh())

        def forward(self, observations):
            return self.net(observations)

    return EncoderExtractor


def sb3_policy_kwargs(arch: str) -> dict[str, Any]:
    if arch == "stock":
        return dict(lstm_hidden_size=LSTM_HIDDEN, enable_critic_lstm=True, net_arch=dict(pi=[64], vf=[64]))
    if arch == "matched":
        return dict(lstm_hidden_size=LSTM_HIDDEN, enable_critic_lstm=True, net_arch=dict(pi=[], vf=[]),
                    features_extractor_class=_encoder_extractor_class(),
                    features_extractor_kwargs=dict(features_dim=ENCODER), share_features_extractor=False)
    raise ValueError(f"--sb3-arch must be 'matched' or 'stock', got {arch!r}")


def _sb3_seed(seed: int, model: int) -> int:
    """Model ``model``'s seed: rpbt's member seed (non-overlapping env seeds between models)."""
    from rpbt.seeding import member_seed

    return member_seed(seed, model) % (2**31 - NUM_ENVS)


def run_sb3(models: int, seed: int, steps: int, threads: int, arch: str,
            checkpoints: tuple[int, ...] = ()) -> dict[str, Any]:
    """Train ``models`` sb3-contrib RecurrentPPO models one after another, ``steps`` env steps each; time them.

    ``checkpoints`` as for :func:`run_rpbt` (recorded at the end of the first rollout that reaches each budget,
    i.e. after the same number of collected steps as rpbt's update that reaches it).
    """
    _set_threads(threads)
    import gymnasium as gym
    import numpy as np
    import popgym  # noqa: F401  (registers the popgym-* ids)
    from sb3_contrib import RecurrentPPO as SB3RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    class ReturnsAt(BaseCallback):
        """Records the last-20 episode returns when the collected steps first reach each checkpoint."""

        def __init__(self):
            super().__init__()
            self.pending, self.seen = sorted(set(checkpoints)), {}

        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            done = int(self.model.num_timesteps)
            while self.pending and done >= self.pending[0]:
                rs = [float(ep["r"]) for ep in list(self.model.ep_info_buffer)[-RETURN_WINDOW:]]
                self.seen[str(self.pending.pop(0))] = (done, rs)

    h = SHARED_HPARAMS
    seconds, cpu_seconds, env_steps, returns, episodes, seeds = [], [], [], [], [], []
    seen_per_model = []
    load0 = os.getloadavg()[0]
    for m in range(models):
        s = _sb3_seed(seed, m)
        seeds.append(s)
        venv = make_vec_env(lambda: gym.make(ENV_ID), n_envs=NUM_ENVS, seed=s)
        venv = VecNormalize(venv, norm_obs=True, norm_reward=False, clip_obs=OBS_CLIP, gamma=h["gamma"])
        model = SB3RecurrentPPO(
            "MlpLstmPolicy", venv, n_steps=NUM_STEPS, batch_size=NUM_ENVS * NUM_STEPS // NUM_MINIBATCHES,
            n_epochs=UPDATE_EPOCHS, learning_rate=h["learning_rate"], gamma=h["gamma"], gae_lambda=h["gae_lambda"],
            clip_range=h["clip_range"], clip_range_vf=None, normalize_advantage=True, ent_coef=h["ent_coef"],
            vf_coef=h["vf_coef"], max_grad_norm=h["max_grad_norm"], policy_kwargs=sb3_policy_kwargs(arch),
            seed=s, device="cpu", verbose=0,
        )
        t0, c0 = time.perf_counter(), time.process_time()
        callback = ReturnsAt()
        model.learn(total_timesteps=steps, callback=callback)
        seconds.append(time.perf_counter() - t0)
        cpu_seconds.append(time.process_time() - c0)
        env_steps.append(int(model.num_timesteps))
        rs = [float(ep["r"]) for ep in list(model.ep_info_buffer)[-RETURN_WINDOW:]]
        returns.append(float(np.mean(rs)) if rs else float("nan"))
        episodes.append(int(sum(len(e.get_episode_rewards()) for e in venv.venv.envs)))
        seen_per_model.append(callback.seen)
        venv.close()
    total_steps, total_s = sum(env_steps), sum(seconds)
    returns_at = {}
    for key in seen_per_model[0]:
        if all(key in seen for seen in seen_per_model):
            returns_at[key] = _returns_at_entry(seen_per_model[0][key][0], [seen[key][1] for seen in seen_per_model])
    return {
        "learner": "sb3-contrib",
        "population": models,
        "arch": arch,
        "seeds": seeds,
        "steps_per_member": env_steps[0],
        "env_steps_total": total_steps,
        "seconds": total_s,
        "cpu_seconds": sum(cpu_seconds),
        "seconds_per_model": seconds,
        "env_steps_per_s": total_steps / total_s,
        "env_steps_per_cpu_s": total_steps / sum(cpu_seconds),
        "returns_last20": returns,
        "returns_at": returns_at,
        "episodes": episodes,
        "loadavg_1min_before_after": [load0, os.getloadavg()[0]],
    }


def random_policy_return(episodes: int = 200, seed: int = 0) -> float:
    """Mean return of a uniformly random policy (the floor the learners should beat)."""
    import gymnasium as gym
    import numpy as np
    import popgym  # noqa: F401

    env = gym.make(ENV_ID)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    out, total = [], 0.0
    while len(out) < episodes:
        _, r, term, trunc, _ = env.step(env.action_space.sample())
        total += float(r)
        if term or trunc:
            out.append(total)
            total = 0.0
            env.reset()
    return float(np.mean(out))


def raw_env_rate(num_envs: int, seconds: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """The environment limit: env steps/s of a ``SyncVectorEnv`` of ``num_envs`` copies of the benchmark's env
    (rpbt's factory, same-step autoreset) stepped with uniformly random actions for about ``seconds``."""
    _set_threads(1)
    import numpy as np

    from rpbt.config import EnvConfig
    from rpbt.envs.factory import make_vector_env

    envs = make_vector_env(EnvConfig(id=ENV_ID, num_envs=1), num_envs)
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    n_actions = int(envs.single_action_space.n)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(64):
            envs.step(rng.integers(0, n_actions, num_envs))
        steps += 64 * num_envs
    rate = steps / (time.perf_counter() - t0)
    envs.close()
    return {"num_envs": num_envs, "env_steps_per_s": rate}


def _child(conn, fn, args) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException:  # the parent re-raises it with the child's traceback
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _in_fresh_process(fn, *args):
    """Run ``fn(*args)`` in a new spawned process and return its result (one at a time). The process is not a
    daemon (a ``multiprocessing.Pool`` worker is), so the process-backend arm can start its own workers. Raises
    ``RuntimeError`` with the child's traceback when ``fn`` fails."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args))
    proc.start()
    send.close()
    try:
        status, value = receive.recv()
    except EOFError:
        status, value = "error", f"the process died (exit code {proc.join() or proc.exitcode})"
    except BaseException:  # interrupted while waiting (Ctrl-C): do not leave the arm running
        proc.terminate()
        proc.join()
        raise
    finally:
        receive.close()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed in its own process:\n{value}")
    return value


# --------------------------------------------------------------------------------------------------- profile


def profile_rpbt(population: int, seed: int, updates: int, threads: int, top: int = 30, device: str = "cpu"
                 ) -> None:
    """cProfile :func:`rpbt.agent.ppo.train_iteration` (after one warm-up update) and print the hot spots."""
    import cProfile
    import pstats

    _set_threads(threads)
    from rpbt.agent.policy import resolve_device
    from rpbt.agent.ppo import auxiliary_losses, make_policy, make_runner, train_iteration

    cfg, _ = rpbt_config(population, seed, threads, device)
    policy = make_policy(cfg, list(range(population)), device=resolve_device(cfg.agent.device))
    runner = make_runner(cfg, policy)
    aux = auxiliary_losses(cfg)
    train_iteration(policy, runner, aux)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(updates):
        train_iteration(policy, runner, aux)
    prof.disable()
    dt = (time.perf_counter() - t0) / updates
    runner.close()
    print(f"rpbt P={population} on {policy.device}: {dt:.3f} s per update under cProfile "
          f"({population * NUM_ENVS * NUM_STEPS / dt:.0f} env steps/s, profiler overhead included)")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


# --------------------------------------------------------------------------------------------------- main


def _mean_se(xs: list[float]) -> tuple[float, float]:
    import numpy as np

    a = np.asarray([x for x in xs if not math.isnan(x)], dtype=float)
    if len(a) == 0:
        return float("nan"), float("nan")
    se = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
    return float(a.mean()), se


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "numpy", "gymnasium", "popgym", "sb3_contrib", "stable_baselines3", "rpbt"):
        try:
            mod = __import__(name)
            out[name] = str(getattr(mod, "__version__", "?"))
        except ImportError:
            out[name] = "missing"
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100_000, help="env steps per member (default 100000)")
    p.add_argument("--sb3-pop-steps", type=int, default=None,
                   help="env steps per model for sb3-contrib's population of 8 (default: --steps)")
    p.add_argument("--population", type=int, default=8, help="population size of the population runs (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    p.add_argument("--device", default="cpu",
                   help="torch device of rpbt's learner: cpu (default, like sb3-contrib's), cuda, auto")
    p.add_argument("--sb3-arch", choices=["matched", "stock"], default="matched",
                   help="sb3-contrib network: 'matched' to rpbt's (default) or sb3-contrib's stock layout")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    p.add_argument("--large", type=int, nargs="*", default=[32, 64],
                   help="population sizes of rpbt-only throughput arms (default 32 64; none: --large)")
    p.add_argument("--large-steps", type=int, default=20_000, help="env steps per member of the large arms")
    p.add_argument("--no-process", action="store_true",
                   help="skip the rpbt population arm on the process backend (one worker per usable CPU)")
    p.add_argument("--no-whole", action="store_true",
                   help="skip the rpbt population arm with whole-rollout replay (agent.bptt_length=null)")
    p.add_argument("--profile", type=int, default=0, metavar="UPDATES",
                   help="only cProfile rpbt's train_iteration at the population size for UPDATES updates")
    args = p.parse_args(argv)
    if args.steps < 1 or args.population < 1 or args.threads < 1:
        p.error("--steps, --population and --threads must be >= 1")
    if args.profile:
        profile_rpbt(args.population, args.seed, args.profile, args.threads, device=args.device)
        return 0
    try:
        import sb3_contrib  # noqa: F401
    except ImportError:
        print("sb3-contrib is not installed: it is a benchmark-only extra, install it with "
              "`pip install -e '.[bench]' -c constraints.txt`", file=sys.stderr)
        return 2
    sb3_pop_steps = min(args.sb3_pop_steps or args.steps, args.steps)
    checkpoints = (sb3_pop_steps, args.steps)
    P = args.population

    t_start = time.time()
    runs: dict[str, dict[str, Any]] = {}
    plan = [
        ("rpbt_1", run_rpbt, (1, args.seed, args.steps, args.threads, checkpoints, args.device)),
        ("sb3_1", run_sb3, (1, args.seed, args.steps, args.threads, args.sb3_arch, checkpoints)),
        (f"rpbt_pop{P}", run_rpbt, (P, args.seed, args.steps, args.threads, checkpoints, args.device)),
        (f"sb3_pop{P}", run_sb3, (P, args.seed, sb3_pop_steps, args.threads, args.sb3_arch, checkpoints)),
    ]
    if not args.no_process:  # the default backend (auto) on a multi-core CPU: every core, one shard each
        plan.append((f"rpbt_pop{P}_process", run_rpbt_process, (P, args.seed, args.steps, args.threads,
                                                                checkpoints)))
    if not args.no_whole:  # the replay rpbt used before segment replay, for the return comparison
        plan.append((f"rpbt_pop{P}_whole", run_rpbt, (P, args.seed, args.steps, args.threads, checkpoints,
                                                      args.device, ("agent.bptt_length=null",))))
    for big in args.large:
        plan.append((f"rpbt_pop{big}", run_rpbt, (big, args.seed, args.large_steps, args.threads, (), args.device)))
    for name, fn, fargs in plan:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        r = runs[name] = _in_fresh_process(fn, *fargs)
        mean, se = _mean_se(r["returns_last20"])
        print(f"    {r['env_steps_total']} env steps in {r['seconds']:.1f} s = {r['env_steps_per_s']:.0f} env steps/s "
              f"({r['env_steps_per_cpu_s']:.0f} per CPU s); load {r['loadavg_1min_before_after']}; "
              f"return (last {RETURN_WINDOW} episodes, mean over members) {mean:.3f} +- {se:.3f}", flush=True)
    random_ret = random_policy_return()
    raw = {}
    for n_envs in sorted({NUM_ENVS * r["population"] for r in runs.values() if r.get("learner") == "rpbt"}):
        raw[str(n_envs)] = _in_fresh_process(raw_env_rate, n_envs)
    # A run on W worker processes is held against W times the one-process limit (each worker steps its own envs).
    env_fraction = {name: r["env_steps_per_s"] / (raw[str(NUM_ENVS * r["population"])]["env_steps_per_s"]
                                                  * r.get("workers", 1))
                    for name, r in runs.items() if r.get("learner") == "rpbt"}

    def ratio(a: str, b: str, key: str = "env_steps_per_s") -> float:
        return runs[a][key] / runs[b][key]

    one, pop = ratio("rpbt_1", "sb3_1"), ratio(f"rpbt_pop{P}", f"sb3_pop{P}")
    one_cpu = ratio("rpbt_1", "sb3_1", "env_steps_per_cpu_s")
    pop_cpu = ratio(f"rpbt_pop{P}", f"sb3_pop{P}", "env_steps_per_cpu_s")
    max_load = max(x for r in runs.values() for x in r["loadavg_1min_before_after"])
    contended = max_load > (os.cpu_count() or 1)
    returns = {}
    for name, r in runs.items():
        mean, se = _mean_se(r["returns_last20"])
        returns[name] = {"steps_per_member": r["steps_per_member"], "mean": mean, "se": se,
                         "per_member": r["returns_last20"]}
    # "Equal or better return": rpbt's mean over members against sb3-contrib's, strictly, and "not worse" = not
    # below by more than 2 standard errors of the difference (8 seeds per side is a small sample; with one seed on a
    # side its standard error counts as 0; with one seed on both sides there is no test: None).
    def compare(label: str, a_name: str, a: list[float], b_name: str, b: list[float], steps: int) -> dict[str, Any]:
        (ma, sa), (mb, sb) = _mean_se(a), _mean_se(b)
        se_diff = math.sqrt((0.0 if math.isnan(sa) else sa) ** 2 + (0.0 if math.isnan(sb) else sb) ** 2)
        return {"label": label, "steps_per_member": steps, "rpbt": a_name, "sb3": b_name,
                "rpbt_mean": ma, "rpbt_se": sa, "rpbt_n": len(a), "sb3_mean": mb, "sb3_se": sb, "sb3_n": len(b),
                "rpbt_minus_sb3": ma - mb, "se_of_difference": se_diff,
                "rpbt_at_least_equal_strict": ma >= mb,
                "rpbt_not_worse_2se": None if len(a) < 2 and len(b) < 2 else ma >= mb - 2 * se_diff}

    rp_run, sp_run = runs[f"rpbt_pop{P}"], runs[f"sb3_pop{P}"]
    b_key = str(sb3_pop_steps)
    return_checks = [
        compare(f"population of {P}, both at the sb3-contrib population budget", f"rpbt_pop{P}",
                rp_run["returns_at"][b_key]["per_member"], f"sb3_pop{P}", sp_run["returns_last20"],
                sp_run["steps_per_member"]),
        compare("full budget: rpbt population members vs the one sb3-contrib model", f"rpbt_pop{P}",
                rp_run["returns_last20"], "sb3_1", runs["sb3_1"]["returns_last20"], runs["sb3_1"]["steps_per_member"]),
        compare("full budget, one member each", "rpbt_1", runs["rpbt_1"]["returns_last20"], "sb3_1",
                runs["sb3_1"]["returns_last20"], runs["sb3_1"]["steps_per_member"]),
    ]
    if f"rpbt_pop{P}_whole" in runs:
        return_checks.append(compare(
            "segment replay (the default) vs whole-rollout replay, rpbt population", f"rpbt_pop{P}",
            rp_run["returns_last20"], f"rpbt_pop{P}_whole", runs[f"rpbt_pop{P}_whole"]["returns_last20"],
            rp_run["steps_per_member"]))
    ratios = {
        f"pop{P}_aggregate_rpbt_over_sb3": pop,
        "one_member_rpbt_over_sb3": one,
        f"rpbt_pop{P}_over_rpbt_1": ratio(f"rpbt_pop{P}", "rpbt_1"),
        **({f"pop{P}_process_aggregate_rpbt_over_sb3": ratio(f"rpbt_pop{P}_process", f"sb3_pop{P}"),
            f"pop{P}_process_over_local": ratio(f"rpbt_pop{P}_process", f"rpbt_pop{P}"),
            "process_workers": runs[f"rpbt_pop{P}_process"]["workers"]}
           if f"rpbt_pop{P}_process" in runs else {}),
        "per_cpu_second": {f"pop{P}_aggregate_rpbt_over_sb3": pop_cpu, "one_member_rpbt_over_sb3": one_cpu},
        # sb3-contrib trains its population one model after another, so its aggregate rate is the per-model rate:
        # against its one model at the full budget (differs from the row above when --sb3-pop-steps < --steps).
        f"pop{P}_aggregate_rpbt_over_sb3_one_model_full_budget": {
            "wall": ratio(f"rpbt_pop{P}", "sb3_1"),
            "per_cpu_second": ratio(f"rpbt_pop{P}", "sb3_1", "env_steps_per_cpu_s")},
    }
    targets = {
        **TARGETS,
        f"pop{P}_meets_min": pop >= TARGETS["pop8_min"],
        "one_member_meets_min": one >= TARGETS["one_member_min"],
    }
    result = {
        "benchmark": "learner_throughput",
        "env_id": ENV_ID,
        "setup": {
            "num_envs_per_member": NUM_ENVS, "num_steps": NUM_STEPS, "num_minibatches": NUM_MINIBATCHES,
            "sb3_batch_size": NUM_ENVS * NUM_STEPS // NUM_MINIBATCHES, "update_epochs": UPDATE_EPOCHS,
            "lstm_hidden_size": LSTM_HIDDEN, "encoder": ENCODER, "hparams": SHARED_HPARAMS, "adam_eps": ADAM_EPS,
            "obs_normalization_clip": OBS_CLIP, "critic": "scalar MSE, separate LSTM, no return normalization",
            "sb3_arch": args.sb3_arch, "sb3_policy_kwargs": repr(
                {k: (v.__name__ if isinstance(v, type) else v) for k, v in sb3_policy_kwargs(args.sb3_arch).items()}),
            "torch_threads_per_process": args.threads, "rpbt_device": args.device, "seed": args.seed,
            "steps_per_member": args.steps,
            "sb3_pop_steps_per_model": sb3_pop_steps, "return_window": RETURN_WINDOW,
            "timing": "wall clock (and process CPU time) of the training loop only (collect + update), "
                      "construction excluded; each run in a fresh spawned process, runs one after another",
        },
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "max_loadavg_1min_seen": max_load, "contended": contended},
        "versions": _versions(),
        "runs": runs,
        "ratios": ratios,
        "targets": targets,
        "returns": returns,
        "return_checks": return_checks,
        "raw_env_limit": raw,
        "rpbt_fraction_of_env_limit": env_fraction,
        "random_policy_return": random_ret,
        "wall_seconds": time.time() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    print()
    print(f"{'run':<18} {'members':>7} {'steps/member':>12} {'env steps/s':>12} {'per CPU s':>10} "
          f"{'return (last 20)':>18}")
    for name, r in runs.items():
        rr = returns[name]
        print(f"{name:<18} {r['population']:>7} {r['steps_per_member']:>12} {r['env_steps_per_s']:>12.0f} "
              f"{r['env_steps_per_cpu_s']:>10.0f} {rr['mean']:>11.3f} +- {rr['se']:.3f}")
    print(f"random policy return: {random_ret:.3f}")
    for name, frac in env_fraction.items():
        n_envs = NUM_ENVS * runs[name]["population"]
        print(f"{name}: {frac:.1%} of the raw environment limit "
              f"({raw[str(n_envs)]['env_steps_per_s']:.0f} env steps/s for {n_envs} envs, random actions)")
    print(f"ratio, population of {P} (aggregate env steps/s, rpbt / sb3-contrib): {pop:.2f}x "
          f"[per CPU second: {pop_cpu:.2f}x] (target >= {TARGETS['pop8_min']:.0f}x)")
    if f"rpbt_pop{P}_process" in runs:
        print(f"ratio, population of {P} on the process backend ({ratios['process_workers']} workers, the default on "
              f"this {os.cpu_count()}-CPU machine) / sb3-contrib in one process: "
              f"{ratios[f'pop{P}_process_aggregate_rpbt_over_sb3']:.2f}x; process / local "
              f"{ratios[f'pop{P}_process_over_local']:.2f}x")
    print(f"ratio, one member (env steps/s, rpbt / sb3-contrib): {one:.2f}x [per CPU second: {one_cpu:.2f}x] "
          f"(target >= {TARGETS['one_member_min']:.0f}x)")
    if sb3_pop_steps < args.steps:
        r2 = ratios[f"pop{P}_aggregate_rpbt_over_sb3_one_model_full_budget"]
        print(f"ratio, population of {P} against sb3-contrib's one model at the full budget ({args.steps} steps): "
              f"{r2['wall']:.2f}x [per CPU second: {r2['per_cpu_second']:.2f}x]")
    if contended:
        print(f"warning: the 1-minute load average reached {max_load:.1f} on {os.cpu_count()} CPUs during the runs; "
              "wall-clock ratios are unreliable, the per-CPU-second ratios less affected", file=sys.stderr)
    for c in return_checks:
        print(f"return, {c['label']} ({c['steps_per_member']} steps/member): "
              f"{c['rpbt']} {c['rpbt_mean']:.3f} (n={c['rpbt_n']}) "
              f"vs {c['sb3']} {c['sb3_mean']:.3f} (n={c['sb3_n']}), difference {c['rpbt_minus_sb3']:+.3f}, "
              f"2 SE = {2 * c['se_of_difference']:.3f}, not worse: "
              f"{'no test (one run each)' if c['rpbt_not_worse_2se'] is None else c['rpbt_not_worse_2se']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
