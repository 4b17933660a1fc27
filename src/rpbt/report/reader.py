"""Reading a run directory for ``rpbt report`` (see RUNDIR_FORMAT.md, the contract with the runner).

Everything here tolerates a run that is still going or that was resumed:

* ``events.jsonl`` may be empty, or its last line may be cut mid-JSON (the runner is writing it): the complete lines
  are used and a warning says what was skipped.
* after a resume the runner re-runs rounds whose lines may already be in the file: :func:`clean_events` keeps the
  last attempt (a ``resume`` event at round r drops the earlier lines of rounds > r; a ``round`` line for round r
  drops the earlier lines of rounds >= r).
* ``members/<i>/metrics.csv`` rows are deduplicated the same way on their ``(round, update)`` key; a cut last row
  is ignored; columns are looked up by name (later issues append columns).
* ``summary.json``, ``config.yaml`` and the checkpoints are optional: a missing or bad one is a warning. The
  checkpoints are counted in the round folder that ``checkpoints/runner.json`` names (:func:`read_checkpoints`).

Errors: :class:`ReportError` (a ``ValueError``) naming the path when the run directory or its ``events.jsonl`` is
missing or unusable. Partial problems are warnings (plain strings, collected and shown in the report).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rpbt.extras import require

__all__ = [
    "ReportError",
    "MemberMetrics",
    "RunData",
    "read_events",
    "clean_events",
    "read_metrics",
    "read_run",
    "Checkpoints",
    "read_checkpoints",
    "num_or_none",
]

#: Event types the report understands; others are kept but ignored.
KNOWN_TYPES = ("start", "round", "exploit", "exploit_refused", "resume", "failure", "end")
#: Events that belong to a round and are superseded when that round is re-run after a resume.
_ROUND_SCOPED = ("round", "exploit", "exploit_refused", "failure")


class ReportError(ValueError):
    """The run directory or its events.jsonl is missing or unusable; the message names the path."""


def num_or_none(value: Any) -> Optional[float]:
    """A finite float, or None for null / NaN / non-numbers (scores and metrics may be missing)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _int_or_none(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------------------------------- events


def read_events(path: Path | str) -> tuple[list[dict], list[str]]:
    """Parse ``events.jsonl``: return ``(events, warnings)``, the events in file order.

    Blank lines are skipped; a line that is not a JSON object is skipped with a warning naming its line number (a
    cut last line - the runner is still writing - gets its own, milder warning). An empty file gives no events
    and a warning.

    Raises :class:`ReportError` naming the path when the file is missing, is not a regular file, cannot be read,
    or has complete lines of which none is a JSON object (not an events file).
    """
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{path}: events file not found (is this an rpbt run directory?)")
    if not path.is_file():
        raise ReportError(f"{path}: not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ReportError(f"{path}: cannot read events file: {exc}") from exc
    text = raw.decode("utf-8", errors="replace")
    warnings: list[str] = []
    if not text.strip():
        warnings.append(f"{path}: events file is empty (the run has not written any event yet)")
        return [], warnings

    lines = text.split("\n")
    # text.split leaves "" after a final newline; a non-empty last piece is a line still being written.
    last_is_partial = lines[-1].strip() != ""
    if not last_is_partial:
        lines = lines[:-1]
    events: list[dict] = []
    complete_bad = 0
    complete_nonblank = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_last = number == len(lines)
        partial = is_last and last_is_partial
        if not partial:
            complete_nonblank += 1
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if partial:
                warnings.append(
                    f"{path}: last line ({number}) is incomplete (cut mid-JSON; the run may still be writing it), "
                    "ignored"
                )
            else:
                complete_bad += 1
                warnings.append(f"{path}: line {number} is not valid JSON ({exc.msg}), skipped")
            continue
        if not isinstance(obj, dict):
            if not partial:
                complete_bad += 1
            warnings.append(f"{path}: line {number} is not a JSON object, skipped")
            continue
        if not isinstance(obj.get("type"), str):
            warnings.append(f"{path}: line {number} has no \"type\" field, skipped")
            continue
        obj["_line"] = number
        events.append(obj)
    if not events and complete_nonblank > 0 and complete_bad == complete_nonblank:
        raise ReportError(
            f"{path}: none of its {complete_nonblank} line(s) is a JSON event object - not an rpbt events file?"
        )
    return events, warnings


def clean_events(events: list[dict]) -> tuple[list[dict], list[str]]:
    """Validate events and apply resume semantics; return ``(events, warnings)``. Pure; idempotent.

    * ``round`` / ``exploit`` / ``failure`` events without an integer ``round`` are dropped with a warning, as are
      exploits without integer ``donor`` and ``recipient``.
    * A ``resume`` event at round r drops the earlier round-scoped events of rounds > r (the crashed attempt's,
      redone after the resume).
    * A ``round`` event for round r drops the earlier round-scoped events of rounds >= r (a duplicate round line:
      keep the last).
    * Several ``start`` events: all are kept (the last one wins where read); no truncation.
    """
    kept: list[dict] = []
    warnings: list[str] = []
    for ev in events:
        if not isinstance(ev, dict):
            continue
        kind = ev.get("type")
        where = f"events.jsonl line {ev['_line']}" if "_line" in ev else f"a {kind!r} event"
        r = _int_or_none(ev.get("round"))
        if kind in _ROUND_SCOPED or kind == "resume":
            if r is None:
                warnings.append(f"{where}: {kind!r} event without an integer \"round\", skipped")
                continue
        if kind == "exploit":
            if _int_or_none(ev.get("donor")) is None or _int_or_none(ev.get("recipient")) is None:
                warnings.append(f"{where}: exploit event without integer \"donor\"/\"recipient\", skipped")
                continue
        if kind == "resume":
            kept = [e for e in kept if not (e.get("type") in _ROUND_SCOPED and _int_or_none(e.get("round")) > r)]
        elif kind == "round":
            before = len(kept)
            kept = [e for e in kept if not (e.get("type") in _ROUND_SCOPED and _int_or_none(e.get("round")) >= r)]
            if len(kept) != before and not any(e.get("type") == "resume" for e in kept):
                warnings.append(
                    f"{where}: round {r} appears again without a \"resume\" event; the last attempt is kept"
                )
        kept.append(ev)
    return kept, warnings


# --------------------------------------------------------------------------------------------------- metrics


@dataclass
class MemberMetrics:
    """One member's ``metrics.csv``, deduplicated: columns by name, each a float array (NaN for empty cells)."""

    path: Path
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def get(self, name: str) -> Optional[np.ndarray]:
        return self.columns.get(name)

    def has_data(self, name: str) -> bool:
        col = self.columns.get(name)
        return col is not None and bool(np.isfinite(col).any())


def read_metrics(path: Path) -> tuple[Optional[MemberMetrics], list[str]]:
    """Read one ``members/<i>/metrics.csv``; return ``(metrics or None, warnings)``.

    Parsed with pandas (cells that are not numbers become NaN, a row shorter than the header is padded with NaN, a
    longer one is skipped with a warning, wholly blank rows are skipped). Rows are deduplicated on
    ``(round, update)`` (falling back to ``update``, then to row order): a row whose key is not greater than the
    previous row's means the run was resumed, and the earlier rows with keys >= it are dropped (keep the last
    attempt). A cut last line (no line end) is ignored. Raises nothing for a bad file (every problem is a warning)
    but :class:`rpbt.extras.MissingExtraError` (``pip install 'rpbt[report]'``) when pandas is not installed.
    """
    warnings: list[str] = []
    if not path.exists():
        return None, [f"{path}: missing (no metrics for this member yet)"]
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        return None, [f"{path}: cannot read: {exc}"]
    if not text.strip():
        return None, [f"{path}: empty"]
    if not text.endswith("\n") and "\n" in text:
        cut = text.rfind("\n")
        text = text[: cut + 1]
        warnings.append(f"{path}: last row incomplete (the run may still be writing it), ignored")
    if not text.endswith("\n"):
        return None, warnings + [f"{path}: only a partial header, no rows yet"]
    if not text.split("\n", 1)[0].strip():
        return None, warnings + [f"{path}: no header row (the first line is blank)"]
    parsed = _parse_csv(text, path, warnings)
    if parsed is None:
        return None, warnings
    header, values = parsed
    keep = _last_attempt_rows(values, header)
    arr = values[keep]
    columns = {name: arr[:, j] for j, name in enumerate(header) if name}
    return MemberMetrics(path=path, columns=columns), warnings


def _parse_csv(text: str, path: Path, warnings: list[str]) -> Optional[tuple[list[str], np.ndarray]]:
    """``(header, values)`` of a metrics CSV held in ``text`` (complete lines): the header's names stripped, the
    non-blank data rows as floats of shape ``(rows, len(header))``; None (and a warning) when pandas cannot parse
    it."""
    pd = require("pandas", "report", "reading a run's metrics (rpbt report, rpbt.report.load_run)")
    too_long: list[list[str]] = []

    def longer_than_header(cells: list[str]) -> None:  # the row is skipped; a blank one (",,") silently
        if any(c.strip() for c in cells):
            too_long.append(cells)

    try:
        raw = pd.read_csv(io.StringIO(text), header=None, dtype=str, keep_default_na=False, skip_blank_lines=True,
                          engine="python", on_bad_lines=longer_than_header)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        warnings.append(f"{path}: cannot be parsed as CSV ({exc}), ignored")
        return None
    if too_long:
        warnings.append(f"{path}: {len(too_long)} row(s) with more cells than the header, skipped")
    header = [str(h).strip() for h in raw.iloc[0].fillna("")]
    cells = raw.iloc[1:].fillna("").apply(lambda column: column.str.strip())
    cells = cells[(cells != "").any(axis=1)]
    values = cells.apply(lambda column: pd.to_numeric(column, errors="coerce")).to_numpy(dtype=float)
    return header, values.reshape(len(cells), len(header))


def _last_attempt_rows(values: np.ndarray, header: list[str]) -> list[int]:
    """Indices of the rows of ``values`` (shape ``(rows, len(header))``) kept after a resume: each row's key is
    ``(round, update)`` (those of the two columns present; no key when one is NaN); a key not greater than the
    previous row's drops the earlier rows whose keys are >= it."""
    idx = [header.index(name) for name in ("round", "update") if name in header]
    kept: list[int] = []
    keys: list[tuple] = []
    for j, row in enumerate(values):
        key = tuple(float(row[i]) for i in idx)
        if not all(math.isfinite(k) for k in key):
            key = ()
        if key and keys and keys[-1] and key <= keys[-1]:  # a resume redid these updates: keep the last attempt
            pairs = [(r, k) for r, k in zip(kept, keys) if not (k and k >= key)]
            kept, keys = [r for r, _ in pairs], [k for _, k in pairs]
        kept.append(j)
        keys.append(key)
    return kept


# --------------------------------------------------------------------------------------------------- run


@dataclass
class RunData:
    """What the report reads from a run directory (all optional parts may be missing)."""

    run_dir: Path
    events: list[dict]  # cleaned (resume semantics applied), file order
    population_size: int
    start: Optional[dict]
    rounds: list[dict]  # sorted by round, one per round
    exploits: list[dict]  # sorted by round, file order within a round
    resumes: list[dict]
    failures: list[dict]
    end: Optional[dict]
    search_space: dict[str, dict]
    hparam_names: list[str]
    metrics: dict[int, Optional[MemberMetrics]]
    summary: Optional[dict]
    config: Optional[dict]
    checkpoints_present: int  # members with a member_<i>.pt in checkpoint_dir (0 when there is none)
    checkpoint_round: Optional[int] = None  # round of the committed checkpoints (runner.json "round")
    checkpoint_dir: Optional[Path | str] = None  # folder counted, e.g. RUN_DIR/checkpoints/round_000008 (or a URL)
    warnings: list[str] = field(default_factory=list)

    @property
    def last_round(self) -> int:
        candidates = [int(e["round"]) for e in self.rounds + self.exploits]
        return max(candidates, default=0)

    def round_env_steps(self, ev: dict, member: int) -> Optional[float]:
        """Env steps of ``member`` after round event ``ev`` (a number per member, or a per-member list)."""
        steps = ev.get("env_steps")
        if isinstance(steps, list):
            return num_or_none(steps[member]) if member < len(steps) else None
        return num_or_none(steps)


def _infer_population_size(start: Optional[dict], rounds: list[dict], exploits: list[dict], run_dir: Path) -> int:
    if start is not None:
        p = _int_or_none(start.get("population_size"))
        if p is not None and p > 0:
            return p
        if isinstance(start.get("hparams"), list) and start["hparams"]:
            return len(start["hparams"])
    sizes = [len(e.get("scores") or []) for e in rounds] + [len(e.get("hparams") or []) for e in rounds]
    sizes += [max(int(e["donor"]), int(e["recipient"])) + 1 for e in exploits]
    members_dir = run_dir / "members"
    if members_dir.is_dir():
        sizes += [int(p.name) + 1 for p in members_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(sizes, default=0)


def _read_config(path: Path, warnings: list[str]) -> Optional[dict]:
    if not path.exists():
        warnings.append(f"{path}: missing")
        return None
    try:
        import yaml  # a dependency of rpbt (config.py); optional here
    except ImportError:  # pragma: no cover
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - any YAML problem is a warning, never a traceback
        warnings.append(f"{path}: cannot be parsed as YAML ({type(exc).__name__}), ignored")
        return None
    if data is not None and not isinstance(data, dict):
        warnings.append(f"{path}: not a mapping, ignored")
        return None
    return data


def _read_summary(path: Path, warnings: list[str]) -> Optional[dict]:
    if not path.exists():
        return None  # written after the first round; absent early in a run
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        warnings.append(f"{path}: cannot be read as JSON ({exc}), ignored")
        return None
    if not isinstance(data, dict):
        warnings.append(f"{path}: not a JSON object, ignored")
        return None
    return data


_ROUND_FOLDER = re.compile(r"round_(\d+)")


@dataclass
class Checkpoints:
    """The committed checkpoints of a run: ``present`` members (0..P) with a ``member_<i>.pt`` in ``folder``,
    ``round`` they were committed at (None when unknown), ``folder`` (a path, the URL under ``run.storage``, or None
    when there is none)."""

    present: int
    round: Optional[int]
    folder: Optional[Path | str]


def _count_in_storage(folder: str, population: int, warnings: list[str]) -> int:
    """Members with a ``member_<i>.pt`` in ``folder``, a path or fsspec URL (``run.storage``); 0 with a warning when
    the storage cannot be reached."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(folder)
        return sum(bool(fs.isfile(f"{path}/member_{i}.pt")) for i in range(population))
    except Exception as exc:  # noqa: BLE001 - a missing protocol package, credentials, the network
        warnings.append(f"checkpoints in {folder}: cannot be read ({type(exc).__name__}: {exc}); none counted")
        return 0


def read_checkpoints(run_dir: Path | str, population: int, expect_commit: bool = True,
                     warnings: Optional[list[str]] = None) -> Checkpoints:
    """Count the members of the last committed round that have a checkpoint (RUNDIR_FORMAT.md).

    The runner commits a round by writing ``checkpoints/round_<r>/member_<i>.pt`` (r zero-padded to 6 digits, i not
    padded) and then, atomically, ``checkpoints/runner.json`` whose ``"checkpoint_dir"`` names that folder (relative
    to ``checkpoints/``) and whose ``"round"`` is r; older folders are deleted afterwards. This reads runner.json
    and counts ``member_<i>.pt`` for i in 0..population-1 in the folder it names.

    When runner.json is missing, is not a JSON object, or its ``"checkpoint_dir"`` is not a plain folder name, the
    newest ``round_<r>`` folder is counted instead (it may be a commit cut short, so the count can be partial)
    and a warning naming runner.json is appended to ``warnings``; with no such folder either, 0. A runner.json
    without ``"checkpoint_dir"`` means the checkpoints lie in ``checkpoints/`` itself (as ``rpbt evaluate`` reads
    it); one with ``"storage"`` (``run.storage``) means the folder lies there. ``expect_commit=False`` (no round has
    been reported yet) makes a missing runner.json silent.
    Never raises for a bad run directory: every problem is a warning.
    """
    run_dir = Path(run_dir)
    warnings = [] if warnings is None else warnings
    ckpt = run_dir / "checkpoints"
    state_path = ckpt / "runner.json"

    def count(folder: Path) -> int:
        return sum((folder / f"member_{i}.pt").is_file() for i in range(population))

    problem: Optional[str] = None
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            state, problem = None, f"cannot be read as JSON ({exc})"
        if state is not None and not isinstance(state, dict):
            problem = "not a JSON object"
        elif state is not None:
            name = state.get("checkpoint_dir")
            rnd = _int_or_none(state.get("round"))
            if name is None or name == "":
                return Checkpoints(count(ckpt), rnd, ckpt)  # layout without round folders
            if not isinstance(name, str) or name in (".", "..") or Path(name).name != name:
                problem = f'"checkpoint_dir" is {name!r}, not the name of a folder in {ckpt}'
            elif isinstance(state.get("storage"), str) and state["storage"]:  # run.storage: counted there
                where = f"{state['storage'].rstrip('/')}/{name}"
                return Checkpoints(_count_in_storage(where, population, warnings), rnd, where)
            else:
                folder = ckpt / name
                if not folder.is_dir():
                    warnings.append(f"{state_path}: names checkpoint folder {folder}, which does not exist; "
                                    "no checkpoints counted")
                    return Checkpoints(0, rnd, folder)
                return Checkpoints(count(folder), rnd, folder)
    elif state_path.exists():
        problem = "not a regular file"
    else:
        problem = "missing (no round committed yet, or it was removed)"

    found: list[tuple[int, Path]] = []
    if ckpt.is_dir():
        for entry in ckpt.iterdir():
            m = _ROUND_FOLDER.fullmatch(entry.name)
            if m and entry.is_dir():
                found.append((int(m.group(1)), entry))
    if found:
        rnd, folder = max(found)
        warnings.append(f"{state_path}: {problem}; counted the checkpoints in the newest round folder {folder} "
                        "instead (it may be an unfinished commit)")
        return Checkpoints(count(folder), rnd, folder)
    if expect_commit or state_path.exists():
        warnings.append(f"{state_path}: {problem}; no checkpoints counted")
    return Checkpoints(0, None, None)


def read_run(run_dir: Path | str) -> RunData:
    """Read everything the report needs from ``run_dir`` (:func:`rpbt.report.load_run` gives it as DataFrames).

    Raises :class:`ReportError` naming the path when the directory or its ``events.jsonl`` is missing/unusable;
    partial problems become ``RunData.warnings``."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ReportError(f"{run_dir}: run directory not found")
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir}: not a directory (expected an rpbt run directory)")
    raw_events, warnings = read_events(run_dir / "events.jsonl")
    events, more = clean_events(raw_events)
    warnings += more

    start = _last_start(events, warnings)
    rounds = sorted((e for e in events if e.get("type") == "round"), key=lambda e: int(e["round"]))
    exploits = sorted(
        (e for e in events if e.get("type") == "exploit"), key=lambda e: int(e["round"])
    )  # stable: file order within a round
    population = _infer_population_size(start, rounds, exploits, run_dir)
    valid_exploits = _exploits_in_range(exploits, population, warnings)
    search_space, names = _search_space(start, rounds)
    metrics = _read_member_metrics(run_dir, population, bool(rounds), warnings)
    checkpoints = read_checkpoints(run_dir, population, expect_commit=bool(rounds), warnings=warnings)

    return RunData(
        run_dir=run_dir,
        events=events,
        population_size=population,
        start=start,
        rounds=rounds,
        exploits=valid_exploits,
        resumes=[e for e in events if e.get("type") == "resume"],
        failures=[e for e in events if e.get("type") == "failure"],
        end=_end_event(events),
        search_space=search_space,
        hparam_names=names,
        metrics=metrics,
        summary=_read_summary(run_dir / "summary.json", warnings),
        config=_read_config(run_dir / "config.yaml", warnings),
        checkpoints_present=checkpoints.present,
        checkpoint_round=checkpoints.round,
        checkpoint_dir=checkpoints.folder,
        warnings=warnings,
    )


def _last_start(events: list[dict], warnings: list[str]) -> Optional[dict]:
    """The last ``start`` event, or None; appends to ``warnings`` when several disagree on the population size or
    when events exist without any ``start``."""
    starts = [e for e in events if e.get("type") == "start"]
    start = starts[-1] if starts else None
    if len(starts) > 1:
        sizes = {str(s.get("population_size")) for s in starts}
        if len(sizes) > 1:
            warnings.append(f"events.jsonl: {len(starts)} \"start\" events with different population sizes; "
                            "the last one is used")
    if start is None and events:
        warnings.append("events.jsonl: no \"start\" event (population size and search space inferred)")
    return start


def _end_event(events: list[dict]) -> Optional[dict]:
    """The ``end`` event if the run is over: the last one, unless a round or a resume follows it."""
    end = None
    for e in events:
        if e.get("type") == "end":
            end = e
        elif e.get("type") in ("round", "resume"):
            end = None  # resumed / extended after an "end": the run is not over
    return end


def _exploits_in_range(exploits: list[dict], population: int, warnings: list[str]) -> list[dict]:
    """``exploits`` without those whose donor or recipient is not a member index in ``[0, population)`` (each
    skipped one is a warning)."""
    valid_exploits = []
    for e in exploits:
        d, r = int(e["donor"]), int(e["recipient"])
        if not (0 <= d < population and 0 <= r < population):
            warnings.append(f"exploit in round {e['round']}: member index out of range "
                            f"(donor {d}, recipient {r}, population {population}), skipped")
            continue
        valid_exploits.append(e)
    return valid_exploits


def _search_space(start: Optional[dict], rounds: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """``(search_space, names)``: the ``start`` event's search space (name -> spec dict) and its hyperparameter
    names; without one, the names seen in the ``hparams`` of the start and round events, in order of appearance."""
    search_space: dict[str, dict] = {}
    if start is not None and isinstance(start.get("search_space"), dict):
        search_space = {k: (v if isinstance(v, dict) else {}) for k, v in start["search_space"].items()}
    names: list[str] = list(search_space)
    if not names:
        seen: dict[str, None] = {}
        for src in ([start] if start else []) + rounds:
            for hp in src.get("hparams") or []:
                if isinstance(hp, dict):
                    seen.update(dict.fromkeys(hp))
        names = list(seen)
    return search_space, names


def _read_member_metrics(run_dir: Path, population: int, has_rounds: bool,
                         warnings: list[str]) -> dict[int, Optional[MemberMetrics]]:
    """Each member's ``members/<i>/metrics.csv`` (None where missing; one warning lists those when a round was
    committed)."""
    metrics: dict[int, Optional[MemberMetrics]] = {}
    missing_metrics = []
    for i in range(population):
        path = run_dir / "members" / str(i) / "metrics.csv"
        if not path.exists():
            missing_metrics.append(i)
            metrics[i] = None
            continue
        m, w = read_metrics(path)
        metrics[i] = m
        warnings += w
    if missing_metrics and has_rounds:
        warnings.append(f"{run_dir / 'members'}: no metrics.csv for member(s) {missing_metrics}")
    return metrics
