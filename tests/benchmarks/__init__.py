"""Smoke tests of the benchmark scripts (benchmarks/*.py, loaded by path: they are scripts, not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

#: A learner small enough for a smoke run (2 envs x 16 steps, LSTM of 8, scalar critic, rounds of 2 updates).
TINY_BENCH = ["env.num_envs=2", "agent.num_steps=16", "agent.num_minibatches=1", "agent.update_epochs=1",
              "agent.network.encoder_sizes=[8]", "agent.network.lstm_hidden_size=8", "agent.critic.kind=scalar",
              "pbt.perturbation_interval=2", "pbt.burn_in=2", "pbt.score_window=5"]


def load_script(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported as a module."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
