"""Tiny synthetic run directories (RUNDIR_FORMAT.md) for the report's tests, fabricated by hand."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "scale": "log", "values": None},
    "clip_range": {"type": "float", "low": 0.1, "high": 0.3, "scale": "linear", "values": None},
    "num_minibatches": {"type": "int", "low": 1, "high": 8, "scale": "linear", "values": None},
    "activation": {"type": "categorical", "low": None, "high": None, "scale": "linear", "values": ["tanh", "relu"]},
}


METRIC_COLUMNS = ["round", "update", "env_steps", "time", "rollout/ep_rew_mean", "train/value_loss",
                  "train/approx_kl", "pbt/score"]


def _write_events(run_dir: Path, events: list[dict]) -> Path:
    path = run_dir / "events.jsonl"
    with path.open("w") as f:
        for ev in events:
            f.write(json.dumps(ev) + "\n")
    return path


def _write_metrics(run_dir: Path, member: int, rows: list[dict], columns: list[str]) -> Path:
    d = run_dir / "members" / str(member)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "metrics.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in rows:
            w.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return path


def fabricate_run(
    run_dir: Path,
    population: int = 6,
    rounds: int = 8,
    updates_per_round: int = 5,
    steps_per_update: int = 1024,
    seed: int = 0,
    strategies: tuple[str, ...] = ("burn_in", "zero"),
    end: bool = True,
    summary: bool = True,
) -> dict:
    """A plausible PBT run: truncation selection (bottom quarter copies the top quarter), perturbed
    hyperparameters, value loss that jumps after an exploit. Returns what was written (events, metrics rows)."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(
        "env:\n  id: popgym-PositionOnlyCartPoleEasy-v0\npbt:\n"
        f"  population_size: {population}\n  exploit: truncation\n  hidden_state: burn_in\n"
    )
    hps = [
        {"learning_rate": 10 ** rng.uniform(-4, -2.6), "clip_range": rng.uniform(0.1, 0.3),
         "num_minibatches": rng.randint(1, 8), "activation": rng.choice(["tanh", "relu"])}
        for _ in range(population)
    ]
    quality = [rng.uniform(0, 10) for _ in range(population)]
    vloss = [rng.uniform(1, 2) for _ in range(population)]
    t = 1_700_000_000.0
    events: list[dict] = [{"type": "start", "round": 0, "time": t, "population_size": population,
                           "hparams": [dict(h) for h in hps], "search_space": SEARCH_SPACE}]
    rows: dict[int, list[dict]] = {i: [] for i in range(population)}
    update = 0
    n_exploit = 0
    jump_next: dict[int, float] = {}
    for r in range(1, rounds + 1):
        for k in range(updates_per_round):
            update += 1
            for i in range(population):
                quality[i] += rng.uniform(-1, 3) * (1 + 200 * hps[i]["learning_rate"])
                vloss[i] *= 0.97
                spike = jump_next.get(i, 1.0) if k == 0 else 1.0
                rows[i].append({"round": r, "update": update, "env_steps": update * steps_per_update,
                                "time": t + update, "rollout/ep_rew_mean": quality[i],
                                "train/value_loss": vloss[i] * spike, "train/approx_kl": 0.01,
                                "pbt/score": quality[i] if k == updates_per_round - 1 else None})
        jump_next = {}
        scores = list(quality)
        events.append({"type": "round", "round": r, "time": t + update, "env_steps": update * steps_per_update,
                       "updates": update, "scores": scores, "hparams": [dict(h) for h in hps]})
        order = sorted(range(population), key=lambda i: scores[i])
        q = max(1, population // 4)
        before_q, before_v, before_h = list(quality), list(vloss), [dict(h) for h in hps]
        for rec, donor in zip(order[:q], reversed(order[-q:])):
            new = dict(before_h[donor])
            new["learning_rate"] = min(3e-3, max(1e-4, new["learning_rate"] * rng.choice([0.8, 1.2])))
            new["clip_range"] = min(0.3, max(0.1, new["clip_range"] * rng.choice([0.8, 1.2])))
            strategy = strategies[n_exploit % len(strategies)]
            n_exploit += 1
            events.append({
                "type": "exploit", "round": r, "time": t + update, "env_steps": update * steps_per_update,
                "recipient": rec, "donor": donor, "recipient_score": scores[rec], "donor_score": scores[donor],
                "old_hparams": hps[rec], "new_hparams": new, "resampled": [], "hidden_state": strategy,
                "measurements": {"pbt/hidden_state_drift": rng.uniform(0, 1), "pbt/policy_kl_at_exploit": 0.02,
                                 "pbt/value_gap_at_exploit": 0.5, "pbt/burn_in_truncated": 0},
            })
            quality[rec], vloss[rec], hps[rec] = before_q[donor], before_v[donor], new
            jump_next[rec] = 3.0 if strategy == "zero" else 1.3
    if end:
        events.append({"type": "end", "round": rounds, "time": t + update + 1, "env_steps": update * steps_per_update})
    _write_events(run_dir, events)
    for i in range(population):
        _write_metrics(run_dir, i, rows[i], METRIC_COLUMNS)
    _write_checkpoints(run_dir, rounds, population, scores=list(quality))
    if summary:
        best = max(range(population), key=lambda i: quality[i])
        (run_dir / "summary.json").write_text(json.dumps({"round": rounds, "best_member": best}))
    return {"events": events, "rows": rows}


def _write_checkpoints(run_dir: Path, round_: int, population: int, members=None, scores=None,
                       runner_json: bool = True) -> Path:
    """The runner's commit (PopulationRunner.commit): checkpoints/round_<r:06d>/member_<i>.pt for ``members``
    (default all), then checkpoints/runner.json naming that folder. Returns the round folder."""
    folder = run_dir / "checkpoints" / f"round_{round_:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(population) if members is None else members:
        (folder / f"member_{i}.pt").write_bytes(b"x")
    if runner_json:
        (run_dir / "checkpoints" / "runner.json").write_text(json.dumps({
            "round": round_, "checkpoint_dir": folder.name, "scheduler": {}, "lineage": [[] for _ in range(population)],
            "exploitation_count": [0] * population, "scores": scores or [None] * population, "env_steps": 0}))
    return folder


# A hand-built example: 4 members, 4 rounds.
#   round 1: 0 -> 3
#   round 2: 3 -> 1 (3 carries 0's weights) and 1 -> 2 (same round: 1 donates its own pre-exploit weights)
#   round 3: 2 -> 0
# written with a crash after round 3 and a resume from round 2, so round 3 and a stale exploit (1 -> 0) appear twice.
HAND_EVENTS = [
    {"type": "start", "round": 0, "time": 0, "population_size": 4,
     "hparams": [{"learning_rate": 1e-3}] * 4, "search_space": {"learning_rate": SEARCH_SPACE["learning_rate"]}},
    {"type": "round", "round": 1, "time": 1, "env_steps": 100, "updates": 2, "scores": [5, 3, 2, 1],
     "hparams": [{"learning_rate": 1e-3}] * 4},
    {"type": "exploit", "round": 1, "time": 1, "env_steps": 100, "recipient": 3, "donor": 0,
     "hidden_state": "burn_in", "new_hparams": {"learning_rate": 1.2e-3}},
    {"type": "round", "round": 2, "time": 2, "env_steps": 200, "updates": 4, "scores": [5, 4, 1, 6],
     "hparams": [{"learning_rate": 1e-3}] * 3 + [{"learning_rate": 1.2e-3}]},
    {"type": "exploit", "round": 2, "time": 2, "env_steps": 200, "recipient": 1, "donor": 3,
     "hidden_state": "zero", "new_hparams": {"learning_rate": 1.44e-3}},
    {"type": "exploit", "round": 2, "time": 2, "env_steps": 200, "recipient": 2, "donor": 1,
     "hidden_state": "burn_in", "new_hparams": {"learning_rate": 0.8e-3}},
    # first attempt at round 3, then a crash
    {"type": "round", "round": 3, "time": 3, "env_steps": 300, "updates": 6, "scores": [1, 7, 8, 6],
     "hparams": [{"learning_rate": 1e-3}, {"learning_rate": 1.44e-3}, {"learning_rate": 0.8e-3},
                 {"learning_rate": 1.2e-3}]},
    {"type": "exploit", "round": 3, "time": 3, "env_steps": 300, "recipient": 0, "donor": 1,
     "hidden_state": "zero", "new_hparams": {"learning_rate": 9e-9}},
    {"type": "resume", "round": 2, "time": 10},
    {"type": "round", "round": 3, "time": 11, "env_steps": 300, "updates": 6, "scores": [1, 7, 8, 6],
     "hparams": [{"learning_rate": 1e-3}, {"learning_rate": 1.44e-3}, {"learning_rate": 0.8e-3},
                 {"learning_rate": 1.2e-3}]},
    {"type": "exploit", "round": 3, "time": 11, "env_steps": 300, "recipient": 0, "donor": 2,
     "hidden_state": "burn_in", "new_hparams": {"learning_rate": 0.96e-3}},
    {"type": "round", "round": 4, "time": 12, "env_steps": 400, "updates": 8, "scores": [9, 7, 8, 6],
     "hparams": [{"learning_rate": 0.96e-3}, {"learning_rate": 1.44e-3}, {"learning_rate": 0.8e-3},
                 {"learning_rate": 1.2e-3}]},
]
