"""A shard: one batched learner holding a subset of the population, and the commands a backend runs on it.

The local backend holds the whole population as one shard; the process and Ray backends hold one shard per worker
(:class:`~rpbt.pbt.backends.process.ShardServer`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from rpbt.agent.ppo import RecurrentPPO
from rpbt.checkpoint import MemberState
from rpbt.config import Config
from rpbt.pbt.transfer import attach_history, exploit, reset_member_episodes
from rpbt.seeding import exploit_seed, restore_env_seeds

__all__ = ["Shard", "metrics_to_rows"]


def metrics_to_rows(metrics: dict[str, torch.Tensor], members: Sequence[int]) -> dict[int, dict[str, float]]:
    """Turn {key: (P,) tensor} into {member_id: {key: float}}."""
    rows: dict[int, dict[str, float]] = {m: {} for m in members}
    for key, value in metrics.items():
        vals = value.detach().double().tolist()
        for local, m in enumerate(members):
            rows[m][key] = float(vals[local])
    return rows


class Shard:
    """One batched learner holding a subset of the population (local: all of it).

    Args:
        cfg: run config. member_ids: global member indices. hparams: initial hyperparameters per member.
    """

    def __init__(self, cfg: Config, member_ids: Sequence[int], hparams: Sequence[dict]):
        self.cfg = cfg
        self.member_ids = list(member_ids)
        self.local = {m: i for i, m in enumerate(self.member_ids)}
        self.learner = RecurrentPPO(cfg, self.member_ids, hparams)
        attach_history(self.learner, cfg.pbt.burn_in_max_steps)

    def train(self, n_updates: int) -> dict[int, list[dict[str, float]]]:
        """Run ``n_updates`` PPO updates; returns per member the list of per-update metric rows."""
        out: dict[int, list[dict[str, float]]] = {m: [] for m in self.member_ids}
        for _ in range(n_updates):
            metrics = self.learner.train_update()
            rows = metrics_to_rows(metrics, self.member_ids)
            for m in self.member_ids:
                i = self.local[m]
                rows[m]["env_steps"] = int(self.learner.env_steps[i])
                rows[m]["update"] = int(self.learner.updates[i])
                out[m].append(rows[m])
        return out

    def member_info(self) -> dict[int, dict[str, Any]]:
        """Per member: env_steps, updates, hparams, and the returns of its recent finished episodes."""
        info = {}
        for m in self.member_ids:
            i = self.local[m]
            info[m] = {
                "env_steps": int(self.learner.env_steps[i]),
                "updates": int(self.learner.updates[i]),
                "hparams": self.learner.get_hparams(i),
                "recent_returns": self.learner.recent_returns(i).tolist(),
            }
        return info

    def evaluate_members(self, members: Sequence[int], split: str = "validation") -> dict[int, list[float]]:
        """Deterministic evaluation returns of ``members`` (global ids in this shard), batched in one pass.

        ``env.trading.eval_episodes`` episodes per member (trading: evenly spaced starts over ``split``; other envs:
        seeded from ``run.seed``), see :func:`rpbt.evaluation.policy.evaluate_members`. Leaves the learner's training
        state (weights, normalizers, hidden states, RNG) untouched, so it is deterministic for a fixed member state.
        Returns ``{member: [return per episode]}``; raises ``KeyError`` for a member not in this shard.
        """
        from rpbt.evaluation.policy import evaluate_members

        local = [self.local[int(m)] for m in members]
        results = evaluate_members(self.learner, local, self.cfg.env, split,
                                   episodes=self.cfg.env.trading.eval_episodes, seed=self.cfg.run.seed)
        return {int(m): results[i].returns for m, i in zip(members, local)}

    def evaluate(self, member: int, split: str = "validation") -> list[float]:
        """Deterministic evaluation returns of one member; see :meth:`evaluate_members`."""
        return self.evaluate_members([member], split)[int(member)]

    def snapshot(self, member: int) -> MemberState:
        return self.learner.snapshot(self.local[member])

    def restore(self, member: int, state: MemberState) -> None:
        """Restore a member from a checkpoint (resume, worker restart) and start it on fresh episodes.

        Carried states are zeroed and the member's environments reset with seeds derived from its seed and the
        restored env-step count, so a resumed run does not replay the episodes its members started the run with.
        """
        i = self.local[member]
        self.learner.restore(i, state)
        for h, c in self.learner.hidden_states.values():
            h[i], c[i] = 0.0, 0.0
        steps = int(self.learner.env_steps[i])
        reset_member_episodes(self.learner, i, restore_env_seeds(self.learner.seeds[i], steps, self.learner.num_envs))

    def exploit(self, recipient: int, donor_state: MemberState, new_hparams: dict[str, float]) -> dict[str, float]:
        """Transfer ``donor_state`` into ``recipient`` (a global id) with the configured strategies.

        The recipient's RNG is forked, not shared with the donor: it is re-seeded from (run seed, recipient id,
        the update count it inherited), so it depends on neither the backend nor the shard layout.
        """
        i = self.local[recipient]
        return exploit(self.learner, i, donor_state, new_hparams, strategy=self.cfg.pbt.hidden_state,
                       optimizer_state=self.cfg.pbt.optimizer_state,
                       rng_seed=exploit_seed(self.cfg.run.seed, int(recipient), int(donor_state.tensors["updates"])))

    def close(self) -> None:
        self.learner.close()
