"""rpbt: Population-Based Training for recurrent (LSTM) PPO agents.

The Python API (:mod:`rpbt.api`), importable from the package itself::

    import rpbt
    run = rpbt.train(**{"pbt.population_size": 4})      # returns an rpbt.Run
    policy = rpbt.load_policy(run.dir)                   # the best member, as an rpbt.Policy
    action, state = policy.predict(obs, state, episode_start=start)
    rpbt.export(run.dir, "actor.onnx")                   # or format="torchscript"

The names are loaded on first use, so ``import rpbt`` (and the command line) stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Policy", "PolicyState", "Run", "train", "resume", "load_policy", "evaluate", "export",
           "resolve_config", "Interrupted", "ResumeWarning", "CheckpointFallbackWarning", "AutoBackendWarning"]

# where each name lives (all in rpbt.api but the warning classes)
_HOMES = {"ResumeWarning": "rpbt.pbt.runner", "CheckpointFallbackWarning": "rpbt.evaluation.policy",
          "AutoBackendWarning": "rpbt.pbt.backends"}

if TYPE_CHECKING:  # pragma: no cover
    from rpbt.api import (
        Interrupted,
        Policy,
        PolicyState,
        Run,
        evaluate,
        export,
        load_policy,
        resolve_config,
        resume,
        train,
    )
    from rpbt.evaluation.policy import CheckpointFallbackWarning
    from rpbt.pbt.backends import AutoBackendWarning
    from rpbt.pbt.runner import ResumeWarning


def __getattr__(name: str) -> Any:
    if name in __all__:
        import importlib

        return getattr(importlib.import_module(_HOMES.get(name, "rpbt.api")), name)
    raise AttributeError(f"module 'rpbt' has no attribute {name!r}")
