"""Backends: where the population lives (:class:`~rpbt.pbt.backends.base.Backend`, the protocol they implement).

``local`` (:mod:`rpbt.pbt.backends.local`): the whole population in this process, one batched learner;
``process`` (:mod:`rpbt.pbt.backends.process`): shards in worker processes; ``ray`` (:mod:`rpbt.pbt.backends.ray`):
shards in Ray actors; ``auto`` (the default): ``process`` or ``local``, chosen by :func:`resolve_kind` from the
machine and the run. :func:`make_backend` builds the one a config names; each backend module is imported only when
it is built (Ray is optional).
"""

from __future__ import annotations

import os
import pickle
import re
import sys
from typing import Optional, Sequence

from rpbt.config import Config
from rpbt.pbt.backends.base import Backend

__all__ = ["Backend", "explain_kind", "make_backend", "resolve_kind"]


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_MAIN_GUARD = re.compile(r"""__name__\s*==\s*['"]__main__['"]|['"]__main__['"]\s*==\s*__name__""")


def main_module_is_spawn_safe() -> bool:
    """Whether worker processes started with ``spawn`` can re-import ``__main__`` without running it again: an
    interactive session or notebook (no ``__main__.__file__``), a module run with ``-m``, or a script whose source
    has an ``if __name__ == "__main__":`` guard (the ``rpbt`` command's has). A script that calls ``rpbt.train`` at
    its top level without one would start the run again in every worker."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(getattr(main, "__spec__", None), "name", None):
        return True
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return bool(_MAIN_GUARD.search(f.read()))
    except OSError:
        return False


def resolve_kind(cfg: Config, cpus: Optional[int] = None, cuda_available: Optional[bool] = None) -> str:
    """The backend a run uses: ``backend.kind``, with ``auto`` resolved (:func:`explain_kind` without the reason)."""
    return explain_kind(cfg, cpus, cuda_available)[0]


def explain_kind(cfg: Config, cpus: Optional[int] = None, cuda_available: Optional[bool] = None
                 ) -> tuple[str, str]:
    """The backend a run uses and why: (``local`` | ``process`` | ``ray``, a short reason for ``auto``'s choice, or
    ``""`` when ``backend.kind`` names the backend).

    ``auto`` is ``process`` when all of these hold, else ``local``:

    - at least 2 usable CPUs (``cpus``; default ``sched_getaffinity``): shards can run side by side (each worker
      1 torch thread by default; the process backend gives the same decisions and scores as the local one,
      ``tests/test_backends.py``);
    - the learner runs on the CPU: ``agent.device: cpu``, or ``auto`` without CUDA (``cuda_available``; default
      ``torch.cuda.is_available()``). On a GPU one process batching the whole population is the fast path;
    - ``env.entry_point`` is not an in-process callable that pickle cannot send to a worker (``rpbt.train(...,
      env_fn=...)`` with a lambda or a closure trains locally);
    - the calling script can be re-imported by ``spawn`` workers (:func:`main_module_is_spawn_safe`).
    """
    kind = cfg.backend.kind
    if kind != "auto":
        return kind, ""
    n = cpus if cpus is not None else _usable_cpus()
    if n < 2:
        return "local", "auto: 1 usable CPU"
    device = cfg.agent.device
    if device.startswith("cuda"):
        return "local", f"auto: the learner runs on {device}"
    if device == "auto":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        if cuda_available:
            return "local", "auto: the learner runs on CUDA"
    env_fn = cfg.env._env_fn  # a callable attached in this process (rpbt.train(..., env_fn=...)), if any
    if env_fn is not None:
        try:
            pickle.loads(pickle.dumps(env_fn))
        except Exception:
            return "local", "auto: env_fn cannot be sent to worker processes (not importable by reference)"
    if not main_module_is_spawn_safe():
        return "local", ("auto: the script has no `if __name__ == \"__main__\":` guard, so worker processes "
                         "could not re-import it")
    return "process", f"auto: {n} usable CPUs"


def make_backend(cfg: Config, hparams: Sequence[dict]) -> Backend:
    """Build the backend :func:`resolve_kind` names. Raises ``ValueError`` for an unknown kind."""
    kind = resolve_kind(cfg)
    if kind == "local":
        from rpbt.pbt.backends.local import LocalBackend

        return LocalBackend(cfg, hparams)
    if kind == "process":
        from rpbt.pbt.backends.process import ProcessBackend

        return ProcessBackend(cfg, hparams)
    if kind == "ray":
        from rpbt.pbt.backends.ray import RayBackend

        return RayBackend(cfg, hparams)
    raise ValueError(f"backend.kind must be local, process or ray, got {kind!r}")
