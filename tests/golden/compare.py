"""How a golden run is compared with its fixture: by kind of value, with tolerances that hold across CPUs.

The kinds and why each tolerance is what it is are in ``tests/test_golden.py``'s docstring and
``docs/reproducibility.md``; ``tests/golden/spread.py`` measures them.
"""

from __future__ import annotations

import math

EXACT_RTOL = 1e-6  # scores, returns, hyperparameters: relative (an exact 0 may be off by EXACT_ATOL)
EXACT_ATOL = 1e-12
# A learner value's tolerance: RTOL x |expected| + SCALE_FLOOR x the column's scale (its largest magnitude).
LEARNER_RTOL = 3e-4
LEARNER_SCALE_FLOOR = 1e-5
# Differences of nearly equal terms on a fresh policy: rtol and floor both 1e-2.
CANCELLING = {"train/approx_kl", "train/policy_gradient_loss"}
CANCELLING_TOL = 1e-2
LEARNER_PREFIXES = ("train/", "sa_ppo/", "vgs/")
# Hyperparameters in force and flags logged beside the learner's metrics: exact floats, not learner values.
IN_FORCE = {"train/learning_rate", "train/clip_range", "sa_ppo/epsilon", "sa_ppo/active"}


MISSING = object()  # what lookup returns for a path the run lacks


def is_float(x) -> bool:
    return isinstance(x, float)


def learner_column(path: tuple) -> str | None:
    """The column (metric key or exploit measurement key) a path belongs to, when its value is a learner value."""
    if path[0] == "metrics":
        key = path[-1]
        if key.startswith(LEARNER_PREFIXES) and key not in IN_FORCE:
            return key
        return None
    if "measurements" in path:
        return f"measurements/{path[-1]}"
    return None


def tolerance(column: str, expected: float, scale: float) -> float:
    """Largest |actual - expected| accepted for a learner value of ``column`` whose largest magnitude in the case is
    ``scale``."""
    if column in CANCELLING:
        return CANCELLING_TOL * (abs(expected) + scale)
    return LEARNER_RTOL * abs(expected) + LEARNER_SCALE_FLOOR * scale


def leaves(value, path: tuple = ()):
    """Every (path, leaf value) of nested dicts and lists; a path is a tuple of keys and indices."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, path + (i,))
    else:
        yield path, value


def _lists(value, path: tuple = ()):
    """Every (path, list) of nested dicts and lists."""
    if isinstance(value, list):
        yield path, value
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return
    for k, v in items:
        yield from _lists(v, path + (k,))


def column_scales(expected: dict) -> dict[str, float]:
    """Largest finite |value| of each learner column in a fixture ({'events': ..., 'metrics': ...})."""
    scales: dict[str, float] = {}
    for path, v in leaves(expected):
        col = learner_column(path)
        if col is not None and is_float(v) and math.isfinite(v):
            scales[col] = max(scales.get(col, 0.0), abs(v))
    return scales


def lookup(actual, path: tuple):
    """The value at ``path`` in ``actual``, or MISSING."""
    for p in path:
        if isinstance(p, str):
            if not isinstance(actual, dict) or p not in actual:
                return MISSING
        elif not isinstance(actual, list) or p >= len(actual):
            return MISSING
        actual = actual[p]
    return actual



def _where(path: tuple) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def diff_runs(expected: dict, actual: dict) -> list[tuple[str, str]]:
    """Differences between a fixture and a run, each (kind, message); kind is 'decision', 'exact' or 'learner'.

    Both are {'events': [...], 'metrics': {member: [row, ...]}}. Extra keys in ``actual`` are ignored (columns and
    event fields added later); extra list items are not (an event or metric row more than recorded).
    """
    scales = column_scales(expected)
    out = [("decision", f"{_where(path)}: {len(a)} items, {len(e)} recorded") for path, e in _lists(expected)
           if isinstance(a := lookup(actual, path), list) and len(a) != len(e)]
    for path, e in leaves(expected):
        a = lookup(actual, path)
        where = _where(path)
        if a is MISSING:
            out.append(("decision", f"{where}: missing"))
            continue
        col = learner_column(path)
        if is_float(e) and isinstance(a, (int, float)) and not isinstance(a, bool):
            if math.isnan(e) or math.isnan(a):
                if not (math.isnan(e) and math.isnan(a)):
                    out.append(("exact", f"{where}: expected {e!r}, got {a!r}"))
            elif col is not None:
                tol = tolerance(col, e, scales.get(col, 0.0))
                if abs(a - e) > tol:
                    out.append(("learner", f"{where}: expected {e!r}, got {a!r} (tolerance {tol:.3g})"))
            elif not math.isclose(e, a, rel_tol=EXACT_RTOL, abs_tol=EXACT_ATOL):
                out.append(("exact", f"{where}: expected {e!r}, got {a!r}"))
        elif e != a:
            out.append(("decision", f"{where}: expected {e!r}, got {a!r:.200}"))
    return out
