"""The process backend's layout: contiguous shards, threads per worker that never oversubscribe (whole runs on
worker processes, kills and restarts: tests/pbt/test_backends.py)."""

from __future__ import annotations

import pytest

from rpbt.config import ConfigError
from rpbt.pbt.backends import process as process_mod
from rpbt.pbt.backends.process import split_shards, threads_per_worker
from tests.conftest import tiny_config


def test_shards_are_contiguous_and_threads_do_not_oversubscribe():
    assert split_shards(8, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert split_shards(5, 2) == [[0, 1, 2], [3, 4]]
    assert split_shards(3, 3) == [[0], [1], [2]]
    assert split_shards(4, 1) == [[0, 1, 2, 3]]
    for bad in (0, 5):
        with pytest.raises(ValueError, match="backend.num_workers"):
            split_shards(4, bad)
    assert threads_per_worker(2, 2) == 1
    assert threads_per_worker(1, 2) == 2
    assert threads_per_worker(3, 2) == 1  # more workers than CPUs: one thread each, never zero
    assert threads_per_worker(2, 16, requested=4) == 4
    assert threads_per_worker(2, 16, requested=32) == 8
    with pytest.raises(ConfigError, match="backend.num_workers"):  # checked with the config, for every backend
        tiny_config("backend.num_workers=5")
    assert process_mod.num_process_workers(tiny_config(), cpus=16) == 4  # capped at the population
