"""``rpbt evaluate RUN_DIR``: evaluate a member of a run directory, write the results under ``RUN_DIR/evaluation``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from rpbt.evaluation.policy import check_renders, evaluate_policy, load_member
from rpbt.evaluation.trading import evaluate_trading_split, plot_equity_curves

__all__ = ["evaluate_run"]


def _best_member(run_dir: Path) -> int:
    from rpbt.run.rundir import RunDirError

    path = run_dir / "summary.json"
    if not path.is_file():
        raise RunDirError(f"{path}: not found (no completed round); pass a member id (--member ID; member=ID in "
                          "Python)")
    try:
        summary = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunDirError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(summary, dict):
        raise RunDirError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    best = summary.get("best_member")
    if best is None:
        raise RunDirError(f"{path}: no best_member (no member has a score yet); pass a member id (--member ID; "
                          "member=ID in Python)")
    if not isinstance(best, int) or isinstance(best, bool) or best < 0:
        raise RunDirError(f"{path}: \"best_member\" is {best!r}, expected a member id (an integer >= 0)")
    return best


def evaluate_run(run_dir: Union[str, Path], member: Optional[int] = None, split: str = "test",
                 episodes: Optional[int] = None, seed: Optional[int] = None,
                 video_dir: Union[None, str, Path] = None, env_fn: Optional[Callable[..., Any]] = None
                 ) -> tuple[dict[str, Any], Path, Optional[Path]]:
    """``rpbt evaluate``: evaluate a member of a finished (or interrupted) run and write the results.

    ``member`` defaults to ``summary.json``'s ``best_member``. Trading runs: :func:`evaluate_trading_split` over
    the whole ``split`` (``episodes`` must be None), writing ``RUN_DIR/evaluation/<split>_member<ID>.json`` and
    ``.png`` (equity curves). Other environments: ``episodes`` (default 10) deterministic episodes seeded from
    ``seed`` (default ``run.seed``), reporting ``mean_return``, ``std_return`` (population std, ddof=0),
    ``returns`` and ``lengths``; JSON only. ``video_dir``: also record every episode as an MP4 there (Gymnasium's
    ``RecordVideo``; the report then lists the files under ``videos``). ``env_fn``: the callable the run was trained
    with, when its ``env.entry_point`` cannot be imported.

    Returns ``(report, json_path, png_path or None)``. Raises ``RunDirError`` / ``CheckpointError`` (see
    :func:`load_member`) and ``ValueError`` for ``episodes`` with a trading run, ``episodes < 1`` or a bad split;
    with ``video_dir``, :class:`rpbt.envs.factory.EnvError` for an environment that does not render ``rgb_array``
    frames and :class:`rpbt.extras.MissingExtraError` without moviepy, before any episode runs.
    """
    from rpbt.checkpoint import atomic_write_text
    from rpbt.envs.market_data import SPLIT_NAMES
    from rpbt.run.rundir import require_run_dir

    run_dir = require_run_dir(Path(run_dir))
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise ValueError(f"seed must be an integer >= 0 (or None: the run's run.seed), got {seed!r}")
    if split not in SPLIT_NAMES:
        raise ValueError(f"split (--split) must be one of {', '.join(SPLIT_NAMES)}, got {split!r}")
    if member is None:
        member = _best_member(run_dir)
    cfg, learner = load_member(run_dir, member, env_fn=env_fn)
    if video_dir is not None:
        check_renders(cfg.env, split)
    out_dir = run_dir / "evaluation"
    json_path = out_dir / f"{split}_member{member}.json"
    png_path: Optional[Path] = None
    head = {"run_dir": str(run_dir), "member": int(member), "env_id": cfg.env.id,
            "checkpoint": learner.checkpoint_name,
            "env_steps": int(learner.env_steps[0]), "updates": int(learner.updates[0])}
    if cfg.env.id == "trading":
        if episodes is not None:
            raise ValueError("episodes (--episodes) does not apply to a trading run: it is evaluated as one "
                             "episode over the whole split")
        report = {**head, "data": cfg.env.data.source if cfg.env.data.source != "csv" else cfg.env.data.path,
                  **evaluate_trading_split(learner, 0, cfg.env, split)}
        png_path = out_dir / f"{split}_member{member}.png"
        plot_equity_curves(report, png_path, f"member {member}, {split} split ({report['start_date'][:10]} to "
                                             f"{report['end_date'][:10]}), cost {report['cost_bps']:g} bp")
    else:
        n = 10 if episodes is None else int(episodes)
        if n < 1:
            raise ValueError(f"episodes (--episodes) must be >= 1, got {n}")
        s = cfg.run.seed if seed is None else int(seed)
        result = evaluate_policy(learner, 0, cfg.env, split, episodes=n, seed=s, video_dir=video_dir)
        rets = np.asarray(result.returns)
        report = {**head, "split": split, "episodes": n, "seed": s, "deterministic": True,
                  "mean_return": float(rets.mean()), "std_return": float(rets.std()),
                  "returns": rets.tolist(), "lengths": result.lengths}
        if video_dir is not None:
            report["videos"] = [ep.video for ep in result.episodes]  # this evaluation's, in episode order
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(report, indent=1, allow_nan=False))
    return report, json_path, png_path
