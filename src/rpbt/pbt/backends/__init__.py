"""Backends: where the population lives (:class:`~rpbt.pbt.backends.base.Backend`, the protocol they implement).

``local`` (:mod:`rpbt.pbt.backends.local`): the whole population in this process, one batched learner;
``process`` (:mod:`rpbt.pbt.backends.process`): shards in worker processes; ``ray`` (:mod:`rpbt.pbt.backends.ray`):
shards in Ray actors; ``auto`` (the default): ``process`` or ``local``, chosen by :func:`resolve_kind` from the
machine and the run. :func:`make_backend` builds the one a config names; each backend module is imported only when
it is built (Ray is optional).
"""

from __future__ import annotations

import warnings
from typing import Optional, Sequence

from rpbt.config import Config
from rpbt.pbt.backends.base import Backend

__all__ = ["AutoBackendWarning", "Backend", "backend_reason", "explain_kind", "make_backend", "resolve_kind"]


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
      ``tests/pbt/test_backends.py``);
    - the learner runs on the CPU: ``agent.device: cpu``, or ``auto`` without CUDA (``cuda_available``; default
      ``torch.cuda.is_available()``). On a GPU one process batching the whole population is the fast path;
    - no ``env_fn`` object is attached (``rpbt.train(..., env_fn=...)``): a callable is called where it was given,
      with the globals it sees there; workers would import it anew by name.

    ``auto``'s workers do not import the main script again (``ProcessBackend(reimport_main=False)``), so a script
    needs no ``if __name__ == "__main__":`` guard and its top-level code runs once. :func:`make_backend` falls back
    to ``local`` when they fail to start (an environment registered by the script with ``gym.register`` does not
    exist in them), with an :class:`AutoBackendWarning` naming the cause.
    """
    kind = cfg.backend.kind
    if kind != "auto":
        return kind, ""
    if cpus is None:
        from rpbt.pbt.backends.sharded import usable_cpus

        cpus = usable_cpus()
    n = cpus
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
    if cfg.env._env_fn is not None:  # a callable attached in this process (rpbt.train(..., env_fn=...))
        return "local", "auto: env_fn is called in this process (backend.kind=process sends it to workers by name)"
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
            return ProcessBackend(cfg, hparams, reimport_main=False)
        except Exception as err:  # noqa: BLE001 - any start-up failure: one process is the fallback
            from rpbt.pbt.backends.local import LocalBackend

            backend = LocalBackend(cfg, hparams)  # raises the run's own error (a bad environment) itself
            cause = " ".join(str(err).split())
            warnings.warn(AutoBackendWarning(
                f"backend auto: the worker processes did not start ({type(err).__name__}: {cause[:300]}); "
                f"training in this process (backend local). Set backend.kind=local to skip the attempt, or "
                f"backend.kind=process to have the workers import the script (environments it registers)"),
                stacklevel=2)
            return backend
    if kind == "ray":
        from rpbt.pbt.backends.ray import RayBackend

        return RayBackend(cfg, hparams)
    raise ValueError(f"backend.kind must be local, process or ray, got {kind!r}")
