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

GPUs: ``backend.num_gpus_per_shard`` (fractions allowed) reserves GPUs for each shard's actor; its learner runs on
the GPU Ray assigns it (:func:`shard_device`). Placement: ``backend.placement: spread`` (Ray's ``SPREAD``
scheduling strategy) puts the shards on as many nodes as possible, ``pack`` leaves it to Ray's default policy.
Before the actors are created the shards are fitted onto the alive nodes' resources (:func:`shards_fit`): a cluster
that cannot hold them is refused at once, with the numbers, unless ``backend.wait_for_resources`` asks to wait for
an autoscaler. ``backend.runtime_env`` (``working_dir``, ``py_modules``, ``pip``, ...: Ray's keys) is the job's
runtime environment, given to ``ray.init``, e.g. to ship a custom environment's module to every node; when the user
initialised Ray before, it is set on each actor instead, where Ray takes only remote URIs (a local path there must go
to the user's own ``ray.init(runtime_env=...)``). An error raised while a shard builds its learner (an environment
module that does not import there) names the shard and its node.

Ray is an optional dependency (``pip install 'rpbt[ray]'``), imported only when this backend is built; every node
of an existing cluster needs rpbt installed in its Python environment (or a ``runtime_env`` that provides it).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from rpbt.config import Config, ConfigError
from rpbt.pbt.backends.commands import Close, Command, Ping, ShardServer
from rpbt.pbt.backends.errors import BackendError, WorkerDied
from rpbt.pbt.backends.sharded import ShardedBackend, usable_cpus
from rpbt.run.output import say


def import_ray() -> Any:
    """The ``ray`` module; raises :class:`BackendError` with the install line when it is missing."""
    try:
        import ray
    except ImportError as err:
        raise BackendError("backend.kind=ray needs the optional 'ray' package, which is not installed: "
                           "pip install 'rpbt[ray]'  (or pip install ray)") from err
    return ray


def shard_device(requested: str, num_gpus_per_shard: float, gpu_ids: Sequence[Any], cuda_available: bool) -> str:
    """The ``agent.device`` a Ray shard's learner uses.

    Args:
        requested: the config's ``agent.device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        num_gpus_per_shard: ``backend.num_gpus_per_shard``.
        gpu_ids: the GPU ids Ray assigned to the actor (``ray.get_gpu_ids()``); Ray also sets
            ``CUDA_VISIBLE_DEVICES`` to them, so the actor's first GPU is ``cuda:0``.
        cuda_available: ``torch.cuda.is_available()`` in the actor.

    Returns ``"cpu"`` for a shard that reserves no GPU (``auto`` included: Ray hides unreserved GPUs from it), else
    ``"cuda:0"`` (``auto``, ``cuda``) or the ``cuda:N`` asked for. Raises :class:`BackendError` when a GPU was
    reserved but Ray assigned none or torch sees none (a CPU build of torch on that node), :class:`ConfigError` for
    ``cuda:N`` beyond the GPUs assigned or a CUDA device without a reservation.
    """
    if num_gpus_per_shard <= 0:
        if requested.startswith("cuda"):
            raise ConfigError(f"agent.device={requested!r} on the Ray backend needs backend.num_gpus_per_shard > 0")
        return "cpu"
    if not gpu_ids:
        raise BackendError(f"backend.num_gpus_per_shard={num_gpus_per_shard} reserved, but Ray assigned no GPU")
    if not cuda_available:
        raise BackendError(f"Ray assigned GPU {[str(g) for g in gpu_ids]}, but torch there sees no CUDA device (a CPU "
                           "build of torch on that node?)")
    if requested.startswith("cuda:") and int(requested.split(":", 1)[1]) >= len(gpu_ids):
        raise ConfigError(f"agent.device={requested!r}, but Ray assigned only GPU(s) {[str(g) for g in gpu_ids]} "
                          f"(seen as cuda:0..cuda:{len(gpu_ids) - 1})")
    return requested if requested.startswith("cuda:") else "cuda:0"


def shards_fit(nodes: Sequence[dict], num_shards: int, cpus: float, gpus: float) -> Optional[str]:
    """Whether ``num_shards`` actors of ``cpus`` CPUs and ``gpus`` GPUs each fit on ``nodes`` (``ray.nodes()``:
    dicts with ``Alive`` and ``Resources``), placed first-fit on each node's total resources.

    Returns None when they fit, else a message with the numbers (what is asked, what each alive node has)."""
    free = [dict(n.get("Resources", {})) for n in nodes if n.get("Alive", True)]
    placed = 0
    for _ in range(num_shards):
        for res in free:
            if res.get("CPU", 0.0) + 1e-9 >= cpus and res.get("GPU", 0.0) + 1e-9 >= gpus:
                res["CPU"] = res.get("CPU", 0.0) - cpus
                res["GPU"] = res.get("GPU", 0.0) - gpus
                placed += 1
                break
    if placed == num_shards:
        return None
    have = ", ".join(f"{n.get('Resources', {}).get('CPU', 0):g} CPU / {n.get('Resources', {}).get('GPU', 0):g} GPU"
                     for n in nodes if n.get("Alive", True)) or "no alive node"
    return (f"ray backend: {num_shards} shards of {cpus:g} CPU and {gpus:g} GPU each do not fit the cluster "
            f"(only {placed} do; alive nodes: {have}); lower backend.num_workers, backend.num_cpus_per_shard or "
            "backend.num_gpus_per_shard, add nodes, or set backend.wait_for_resources=true to wait for an autoscaler")


def address_refused(address: str, timeout_s: float = 5.0) -> Optional[str]:
    """Why nothing answers at ``backend.address`` (``HOST:PORT`` or ``ray://HOST:PORT``), or None when a TCP
    connection opens there or the address names no port (``auto``, ``local``). Checked before ``ray.init``, which
    retries an unreachable cluster for minutes, printing only Ray's own log lines."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return None
    import socket

    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        return (f"backend.address {address}: no Ray cluster answers there ({err.strerror or err}); start one with "
                "`ray start --head` on the head node, or fix the address (HOST:6379, or ray://HOST:10001)")
    return None


def _ray_worker_context() -> tuple[str, str, list]:
    """(node id, node IP, assigned GPU ids) of this Ray worker; ("", "this machine", []) outside Ray."""
    try:
        import ray
    except ImportError:
        return "", "this machine", []
    if not ray.is_initialized():
        return "", "this machine", []
    return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), list(ray.get_gpu_ids())


def _located(err: Exception, where: str) -> Exception:
    """``err`` again, its message prefixed with ``where`` (same type; ``err`` itself when its type cannot be
    rebuilt from a message)."""
    try:
        located = type(err)(f"{where}: {err}")
    except Exception:  # noqa: BLE001 - an exception type with other constructor arguments
        return err
    located.__cause__ = err.__cause__
    return located


class ShardActor:
    """The body of a Ray actor: one :class:`ShardServer` on the device :func:`shard_device` chooses. A construction
    error is kept, its message naming the shard and node, and raised by ``call`` (so it reaches the driver as the
    original exception type instead of a dead actor)."""

    def __init__(self, cfg: Config, member_ids: list[int], hparams: list[dict], threads: int, shard: int = 0):
        import torch

        torch.set_num_threads(threads)
        node_id, ip, gpu_ids = _ray_worker_context()
        self.node = {"node_id": node_id, "ip": ip, "gpu_ids": [str(g) for g in gpu_ids]}
        where = f"ray backend, shard {shard} (members {list(member_ids)}) on node {ip}" + (f" {node_id}" if node_id
                                                                                               else "")
        self.server: Optional[ShardServer] = None
        self.error: Optional[BaseException] = None
        try:
            device = shard_device(cfg.agent.device, cfg.backend.num_gpus_per_shard, gpu_ids,
                                  torch.cuda.is_available())
            cfg = cfg.model_copy(update={"agent": cfg.agent.model_copy(update={"device": device})})
            self.server = ShardServer(cfg, member_ids, hparams)
        except Exception as err:  # noqa: BLE001
            self.error = _located(err, where)

    def where(self) -> dict[str, Any]:
        """The node this actor runs on: ``{"node_id", "ip", "gpu_ids"}``."""
        return dict(self.node)

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
        try:
            self.actor = backend._actor_cls.options(**backend.actor_options).remote(
                backend.cfg, members, hparams, backend.threads, index)
        except ValueError as err:  # a runtime_env Ray refuses per actor (a local path when the user started Ray)
            raise BackendError(f"ray backend: backend.runtime_env refused by Ray for shard {index}'s actor: {err}") \
                from None
        self.ref: Any = self.actor.call.remote(Ping)
        self._where_ref: Any = self.actor.where.remote()
        self.node: dict[str, Any] = {}

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
            node = f" on node {self.node['ip']} {self.node['node_id']}" if self.node else ""
            raise WorkerDied(f"Ray actor of shard {self.index}{node} died: {type(err).__name__}: {first}") from None
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
            b = self.backend.cfg.backend
            have = ray.cluster_resources()
            raise BackendError(
                f"ray backend: the actor of shard {self.index} did not start within {self.backend.START_TIMEOUT_S} s; "
                f"each shard asks for backend.num_cpus_per_shard={b.num_cpus_per_shard} CPUs and "
                f"backend.num_gpus_per_shard={b.num_gpus_per_shard} GPUs, the cluster has {have.get('CPU', 0):g} CPUs "
                f"and {have.get('GPU', 0):g} GPUs (lower backend.num_workers or the per-shard resources, or add nodes)")
        out = self.recv()
        self.node = ray.get(self._where_ref)
        return out

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
            ``backend.num_gpus_per_shard``, ``backend.runtime_env``, ``backend.placement``,
            ``backend.wait_for_resources``, ``backend.max_failures``, ``run.torch_threads``, ``agent.device``).
        hparams: initial hyperparameters per member (P dicts).

    Raises :class:`~rpbt.pbt.backends.errors.BackendError` when Ray is not installed, ``backend.num_workers`` is
    out of range or the cluster cannot hold the shards (:func:`shards_fit`, unless ``backend.wait_for_resources``).
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
                refused = address_refused(b.address)
                if refused:
                    raise BackendError(refused)
                ray.init(address=b.address, runtime_env=b.runtime_env)
            else:
                workers = b.num_workers or max(1, min(P, int(usable_cpus() // b.num_cpus_per_shard) or 1))
                ray.init(num_cpus=max(1, math.ceil(workers * b.num_cpus_per_shard)), include_dashboard=False,
                         runtime_env=b.runtime_env)
            self._owns_ray = True
            job_env = True
        else:
            job_env = False
        num_shards = b.num_workers
        if num_shards is None:
            cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
            num_shards = max(1, min(P, int(cluster_cpus // b.num_cpus_per_shard)))
        super().__init__(cfg, hparams, num_shards)
        self.threads = max(1, int(b.num_cpus_per_shard))
        if cfg.run.torch_threads:
            self.threads = max(1, min(self.threads, cfg.run.torch_threads))
        self._refs: dict[bytes, Any] = {}  # keyed by the bytes themselves
        self._actor_cls = ray.remote(num_cpus=b.num_cpus_per_shard, num_gpus=b.num_gpus_per_shard,
                                     max_restarts=0)(ShardActor)
        self.actor_options: dict[str, Any] = {"scheduling_strategy": "SPREAD" if b.placement == "spread" else "DEFAULT"}
        if b.runtime_env is not None and not job_env:  # Ray started by the user: per actor (URIs only, Ray's rule)
            self.actor_options["runtime_env"] = dict(b.runtime_env)
        try:
            refused = shards_fit(ray.nodes(), len(self.shards), b.num_cpus_per_shard, b.num_gpus_per_shard)
            if refused and not b.wait_for_resources:
                raise BackendError(refused)
            if refused:  # backend.wait_for_resources: say what is awaited (Ray itself prints little)
                say(f"rpbt: waiting up to {self.START_TIMEOUT_S} s per shard for the cluster to grow: "
                    f"{refused.split(' (only')[0].removeprefix('ray backend: ')}")
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

    def node_of(self, shard: int) -> dict[str, Any]:
        """Where shard ``shard``'s actor runs: ``{"node_id", "ip", "gpu_ids"}``."""
        return dict(self._handles[shard].node)

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


__all__ = ["RayBackend", "ShardActor", "import_ray", "shard_device", "shards_fit"]
