"""A shard: one batched population policy with its environments, holding a subset of the population, and the
commands a backend runs on it.

The local backend holds the whole population as one shard; the process and Ray backends hold one shard per worker
(:class:`~rpbt.pbt.backends.commands.ShardServer`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from rpbt.agent.ppo import auxiliary_losses, make_policy, make_runner, train_iteration
from rpbt.checkpoint import MemberState
from rpbt.config import Config
from rpbt.pbt.transfer import exploit
from rpbt.seeding import exploit_seed, fault_retry_seed, restore_env_seeds

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
    """A population policy holding a subset of the population (local: all of it), its environments and its loss
    terms: the unit a backend trains, scores, snapshots and transfers into.

    Args:
        cfg: run config. member_ids: global member indices. hparams: initial hyperparameters per member.

    Attributes: ``policy`` (:class:`~rpbt.agent.policy.PopulationPolicy`, the member states), ``runner``
    (:class:`~rpbt.envs.runner.EnvRunner`, the environments and their carried state), ``aux_losses``.
    Raises :class:`~rpbt.envs.factory.EnvError` / :class:`~rpbt.config.ConfigError` for a bad env or device.
    """

    def __init__(self, cfg: Config, member_ids: Sequence[int], hparams: Sequence[dict]):
        self.cfg = cfg
        self.member_ids = list(member_ids)
        self.local = {m: i for i, m in enumerate(self.member_ids)}
        self.policy = make_policy(cfg, self.member_ids, hparams)
        self.runner = make_runner(cfg, self.policy)
        self.aux_losses = auxiliary_losses(cfg)

    def train(self, n_updates: int) -> dict[int, list[dict[str, float]]]:
        """Run ``n_updates`` PPO updates; returns per member the list of per-update metric rows."""
        out: dict[int, list[dict[str, float]]] = {m: [] for m in self.member_ids}
        for _ in range(n_updates):
            metrics = train_iteration(self.policy, self.runner, self.aux_losses)
            rows = metrics_to_rows(metrics, self.member_ids)
            env_steps, updates = self.policy.env_steps.tolist(), self.policy.updates.tolist()
            for m in self.member_ids:
                i = self.local[m]
                rows[m]["env_steps"] = int(env_steps[i])
                rows[m]["update"] = int(updates[i])
                out[m].append(rows[m])
        return out

    def member_info(self) -> dict[int, dict[str, Any]]:
        """Per member: env_steps, updates, hparams, the returns of its recent finished episodes (oldest first, up to
        the policy's episode capacity) and ``episodes``, its count of finished episodes (member state: an exploit
        copies the donor's)."""
        info = {}
        for m in self.member_ids:
            i = self.local[m]
            info[m] = {
                "env_steps": int(self.policy.env_steps[i]),
                "updates": int(self.policy.updates[i]),
                "hparams": self.policy.get_hparams(i),
                "recent_returns": self.policy.recent_returns(i).tolist(),
                "episodes": int(self.policy.episodes[i]),
            }
        return info

    def evaluate_members(self, members: Sequence[int], split: str = "validation") -> dict[int, list[float]]:
        """Deterministic evaluation returns of ``members`` (global ids in this shard), batched in one pass.

        ``env.trading.eval_episodes`` episodes per member (trading: evenly spaced starts over ``split``; other envs:
        seeded from ``run.seed``), see :func:`rpbt.evaluation.policy.evaluate_members`. Leaves the training state
        (weights, normalizers, carried states, RNG) untouched, so it is deterministic for a fixed member state.
        Returns ``{member: [return per episode]}``; raises ``KeyError`` for a member not in this shard.
        """
        from rpbt.evaluation.policy import evaluate_members

        local = [self.local[int(m)] for m in members]
        results = evaluate_members(self.policy, local, self.cfg.env, split,
                                   episodes=self.cfg.env.trading.eval_episodes, seed=self.cfg.run.seed)
        return {int(m): results[i].returns for m, i in zip(members, local)}

    def evaluate_episodes(self, members: Sequence[int], seeds: Sequence[int], split: str = "validation"
                          ) -> dict[int, dict[str, list]]:
        """Deterministic episodes of ``members`` reset with ``seeds`` (one episode each, the same for every member;
        held-out scoring, :func:`rpbt.seeding.heldout_episode_seeds`), batched in one pass, on ``split`` (trading;
        ignored otherwise). Leaves the training state untouched. Returns ``{member: {"returns": [float per
        episode], "lengths": [env steps per episode]}}``; raises ``KeyError`` for a member not in this shard."""
        from rpbt.evaluation.policy import evaluate_members

        local = [self.local[int(m)] for m in members]
        results = evaluate_members(self.policy, local, self.cfg.env, split, seeds=list(seeds))
        return {int(m): {"returns": results[i].returns, "lengths": results[i].lengths} for m, i in zip(members, local)}

    def evaluate(self, member: int, split: str = "validation") -> list[float]:
        """Deterministic evaluation returns of one member; see :meth:`evaluate_members`."""
        return self.evaluate_members([member], split)[int(member)]

    def snapshot(self, member: int) -> MemberState:
        return self.policy.snapshot(self.local[member])

    def restore(self, member: int, state: MemberState, retry: int = 0) -> None:
        """Restore a member from a checkpoint (resume, worker restart) and start it on fresh episodes.

        The carried state is reset (zero LSTM states) and the member's environments reset with seeds derived from
        its seed and the restored env-step count (:func:`rpbt.seeding.restore_env_seeds`), so a resumed run does
        not replay the episodes its members started the run with. ``retry`` > 0 (a restore after the member's
        ``retry``-th fault) also salts the episode seeds and re-seeds the member's generator
        (:func:`rpbt.seeding.fault_retry_seed`), so the retry does not replay the attempt that failed.
        """
        i = self.local[member]
        self.policy.restore(i, state)
        steps = int(self.policy.env_steps[i])
        if retry:
            self.policy.generators[i].manual_seed(fault_retry_seed(self.cfg.run.seed, int(member), steps, retry))
        self.runner.reset_member(i, restore_env_seeds(self.policy.seeds[i], steps, self.runner.num_envs, retry))

    def exploit(self, recipient: int, donor_state: MemberState, new_hparams: dict[str, float]) -> dict[str, float]:
        """Transfer ``donor_state`` into ``recipient`` (a global id) with the configured strategies.

        The recipient's RNG is forked, not shared with the donor: it is re-seeded from (run seed, recipient id,
        the update count it inherited) (:func:`rpbt.seeding.exploit_seed`), so it depends on neither the backend
        nor the shard layout. With ``pbt.transfer: weights_only`` the recipient keeps its own generator (and the
        rest of its state but the weights): this is the one place every backend restores an exploit, whether the
        donor's state came from this shard or as bytes from another.
        """
        i = self.local[recipient]
        return exploit(self.policy, self.runner, i, donor_state, new_hparams, strategy=self.cfg.pbt.hidden_state,
                       optimizer_state=self.cfg.pbt.optimizer_state,
                       rng_seed=exploit_seed(self.cfg.run.seed, int(recipient), int(donor_state.tensors["updates"])),
                       transfer=self.cfg.pbt.transfer)

    def close(self) -> None:
        self.runner.close()
