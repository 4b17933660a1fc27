"""benchmarks/peers.py: the pure parts against hand-computed values (best-so-far curve, time to target, standard
error, one arm's summary, the ratio, the search space against rpbt's default), the process-tree measurement against
a child of known CPU time and memory, and a smoke run of each arm at a tiny budget: rpbt always, a peer where its
venv exists (skipped, naming the venv and the setup command, otherwise)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from tests.benchmarks import TINY_BENCH, load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peers.py"
TINY_RPBT = TINY_BENCH


@pytest.fixture(scope="module")
def peers():
    return load_script("peers")


def test_best_so_far_sums_steps_in_time_order_and_keeps_the_running_max(peers):
    rows = [  # out of time order on purpose; member b has no episode yet at t=101
        {"t": 103.0, "member": "a", "delta_steps": 100, "ret100": 0.5},
        {"t": 101.0, "member": "b", "delta_steps": 50, "ret100": None},
        {"t": 102.0, "member": "a", "delta_steps": 100, "ret100": 0.7},
        {"t": 104.0, "member": "b", "delta_steps": 50, "ret100": float("nan")},
        {"t": 105.0, "member": "b", "delta_steps": 50, "ret100": 0.96},
    ]
    curve = peers.best_so_far(rows, t0=100.0)
    assert [c[0] for c in curve] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [c[1] for c in curve] == [50, 150, 250, 300, 350]
    assert curve[0][2] == -math.inf
    assert [c[2] for c in curve[1:]] == [0.7, 0.7, 0.7, 0.96]
    assert peers.time_to_target(curve, 0.95) == (5.0, 350)
    assert peers.time_to_target(curve, 0.7) == (2.0, 150)
    assert peers.time_to_target(curve, 0.97) == (None, None)


def test_mean_stderr_by_hand(peers):
    mean, se = peers.mean_stderr([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert se == pytest.approx(1.0 / math.sqrt(3.0))  # sample std 1, n 3
    assert peers.mean_stderr([0.4]) == (0.4, None)
    assert peers.mean_stderr([]) == (None, None)


def test_summarize_reads_one_arm_directory(peers, tmp_path):
    (tmp_path / "t0.json").write_text(json.dumps({"t0": 1000.0}))
    rows = [{"t": 1010.0, "member": 0, "delta_steps": 1024, "ret100": 0.5},
            {"t": 1020.0, "member": 1, "delta_steps": 1024, "ret100": 0.96},
            {"t": 1030.0, "member": 0, "delta_steps": 1024, "ret100": 0.9}]
    (tmp_path / "curve.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "result.json").write_text(json.dumps({"status": "ok", "train_end": 1031.0,
                                                      "eval": {"member": 1, "returns": [1.0, 0.5, 0.0, 0.5]},
                                                      "versions": {"torch": "x"}, "settings": {"k": 1}}))
    s = peers.summarize(tmp_path, 0.95, {"wall_s": 40.0, "cpu_s": 70.0, "peak_rss_mb": 500.0})
    assert s["status"] == "ok"
    assert (s["time_to_target_s"], s["env_steps_to_target"]) == (20.0, 2048)
    assert s["final_best"] == 0.96 and s["total_env_steps"] == 3072 and s["train_end_s"] == 31.0
    assert s["eval_mean"] == pytest.approx(0.5)
    assert s["eval_stderr"] == pytest.approx(math.sqrt(1.0 / 6.0) / 2.0)  # sample var 1/6, n 4
    assert (s["eval_member"], s["eval_episodes"]) == (1, 4)
    assert (s["wall_s"], s["cpu_s"], s["peak_rss_mb"]) == (40.0, 70.0, 500.0)
    assert s["curve"] == [[10.0, 1024, 0.5], [20.0, 2048, 0.96], [30.0, 3072, 0.96]]
    json.dumps(s)  # the summary goes into the results JSON as it is


def test_aggregate_ratio_is_fastest_peer_over_rpbt(peers):
    def run(t, ev):
        return {"time_to_target_s": t, "env_steps_to_target": None if t is None else 1000, "eval_mean": ev,
                "cpu_s": 1.0, "peak_rss_mb": 1.0}

    agg = peers.aggregate({"rpbt": [run(10.0, 1.0)], "ray_tune_pbt": [run(80.0, 0.9)], "agilerl": [run(40.0, 0.8)],
                           "sb3_fixed": [run(5.0, 0.7)]})
    assert agg["ratio"] == {"fastest_peer": "agilerl", "peer_over_rpbt_time": 4.0}  # sb3_fixed is no tuner
    agg = peers.aggregate({"rpbt": [run(10.0, 1.0)], "agilerl": [run(None, 0.2)]})
    assert "ratio" not in agg and agg["agilerl"]["reached"] == 0


def test_the_peers_search_rpbts_default_space(peers):
    from rpbt.config import Config

    space = Config().pbt.search_space
    assert set(space) == set(peers.SEARCH_SPACE)
    for name, (low, high, scale) in peers.SEARCH_SPACE.items():
        dim = space[name]
        assert (dim.low, dim.high) == (low, high)
        assert (dim.scale == "log") == (scale == "log")
    import numpy as np

    draws = [peers.sample_space(np.random.default_rng(k)) for k in range(50)]
    for name, (low, high, _) in peers.SEARCH_SPACE.items():
        assert all(low <= d[name] <= high for d in draws)


def test_run_measured_sees_cpu_time_and_memory_of_the_child_tree(peers, tmp_path):
    child = ("import subprocess, sys, time\n"
             "x = bytearray(150 * 2**20)\n"
             "for i in range(0, len(x), 4096): x[i] = 1\n"
             "t = time.process_time()\n"
             "while time.process_time() - t < 2.5: pass\n")
    usage = peers.run_measured([sys.executable, "-c", child], {}, tmp_path / "log.txt", limit_s=60)
    assert usage["rc"] == 0
    assert usage["peak_rss_mb"] >= 150
    assert 1.5 <= usage["cpu_s"] <= usage["wall_s"] + 1.0
    assert usage["cpu_curve"] and usage["cpu_curve"][-1][1] <= usage["cpu_s"] + 1e-9


def _smoke(peers, tmp_path, arm, budget, overrides=(), task="PositionOnlyCartPoleEasy"):
    argv = ["--tasks", task, "--arms", arm, "--population", "2", "--budget", str(budget), "--eval-episodes", "2",
            "--cap-s", "300", "--out", str(tmp_path / "out"), "--results", str(tmp_path), "--img",
            str(tmp_path / "img")]
    for o in overrides:
        argv += ["--override", o]
    assert peers.main(argv) == 0
    doc = json.loads((tmp_path / f"peers_{task}.json").read_text())
    assert doc["target"] == peers.TASKS[task]["target"] and doc["machine"]["cores"] >= 1
    (r,) = doc["runs"][arm]
    assert r["status"] == "ok", r["status"]
    assert r["seed"] == 0
    assert r["eval_episodes"] == 2 and r["eval_mean"] is not None
    assert r["total_env_steps"] >= 2 * budget
    assert r["curve"] and r["wall_s"] > 0 and r["cpu_s"] > 0 and r["peak_rss_mb"] > 0
    assert r["versions"]["torch"].startswith("2.13.0")
    assert (tmp_path / "img" / f"peers_{task}.png").stat().st_size > 0
    return r


def test_smoke_rpbt_arm(peers, tmp_path):
    r = _smoke(peers, tmp_path, "rpbt", 320, TINY_RPBT)
    assert r["settings"]["config"] == "shipped default job"


def test_smoke_rpbt_arm_on_the_continuous_pendulum(peers, tmp_path):
    r = _smoke(peers, tmp_path, "rpbt", 640, TINY_RPBT, task="PendulumNoVel")  # 320 steps per env: an episode
    assert r["settings"]["overrides"]["agent.gamma"] == 0.9  # the task's gamma, as every arm uses
    assert -1700.0 <= r["eval_mean"] <= 0.0  # Pendulum-v1's return range over 200 steps


@pytest.mark.parametrize("arm,task", [(arm, task) for arm in ("ray_tune_pbt", "agilerl", "sb3_fixed")
                                      for task in ("PositionOnlyCartPoleEasy", "PendulumNoVel")]
                         + [("ray_tune_pb2", "PositionOnlyCartPoleEasy")])
def test_smoke_peer_arm(peers, tmp_path, arm, task):
    python = peers.venv_python(arm)
    if not python.exists():
        pytest.skip(f"{arm}: its venv {python.parent.parent.name} is missing (python benchmarks/peers.py --setup)")
    r = _smoke(peers, tmp_path, arm, 2048, task=task)
    if task == "PendulumNoVel":
        assert -1700.0 <= r["eval_mean"] <= 0.0


def test_merge_runs_keeps_other_seeds_and_arms_and_replaces_a_rerun(peers, tmp_path):
    import argparse

    path = tmp_path / "peers_T.json"
    old = {"options": {"budget": 100, "population": 8}, "runs": {
        "rpbt": [{"seed": 0, "v": "old0"}, {"seed": 1, "v": "old1"}],
        "agilerl": [{"v": "no seed key: seed 0"}]}}
    path.write_text(json.dumps(old))
    a = argparse.Namespace(budget=100, population=8)
    merged = peers.merge_runs(path, {"rpbt": [{"seed": 1, "v": "new1"}, {"seed": 2, "v": "new2"}]}, a)
    assert [r["v"] for r in merged["rpbt"]] == ["old0", "new1", "new2"]
    assert merged["agilerl"] == [{"v": "no seed key: seed 0"}]
    other = argparse.Namespace(budget=200, population=8)  # another budget: nothing of the old file is kept
    assert peers.merge_runs(path, {"rpbt": [{"seed": 1}]}, other) == {"rpbt": [{"seed": 1}]}


def test_parse_seeds(peers):
    assert peers.parse_seeds("3") == [0, 1, 2]
    assert peers.parse_seeds("1,2") == [1, 2]
    with pytest.raises(ValueError):
        peers.parse_seeds("x")


def test_env_action_clips_box_actions_and_makes_discrete_ones_ints(peers):
    import gymnasium as gym
    import numpy as np

    box = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    a = peers.env_action(np.array([[3.5]]), box)
    assert a.shape == (1,) and a.dtype == np.float32 and a[0] == 2.0
    assert peers.env_action([-0.25], box)[0] == -0.25
    d = peers.env_action(np.array([3]), gym.spaces.Discrete(4))
    assert d == 3 and isinstance(d, int)


def test_pendulum_no_vel_is_pendulum_with_the_velocity_zeroed():
    import gymnasium as gym
    import numpy as np

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import peers_envs  # noqa: F401  (registers PendulumNoVel-v1)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    masked, full = gym.make("PendulumNoVel-v1"), gym.make("Pendulum-v1")
    o_m, _ = masked.reset(seed=7)
    o_f, _ = full.reset(seed=7)
    assert o_m.dtype == np.float32 and masked.observation_space.contains(o_m)
    np.testing.assert_array_equal(o_m, [o_f[0], o_f[1], 0.0])
    steps = 0
    for t in range(300):
        action = np.array([np.sin(t / 5.0)], np.float32)
        o_m, r_m, term_m, trunc_m, _ = masked.step(action)
        o_f, r_f, term_f, trunc_f, _ = full.step(action)
        steps += 1
        assert r_m == r_f and o_f[2] != 0.0
        np.testing.assert_array_equal(o_m, [o_f[0], o_f[1], 0.0])
        if trunc_m or term_m:
            assert (trunc_f, term_f) == (trunc_m, term_m)
            break
    assert steps == 200  # Pendulum-v1's time limit is kept


def test_prev_action_wrapper_one_hots_observation_and_previous_action(peers):
    import gymnasium as gym
    import numpy as np

    class Cards(gym.Env):  # observation = step count mod 3
        observation_space, action_space = gym.spaces.Discrete(3), gym.spaces.Discrete(2)

        def reset(self, seed=None, options=None):
            self.t = 0
            return 0, {}

        def step(self, action):
            self.t += 1
            return self.t % 3, 1.0, False, self.t >= 4, {}

    env = peers._prev_action_wrapper(Cards())
    assert env.observation_space.shape == (5,)
    obs, _ = env.reset(seed=1)
    np.testing.assert_array_equal(obs, [1, 0, 0, 0, 0])
    obs, *_ = env.step(1)
    np.testing.assert_array_equal(obs, [0, 1, 0, 0, 1])
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs, [0, 0, 1, 1, 0])
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)


def test_table_row_and_ratio_line(peers):
    run = {"status": "ok", "time_to_target_s": 12.345, "cpu_s_to_target": 20.2, "env_steps_to_target": 40960,
           "final_best": 1.0, "eval_mean": 0.99425, "eval_stderr": 0.0012, "wall_s": 60.4, "cpu_s": 110.6,
           "peak_rss_mb": 1500.2, "mean_load_1min": 2.04}
    doc = {"runs": {"rpbt": [run], "agilerl": [{"status": "capped at 900 s", "time_to_target_s": None}]},
           "aggregate": {"ratio": {"fastest_peer": "agilerl", "peer_over_rpbt_time": 3.456}}}
    lines = peers.table(doc).splitlines()
    assert lines[2] == "| rpbt | 0 | ok | 12.3 | 20 | 40,960 | 1.000 | 0.994 +- 0.001 | 60 | 111 | 1500 | 2.0 |"
    assert lines[3].startswith("| agilerl | 0 | capped at 900 s | n/a | n/a | n/a | n/a | n/a |")
    assert lines[-1] == "Fastest peer to the target: agilerl, 3.46x rpbt's time."


def test_cpu_at_interpolates_the_sampled_cpu_curve(peers):
    curve = [(1.0, 0.5), (2.0, 2.5), (3.0, 4.5)]
    assert peers.cpu_at(curve, 1.5) == pytest.approx(1.5)
    assert peers.cpu_at(curve, 3.0) == pytest.approx(4.5)
    assert peers.cpu_at(curve, 0.0) == pytest.approx(0.5)  # before the first sample: its value
    assert peers.cpu_at(curve, None) is None and peers.cpu_at([], 2.0) is None


def test_window_mean_rebuilds_the_last_100_episode_mean(peers):
    nan = float("nan")
    # newest first: 50 episodes at 1.0, then 50 of the 60 at 0.5 (the rest fall outside the window)
    assert peers.window_mean([(0.5, 60), (nan, 0), (1.0, 50)]) == pytest.approx(0.75)
    assert peers.window_mean([(0.2, 3), (0.4, 1)]) == pytest.approx(0.25)  # fewer than 100 episodes: all of them
    assert peers.window_mean([(0.9, 2)], window=1) == pytest.approx(0.9)
    assert peers.window_mean([]) is None and peers.window_mean([(nan, 0)]) is None
