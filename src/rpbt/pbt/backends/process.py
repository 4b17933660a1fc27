"""The process backend: the population split into shards, one batched learner per worker process.

``backend.kind: process`` splits the P members into ``backend.num_workers`` contiguous ranges (default: the number
of usable CPUs, capped at P; :func:`split_shards`), and starts one worker process per range with the ``spawn``
start method. Each worker holds one :class:`~rpbt.pbt.backends.shard.Shard` (a batched
:class:`~rpbt.agent.policy.PopulationPolicy` of its members) for the whole run and sets ``torch.set_num_threads`` so
that workers x threads does not exceed the CPU count (:func:`threads_per_worker`). The driver talks to the workers over
pipes with a small command set (:class:`ShardServer`): ``train n`` -> per-member metric rows, ``member_info``,
``snapshot`` -> member-state bytes (the checkpoint format, :meth:`~rpbt.checkpoint.MemberState.to_bytes`),
``restore``, ``exploit``, ``close``. All shards train concurrently (the command is sent to every worker, then the
answers are collected). An exploit whose donor lives in the recipient's shard is an index copy inside the worker
(as in the local backend); across shards the donor's state travels as bytes. A round's exploits
(:meth:`ShardedBackend.exploit_many`) run in waves of one per shard, the shards working at the same time.

Members are seeded by their global index (:func:`rpbt.seeding.member_seed`), and every per-member operation
of the batched learner is independent of the other members, so a shard holding members [2, 3] trains them bit for
bit like members 2 and 3 of the whole-population shard *at the same torch thread count* (different intra-op thread
counts may change float rounding). Same config and seed, same decisions on every backend (tested in
``tests/test_backends.py``).

Fault tolerance (:class:`ShardedBackend`, shared with the Ray backend): every command that changes a shard is kept
in a per-shard journal, cut at each checkpoint the runner commits. When a worker dies (killed, out of memory),
the shard is started again, its members are restored from the last committed checkpoints (the round folder named
in ``checkpoints/runner.json``, found through :meth:`ShardedBackend.attach_run`), the commands journaled since are
replayed (a donor's state is kept as bytes in the journal, so the replay never needs a checkpoint that may have
been deleted), and the interrupted command is sent again. Each death writes a ``{"type": "failure"}`` event; after
more than ``backend.max_failures`` deaths of one shard the run stops with :class:`BackendError` naming the shard,
its members and the cause. Environments of a restarted shard start fresh episodes (as on ``rpbt resume``), so the
replayed updates are not bit-identical to the lost ones; a replayed round's metrics are not written twice.

Errors raised *inside* a worker (a bad checkpoint, a bad environment id) are not failures: they are sent back and
raised in the driver with their own type.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from rpbt.checkpoint import CheckpointError, MemberState, atomic_write_bytes
from rpbt.config import Config

log = logging.getLogger(__name__)

MUTATING = ("train", "restore", "exploit", "exploit_local")
_MARK = "__checkpoint__"


class BackendError(RuntimeError):
    """A shard's worker kept dying (more than ``backend.max_failures``) or a backend cannot be built.

    The message names the backend, the shard, its members and the last cause.
    """


class WorkerDied(Exception):
    """Internal: a shard's worker process or actor is gone; ``cause`` says why (signal, exit code, Ray error)."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


# ------------------------------------------------------------------------------------------------- layout


def usable_cpus() -> int:
    """CPUs this process may run on (``sched_getaffinity`` where available, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def split_shards(population_size: int, num_shards: int) -> list[list[int]]:
    """Contiguous member ranges, sizes differing by at most one, larger ones first.

    ``split_shards(8, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]``; ``split_shards(5, 2) == [[0, 1, 2], [3, 4]]``.
    Raises ``ValueError`` when ``num_shards`` is not in 1..population_size.
    """
    if not 1 <= num_shards <= population_size:
        raise ValueError(f"backend.num_workers must be between 1 and pbt.population_size ({population_size}), "
                         f"got {num_shards}")
    base, extra = divmod(population_size, num_shards)
    shards, start = [], 0
    for k in range(num_shards):
        size = base + (1 if k < extra else 0)
        shards.append(list(range(start, start + size)))
        start += size
    return shards


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


class ShardServer:
    """Executes backend commands on one :class:`~rpbt.pbt.backends.shard.Shard` (inside a worker or Ray actor).

    Commands (name, args) -> result:
      ``ping`` () -> pid; ``train`` (n,) -> {member: [row per update]}; ``member_info`` () -> {member: info};
      ``snapshot`` (m,) -> bytes; ``snapshot_many`` (ms,) -> {m: bytes}; ``restore`` (m, bytes) -> None;
      ``exploit`` (recipient, donor bytes, new_hparams) -> measurements;
      ``exploit_local`` (recipient, donor, new_hparams) -> measurements (donor in this shard: an index copy).
    Raises ``ValueError`` for an unknown command, :class:`CheckpointError` for bytes that are not a member state.
    """

    def __init__(self, cfg: Config, member_ids: Sequence[int], hparams: Sequence[dict]):
        from rpbt.pbt.backends.shard import Shard

        self.shard = Shard(cfg, list(member_ids), list(hparams))

    def handle(self, cmd: str, args: Sequence[Any]) -> Any:
        s = self.shard
        if cmd == "ping":
            return os.getpid()
        if cmd == "train":
            return s.train(int(args[0]))
        if cmd == "member_info":
            return s.member_info()
        if cmd == "evaluate_members":
            return s.evaluate_members([int(m) for m in args[0]], str(args[1]))
        if cmd == "snapshot":
            return s.snapshot(int(args[0])).to_bytes()
        if cmd == "snapshot_many":
            return {int(m): s.snapshot(int(m)).to_bytes() for m in args[0]}
        if cmd == "restore":
            m, data, *retry = args  # (m, data) from a restart, (m, data, retry) from the driver
            s.restore(int(m), MemberState.from_bytes(data, source=f"state sent for member {m}"), *retry)
            return None
        if cmd == "exploit":
            r, data, hp = args
            return s.exploit(int(r), MemberState.from_bytes(data, source=f"donor state sent for member {r}"), hp)
        if cmd == "exploit_local":
            r, d, hp = args
            return s.exploit(int(r), s.snapshot(int(d)), hp)
        raise ValueError(f"unknown shard command {cmd!r}")

    def close(self) -> None:
        self.shard.close()


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
            cmd, args = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            break
        if cmd == "close":
            server.close()
            try:
                conn.send(("ok", None))
                conn.close()
            except OSError:
                pass
            os._exit(0)  # nothing left to flush: skip the slow interpreter teardown (torch, gymnasium)
        try:
            msg = ("ok", server.handle(cmd, args))
        except Exception as err:  # noqa: BLE001
            msg = ("error", _pack_exception(err))
        try:
            conn.send(msg)
        except OSError:
            break
    server.close()
    os._exit(0)


# ------------------------------------------------------------------------------------------------- driver side


class ShardedBackend:
    """Driver half shared by the process and Ray backends: routing, concurrency, journal and recovery.

    Subclasses implement :meth:`_new_handle` (start a shard's worker; the handle has ``send(cmd, args)``,
    ``recv() -> result`` raising :class:`WorkerDied`, ``wait_ready()``, ``kill()`` and ``close()``) and call
    :meth:`_start_all` at the end of their constructor. Public interface: the
    :class:`~rpbt.pbt.backends.base.Backend` protocol (``train``, ``member_info``, ``evaluate_members``,
    ``snapshot``, ``restore``, ``exploit``, ``save_checkpoints``, ``attach_run``, ``close``, ``population_size``).
    """

    kind = "sharded"

    def __init__(self, cfg: Config, hparams: Sequence[dict], num_shards: int):
        P = cfg.pbt.population_size
        if len(hparams) != P:
            raise ValueError(f"expected {P} initial hyperparameter dicts, got {len(hparams)}")
        self.cfg = cfg
        self.population_size = P
        self.shards = split_shards(P, num_shards)
        self.num_workers = len(self.shards)
        self.shard_of = {m: k for k, ms in enumerate(self.shards) for m in ms}
        self.hparams = [dict(h) for h in hparams]
        self.max_failures = cfg.backend.max_failures
        self.failures = [0] * len(self.shards)
        self._journal: list[list[tuple[str, tuple]]] = [[] for _ in self.shards]
        self._pruned = [False] * len(self.shards)
        self._version = [0] * P
        self._payloads: dict[int, tuple[MemberState, int, int, bytes]] = {}
        self._handles: list[Any] = [None] * len(self.shards)
        self._rundir: Any = None
        self._closed = False

    # --------------------------------------------------------------------------------------- subclass hooks
    def _new_handle(self, k: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _describe_shard(self, k: int) -> str:
        ms = self.shards[k]
        return f"shard {k} (members {ms[0]}..{ms[-1]})" if len(ms) > 2 else f"shard {k} (members {ms})"

    def _start_all(self) -> None:
        """Start every shard's worker concurrently, then wait until each has built its learner."""
        try:
            for k in range(len(self.shards)):
                self._handles[k] = self._new_handle(k)
            for k in range(len(self.shards)):
                try:
                    self._handles[k].wait_ready()
                except WorkerDied as err:
                    self._recover(k, err.cause)
        except BaseException:
            self.close()
            raise

    # --------------------------------------------------------------------------------------- run directory
    def attach_run(self, rundir: Any) -> None:
        """Use ``rundir`` (a :class:`~rpbt.run.rundir.RunDirectory`) for failure events and to find the last
        committed checkpoints (``checkpoints/runner.json`` -> ``checkpoints/<folder>/member_<i>.pt``)."""
        self._rundir = rundir

    def _committed(self) -> tuple[int, Optional[Path]]:
        """(last committed round, its checkpoint folder) from runner.json; (0, None) when nothing is committed."""
        if self._rundir is None or not self._rundir.runner_state_path.is_file():
            return 0, None
        state = self._rundir.read_runner_state()
        return int(state.get("round", 0)), self._rundir.checkpoint_dir / state["checkpoint_dir"]

    # --------------------------------------------------------------------------------------- command plumbing
    def _run_all(self, commands: dict[int, tuple[str, tuple]]) -> dict[int, Any]:
        """Send each shard its command, then collect the answers; restart dead shards and resend theirs."""
        if self._closed:
            raise BackendError(f"{self.kind} backend is closed")
        results: dict[int, Any] = {}
        pending = dict(commands)
        while pending:
            dead: dict[int, str] = {}
            sent = []
            for k, (cmd, args) in pending.items():
                try:
                    self._handles[k].send(cmd, args)
                    sent.append(k)
                except WorkerDied as err:
                    dead[k] = err.cause
            error: Optional[BaseException] = None
            for k in sent:  # every answer is read, even after an error, so no pipe is left out of step
                try:
                    results[k] = self._handles[k].recv()
                except WorkerDied as err:
                    dead[k] = err.cause
                except Exception as err:  # noqa: BLE001 - raised by the shard itself: re-raised below
                    error = error or err
            if error is not None:  # what the other shards did still happened: journal it for a restart's replay
                for k in results:
                    if commands[k][0] in MUTATING:
                        self._journal[k].append(commands[k])
                raise error
            for k, cause in dead.items():
                self._recover(k, cause)
            pending = {k: commands[k] for k in dead}
        for k, (cmd, args) in commands.items():
            if cmd in MUTATING:
                self._journal[k].append((cmd, args))
        return results

    def _call(self, k: int, cmd: str, *args: Any) -> Any:
        return self._run_all({k: (cmd, args)})[k]

    # --------------------------------------------------------------------------------------- recovery
    def _recover(self, k: int, cause: str) -> None:
        """Record the death of shard ``k``'s worker and restart it (loops while restarts themselves die).

        Raises :class:`BackendError` after more than ``backend.max_failures`` deaths of this shard, and
        :class:`~rpbt.checkpoint.CheckpointError` when a committed checkpoint is missing or truncated.
        """
        while True:
            self.failures[k] += 1
            give_up = self.failures[k] > self.max_failures
            self._record_failure(k, cause, give_up)
            if give_up:
                self._kill(k)
                raise BackendError(
                    f"{self.kind} backend: {self._describe_shard(k)} failed {self.failures[k]} times, more than "
                    f"backend.max_failures={self.max_failures}; last cause: {cause}")
            log.warning("%s backend: %s died (%s); restarting it from its last committed checkpoints "
                        "(failure %d of at most %d)", self.kind, self._describe_shard(k), cause, self.failures[k],
                        self.max_failures)
            try:
                self._restart(k)
                return
            except WorkerDied as err:
                cause = err.cause

    def _record_failure(self, k: int, cause: str, give_up: bool) -> None:
        if self._rundir is None:
            return
        committed, _ = self._committed()
        self._rundir.write_event({"type": "failure", "round": committed + 1, "shard": k,
                                  "members": list(self.shards[k]), "cause": cause,
                                  "failures": self.failures[k], "action": "stop" if give_up else "restart"})

    def _recovery_plan(self, k: int) -> tuple[Optional[Path], list[tuple[str, tuple]]]:
        """The checkpoint folder to restore shard ``k`` from (None: a fresh shard) and the commands to replay."""
        journal = self._journal[k]
        marks = [i for i, (cmd, _) in enumerate(journal) if cmd == _MARK]
        _, committed = self._committed()
        chosen = None
        if committed is not None:
            target = os.path.realpath(committed)
            chosen = next((i for i in reversed(marks) if journal[i][1][0] == target), None)
        elif self._rundir is None:  # no run directory: the latest complete folder this backend wrote
            chosen = next((i for i in reversed(marks)
                           if all((Path(journal[i][1][0]) / f"member_{m}.pt").is_file() for m in self.shards[k])),
                          None)
        if chosen is not None:
            return Path(journal[chosen][1][0]), [e for e in journal[chosen + 1:] if e[0] != _MARK]
        if self._pruned[k]:
            raise BackendError(f"{self.kind} backend: cannot restart {self._describe_shard(k)}: the committed "
                               f"checkpoint folder {committed} is not one this backend wrote")
        return None, [e for e in journal if e[0] != _MARK]

    def _restart(self, k: int) -> None:
        self._kill(k)
        self._payloads.clear()
        folder, replay = self._recovery_plan(k)
        self._handles[k] = self._new_handle(k)
        self._handles[k].wait_ready()
        h = self._handles[k]
        if folder is not None:
            for m in self.shards[k]:
                path = folder / f"member_{m}.pt"
                if not path.is_file():
                    raise CheckpointError(f"{path}: checkpoint not found (needed to restart "
                                          f"{self._describe_shard(k)})")
                data = path.read_bytes()
                MemberState.from_bytes(data, source=str(path))  # truncated or foreign: CheckpointError naming it
                h.send("restore", (m, data))
                h.recv()
        for cmd, args in replay:
            h.send(cmd, args)
            h.recv()

    def _kill(self, k: int) -> None:
        h = self._handles[k]
        if h is not None:
            try:
                h.kill()
            except Exception:  # pragma: no cover - already gone
                pass

    # --------------------------------------------------------------------------------------- backend interface
    def train(self, n_updates: int) -> dict[int, list[dict[str, float]]]:
        """``n_updates`` PPO updates on every shard at once; per member, its list of per-update metric rows."""
        results = self._run_all({k: ("train", (int(n_updates),)) for k in range(len(self.shards))})
        self._payloads.clear()
        for m in range(self.population_size):
            self._version[m] += 1
        out: dict[int, list[dict[str, float]]] = {}
        for k in range(len(self.shards)):
            out.update(results[k])
        return {m: out[m] for m in range(self.population_size)}

    def member_info(self) -> dict[int, dict[str, Any]]:
        results = self._run_all({k: ("member_info", ()) for k in range(len(self.shards))})
        out: dict[int, dict[str, Any]] = {}
        for k in range(len(self.shards)):
            out.update(results[k])
        return {m: out[m] for m in range(self.population_size)}

    def evaluate_members(self, members: Sequence[int], split: str = "validation") -> dict[int, list[float]]:
        """Deterministic evaluation returns per member, each shard evaluating its own members in parallel."""
        wanted = {int(m) for m in members}
        commands = {k: ("evaluate_members", ([m for m in shard if m in wanted], split))
                    for k, shard in enumerate(self.shards) if any(m in wanted for m in shard)}
        out: dict[int, list[float]] = {}
        for result in self._run_all(commands).values():
            out.update(result)
        return {int(m): out[int(m)] for m in members}

    def snapshot(self, member: int) -> MemberState:
        """Member's whole state, fetched from its shard as bytes (remembered for a following :meth:`exploit`)."""
        self._check_member(member)
        data = self._call(self.shard_of[member], "snapshot", member)
        state = MemberState.from_bytes(data, source=f"{self._describe_shard(self.shard_of[member])} member {member}")
        self._payloads[id(state)] = (state, member, self._version[member], data)
        return state

    def restore(self, member: int, state: MemberState, retry: int = 0) -> None:
        self._check_member(member)
        self._call(self.shard_of[member], "restore", member, state.to_bytes(), int(retry))
        self._version[member] += 1

    def exploit(self, recipient: int, donor_state: MemberState, new_hparams: dict[str, float]) -> dict[str, float]:
        """Copy ``donor_state`` into ``recipient`` (see :func:`rpbt.pbt.transfer.exploit`); returns measurements.

        When ``donor_state`` is an unchanged snapshot of a member of the recipient's shard, the copy is an index
        copy inside the worker; otherwise the state travels as bytes of the checkpoint format.
        """
        self._check_member(recipient)
        k = self.shard_of[recipient]
        entry = self._payloads.get(id(donor_state))
        if entry is not None and entry[0] is donor_state:
            _, donor, version, data = entry
            if self.shard_of[donor] == k and self._version[donor] == version:
                return self._exploit_waves([(recipient, ("exploit_local", (recipient, donor, dict(new_hparams))))])[0]
        else:
            data = donor_state.to_bytes()
        return self._exploit_waves([(recipient, ("exploit", (recipient, data, dict(new_hparams))))])[0]

    def exploit_many(self, transfers: Sequence[tuple[int, int, dict[str, float]]]) -> list[dict[str, float]]:
        """Several exploits ``(recipient, donor, new_hparams)`` (see :meth:`Backend.exploit_many`), the shards
        working at the same time.

        A donor in its recipient's shard is copied inside the worker (an index copy) and never leaves it; the other
        donors' states (and any donor that is also a recipient here) are fetched first, as bytes of the checkpoint
        format, each shard sending its own at the same time. The exploits then run in waves of at most one per
        shard, each shard's in the order given, so the result is that of the exploits one after another (an
        exploit touches only its recipient, and its random stream depends on neither the backend nor the order:
        :func:`rpbt.seeding.exploit_seed`). Returns the measurements in the order given.
        """
        for r, d, _ in transfers:
            self._check_member(r)
            self._check_member(d)
        recipients = {int(r) for r, _, _ in transfers}
        travels = [self.shard_of[d] != self.shard_of[r] or d in recipients for r, d, _ in transfers]
        data = self._snapshot_bytes(sorted({int(d) for (_, d, _), t in zip(transfers, travels) if t}))
        return self._exploit_waves([
            (r, ("exploit", (r, data[d], dict(hp))) if t else ("exploit_local", (r, d, dict(hp))))
            for (r, d, hp), t in zip(transfers, travels)])

    def _waves(self, members: Sequence[int]) -> Iterator[dict[int, int]]:
        """Positions 0..len(members)-1 in waves of at most one per shard ``{shard: position}``, each shard's
        positions in the order given."""
        queues: dict[int, list[int]] = {}
        for i, m in enumerate(members):
            queues.setdefault(self.shard_of[m], []).append(i)
        while queues:
            yield {k: q.pop(0) for k, q in queues.items()}
            queues = {k: q for k, q in queues.items() if q}

    def _snapshot_bytes(self, members: Sequence[int]) -> dict[int, bytes]:
        """Members' states as bytes of the checkpoint format, fetched in waves of one member per shard."""
        out: dict[int, bytes] = {}
        for wave in self._waves(members):
            results = self._run_all({k: ("snapshot", (members[i],)) for k, i in wave.items()})
            out.update({int(members[i]): results[k] for k, i in wave.items()})
        return out

    def _exploit_waves(self, commands: Sequence[tuple[int, tuple[str, tuple]]]) -> list[dict[str, float]]:
        """Run exploit commands ``(recipient, (cmd, args))`` in waves of at most one per shard (each shard's in
        the order given); returns their answers in the order given."""
        out: list[dict[str, float]] = [{} for _ in commands]
        for wave in self._waves([recipient for recipient, _ in commands]):
            for i in wave.values():  # before sending: an earlier snapshot of a recipient is stale even if this fails
                self._version[commands[i][0]] += 1
            results = self._run_all({k: commands[i][1] for k, i in wave.items()})
            for k, i in wave.items():
                out[i] = results[k]
        return out

    def save_checkpoints(self, directory: Path) -> None:
        """Write ``member_<i>.pt`` for every member into ``directory`` (atomically, from the driver)."""
        directory = Path(directory)
        results = self._run_all({k: ("snapshot_many", (list(ms),)) for k, ms in enumerate(self.shards)})
        for k in range(len(self.shards)):
            for m, data in results[k].items():
                atomic_write_bytes(directory / f"member_{m}.pt", data)
        target = os.path.realpath(directory)
        for k in range(len(self.shards)):
            journal = self._journal[k]
            journal.append((_MARK, (target,)))
            marks = [i for i, (cmd, _) in enumerate(journal) if cmd == _MARK]
            if len(marks) >= 2 and marks[-2] > 0:  # keep from the previous checkpoint on (the runner keeps it
                del journal[:marks[-2]]  # until the new one is committed)
                self._pruned[k] = True

    def _check_member(self, member: int) -> None:
        if member not in self.shard_of:
            raise IndexError(f"member {member} out of range 0..{self.population_size - 1}")

    def close(self) -> None:
        """Stop every worker (politely, then by force). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for k, h in enumerate(self._handles):
            if h is None:
                continue
            try:
                h.close()
            except Exception:  # noqa: BLE001 - a dead worker needs no goodbye
                self._kill(k)
        self._handles = [None] * len(self.shards)


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

    def send(self, cmd: str, args: tuple) -> None:
        try:
            self.conn.send((cmd, args))
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
                self.conn.send(("close", ()))
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
