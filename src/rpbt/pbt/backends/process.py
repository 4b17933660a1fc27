"""The process backend: the population split into shards, one batched learner per worker process.

``backend.kind: process`` splits the P members into ``backend.num_workers`` contiguous ranges (default: the number
of usable CPUs, capped at P; :func:`~rpbt.pbt.backends.routing.split_shards`), and starts one worker process per
range with the ``spawn`` start method. Each worker holds one :class:`~rpbt.pbt.backends.shard.Shard` (a batched
:class:`~rpbt.agent.policy.PopulationPolicy` of its members) for the whole run and sets ``torch.set_num_threads`` so
that workers x threads does not exceed the CPU count (:func:`threads_per_worker`). The driver sends the worker typed
commands (:mod:`rpbt.pbt.backends.commands`) over a pipe and reads back ``("ok", answer)`` or ``("error", the
exception)``; an error raised inside a worker (a bad checkpoint, a bad environment id) is raised in the driver with
its own type.

Routing, concurrency, the command journal and the restart of a dead worker (a ``{"type": "failure"}`` event each,
at most ``backend.max_failures`` per shard) are those of :class:`~rpbt.pbt.backends.sharded.ShardedBackend`, shared
with the Ray backend. Same config and seed, same decisions on every backend (tested in ``tests/pbt/test_backends.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import traceback
from typing import Any, Iterator, Optional, Sequence

from rpbt.config import Config
from rpbt.pbt.backends.commands import Close, Command, ShardServer
from rpbt.pbt.backends.errors import BackendError, WorkerDied
from rpbt.pbt.backends.routing import split_shards
from rpbt.pbt.backends.sharded import ShardedBackend, usable_cpus

log = logging.getLogger(__name__)


def threads_per_worker(num_workers: int, cpus: int, requested: Optional[int] = None) -> int:
    """torch threads per worker so that ``num_workers * threads <= cpus`` (at least 1).

    ``requested`` (``run.torch_threads``) lowers it further but never raises it above the fair share.
    """
    share = max(1, cpus // max(1, num_workers))
    return max(1, min(share, requested)) if requested else share


def num_process_workers(cfg: Config, cpus: Optional[int] = None) -> int:
    """``backend.num_workers``, default: usable CPUs capped at the population size."""
    P = cfg.pbt.population_size
    n = cfg.backend.num_workers
    if n is None:
        return max(1, min(P, cpus or usable_cpus()))
    if not 1 <= n <= P:
        raise BackendError(f"backend.num_workers must be between 1 and pbt.population_size ({P}), got {n}")
    return n


# ------------------------------------------------------------------------------------------------- worker side


def _pack_exception(err: BaseException) -> tuple[Optional[bytes], str]:
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        blob = pickle.dumps(err)
        pickle.loads(blob)
    except Exception:  # an exception type that does not pickle: send its text only
        blob = None
    return blob, text


def _unpack_exception(payload: tuple[Optional[bytes], str], where: str) -> BaseException:
    blob, text = payload
    if blob is not None:
        try:
            err = pickle.loads(blob)
            if isinstance(err, BaseException):
                if hasattr(err, "add_note"):
                    err.add_note(f"raised in {where}:\n{text}")
                return err
        except Exception:  # pragma: no cover
            pass
    return RuntimeError(f"error in {where}:\n{text}")


def _die_with_parent(parent_pid: int) -> None:
    """Linux: ask the kernel to SIGKILL this worker when the driver dies (a SIGKILLed run leaves no orphans).

    The signal follows the driver *thread* that started the worker: build the backend in a thread that lives for
    the whole run (the main thread, as the CLI does).
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux: orphans exit when their pipe closes
        return
    if os.getppid() != parent_pid:  # the driver died before prctl took effect
        os._exit(1)


def _worker_main(conn: Any, cfg: Config, member_ids: list[int], hparams: list[dict], threads: int,
                 parent_pid: int) -> None:
    """Entry point of a worker process: build the shard, then answer commands until ``close`` or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle (it closes the workers)
    _die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(threads)
    try:
        server = ShardServer(cfg, member_ids, hparams)
    except BaseException as err:  # noqa: BLE001 - reported to the driver, which raises it
        conn.send(("error", _pack_exception(err)))
        return
    conn.send(("ok", os.getpid()))
    while True:
        try:
            command = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            break
        if isinstance(command, Close):
            server.close()
            try:
                conn.send(("ok", None))
                conn.close()
            except OSError:
                pass
            os._exit(0)  # nothing left to flush: skip the slow interpreter teardown (torch, gymnasium)
        try:
            msg = ("ok", server.handle(command))
        except Exception as err:  # noqa: BLE001
            msg = ("error", _pack_exception(err))
        try:
            conn.send(msg)
        except OSError:
            break
    server.close()
    os._exit(0)


# ------------------------------------------------------------------------------------------------- driver side


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """Start ``spawn`` processes inside this block without their re-importing the main script or ``-m`` module.

    ``spawn`` normally runs the parent's ``__main__`` file again in each child (as ``__mp_main__``) so that objects
    defined there can be unpickled; it finds the file from ``__main__.__file__`` / ``__main__.__spec__``. With both
    hidden while the child is started, the child imports only what it unpickles (rpbt's modules), so a script's
    top-level code never runs twice and needs no ``if __name__ == "__main__":`` guard.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    try:
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


class _ProcessHandle:
    """One worker process and the driver's end of its pipe."""

    def __init__(self, ctx: Any, cfg: Config, members: list[int], hparams: list[dict], threads: int, index: int,
                 reimport_main: bool = True):
        self.index = index
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, cfg, members, hparams, threads, os.getpid()),
                                name=f"rpbt-shard-{index}", daemon=True)
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file is not None and not os.path.isfile(main_file):  # e.g. "<stdin>": spawn cannot run it again
            reimport_main = False
        with contextlib.nullcontext() if reimport_main else _main_not_reimported():
            self.proc.start()
        child.close()  # so that the worker's death reads as EOF here
        self.busy = True  # building its learner; cleared by each answer received

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid

    def _cause(self) -> str:
        self.proc.join(timeout=5)
        code = self.proc.exitcode
        if code is None:
            return f"worker process {self.pid} closed its pipe"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            hint = " (killed, e.g. by the out-of-memory killer)" if -code == signal.SIGKILL else ""
            return f"worker process {self.pid} was terminated by {name}{hint}"
        return f"worker process {self.pid} exited with status {code}"

    def send(self, command: Command) -> None:
        try:
            self.conn.send(command)
        except (OSError, EOFError):
            raise WorkerDied(self._cause()) from None
        self.busy = True

    def recv(self) -> Any:
        from multiprocessing.connection import wait

        wait([self.conn, self.proc.sentinel])
        if not self.conn.poll():
            raise WorkerDied(self._cause())
        try:
            status, payload = self.conn.recv()
        except (OSError, EOFError):
            raise WorkerDied(self._cause()) from None
        self.busy = False
        if status == "ok":
            return payload
        raise _unpack_exception(payload, f"shard {self.index} (worker process {self.pid})")

    def wait_ready(self) -> Any:
        return self.recv()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()

    def close(self) -> None:
        if self.proc.is_alive() and not self.busy:  # a worker still busy (e.g. after Ctrl-C) is just killed
            try:
                self.conn.send(Close())
                if self.conn.poll(30):
                    self.conn.recv()
            except (OSError, EOFError):
                pass
            self.proc.join(timeout=10)
        self.kill()


class ProcessBackend(ShardedBackend):
    """``backend.kind: process``: one worker process (spawn) per contiguous shard of the population.

    Args:
        cfg: run config (``backend.num_workers``, ``backend.max_failures``, ``run.torch_threads``).
        hparams: initial hyperparameters per member (P dicts).
        reimport_main: whether the workers import the main script again, as ``spawn`` does by default (so that an
            ``env_fn`` or an environment registered at the script's top level exists in them; the script then needs
            an ``if __name__ == "__main__":`` guard). ``backend.kind: auto`` starts them without
            (:func:`_main_not_reimported`).

    Raises :class:`BackendError` for a bad ``backend.num_workers``; errors building a learner (e.g.
    ``EnvError``) are raised as in the local backend.
    """

    kind = "process"

    def __init__(self, cfg: Config, hparams: Sequence[dict], reimport_main: bool = True):
        import multiprocessing as mp

        self.reimport_main = reimport_main
        cpus = usable_cpus()
        num_workers = num_process_workers(cfg, cpus)
        super().__init__(cfg, hparams, num_workers)
        if num_workers > cpus:
            log.warning("backend.num_workers=%d exceeds the %d usable CPUs: workers will share cores", num_workers,
                        cpus)
        self.threads = threads_per_worker(num_workers, cpus, cfg.run.torch_threads)
        self._ctx = mp.get_context("spawn")
        self._start_all()

    def _new_handle(self, k: int) -> _ProcessHandle:
        ms = self.shards[k]
        return _ProcessHandle(self._ctx, self.cfg, list(ms), [self.hparams[m] for m in ms], self.threads, k,
                              self.reimport_main)

    def worker_pid(self, shard: int) -> Optional[int]:
        """Process id of shard ``shard``'s current worker."""
        return self._handles[shard].pid


__all__ = ["ProcessBackend", "ShardedBackend", "ShardServer", "BackendError", "WorkerDied", "split_shards",
           "threads_per_worker", "num_process_workers", "usable_cpus"]
