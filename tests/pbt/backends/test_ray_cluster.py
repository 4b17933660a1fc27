"""The Ray backend on a simulated cluster (``ray.cluster_utils.Cluster``: a head without CPUs and two worker nodes of
2 CPUs and one logical GPU each, all on this machine): shards spread over the nodes, a cluster too small refused
within seconds, GPUs reserved per shard, a custom environment shipped with ``backend.runtime_env``, a worker node lost
mid-round, and the driver killed and resumed. The parts that need no Ray: tests/pbt/backends/test_ray.py."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpbt.config import load_config
from rpbt.envs.errors import EnvError
from rpbt.pbt.backends.errors import BackendError
from rpbt.pbt.runner import PopulationRunner
from tests.conftest import tiny_config

if os.environ.get("RPBT_REQUIRE_RAY"):  # CI: a missing Ray is a failure, not a skip
    import ray
    from ray.cluster_utils import Cluster
else:
    ray = pytest.importorskip("ray", reason="the optional 'ray' package is not installed (pip install 'rpbt[ray]')")
    from ray.cluster_utils import Cluster

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a simulated Ray cluster (POSIX)")

REPO = Path(__file__).resolve().parents[3]
FAST = ["run.torch_threads=1", "pbt.perturbation_interval=1", "pbt.burn_in=1", "run.seed=2"]


def _chaos():
    spec = importlib.util.spec_from_file_location("chaos_resume", REPO / "benchmarks" / "chaos_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster():
    assert not ray.is_initialized()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(2):
        c.add_node(num_cpus=2, num_gpus=1)  # logical GPUs: Ray schedules them, torch here sees none
    c.wait_for_nodes()
    yield c
    if ray.is_initialized():
        ray.shutdown()
    c.shutdown()


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines() if line.strip()]


def _cfg(run: Path, cluster, *overrides: str):
    return tiny_config(f"run.dir={run}", *FAST, "backend.kind=ray", f"backend.address={cluster.address}",
                       "backend.num_workers=2", *overrides)


def test_a_lost_node_restarts_its_shard_on_another_node_and_the_round_is_replayed(cluster, tmp_path):
    chaos = _chaos()
    run = tmp_path / "run"
    cfg = load_config(None, [*chaos.TINY, "backend.kind=ray", f"backend.address={cluster.address}",
                             "backend.num_workers=2", f"run.dir={run}", "run.total_env_steps=384"])  # 6 rounds
    runner = PopulationRunner(cfg, run)
    runner.start()
    backend = runner.backend
    nodes = {backend.node_of(k)["node_id"] for k in range(2)}
    workers = {n.node_id for n in cluster.worker_nodes}
    assert len(nodes) == 2 and nodes <= workers, "placement spread: one shard per worker node"
    runner.play_round()
    lost = backend.node_of(0)["node_id"]
    handle = backend._handles[0]
    original = handle.send

    def send(command):  # the node goes while shard 0 trains round 2
        original(command)
        if command.name == "train":
            handle.send = original
            cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == lost))
            cluster.add_node(num_cpus=2, num_gpus=1)

    handle.send = send
    restarted_on = []
    restart = backend._restart
    backend._restart = lambda k: (restart(k), restarted_on.append(backend.node_of(k)["node_id"]))
    runner.run(progress=False)
    assert restarted_on and lost not in restarted_on
    failures = [e for e in _events(run) if e["type"] == "failure"]
    assert [(f["round"], f["shard"], f["members"], f["action"]) for f in failures] == [(2, 0, [0, 1], "restart")]
    assert lost in failures[0]["cause"]
    assert chaos.check_final(run, rounds=runner.total_rounds, keep=2) == [], "nothing lost or duplicated"


def test_a_killed_driver_resumes_on_the_cluster_from_its_committed_rounds(cluster, tmp_path):
    chaos = _chaos()
    run, rounds = tmp_path / "run", 40
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    train = [sys.executable, "-m", "rpbt.cli", "train", *chaos.TINY, "backend.kind=ray",
             f"backend.address={cluster.address}", "backend.num_workers=2", f"run.dir={run}",
             f"run.total_env_steps={rounds * chaos.INTERVAL * chaos.STEPS_PER_UPDATE}"]
    proc = subprocess.Popen(train, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    t0 = time.time()
    while (chaos._committed(run) or {}).get("round", 0) < 3 and proc.poll() is None and time.time() - t0 < 180:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the driver could be killed: give it more rounds"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed, problems = chaos.check_killed(run)
    assert committed >= 3 and problems == []
    resumed = subprocess.run([sys.executable, "-m", "rpbt.cli", "resume", str(run)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert chaos.check_final(run, rounds=rounds, keep=2) == []


def test_a_cluster_too_small_is_refused_in_seconds_with_the_numbers(cluster, tmp_path):
    t0 = time.time()
    with pytest.raises(BackendError, match=r"3 shards of 1 CPU and 0.6 GPU each do not fit.*only 2 do.*"
                                           r"2 CPU / 1 GPU"):
        PopulationRunner(_cfg(tmp_path / "run", cluster, "backend.num_workers=3", "backend.num_gpus_per_shard=0.6"),
                         tmp_path / "run").start()
    assert time.time() - t0 < 60
    assert not ray.is_initialized(), "the backend shuts down the Ray connection it opened"


def test_a_shard_gets_the_gpu_ray_reserves_for_it(cluster, tmp_path):
    # Two shards of half a GPU each: Ray assigns each a GPU id; torch here has no CUDA, so the shard says so,
    # naming the GPU Ray gave it and its node (on a GPU node the learner runs on cuda:0, see shard_device).
    with pytest.raises(BackendError, match=r"shard \d \(members \[\d, \d\]\) on node .*: Ray assigned GPU \['0'\], "
                                           r"but torch there sees no CUDA device"):
        PopulationRunner(_cfg(tmp_path / "run", cluster, "backend.num_gpus_per_shard=0.5"), tmp_path / "run").start()


def test_a_custom_environment_reaches_the_nodes_through_runtime_env(cluster, tmp_path, monkeypatch):
    module = tmp_path / "shipped" / "rpbt_cluster_env.py"
    module.parent.mkdir()
    module.write_text("import gymnasium\n"
                      "gymnasium.register('ClusterCartPole-v0', entry_point='gymnasium.envs.classic_control:"
                      "CartPoleEnv', max_episode_steps=50)\n")
    monkeypatch.syspath_prepend(str(module.parent))  # the driver imports it; the nodes' workers do not
    env_id = "env.id=rpbt_cluster_env:ClusterCartPole-v0"
    with pytest.raises(EnvError, match=r"shard 0 \(members \[0, 1\]\) on node .*rpbt_cluster_env"):
        PopulationRunner(_cfg(tmp_path / "bare", cluster, env_id), tmp_path / "bare").start()
    shipped = json.dumps({"py_modules": [str(module)]})
    run = tmp_path / "shipped_run"
    runner = PopulationRunner(_cfg(run, cluster, env_id, f"backend.runtime_env={shipped}",
                                  "run.total_env_steps=128"), run)
    runner.start()
    runner.run(progress=False)
    assert [e["round"] for e in _events(run) if e["type"] == "round"] == list(range(1, runner.total_rounds + 1))



def test_shards_on_the_nodes_write_to_the_storage_and_a_restart_reads_from_it(cluster, tmp_path):
    run, storage = tmp_path / "run", tmp_path / "shared"
    runner = PopulationRunner(_cfg(run, cluster, f"run.storage=file://{storage}", "run.total_env_steps=192"), run)
    runner.start()
    runner.play_round()
    backend = runner.backend
    sent = []
    run_all = backend._run_all
    backend._run_all = lambda commands: (sent.extend(c.name for c in commands.values()), run_all(commands))[1]
    handle = backend._handles[1]
    original = handle.send

    def send(command):  # shard 1's actor dies while it trains round 2: restored from the storage
        original(command)
        if command.name == "train":
            handle.send = original
            ray.kill(handle.actor, no_restart=True)

    handle.send = send
    runner.run(progress=False)
    failures = [e for e in _events(run) if e["type"] == "failure"]
    assert [(f["round"], f["shard"], f["action"]) for f in failures] == [(2, 1, "restart")]
    assert "save_members" in sent and "snapshot_many" not in sent
    last = storage / "run" / f"round_{runner.total_rounds:06d}"
    assert sorted(p.name for p in last.glob("member_*.pt")) == [f"member_{m}.pt" for m in range(4)]
    assert not list((run / "checkpoints").glob("round_*"))


def test_waiting_for_resources_says_what_it_waits_for_and_gives_up_with_the_numbers(cluster, tmp_path, monkeypatch,
                                                                                    capsys):
    from rpbt.pbt.backends.ray import RayBackend

    monkeypatch.setattr(RayBackend, "START_TIMEOUT_S", 3)
    with pytest.raises(BackendError, match=r"did not start within 3 s.*num_cpus_per_shard=3.0 CPUs"):
        PopulationRunner(_cfg(tmp_path / "run", cluster, "backend.num_cpus_per_shard=3",
                              "backend.wait_for_resources=true"), tmp_path / "run").start()
    assert "rpbt: waiting up to 3 s per shard for the cluster to grow: 2 shards of 3 CPU" in capsys.readouterr().out
