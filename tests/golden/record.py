"""Records the golden runs that pin what the learner computes (``tests/test_golden.py`` compares against them).

Each case is a tiny config run to the end on one backend; the file keeps its events (decisions, scores,
hyperparameters, exploit measurements) with wall times removed, and every member's per-update metrics except the
timing columns. Re-record only when a change is *meant* to alter the numbers, and say so in the commit:

    python tests/golden/record.py            # writes tests/golden/<case>.json
"""

from __future__ import annotations

import csv
import json
import math
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from tests.conftest import TINY  # noqa: E402

# name -> (backend, overrides). Between them they cover every critic kind, twin critics, VGS, SA-PPO, both
# optimizer-state modes, every hidden-state strategy that touches the carried state, and a continuous action space.
CASES: dict[str, tuple[str, list[str]]] = {
    "local_default": ("local", ["run.total_env_steps=320"]),
    "local_twin_categorical_vgs_sappo": ("local", [
        "run.total_env_steps=320", "agent.critic.kind=categorical", "agent.critic.twin=true",
        "agent.vgs.enabled=true", "agent.vgs.warmup=1", "agent.adversarial.enabled=true",
        "agent.adversarial.steps=2", "agent.adversarial.epsilon=0.1", "pbt.optimizer_state=reset",
        "pbt.hidden_state=reset_episodes"]),
    "local_continuous_scalar": ("local", [
        "run.total_env_steps=640", "env.id=Pendulum-v1", "env.kwargs={max_episode_steps: 24}",
        "agent.critic.kind=scalar", "pbt.hidden_state=zero", "agent.clip_range_vf=0.2"]),
    "process_default": ("process", ["run.total_env_steps=320", "backend.num_workers=2"]),
}

# Settings added after the recording that select what the recording computed: whole-rollout replay through the
# autograd reference recurrence. The defaults may differ (segment replay, the fused recurrence: same values up to
# float32 rounding, which SA-PPO's ratio of tiny KLs amplifies); these settings keep pinning the reference path.
REFERENCE = ["agent.bptt_length=null", "agent.fused_lstm=false"]

TIME_KEYS = {"time", "time/fps", "wall_time_s", "train_s", "transfer_s"}


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in TIME_KEYS}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _number(text: str):
    if text == "":
        return None
    try:
        x = float(text)
    except ValueError:
        return text
    return None if math.isnan(x) else x


def run_case(name: str, tmp: Path) -> dict:
    """Run case ``name`` in ``tmp`` and return its events and metrics (times removed)."""
    from rpbt.config import load_config
    from rpbt.pbt.runner import PopulationRunner

    backend, overrides = CASES[name]
    run_dir = tmp / name
    cfg = load_config(None, TINY + REFERENCE + overrides + [f"backend.kind={backend}", f"run.dir={run_dir}"])
    runner = PopulationRunner(cfg, run_dir)
    runner.start()
    runner.run(progress=False)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    metrics = {}
    for m in range(cfg.pbt.population_size):
        with (run_dir / "members" / str(m) / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        metrics[str(m)] = [{k: _number(v) for k, v in row.items() if k not in TIME_KEYS} for row in rows]
    return {"case": name, "backend": backend, "overrides": overrides, "events": _clean(events), "metrics": metrics}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            out = run_case(name, Path(tmp))
            (HERE / f"{name}.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
            print(f"wrote {name}.json: {len(out['events'])} events")


if __name__ == "__main__":
    main()
