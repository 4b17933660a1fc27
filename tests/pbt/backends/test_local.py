"""The local backend: the whole population in this process as one shard; exploits are index copies, and a batch of
exploits reads every donor before any recipient is written."""

from __future__ import annotations

import torch

from rpbt.checkpoint import MemberState, hparam_key
from rpbt.config import HPARAM_NAMES, member_hparams
from rpbt.pbt.backends.local import LocalBackend
from tests.conftest import tiny_config

HPARAM_KEYS = {hparam_key(name) for name in HPARAM_NAMES}


def _same_but_hparams(a: MemberState, b: MemberState) -> bool:
    keys = a.tensors.keys() - HPARAM_KEYS
    return a.tensors.keys() == b.tensors.keys() and all(torch.equal(a.tensors[k], b.tensors[k]) for k in keys)


def _backend(cfg):
    return LocalBackend(cfg, [dict(member_hparams(cfg), learning_rate=1e-3 * (m + 1))
                              for m in range(cfg.pbt.population_size)])


def test_train_restore_and_checkpoints_cover_every_member(tmp_path):
    cfg = tiny_config("pbt.population_size=3")
    backend = _backend(cfg)
    try:
        rows = backend.train(2)
        assert sorted(rows) == [0, 1, 2] and all(len(rows[m]) == 2 for m in rows)
        assert sorted(backend.member_info()) == [0, 1, 2]
        s0 = backend.snapshot(0)
        assert not _same_but_hparams(s0, backend.snapshot(2)), "members trained apart differ"
        backend.restore(2, s0)
        restored = backend.snapshot(2)
        assert _same_but_hparams(s0, restored) and restored.hparams() == s0.hparams()  # restore is the whole state
        backend.save_checkpoints(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["member_0.pt", "member_1.pt", "member_2.pt"]
        assert _same_but_hparams(MemberState.load(tmp_path / "member_1.pt"), backend.snapshot(1))
    finally:
        backend.close()


def test_exploit_many_reads_every_donor_before_writing_any_recipient():
    cfg = tiny_config("pbt.population_size=2")
    backend = _backend(cfg)
    try:
        backend.train(1)
        before = {m: backend.snapshot(m) for m in (0, 1)}
        hp = {m: dict(before[m].hparams(), learning_rate=5e-4 * (m + 1)) for m in (0, 1)}
        measured = backend.exploit_many([(1, 0, hp[0]), (0, 1, hp[1])])  # a swap: needs both donors read first
        assert len(measured) == 2
        after = {m: backend.snapshot(m) for m in (0, 1)}
        assert _same_but_hparams(after[1], before[0]) and _same_but_hparams(after[0], before[1])
        assert after[1].hparams()["learning_rate"] == 5e-4 and after[0].hparams()["learning_rate"] == 1e-3
    finally:
        backend.close()
