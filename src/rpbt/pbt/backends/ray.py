"""The Ray backend: one Ray actor per shard of the population, on a local Ray instance or an existing cluster.

``backend.kind: ray`` splits the population into ``backend.num_workers`` contiguous shards (default: the CPUs of
the cluster divided by ``backend.num_cpus_per_shard``, capped at the population size) and creates one actor per
shard with ``num_cpus = backend.num_cpus_per_shard``; each actor holds one batched learner
(:class:`~rpbt.pbt.backends.commands.ShardServer`) for the whole run and sets ``torch.set_num_threads`` to its CPU
share. ``backend.address`` (``"auto"``, ``"ray://head:10001"``, ``"10.0.0.1:6379"``) joins an existing cluster with
``ray.init(address=...)``; otherwise a local instance is started with ``num_cpus = num_workers *
num_cpus_per_shard``. If Ray is already initialised in this process (``ray.init`` called by the user) it is used
as is and left running at :meth:`RayBackend.close`.

Member states move through Ray's object store: a snapshot is an actor task whose result (the member-state bytes
in the checkpoint format) stays in the store; an exploit across shards passes that object reference to the
recipient's actor (bytes that did not come from a snapshot are ``ray.put`` first). Checkpoints are written by the
driver, so the run directory only needs to exist on the driver's machine.

Fault tolerance, determinism and the command set are those of the process backend
(:class:`~rpbt.pbt.backends.sharded.ShardedBackend`): an actor that dies (node lost, killed, out of memory) is
created again, restored from its members' last committed checkpoints and replays the commands since; actors are
created with ``max_restarts=0`` so that Ray does not restart them behind the backend's back.

Ray is an optional dependency (``pip install 'rpbt[ray]'``), imported only when this backend is built; every node
of an existing cluster needs rpbt installed in its Python environment (or a ``runtime_env`` that provides it).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from rpbt.config import Config
from rpbt.pbt.backends.commands import Close, Command, Ping, ShardServer
from rpbt.pbt.backends.errors import BackendError, WorkerDied
from rpbt.pbt.backends.sharded import ShardedBackend, usable_cpus


def import_ray() -> Any:
    """The ``ray`` module; raises :class:`BackendError` with the install line when it is missing."""
    try:
        import ray
    except ImportError as err:
        raise BackendError("backend.kind=ray needs the optional 'ray' package, which is not installed: "
                           "pip install 'rpbt[ray]'  (or pip install ray)") from err
    return ray


class ShardActor:
    """The body of a Ray actor: one :class:`ShardServer`. A construction error is kept and raised by ``call``
    (so it reaches the driver as the original exception instead of a dead actor)."""

    def __init__(self, cfg: Config, member_ids: list[int], hparams: list[dict], threads: int):
        import torch

        torch.set_num_threads(threads)
        self.server: Optional[ShardServer] = None
        self.error: Optional[BaseException] = None
        try:
            self.server = ShardServer(cfg, member_ids, hparams)
        except Exception as err:  # noqa: BLE001
            self.error = err

    def call(self, command_type: type[Command], *fields: Any) -> Any:
        """Run ``command_type(*fields)`` (its fields travel apart so that Ray resolves object references in them)."""
        if self.error is not None:
            raise self.error
        assert self.server is not None
        return self.server.handle(command_type(*fields))


def _death_types(ray: Any) -> tuple[type[BaseException], ...]:
    names = ["RayActorError", "WorkerCrashedError", "OutOfMemoryError", "ObjectLostError", "NodeDiedError",
             "LocalRayletDiedError"]
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


class _RayHandle:
    """One shard's actor and its outstanding call."""

    def __init__(self, backend: "RayBackend", members: list[int], hparams: list[dict], index: int):
        self.backend = backend
        self.index = index
        self.actor = backend._actor_cls.remote(backend.cfg, members, hparams, backend.threads)
        self.ref: Any = self.actor.call.remote(Ping)

    def send(self, command: Command) -> None:
        wired = [self.backend._wire(a) if isinstance(a, bytes) else a for a in command.fields()]  # resolved by Ray
        self.ref = self.actor.call.remote(type(command), *wired)

    def recv(self) -> Any:
        ray = self.backend._ray
        ref, self.ref = self.ref, None
        try:
            out = ray.get(ref)
        except _death_types(ray) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise WorkerDied(f"Ray actor of shard {self.index} died: {type(err).__name__}: {first}") from None
        except ray.exceptions.RayTaskError as err:  # an error raised by the shard itself: re-raise the original
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        if isinstance(out, bytes):  # a member state: keep its object reference for an exploit across shards
            self.backend._refs[out] = ref
        return out

    def wait_ready(self) -> Any:
        ray = self.backend._ray
        ready, _ = ray.wait([self.ref], timeout=self.backend.START_TIMEOUT_S)
        if not ready:
            self.kill()
            raise BackendError(
                f"ray backend: the actor of shard {self.index} did not start within {self.backend.START_TIMEOUT_S} s; "
                f"each shard asks for backend.num_cpus_per_shard={self.backend.cfg.backend.num_cpus_per_shard} CPUs "
                f"and the cluster has {ray.cluster_resources().get('CPU', 0)} (lower backend.num_workers or "
                "num_cpus_per_shard, or add nodes)")
        return self.recv()

    def kill(self) -> None:
        self.backend._ray.kill(self.actor, no_restart=True)

    def close(self) -> None:
        ray = self.backend._ray
        try:
            if self.ref is None:  # idle: let the shard close its environments (a busy one is just killed)
                ray.get(self.actor.call.remote(Close), timeout=30)
        finally:
            ray.kill(self.actor, no_restart=True)


class RayBackend(ShardedBackend):
    """``backend.kind: ray``: one Ray actor per contiguous shard of the population.

    Args:
        cfg: run config (``backend.address``, ``backend.num_workers``, ``backend.num_cpus_per_shard``,
            ``backend.max_failures``, ``run.torch_threads``).
        hparams: initial hyperparameters per member (P dicts).

    Raises :class:`~rpbt.pbt.backends.errors.BackendError` when Ray is not installed or ``backend.num_workers``
    is out of range.
    """

    kind = "ray"
    START_TIMEOUT_S = 600  # an actor not scheduled by then means the cluster lacks the CPUs asked for

    def __init__(self, cfg: Config, hparams: Sequence[dict]):
        ray = self._ray = import_ray()
        b = cfg.backend
        P = cfg.pbt.population_size
        if b.num_workers is not None and not 1 <= b.num_workers <= P:
            raise BackendError(f"backend.num_workers must be between 1 and pbt.population_size ({P}), "
                               f"got {b.num_workers}")
        self._owns_ray = False
        if not ray.is_initialized():
            if b.address:
                ray.init(address=b.address)
            else:
                workers = b.num_workers or max(1, min(P, int(usable_cpus() // b.num_cpus_per_shard) or 1))
                ray.init(num_cpus=max(1, math.ceil(workers * b.num_cpus_per_shard)), include_dashboard=False)
            self._owns_ray = True
        num_shards = b.num_workers
        if num_shards is None:
            cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
            num_shards = max(1, min(P, int(cluster_cpus // b.num_cpus_per_shard)))
        super().__init__(cfg, hparams, num_shards)
        self.threads = max(1, int(b.num_cpus_per_shard))
        if cfg.run.torch_threads:
            self.threads = max(1, min(self.threads, cfg.run.torch_threads))
        self._refs: dict[bytes, Any] = {}  # keyed by the bytes themselves
        self._actor_cls = ray.remote(num_cpus=b.num_cpus_per_shard, max_restarts=0)(ShardActor)
        try:
            self._start_all()
        except BaseException:
            self._shutdown_ray()
            raise

    def _new_handle(self, k: int) -> _RayHandle:
        ms = self.shards[k]
        return _RayHandle(self, list(ms), [self.hparams[m] for m in ms], k)

    def _wire(self, data: bytes) -> Any:
        """An object reference for ``data``: the snapshot's own result in the object store, else ``ray.put``."""
        ref = self._refs.get(data)
        if ref is None:
            ref = self._refs[data] = self._ray.put(data)
        return ref

    def train(self, n_updates: int) -> dict[int, list[dict[str, float]]]:
        self._refs.clear()
        return super().train(n_updates)

    def _restart(self, k: int) -> None:
        self._refs.clear()
        super()._restart(k)

    def actor(self, shard: int) -> Any:
        """The Ray actor handle of shard ``shard`` (for inspection, or ``ray.kill`` in a failure drill)."""
        return self._handles[shard].actor

    def _shutdown_ray(self) -> None:
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._refs.clear()
            self._shutdown_ray()


__all__ = ["RayBackend", "ShardActor", "import_ray"]
