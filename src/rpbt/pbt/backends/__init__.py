"""Backends: where the population lives (:class:`~rpbt.pbt.backends.base.Backend`, the protocol they implement).

``local`` (:mod:`rpbt.pbt.backends.local`): the whole population in this process, one batched learner;
``process`` (:mod:`rpbt.pbt.backends.process`): shards in worker processes; ``ray`` (:mod:`rpbt.pbt.backends.ray`):
shards in Ray actors; ``auto`` (the default): ``process`` or ``local``, chosen by :func:`resolve_kind` from the
machine and the run. :func:`make_backend` builds the one a config names; each backend module is imported only when
it is built (Ray is optional).
"""

from __future__ import annotations

import ast
import os
import pickle
import sys
import warnings
from typing import Any, Optional, Sequence

from rpbt.config import Config
from rpbt.pbt.backends.base import Backend

__all__ = ["AutoBackendWarning", "Backend", "backend_reason", "env_fn_reaches_workers", "explain_kind",
           "main_module_is_spawn_safe", "make_backend", "resolve_kind"]


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either side)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    a, b = test.left, test.comparators[0]
    name = [x for x in (a, b) if isinstance(x, ast.Name) and x.id == "__name__"]
    main = [x for x in (a, b) if isinstance(x, ast.Constant) and x.value == "__main__"]
    return bool(name) and bool(main)


def _main_source() -> Optional[tuple[Any, ast.Module]]:
    """(``__main__``, its parsed source) when ``__main__`` is a file that spawn workers re-import (a script or a
    module run with ``-m``); None when it is none (an interactive session, ``python -c``, a notebook)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return main, ast.parse(f.read(), filename=str(path))
    except (OSError, SyntaxError, ValueError, UnicodeDecodeError):
        return main, ast.Module(body=[], type_ignores=[])  # unreadable (stdin): nothing is known to be safe


def main_module_is_spawn_safe() -> bool:
    """Whether worker processes started with ``spawn`` can re-import ``__main__`` without running this call again.

    Spawn workers re-import the main script or ``-m`` module (as ``__mp_main__``), which runs its top-level code
    except what is under ``if __name__ == "__main__":``. Safe: no main file (an interactive session,
    ``python -c``, a notebook: nothing is re-imported), or this call runs inside such a guard block of the main
    file (found from the call stack: the line at which ``__main__``'s top-level code is executing, and the file's
    guard blocks from its syntax tree; the ``rpbt`` command's call is). Not safe: a call at the top level of a
    script or module without a guard around it, or a main file that cannot be read.
    """
    found = _main_source()
    if found is None:
        return True
    main, tree = found
    frame = sys._getframe(1)
    while frame is not None and not (frame.f_code.co_name == "<module>" and frame.f_globals is vars(main)):
        frame = frame.f_back
    if frame is None:  # not under __main__'s top-level code (another thread): nothing says it is guarded
        return False
    line = frame.f_lineno
    return any(isinstance(node, ast.If) and _is_main_test(node.test) and node.lineno <= line <= (node.end_lineno or 0)
               for node in tree.body)


def _main_defines(name: str) -> bool:
    """Whether the re-imported main file defines ``name`` at its top level (a ``def``, ``class``, assignment or
    import outside the ``if __name__ == "__main__":`` blocks), so a spawn worker can unpickle ``__main__.name``."""
    found = _main_source()
    if found is None:
        return False
    for node in found[1].body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def env_fn_reaches_workers(env_fn: Any) -> bool:
    """Whether spawn workers can get ``env_fn`` by reference: pickle can send it, and when it lives in
    ``__main__`` the re-imported main file defines it at its top level (not in a guard block, not in a notebook)."""
    try:
        pickle.loads(pickle.dumps(env_fn))
    except Exception:
        return False
    if getattr(env_fn, "__module__", None) == "__main__":
        qualname = getattr(env_fn, "__qualname__", "")
        return "." not in qualname and _main_defines(qualname)
    return True


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
    - an ``env_fn`` attached in this process reaches the workers (:func:`env_fn_reaches_workers`: a lambda, a
      closure, a function defined in a notebook or inside the main guard train locally);
    - the call can be repeated by ``spawn`` workers' re-import of the main script without running again
      (:func:`main_module_is_spawn_safe`).

    :func:`make_backend` also falls back to ``local`` when ``auto``'s process workers fail to start (an environment
    registered only under the script's main guard, ...), with a :class:`AutoBackendWarning` naming the cause.
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
    if env_fn is not None and not env_fn_reaches_workers(env_fn):
        return "local", ("auto: env_fn cannot reach worker processes (define it at the top level of an "
                         "importable module or script)")
    if not main_module_is_spawn_safe():
        return "local", ("auto: the call is not under `if __name__ == \"__main__\":`, so worker processes "
                         "re-importing the script would run it again")
    return "process", f"auto: {n} usable CPUs"


def backend_reason(cfg: Config, backend: Backend) -> str:
    """Why ``backend`` trains the run: :func:`explain_kind`'s reason, or the start-up fallback of ``auto`` when the
    backend is not the kind ``auto`` chose ("" when ``backend.kind`` named it)."""
    kind, why = explain_kind(cfg)
    if kind != backend.kind:
        return "auto: the worker processes did not start"
    return why


class AutoBackendWarning(UserWarning):
    """``backend.kind: auto`` chose the process backend, its workers could not start, and the run trains in this
    process instead."""


def make_backend(cfg: Config, hparams: Sequence[dict]) -> Backend:
    """Build the backend :func:`resolve_kind` names. Raises ``ValueError`` for an unknown kind.

    Under ``auto``, a process backend whose workers fail to start (an error building a shard's learner in a worker,
    or workers that keep dying before they are ready) is replaced by the local backend with an
    :class:`AutoBackendWarning`; an error of the run itself (a bad environment) is then raised by the local one.
    """
    kind = resolve_kind(cfg)
    if kind == "local":
        from rpbt.pbt.backends.local import LocalBackend

        return LocalBackend(cfg, hparams)
    if kind == "process":
        from rpbt.pbt.backends.process import ProcessBackend

        if cfg.backend.kind != "auto":
            return ProcessBackend(cfg, hparams)
        try:
            return ProcessBackend(cfg, hparams)
        except Exception as err:  # noqa: BLE001 - any start-up failure: one process is the fallback
            from rpbt.pbt.backends.local import LocalBackend

            backend = LocalBackend(cfg, hparams)  # raises the run's own error (a bad environment) itself
            cause = " ".join(str(err).split())
            warnings.warn(AutoBackendWarning(
                f"backend auto: the worker processes did not start ({type(err).__name__}: {cause[:300]}); "
                f"training in this process (backend local). Set backend.kind=local to skip the attempt"),
                stacklevel=2)
            return backend
    if kind == "ray":
        from rpbt.pbt.backends.ray import RayBackend

        return RayBackend(cfg, hparams)
    raise ValueError(f"backend.kind must be local, process or ray, got {kind!r}")
