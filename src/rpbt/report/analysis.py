"""Series the report plots and tabulates, computed from a :class:`RunData` (no plotting, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from rpbt.report.reader import MemberMetrics, RunData, num_or_none

__all__ = [
    "VALUE_LOSS_KEY",
    "SCORE_KEY",
    "x_axis",
    "XAxis",
    "score_series",
    "exploit_scores",
    "hparam_series",
    "current_hparams",
    "is_categorical",
    "is_log",
    "ExploitWindow",
    "value_loss_windows",
    "updates_per_round",
    "X_CHOICES",
    "score_mode",
    "score_matrix",
    "gap_to_best",
    "smooth",
    "population_stats",
    "round_times",
    "HparamPoint",
    "hparam_score_points",
]

VALUE_LOSS_KEY = "train/value_loss"
SCORE_KEY = "pbt/score"


# --------------------------------------------------------------------------------------------------- x axis


#: what ``rpbt report --x`` accepts: env steps per member, round number, the run's clock (seconds)
X_CHOICES = ("steps", "rounds", "time")


@dataclass
class XAxis:
    """The x-axis of the report's time series: env steps per member (``kind="steps"``), round number
    (``"rounds"``) or the run's clock in seconds (``"time"``, the ``time`` of the round events)."""

    kind: str
    label: str
    # (round, member) -> x at the end of that round
    _end: dict[tuple[int, int], float] = field(default_factory=dict)

    @property
    def use_steps(self) -> bool:
        """Whether x is continuous (env steps or seconds) rather than integer rounds."""
        return self.kind != "rounds"

    def end_of_round(self, run: RunData, r: int, member: int) -> float:
        if self.kind == "rounds":
            return float(r)
        return self._end.get((r, member), float("nan"))

    def start_of_round(self, run: RunData, r: int, member: int) -> float:
        """x where round r's training starts: the end of the latest earlier round, or 0."""
        earlier = [ev["round"] for ev in run.rounds if int(ev["round"]) < r]
        if not earlier:
            return 0.0
        return self.end_of_round(run, int(max(earlier)), member)

    def of_exploit(self, run: RunData, ex: dict) -> float:
        r, i = int(ex["round"]), int(ex["recipient"])
        if self.kind == "steps":
            steps = num_or_none(ex.get("env_steps"))
            if steps is not None:
                return steps
        return self.end_of_round(run, r, i)


def x_axis(run: RunData, kind: str = "steps") -> XAxis:
    """The x-axis ``kind`` (one of :data:`X_CHOICES`) for ``run``; round numbers when the round events lack what
    ``kind`` needs (``env_steps`` for steps, ``time`` for time). Raises ``ValueError`` for an unknown kind."""
    if kind not in X_CHOICES:
        raise ValueError(f"x-axis {kind!r}: expected one of {', '.join(X_CHOICES)}")
    if kind == "rounds" or not run.rounds:
        return XAxis("rounds", "round")
    ends: dict[tuple[int, int], float] = {}
    for ev in run.rounds:
        for i in range(run.population_size):
            x = run.round_env_steps(ev, i) if kind == "steps" else num_or_none(ev.get("time"))
            if x is None:
                return XAxis("rounds", "round")
            ends[(int(ev["round"]), i)] = x
    if kind == "steps":
        return XAxis("steps", "env steps (per member)", ends)
    return XAxis("time", "wall-clock time (s, the run's clock)", ends)


# --------------------------------------------------------------------------------------------------- scores


def score_series(run: RunData, axis: XAxis) -> tuple[dict[int, tuple[np.ndarray, np.ndarray]], str]:
    """Per member (x, score) arrays; from the round events, else from metrics.csv's pbt/score.

    Returns ``(series, source)`` with source ``"events"``, ``"metrics"`` or ``"none"``.
    """
    series: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    any_score = False
    for i in range(run.population_size):
        xs, ys = [], []
        for ev in run.rounds:
            scores = ev.get("scores")
            y = num_or_none(scores[i]) if isinstance(scores, list) and i < len(scores) else None
            xs.append(axis.end_of_round(run, int(ev["round"]), i))
            ys.append(np.nan if y is None else y)
            any_score |= y is not None
        series[i] = (np.array(xs, dtype=float), np.array(ys, dtype=float))
    if any_score:
        return series, "events"
    # fall back to metrics.csv (pbt/score is filled on the last update of a round)
    series = {}
    for i in range(run.population_size):
        m = run.metrics.get(i)
        if m is None or not m.has_data(SCORE_KEY):
            continue
        y = m.get(SCORE_KEY)
        if axis.use_steps and m.get("env_steps") is not None:
            x = m.get("env_steps")
        elif m.get("round") is not None:
            x = m.get("round")
        else:
            continue
        keep = np.isfinite(y) & np.isfinite(x)
        series[i] = (x[keep], y[keep])
        any_score |= bool(keep.any())
    return (series, "metrics") if any_score else ({}, "none")


def _round_event(run: RunData, r: int) -> Optional[dict]:
    for ev in run.rounds:
        if int(ev["round"]) == r:
            return ev
    return None


def exploit_scores(run: RunData, ex: dict) -> tuple[Optional[float], Optional[float]]:
    """(donor score, recipient score) at an exploit: from the exploit event, else from its round's scores."""
    donor, recipient = num_or_none(ex.get("donor_score")), num_or_none(ex.get("recipient_score"))
    ev = _round_event(run, int(ex["round"]))
    scores = ev.get("scores") if ev else None
    if isinstance(scores, list):
        d, i = int(ex["donor"]), int(ex["recipient"])
        if donor is None and d < len(scores):
            donor = num_or_none(scores[d])
        if recipient is None and i < len(scores):
            recipient = num_or_none(scores[i])
    return donor, recipient


# --------------------------------------------------------------------------------------------------- hparams


def _hp_of(src: Any, member: int) -> Optional[dict]:
    if isinstance(src, list) and member < len(src) and isinstance(src[member], dict):
        return src[member]
    return None


def is_categorical(run: RunData, name: str, values: list[Any]) -> bool:
    spec = run.search_space.get(name, {})
    if spec.get("type") == "categorical":
        return True
    return any(isinstance(v, (str, bool)) or num_or_none(v) is None for v in values if v is not None)


def is_log(run: RunData, name: str, values: list[Any]) -> bool:
    spec = run.search_space.get(name, {})
    if spec.get("scale") != "log":
        return False
    nums = [num_or_none(v) for v in values if v is not None]
    return bool(nums) and all(x is not None and x > 0 for x in nums)


def hparam_series(run: RunData, axis: XAxis) -> dict[str, dict[int, tuple[list[float], list[Any]]]]:
    """name -> member -> (xs, values) for a steps-post line: the value at x holds until the next x.

    Round r's hyperparameters (its "round" event; round 1: also the "start" event) hold from the start of round r;
    the last point, at the end of the last round, carries the values after that round's exploits.
    """
    out: dict[str, dict[int, tuple[list[float], list[Any]]]] = {n: {} for n in run.hparam_names}
    last_round = max((int(ev["round"]) for ev in run.rounds), default=0)
    last_exploit_hp: dict[int, dict] = {}
    for ex in run.exploits:
        if int(ex["round"]) == last_round and isinstance(ex.get("new_hparams"), dict):
            last_exploit_hp[int(ex["recipient"])] = ex["new_hparams"]
    for i in range(run.population_size):
        points: list[tuple[float, Optional[dict]]] = []
        start_hp = _hp_of(run.start.get("hparams"), i) if run.start else None
        if start_hp is not None:
            points.append((0.0, start_hp))
        for ev in run.rounds:
            hp = _hp_of(ev.get("hparams"), i)
            if hp is not None:
                x0 = axis.start_of_round(run, int(ev["round"]), i)
                if points and points[-1][0] == x0:
                    points[-1] = (x0, hp)
                else:
                    points.append((x0, hp))
        if run.rounds:
            x_end = axis.end_of_round(run, last_round, i)
            final = last_exploit_hp.get(i)
            if final is None and points:
                final = points[-1][1]
            if final is not None:
                points.append((x_end, final))
        for name in run.hparam_names:
            xs, vs = [], []
            prev = None
            for x, hp in points:
                v = hp.get(name, prev) if hp else prev
                if v is None or not math.isfinite(x):
                    continue
                xs.append(x)
                vs.append(v)
                prev = v
            if xs:
                out[name][i] = (xs, vs)
    return out


def current_hparams(run: RunData) -> dict[int, dict]:
    """Each member's hyperparameters now: the last round's, updated by that round's exploits."""
    current: dict[int, dict] = {}
    for i in range(run.population_size):
        hp = _hp_of(run.start.get("hparams"), i) if run.start else None
        if hp is not None:
            current[i] = dict(hp)
    for ev in run.rounds:
        for i in range(run.population_size):
            hp = _hp_of(ev.get("hparams"), i)
            if hp is not None:
                current[i] = dict(hp)
    last_round = max((int(ev["round"]) for ev in run.rounds), default=0)
    for ex in run.exploits:
        if int(ex["round"]) >= last_round and isinstance(ex.get("new_hparams"), dict):
            current.setdefault(int(ex["recipient"]), {}).update(ex["new_hparams"])
    return current


# --------------------------------------------------------------------------------------------------- value loss


def updates_per_round(run: RunData) -> int:
    """Typical number of updates per round (median rows per round of metrics.csv, else from round events)."""
    counts: list[int] = []
    for m in run.metrics.values():
        if m is None or m.get("round") is None:
            continue
        rounds = m.get("round")
        rounds = rounds[np.isfinite(rounds)]
        if rounds.size:
            _, c = np.unique(rounds, return_counts=True)
            counts += c.tolist()
    if counts:
        return max(1, int(np.median(counts)))
    ups = [num_or_none(ev.get("updates")) for ev in run.rounds]
    ups = [u for u in ups if u is not None]
    if len(ups) >= 2:
        diffs = np.diff(ups)
        diffs = diffs[diffs > 0]
        if diffs.size:
            return max(1, int(np.median(diffs)))
    if ups and ups[0] > 0 and len(run.rounds) == 1:
        return int(ups[0])
    return 5


@dataclass
class ExploitWindow:
    """train/value_loss of an exploit's recipient around it: offsets k (0 = its last update before the exploit,
    1 = its first update after), absolute values, and values relative to the donor's last pre-exploit value."""

    exploit: dict
    strategy: str
    offsets: np.ndarray
    absolute: np.ndarray
    relative: Optional[np.ndarray]  # None when the donor's value loss is unknown or not positive
    donor_value_loss: Optional[float]


def _last_row_of_round(m: MemberMetrics, r: int, env_steps: Optional[float]) -> Optional[int]:
    rounds = m.get("round")
    if rounds is not None and np.isfinite(rounds).any():
        idx = np.flatnonzero(rounds == r)
        return int(idx[-1]) if idx.size else None
    steps = m.get("env_steps")
    if steps is not None and env_steps is not None:
        idx = np.flatnonzero(steps <= env_steps)
        return int(idx[-1]) if idx.size else None
    return None


def value_loss_windows(run: RunData, window: Optional[int] = None) -> tuple[list[ExploitWindow], int, list[str]]:
    """For every exploit, the recipient's value loss ``window`` updates before and after (aligned on the exploit).

    Returns ``(windows, window, notes)``; notes say why exploits were left out.
    """
    if window is None:
        window = int(min(20, max(3, 2 * updates_per_round(run))))
    offsets = np.arange(-window + 1, window + 1)
    windows: list[ExploitWindow] = []
    skipped: dict[str, int] = {}
    for ex in run.exploits:
        r, i, d = int(ex["round"]), int(ex["recipient"]), int(ex["donor"])
        strategy = ex.get("hidden_state") if isinstance(ex.get("hidden_state"), str) else "unknown"
        m = run.metrics.get(i)
        if m is None or not m.has_data(VALUE_LOSS_KEY):
            skipped["recipient has no train/value_loss"] = skipped.get("recipient has no train/value_loss", 0) + 1
            continue
        steps = num_or_none(ex.get("env_steps"))
        idx0 = _last_row_of_round(m, r, steps)
        if idx0 is None:
            skipped["recipient has no metrics row for the exploit's round"] = (
                skipped.get("recipient has no metrics row for the exploit's round", 0) + 1
            )
            continue
        vl = m.get(VALUE_LOSS_KEY)
        absolute = np.full(offsets.shape, np.nan)
        for j, k in enumerate(offsets):
            idx = idx0 + k
            if 0 <= idx < len(vl):
                absolute[j] = vl[idx]
        donor_vl = None
        dm = run.metrics.get(d)
        if dm is not None and dm.has_data(VALUE_LOSS_KEY):
            jdx = _last_row_of_round(dm, r, steps)
            if jdx is not None:
                donor_vl = num_or_none(dm.get(VALUE_LOSS_KEY)[jdx])
        relative = absolute / donor_vl if donor_vl is not None and donor_vl > 0 else None
        windows.append(ExploitWindow(ex, strategy, offsets, absolute, relative, donor_vl))
    notes = [f"{n} exploit(s) left out: {why}" for why, n in skipped.items()]
    return windows, window, notes


# --------------------------------------------------------------------------------------------------- population


def score_mode(run: RunData) -> str:
    """``"max"`` or ``"min"``: which way a score is better (the config's ``pbt.mode``; ``"max"`` without one)."""
    pbt = run.config.get("pbt") if isinstance(run.config, dict) else None
    mode = pbt.get("mode") if isinstance(pbt, dict) else None
    return mode if mode in ("max", "min") else "max"


def score_matrix(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    """``(rounds, scores)``: the round numbers (R,) of the round events and every member's score in them,
    shape (P, R), NaN where a member has none."""
    rounds = np.array([int(ev["round"]) for ev in run.rounds], dtype=int)
    scores = np.full((run.population_size, len(rounds)), np.nan)
    for k, ev in enumerate(run.rounds):
        vals = ev.get("scores")
        if isinstance(vals, list):
            for i, v in enumerate(vals[: run.population_size]):
                x = num_or_none(v)
                if x is not None:
                    scores[i, k] = x
    return rounds, scores


def gap_to_best(scores: np.ndarray, mode: str = "max") -> np.ndarray:
    """Per round (column), how far each member's score is from the round's best: ``best - score`` for mode
    ``"max"``, ``score - best`` for ``"min"``; >= 0, 0 for the best, NaN where the score (or every score) is NaN."""
    with np.errstate(all="ignore"):
        if scores.size == 0:
            return scores.copy()
        finite = np.isfinite(scores).any(axis=0)
        best = np.full(scores.shape[1], np.nan)
        pick = np.nanmax if mode == "max" else np.nanmin
        best[finite] = pick(scores[:, finite], axis=0)
        return best[None, :] - scores if mode == "max" else scores - best[None, :]


def smooth(ys: np.ndarray, k: int) -> np.ndarray:
    """Trailing moving average over the last ``k`` finite values of ``ys`` (k <= 1: ``ys`` unchanged); NaN stays
    NaN. Shape kept."""
    ys = np.asarray(ys, dtype=float)
    if k <= 1:
        return ys
    out = np.full(ys.shape, np.nan)
    for j in range(len(ys)):
        if not np.isfinite(ys[j]):
            continue
        window = ys[max(0, j - k + 1): j + 1]
        out[j] = float(np.nanmean(window))
    return out


def population_stats(run: RunData) -> dict[str, np.ndarray]:
    """Per round: ``rounds``, ``best`` (by ``pbt.mode``), ``mean``, ``min``, ``q25``, ``median``, ``q75``,
    ``max`` of the members' scores, and ``n`` (members with a score); NaN where no member has one."""
    rounds, scores = score_matrix(run)
    out: dict[str, np.ndarray] = {"rounds": rounds}
    n = np.isfinite(scores).sum(axis=0)
    out["n"] = n
    with np.errstate(all="ignore"):
        cols = [scores[:, k][np.isfinite(scores[:, k])] for k in range(len(rounds))]
        for name, fn in (("mean", np.mean), ("min", np.min), ("max", np.max), ("median", np.median),
                         ("q25", lambda c: np.percentile(c, 25)), ("q75", lambda c: np.percentile(c, 75))):
            out[name] = np.array([float(fn(c)) if c.size else np.nan for c in cols])
    out["best"] = out["max"] if score_mode(run) == "max" else out["min"]
    return out


def round_times(run: RunData) -> dict[str, np.ndarray]:
    """Per round event: ``rounds``, ``train`` (``train_s``), ``exploit`` (``transfer_s`` of its exploits, 0 when
    none), ``total`` (the run's clock since the previous round event, or since the ``start`` event) and ``other``
    (``total`` less ``train`` and the previous round's exploits: scoring, decisions, checkpoint commits, records;
    after a resume also the restart), in seconds; NaN where a ``time`` is missing."""
    rounds = np.array([int(ev["round"]) for ev in run.rounds], dtype=int)
    train = np.array([num_or_none(ev.get("train_s")) or np.nan for ev in run.rounds], dtype=float)
    transfer: dict[int, float] = {}
    for ex in run.exploits:
        t = num_or_none(ex.get("transfer_s"))
        if t is not None:
            transfer[int(ex["round"])] = t  # one transfer_s per round (all of its exploits in one call)
    exploit = np.array([transfer.get(int(r), 0.0) for r in rounds], dtype=float)
    total = np.full(len(rounds), np.nan)
    before = num_or_none(run.start.get("time")) if run.start else None
    for k, ev in enumerate(run.rounds):
        t = num_or_none(ev.get("time"))
        if t is not None and before is not None:
            total[k] = t - before
        before = t
    # a round event is written after the round's training and scoring, before its exploits and commit: the clock
    # between two round events holds the earlier round's exploits, its commit, then this round's training
    earlier_exploit = np.concatenate([[0.0], exploit[:-1]]) if len(exploit) else exploit
    with np.errstate(invalid="ignore"):
        other = np.where(np.isfinite(total),
                         np.maximum(total - np.nan_to_num(train) - earlier_exploit, 0.0), np.nan)
    return {"rounds": rounds, "train": train, "exploit": exploit, "other": other, "total": total}


@dataclass
class HparamPoint:
    """One member in one round: the hyperparameter values it trained with and the score that round gave."""

    round: int
    member: int
    hparams: dict
    score: float


def hparam_score_points(run: RunData) -> list[HparamPoint]:
    """Every (round, member) with a score and the hyperparameters of that round (its round event's ``hparams``),
    in round order."""
    points = []
    for ev in run.rounds:
        scores, hps = ev.get("scores"), ev.get("hparams")
        if not isinstance(scores, list) or not isinstance(hps, list):
            continue
        for i in range(min(run.population_size, len(scores), len(hps))):
            y = num_or_none(scores[i])
            if y is not None and isinstance(hps[i], dict):
                points.append(HparamPoint(int(ev["round"]), i, hps[i], y))
    return points
