"""The run directory: resolved config, events, metrics, TensorBoard logs, checkpoints, summary.

Layout (the contract with ``rpbt report``; see ``RUNDIR_FORMAT.md`` in the repository)::

    RUN_DIR/config.yaml                resolved config, every default filled in
    RUN_DIR/events.jsonl               one JSON object per line (start, round, exploit, resume, failure, end)
    RUN_DIR/summary.json               best member, score, hyperparameters, lineage (rewritten every round)
    RUN_DIR/members/<i>/metrics.csv    one row per update of member i
    RUN_DIR/members/<i>/tb/            TensorBoard event files of member i (its metrics, time/total_timesteps, the
                                       exploit measurements and, when the run ends, its HParams entry)
    RUN_DIR/population/tb/             TensorBoard event files of the population: best, mean, median, min and max
                                       score per round (pbt/best_score, ...), time/total_timesteps
    RUN_DIR/checkpoints/round_<r>/member_<i>.pt   member states of committed round r (6 digits); the last
                                       ``run.keep_checkpoints`` committed rounds are kept
    RUN_DIR/checkpoints/round_<r>/runner.json     the runner state of round r (a resume may fall back to it)
    RUN_DIR/checkpoints/runner.json    completed round, its checkpoint folder, scheduler state (the commit point)

Every file that a resume reads is written atomically (temp file, fsync, rename). ``events.jsonl`` and the CSVs
are appended and flushed; on resume, lines of rounds after the resumed round are dropped. The ``time`` of an event
and of a metrics row is the run's clock: seconds of training since the run started, continued across resumes from
the clock of the resumed round (see :meth:`RunDirectory.elapsed`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from rpbt.checkpoint import CheckpointError, atomic_write_text
from rpbt.config import Config
from rpbt.run.paths import ROUND_FOLDER, RunDirError, require_run_dir, round_folder
from rpbt.run.storage import CheckpointStore
from rpbt.run.tensorboard import TensorBoardLog

__all__ = ["RunDirError", "ROUND_FOLDER", "round_folder", "require_run_dir", "clean_float", "MetricsCSV",
           "RunDirectory", "load_run_config"]

BASE_COLUMNS = ["round", "update", "env_steps", "time"]


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def clean_float(x: Any) -> Any:
    """NaN and infinities become None so files stay valid JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _is_number(text: Any) -> bool:
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False


class MetricsCSV:
    """Append-only per-member metrics table whose columns grow when new keys appear (file rewritten then)."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        if path.is_file():
            with path.open(newline="") as f:
                reader = csv.reader(f)
                self.columns = next(reader, [])

    def append(self, rows: list[dict[str, Any]]) -> None:
        keys = [k for row in rows for k in row if k not in self.columns]
        new = list(dict.fromkeys(keys))
        if new or not self.path.is_file():
            old_rows = self.read() if self.path.is_file() else []
            if not self.columns:
                self.columns = BASE_COLUMNS + sorted(k for k in new if k not in BASE_COLUMNS)
            else:
                self.columns += sorted(new)
            self._rewrite(old_rows)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            for row in rows:
                writer.writerow({k: self._cell(row.get(k)) for k in self.columns})
            f.flush()

    @staticmethod
    def _cell(value: Any) -> Any:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        return value

    def read(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in self.columns})
        atomic_write_text(self.path, buf.getvalue())

    def truncate_after(self, last_round: int) -> None:
        """Drop rows of rounds after ``last_round`` (rounds that a resume replays)."""
        if not self.path.is_file():
            return
        rows = [r for r in self.read()
                if None not in r.values() and _is_number(r.get("round")) and int(float(r["round"])) <= last_round]
        self._rewrite(rows)  # a row cut short by a kill (missing cells) is dropped too


class RunDirectory:
    """Writes and reads one run's directory. ``create`` for a new run, ``open`` for resume/report.

    Raises :class:`RunDirError` naming the file when a resume finds no committed round.
    """

    def __init__(self, path: Path, population_size: int, tensorboard: bool = True):
        self.path = Path(path)
        self.population_size = population_size
        self.tensorboard = tensorboard
        self.tb = TensorBoardLog(self.path, enabled=tensorboard)
        self._csv: dict[int, MetricsCSV] = {}
        self._lock_file: Any = None
        self._clock_zero = time.time()

    # ---------------------------------------------------------------------------------------- clock
    def elapsed(self) -> float:
        """The run's clock in seconds (3 decimals): time since the run started, counting only the time spent
        up to the resumed round in earlier processes (see :meth:`set_elapsed`). Every event's and metrics row's
        ``time``."""
        return round(time.time() - self._clock_zero, 3)

    def set_elapsed(self, seconds: float) -> None:
        """Continue the clock from ``seconds`` (a resume: the clock recorded when its round was committed)."""
        self._clock_zero = time.time() - float(seconds)

    # ---------------------------------------------------------------------------------------- paths
    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def runner_state_path(self) -> Path:
        return self.checkpoint_dir / "runner.json"

    def member_dir(self, member: int) -> Path:
        return self.path / "members" / str(member)

    # ---------------------------------------------------------------------------------------- creation
    @staticmethod
    def fresh_path(base: Path) -> Path:
        """``base`` if it is unused, else ``base_2``, ``base_3``, ... (as SB3 numbers TensorBoard runs).

        Raises :class:`RunDirError` when ``base`` is an existing file (a run directory is a folder)."""
        if base.exists() and not base.is_dir():
            raise RunDirError(f"run.dir {base}: is a file, not a folder; choose another run.dir")
        if not base.exists() or not any(base.iterdir()):
            return base
        k = 2
        while True:
            candidate = base.with_name(f"{base.name}_{k}")
            if not candidate.exists():
                return candidate
            k += 1

    def is_run_dir(self) -> bool:
        """Whether the path looks like an rpbt run directory (config.yaml and events.jsonl)."""
        return (self.path / "config.yaml").is_file() and self.events_path.is_file()

    def check_replaceable(self) -> None:
        """Raise :class:`RunDirError` unless the path is an rpbt run directory that no process is using."""
        if not self.path.is_dir() or not self.is_run_dir():
            raise RunDirError(f"{self.path}: refusing to overwrite: not an rpbt run directory (no config.yaml and "
                              "events.jsonl); choose another run.dir")
        probe = RunDirectory(self.path, self.population_size, tensorboard=False)
        probe.lock()
        probe.unlock()

    def lock(self) -> None:
        """Take an exclusive lock on the run directory (``.lock``, with the ``filelock`` package: ``flock`` on Linux
        and macOS, ``msvcrt.locking`` on Windows), held until :meth:`close`.

        Raises :class:`RunDirError` when another process (a run still training, a second resume) holds it.
        """
        from filelock import FileLock, Timeout

        if self._lock_file is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path / ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise RunDirError(f"{self.path}: another rpbt process is using this run directory (training or "
                              "resuming); wait for it to finish or stop it first") from None
        self._lock_file = lock

    def unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.release()
            self._lock_file = None

    def create(self, cfg: Config) -> None:
        config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)  # before anything is made: it may raise
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "members").mkdir(exist_ok=True)
        self.checkpoint_dir.mkdir(exist_ok=True)
        atomic_write_text(self.path / "config.yaml", config_text)
        self.events_path.touch()

    def write_config(self, cfg: Config) -> None:
        """Replace ``config.yaml`` atomically (a resume that changed the budget)."""
        atomic_write_text(self.path / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    # ---------------------------------------------------------------------------------------- events
    def write_event(self, event: dict[str, Any]) -> None:
        """Append one line to ``events.jsonl``; ``time`` is the run's clock (:meth:`elapsed`)."""
        event = {**event, "time": self.elapsed()}
        line = json.dumps(event, default=_json_default, allow_nan=False)
        with self.events_path.open("a") as f:
            f.write(line + "\n")
            f.flush()

    def read_events(self) -> list[dict[str, Any]]:
        if not self.events_path.is_file():
            return []
        events = []
        for line in self.events_path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        return events

    def truncate_events_after(self, last_round: int) -> list[dict[str, Any]]:
        """Keep only events of rounds <= ``last_round``, minus an ``end`` line (the resumed run writes its own when
        it ends), and drop a partly written last line."""
        kept = [e for e in self.read_events() if int(e.get("round", 0)) <= last_round and e.get("type") != "end"]
        atomic_write_text(self.events_path, "".join(json.dumps(e, allow_nan=False) + "\n" for e in kept))
        return kept

    # ---------------------------------------------------------------------------------------- metrics
    def write_metrics(self, member: int, rows: list[dict[str, Any]]) -> None:
        """Append rows to the member's metrics.csv and TensorBoard (:meth:`TensorBoardLog.rows`)."""
        self.member_dir(member).mkdir(parents=True, exist_ok=True)
        if member not in self._csv:
            self._csv[member] = MetricsCSV(self.member_dir(member) / "metrics.csv")
        self._csv[member].append(rows)
        self.tb.rows(member, rows)

    def write_scalars(self, member: int, step: int, values: dict[str, Any]) -> None:
        """TensorBoard-only scalars (e.g. the exploit measurements) for ``member`` at env step ``step``."""
        self.tb.scalars(member, step, values)

    def write_population(self, step: int, values: dict[str, Any]) -> None:
        """Scalars of the whole population (``RUN_DIR/population/tb``) at env step ``step``."""
        self.tb.scalars("population", step, values)

    def write_hparams(self, member: int, hparams: dict[str, Any], metric_tags: list[str],
                      discrete: dict[str, list] | None = None) -> None:
        """The member's HParams entry (:meth:`TensorBoardLog.hparams`)."""
        self.tb.hparams(member, hparams, metric_tags, discrete)

    def truncate_metrics_after(self, last_round: int, env_steps: int = 0) -> None:
        """Drop the metric rows of rounds after ``last_round`` (a resume) and hide them in TensorBoard too
        (:meth:`TensorBoardLog.resume_after`: each member's last kept row, the population's ``env_steps``)."""
        kept: dict[int | str, int] = {"population": int(env_steps)}
        for m in range(self.population_size):
            metrics = MetricsCSV(self.member_dir(m) / "metrics.csv")
            metrics.truncate_after(last_round)
            rows = metrics.read() if metrics.path.is_file() else []
            kept[m] = int(float(rows[-1]["env_steps"])) if rows else 0
        self.tb.resume_after(kept)

    # ---------------------------------------------------------------------------------------- state
    def write_runner_state(self, state: dict[str, Any]) -> None:
        atomic_write_text(self.runner_state_path, json.dumps(state, indent=1, default=_json_default))

    def store(self, state: dict[str, Any] | None = None) -> CheckpointStore:
        """Where the member states of committed rounds live: the ``storage`` a commit point ``state`` names (a path
        or URL, written when ``run.storage`` is set), else ``RUN_DIR/checkpoints``."""
        storage = (state or {}).get("storage")
        return CheckpointStore(storage if storage else self.checkpoint_dir)

    def read_runner_state(self, folder: str | None = None, missing: str | None = None,
                          store: CheckpointStore | None = None) -> dict[str, Any]:
        """``checkpoints/runner.json`` (the commit point), or with ``folder`` the copy in that round folder of
        ``store`` (default ``checkpoints/``).

        Checks that it is a JSON object whose ``round`` is an int >= 1 and whose ``checkpoint_dir`` is a round
        folder name; raises :class:`RunDirError` naming the file otherwise. ``missing``: what the error says when
        the commit point does not exist (default: worded for a resume).
        """
        if folder is None:
            where = str(self.runner_state_path)
            if not self.runner_state_path.is_file():
                raise RunDirError(f"{where}: " + (missing or "no completed round to resume from (the run stopped "
                                                  "before its first round ended); start it again with `rpbt train`"))
            try:
                text = self.runner_state_path.read_bytes()
            except OSError as err:
                raise RunDirError(f"{where}: cannot read ({err.strerror or err})") from None
        else:
            kept = (store or self.store()).folder(folder)
            where = kept.url("runner.json")
            try:
                text = kept.read("runner.json")
            except CheckpointError as err:
                raise RunDirError(str(err).replace("checkpoint not found", "not found (the round's runner state is "
                                                   "missing)")) from None
        return _checked_runner_state(text, where)

    def write_round_state(self, folder: str, state: dict[str, Any], store: CheckpointStore | None = None) -> None:
        """The runner state of a round, kept in its checkpoint folder of ``store`` (default ``checkpoints/``): what
        a resume falling back to it reads."""
        (store or self.store()).folder(folder).write("runner.json",
                                                     json.dumps(state, indent=1, default=_json_default).encode())

    def remove_temp_files(self) -> list[Path]:
        """Delete temporary files of atomic writes cut short by a kill (``.NAME.XXXX.tmp``); returns them.

        Only call while holding the lock: a running process's temporary file is in use.
        """
        removed = []
        for tmp in self.path.rglob(".*.tmp"):
            if tmp.is_file():
                try:
                    os.unlink(tmp)
                    removed.append(tmp)
                except OSError:  # pragma: no cover - gone already or not ours to remove
                    pass
        return removed

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json",
                          json.dumps(summary, indent=1, default=_json_default, allow_nan=False))

    def close(self) -> None:
        self.tb.close()
        self.unlock()


def load_run_config(run_dir: Path) -> Config:
    """The resolved config saved in a run directory. Raises :class:`RunDirError` / ``ConfigError`` naming it."""
    from rpbt.config import load_config

    path = require_run_dir(Path(run_dir)) / "config.yaml"
    return load_config(path)


def _checked_runner_state(text: bytes, where: str) -> dict[str, Any]:
    """A runner state parsed from ``text`` and checked (see :meth:`RunDirectory.read_runner_state`)."""
    try:
        state = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(state, dict):
        raise RunDirError(f"{where}: expected a JSON object, got {type(state).__name__}")
    r, name = state.get("round"), state.get("checkpoint_dir")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise RunDirError(f"{where}: \"round\" is {r!r}, expected the committed round (an integer >= 1)")
    if name is not None and (not isinstance(name, str) or not ROUND_FOLDER.fullmatch(name)):
        raise RunDirError(f"{where}: \"checkpoint_dir\" is {name!r}, expected a folder name like "
                          f"{round_folder(r)!r}")
    history = state.get("history")
    if history is not None and (not isinstance(history, list)
                                or not all(isinstance(h, str) and ROUND_FOLDER.fullmatch(h) for h in history)):
        raise RunDirError(f"{where}: \"history\" is {history!r}, expected a list of round folder names")
    storage = state.get("storage")
    if storage is not None and not isinstance(storage, str):
        raise RunDirError(f"{where}: \"storage\" is {storage!r}, expected the path or URL of the checkpoints")
    return state
