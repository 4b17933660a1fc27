"""GPU scaling: rpbt's batched learner at populations of 8, 64 and 512 members (8 environments each).

For each population size P, builds a :class:`~rpbt.agent.policy.PopulationPolicy` on ``--device`` and its
:class:`~rpbt.envs.runner.EnvRunner` (environments on the CPU, as always), runs one warm-up update, then times
``--updates`` updates, separately:

- ``collect``: acting in P x 8 environments for ``agent.num_steps`` steps (the device copies included);
- ``update``: the PPO epochs on that rollout (``agent.update_epochs`` x ``agent.num_minibatches`` minibatches).

It reports env steps/s (collect + update), collection env steps/s, and learner samples/s (P x N x T x epochs
samples replayed per second of ``update``), with ``torch.cuda.synchronize`` around every timed part on CUDA. The
config is the shipped default job's (``agent.device`` set to ``--device``) with ``--override`` on top.

Usage, one shot on a GPU machine (about 3-6 minutes with the defaults)::

    python benchmarks/gpu_scaling.py --device cuda --out gpu_scaling.json

and a smoke run anywhere: ``python benchmarks/gpu_scaling.py --device cpu --sizes 2 --updates 1``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gpu_scaling.json"


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(population: int, device_name: str, updates: int, overrides: list[str]) -> dict[str, Any]:
    """Time ``updates`` updates of a population of ``population`` members on ``device_name``."""
    import torch

    from rpbt.agent.policy import resolve_device
    from rpbt.agent.ppo import auxiliary_losses, collect, make_policy, make_runner, update
    from rpbt.config import load_config

    cfg = load_config(None, [f"agent.device={device_name}", f"pbt.population_size={max(population, 2)}",
                             "run.torch_threads=1", *overrides])
    device = resolve_device(cfg.agent.device)
    t_build = time.perf_counter()
    policy = make_policy(cfg, list(range(population)), device=device)
    runner = make_runner(cfg, policy)
    aux = auxiliary_losses(cfg)
    build_s = time.perf_counter() - t_build
    update(policy, policy.optimizer, collect(policy, runner), aux)  # warm-up (allocator, kernels)
    _sync(device)
    t_collect = t_update = 0.0
    for _ in range(updates):
        t0 = time.perf_counter()
        rollout = collect(policy, runner)
        _sync(device)
        t1 = time.perf_counter()
        update(policy, policy.optimizer, rollout, aux)
        _sync(device)
        t_collect += t1 - t0
        t_update += time.perf_counter() - t1
    a, n_envs = cfg.agent, cfg.env.num_envs
    steps = population * n_envs * a.num_steps * updates
    out = {
        "population": population, "envs": population * n_envs, "device": str(device), "updates": updates,
        "build_seconds": build_s, "collect_seconds": t_collect, "update_seconds": t_update,
        "env_steps_per_s": steps / (t_collect + t_update),
        "collect_env_steps_per_s": steps / t_collect,
        "learner_samples_per_s": steps * a.update_epochs / t_update,
        "bptt_length": a.bptt_length, "fused_lstm": a.fused_lstm,
    }
    if device.type == "cuda":
        out["max_memory_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["gpu"] = torch.cuda.get_device_name(device)
    runner.close()
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="torch device of the learner (default cuda)")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 512], help="population sizes (default 8 64 512)")
    p.add_argument("--updates", type=int, default=3, help="timed updates per size (default 3)")
    p.add_argument("--override", action="append", default=[], help="extra dotted config override (repeatable)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    import torch

    from rpbt.config import ConfigError

    torch.set_num_threads(1)
    results = []
    for size in args.sizes:
        try:
            r = measure(size, args.device, args.updates, args.override)
        except ConfigError as err:
            print(f"gpu_scaling: {err}", file=sys.stderr)
            return 2
        results.append(r)
        print(f"P={size:4d} ({r['envs']:5d} envs) on {r['device']}: {r['env_steps_per_s']:9.0f} env steps/s, "
              f"collect {r['collect_env_steps_per_s']:9.0f} env steps/s, "
              f"learner {r['learner_samples_per_s']:10.0f} samples/s", flush=True)
    if len(results) > 1:
        base = results[0]
        for r in results[1:]:
            print(f"P={r['population']} / P={base['population']}: env steps/s x"
                  f"{r['env_steps_per_s'] / base['env_steps_per_s']:.2f}, learner samples/s x"
                  f"{r['learner_samples_per_s'] / base['learner_samples_per_s']:.2f}")
    out = {"benchmark": "gpu_scaling", "torch": torch.__version__, "platform": platform.platform(),
           "overrides": args.override, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
