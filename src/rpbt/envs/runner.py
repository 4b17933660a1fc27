"""The environment runner: a population's vector environment and the state it carries between steps.

An :class:`EnvRunner` owns P x N environments (N per member, member-major in one Gymnasium ``SyncVectorEnv`` with
same-step autoreset) and one :class:`CarriedState`: every per-environment tensor that lives from one step to the
next — the LSTM states of the running episodes, the next observation, the episode-start flags, the previous action
and reward (when the policy is fed them), the running episode returns and lengths, and the burn-in history of the
current episodes' raw observations and of the previous actions and rewards fed with them. The carried state is
declared once, here; transfer, backends, evaluation and studies act on it through :meth:`CarriedState.member`,
:meth:`CarriedState.reset_member`, :meth:`CarriedState.clone_member` and its tensor form, and list nothing by hand.

Environments run on the CPU (NumPy); the LSTM states and the burn-in history live on the learner's device. The
runner knows nothing of the policy: the policy gives it the initial LSTM states, and it gives back observations,
rewards and episode ends.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Optional, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from rpbt.config import EnvConfig
from rpbt.envs.factory import ActionSpec, make_vector_env, space_info
from rpbt.envs.features import ActionFeatures
from rpbt.seeding import env_seeds

LSTMState = tuple[Tensor, ...]  # a trunk's recurrent state: (h, c) for the LSTM, (h,) for the GRU
STATE_NAMES = ("h", "c")  # the names of a state's tensors in the tensor form, in order


@dataclass
class CarriedState:
    """Every per-environment tensor carried from one step to the next, member dimension first.

    Fields (P members, N environments each, D observation features, L layers, H hidden units, W history steps):

    - ``hidden``: ``{name: (h, c)}`` (LSTM) or ``{name: (h,)}`` (GRU), each (P, L, N, H), for the actor and every
      critic, on the learner's device;
    - ``next_obs``: (P, N, D) float32, the raw observation each environment will show next (CPU);
    - ``episode_start``: (P, N) bool, True where the next step starts an episode (CPU);
    - ``prev_action``: (P, N, A') float32, the features of the last action each environment received
      (:meth:`~rpbt.envs.factory.ActionSpec.features`); A' = 0 when the policy is not fed previous actions (CPU);
    - ``prev_reward``: (P, N, R') float32, the last reward each environment returned; R' = 1 when the policy is fed
      previous rewards, else 0 (CPU). Both are the last step's, also across an episode end: the policy zeroes
      them where ``episode_start`` is True (:meth:`rpbt.agent.policy.PopulationPolicy.network_input`);
    - ``running_return``: (P, N) float64, return of each running episode so far (CPU);
    - ``running_length``: (P, N) int64, its length so far (CPU);
    - ``history_obs``: (P, W, N, D) float32, a ring of the last W raw observations (row ``t % W`` holds global step
      t), on the device; W = 0 when no burn-in history is kept;
    - ``history_prev``: (P, W, N, A' + R') float32, in the same ring, the previous action features and reward fed
      with each recorded observation (already zero at episode starts), on the device;
    - ``history_start``: (P, N) int64, the global step of each environment's current episode's first observation;
    - ``history_steps``: (P,) int64, steps recorded (equal for all members: they step together).

    Every field is a tensor whose first dimension is the member, so member i's carried state is slice i of every
    field (:meth:`member`), and a new field joins :meth:`tensors`, :meth:`member` and :meth:`reset_member` by being
    declared here.
    """

    hidden: dict[str, LSTMState]
    next_obs: Tensor
    episode_start: Tensor
    prev_action: Tensor
    prev_reward: Tensor
    running_return: Tensor
    running_length: Tensor
    history_obs: Tensor
    history_prev: Tensor
    history_start: Tensor
    history_steps: Tensor

    @classmethod
    def initial(cls, hidden: dict[str, LSTMState], next_obs: Tensor, history_steps: int = 0,
                prev_action_dim: int = 0, prev_reward_dim: int = 0) -> "CarriedState":
        """Fresh episodes: the given (zero) LSTM states, ``next_obs`` (P, N, D), all environments starting, zero
        previous actions (A' = ``prev_action_dim`` features) and rewards (R' = ``prev_reward_dim``, 0 or 1)."""
        p, n, d = next_obs.shape
        device = next(iter(hidden.values()))[0].device if hidden else torch.device("cpu")
        return cls(
            hidden={k: tuple(t.clone() for t in st) for k, st in hidden.items()},
            next_obs=next_obs.to(torch.float32).clone(),
            episode_start=torch.ones(p, n, dtype=torch.bool),
            prev_action=torch.zeros(p, n, prev_action_dim),
            prev_reward=torch.zeros(p, n, prev_reward_dim),
            running_return=torch.zeros(p, n, dtype=torch.float64),
            running_length=torch.zeros(p, n, dtype=torch.int64),
            history_obs=torch.zeros(p, history_steps, n, d, device=device),
            history_prev=torch.zeros(p, history_steps, n, prev_action_dim + prev_reward_dim, device=device),
            history_start=torch.zeros(p, n, dtype=torch.int64, device=device),
            history_steps=torch.zeros(p, dtype=torch.int64, device=device),
        )

    # ------------------------------------------------------------------------------------------ tensor form

    def tensors(self) -> dict[str, Tensor]:
        """The flat tensor form ``{name: tensor}`` (hidden states as ``hidden.<name>.h`` and, for the LSTM,
        ``hidden.<name>.c``); no copies."""
        out = {}
        for name, state in self.hidden.items():
            for part, t in zip(STATE_NAMES, state):
                out[f"hidden.{name}.{part}"] = t
        for f in dataclasses.fields(self):
            if f.name != "hidden":
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor]) -> "CarriedState":
        """Inverse of :meth:`tensors`. Raises ``KeyError`` naming a missing field."""
        names = sorted({k.split(".")[1] for k in tensors if k.startswith("hidden.")})
        hidden = {n: tuple(tensors[f"hidden.{n}.{part}"] for part in STATE_NAMES if f"hidden.{n}.{part}" in tensors)
                  for n in names}
        plain = {f.name: tensors[f.name] for f in dataclasses.fields(cls) if f.name != "hidden"}
        return cls(hidden=hidden, **plain)

    def map(self, fn) -> "CarriedState":
        """A new carried state with ``fn`` applied to every tensor (e.g. a slice, a clone, a device move)."""
        return CarriedState.from_tensors({k: fn(v) for k, v in self.tensors().items()})

    # ------------------------------------------------------------------------------------------ one member

    @property
    def population(self) -> int:
        return int(self.next_obs.shape[0])

    @property
    def history_length(self) -> int:
        """W, the number of raw observations kept per environment for burn-in (0: no history)."""
        return int(self.history_obs.shape[1])

    def member(self, i: int) -> "CarriedState":
        """Member i's carried state as views (P = 1): writing into it writes into this state."""
        return self.map(lambda t: t[i:i + 1])

    def clone_member(self, i: int) -> "CarriedState":
        """A copy of member i's carried state (P = 1) that shares no storage with this one."""
        return self.map(lambda t: t[i:i + 1].clone())

    def set_member(self, i: int, state: "CarriedState") -> None:
        """Overwrite member i's slice of every field with ``state`` (P = 1). Raises ``KeyError``/``ValueError``
        when ``state`` has other fields or shapes."""
        mine, theirs = self.tensors(), state.tensors()
        if set(mine) != set(theirs):
            raise KeyError(f"carried state fields differ: {sorted(set(mine) ^ set(theirs))}")
        for k, t in mine.items():
            src = theirs[k]
            if tuple(src.shape) != (1,) + tuple(t.shape[1:]):
                raise ValueError(f"carried state {k}: shape {tuple(src.shape)}, expected {(1,) + tuple(t.shape[1:])}")
            t[i:i + 1].copy_(src)

    @torch.no_grad()
    def reset_member(self, i: int) -> None:
        """Member i starts fresh episodes: zero LSTM states, every environment starting, running counters and
        history cleared. (The environments themselves are reset by :meth:`EnvRunner.reset_member`.)"""
        for state in self.hidden.values():
            for t in state:
                t[i] = 0.0
        self.episode_start[i] = True
        self.prev_action[i] = 0.0
        self.prev_reward[i] = 0.0
        self.running_return[i] = 0.0
        self.running_length[i] = 0
        self.history_start[i] = self.history_steps[i]

    # ------------------------------------------------------------------------------------------ burn-in history

    @torch.no_grad()
    def record(self, raw_obs: Tensor, episode_start: Tensor, prev: Optional[Tensor] = None) -> None:
        """Record the raw observations (P, N, D) the policy is about to see, at ``episode_start`` (P, N) bool,
        and ``prev`` (P, N, A' + R'), the previous action features and reward fed with them (zero at episode
        starts; needed when A' + R' > 0), into the burn-in history (two or three tensor operations; nothing when
        W = 0)."""
        if self.history_length == 0:
            return
        on_cpu = self.history_steps.device.type == "cpu"
        step = int(self.history_steps[0]) if on_cpu else None  # all members step together
        if on_cpu:
            self.history_start.masked_fill_(episode_start, step)
        else:  # on an accelerator: no host synchronisation
            self.history_start.copy_(torch.where(episode_start.to(self.history_start.device),
                                                 self.history_steps.unsqueeze(1), self.history_start))
        rings = [(self.history_obs, raw_obs)]
        if self.history_prev.shape[-1] > 0:
            if prev is None:
                raise ValueError("this carried state keeps previous actions / rewards: record() needs prev")
            rings.append((self.history_prev, prev))
        row = step % self.history_length if on_cpu else None
        for ring, x in rings:
            if row is None:  # on an accelerator: index on the device, no host synchronisation
                idx = (self.history_steps % self.history_length).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[1:])
                ring.scatter_(1, idx, x.unsqueeze(1).to(ring.dtype))
            else:
                ring[:, row].copy_(x)
        self.history_steps += 1

    @torch.no_grad()
    def record_steps(self, raw_obs: Tensor, episode_starts: Tensor, prev: Optional[Tensor] = None) -> None:
        """Record T consecutive steps at once, as T calls of :meth:`record` would (what :func:`rpbt.agent.ppo.collect`
        does after a rollout: a handful of tensor operations per rollout instead of per step).

        raw_obs: (P, T, N, D) raw observations in step order; episode_starts: (P, T, N) bool; prev: (P, T, N, A' + R')
        previous action features and rewards fed with them (needed when A' + R' > 0). Only the last min(T, W) steps
        land in the ring. Works on any device without a host synchronisation. Raises ``ValueError`` when ``prev`` is
        needed and missing.
        """
        width = self.history_length
        if width == 0:
            return
        P, T = raw_obs.shape[:2]
        dev = self.history_steps.device
        starts = episode_starts.to(dev)
        t = torch.arange(T, device=dev)
        # Each environment's last episode start in these T steps (-1: none), as a global step.
        last = torch.where(starts, t.view(1, T, 1), -1).amax(1)  # (P, N)
        self.history_start.copy_(torch.where(last >= 0, self.history_steps.unsqueeze(1) + last, self.history_start))
        rings = [(self.history_obs, raw_obs)]
        if self.history_prev.shape[-1] > 0:
            if prev is None:
                raise ValueError("this carried state keeps previous actions / rewards: record_steps() needs prev")
            rings.append((self.history_prev, prev))
        k = min(T, width)
        rows = (self.history_steps.unsqueeze(1) + t[T - k:]) % width  # (P, k): global step t lives in row t % W
        for ring, x in rings:
            idx = rows.view(P, k, 1, 1).expand(P, k, *ring.shape[2:])
            ring.scatter_(1, idx, x[:, T - k:].to(device=ring.device, dtype=ring.dtype))
        self.history_steps += T

    def episode_lengths(self) -> Tensor:
        """(P, N) observations seen in each environment's current episode (may exceed W: only W are kept)."""
        return self.history_steps.unsqueeze(1) - self.history_start

    def history_window(self, member: int, lengths: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """Member's current-episode observations as one left-aligned batch, oldest first.

        ``lengths`` (N,) overrides the per-environment episode lengths (0 leaves an environment out; at most
        :meth:`episode_lengths`). Returns obs (N, W', D) with environment n's last k_n = min(length_n, W) raw
        observations in ``obs[n, :k_n]`` (zero padding after), W' = max(max_n k_n, 1), and k (N,).
        Raises ``RuntimeError`` when no history is kept (W = 0).
        """
        (obs, _), kept = self.history_windows(member, lengths)
        return obs, kept

    def history_windows(self, member: int, lengths: Optional[Tensor] = None
                        ) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """As :meth:`history_window`, for the observations and the previous inputs fed with them:
        ((obs (N, W', D), prev (N, W', A' + R')), k (N,)), the same rows of both rings."""
        width_max = self.history_length
        if width_max == 0:
            raise RuntimeError("no burn-in history is kept (EnvRunner built with history_steps=0)")
        lengths = self.episode_lengths()[member] if lengths is None else lengths
        kept = lengths.clamp(max=width_max)
        width = max(int(kept.max()), 1)
        n_envs = self.history_obs.shape[2]
        steps = int(self.history_steps[member])
        dev = self.history_obs.device
        outs = tuple(torch.zeros(n_envs, width, ring.shape[3], device=dev)
                     for ring in (self.history_obs, self.history_prev))
        for n in range(n_envs):
            k = int(kept[n])
            if k == 0:
                continue
            rows = torch.arange(steps - k, steps, device=dev) % width_max
            for out, ring in zip(outs, (self.history_obs, self.history_prev)):
                out[n, :k] = ring[member, rows, n]
        return (outs[0], outs[1]), kept


@dataclass
class StepResult:
    """What one step of all P x N environments returned, as (P, N) tensors on the CPU.

    ``final_obs`` (P, N, D) holds the last observation of truncated episodes (zeros elsewhere) and is None when no
    episode was truncated. ``finished`` lists (member, environment, return, length) of the episodes that ended at
    this step, in (member, environment) order.
    """

    reward: Tensor
    terminated: Tensor
    truncated: Tensor
    final_obs: Optional[Tensor]
    finished: list[tuple[int, int, float, int]] = field(default_factory=list)

    @property
    def done(self) -> Tensor:
        return self.terminated | self.truncated


class EnvRunner:
    """P members' environments (N each) and their :class:`CarriedState`.

    Args:
        env_cfg: the ``env`` section (environment id, ``num_envs`` N per member, kwargs, noise, trading data).
        member_seeds: one seed per member (:func:`rpbt.seeding.member_seed`); member p's environments are seeded
            from it alone (:func:`rpbt.seeding.env_seeds`), so a member sees the same episodes alone or batched.
        hidden: the initial (zero) recurrent states ``{name: (h, c) or (h,)}``, each (P, L, N, H), from the policy.
        history_steps: W, raw observations kept per environment for burn-in (0: none).
        prev_action, prev_reward: carry the last action's features and the last reward of every environment
            (``agent.network.prev_action`` / ``prev_reward``: the policy is fed them).
        envs: an existing vector environment of P x N environments (already reset) to adopt instead of building
            one, with ``next_obs`` (P, N, D); used by :meth:`clone_member`.

    Raises :class:`rpbt.envs.factory.EnvError` naming ``env.id`` for an unknown id or unsupported spaces.
    """

    def __init__(self, env_cfg: EnvConfig, member_seeds: Sequence[int], hidden: dict[str, LSTMState],
                 history_steps: int = 0, envs: Optional[gym.vector.VectorEnv] = None,
                 next_obs: Optional[Tensor] = None, prev_action: bool = False, prev_reward: bool = False):
        self.env_cfg = env_cfg
        self.member_seeds = [int(s) for s in member_seeds]
        self.population, self.num_envs = len(self.member_seeds), env_cfg.num_envs
        P, N = self.population, self.num_envs
        if envs is None:
            envs = make_vector_env(env_cfg, P * N)
            seeds = [s for ms in self.member_seeds for s in env_seeds(ms, N)]
            obs, _ = envs.reset(seed=seeds)
            next_obs = torch.as_tensor(np.asarray(obs), dtype=torch.float32)
        self.envs = envs
        self.obs_dim = int(np.prod(envs.single_observation_space.shape))
        self.action_spec: ActionSpec = space_info(envs.single_action_space)
        self.action_features = ActionFeatures(self.action_spec)
        self.prev_action, self.prev_reward = bool(prev_action), bool(prev_reward)
        assert next_obs is not None
        self.carried = CarriedState.initial(hidden, next_obs.view(P, N, self.obs_dim), history_steps,
                                            self.action_spec.dim if prev_action else 0, 1 if prev_reward else 0)

    # ------------------------------------------------------------------------------------------ stepping

    def step(self, actions: Tensor) -> StepResult:
        """Step every environment with ``actions`` on the CPU: (P, N) indices for Discrete, (P, N, K) for
        MultiDiscrete, (P, N, A) for Box; update the carried state.

        Actions reach the environments through :meth:`~rpbt.envs.factory.ActionSpec.to_env` (Box clipped to the
        action space's bounds). The carried ``next_obs``, ``episode_start``, previous action and reward (when
        carried) and the running returns and lengths move on; the LSTM states and the history are the policy's to
        update.
        """
        P, N, D = self.population, self.num_envs, self.obs_dim
        flat = self.action_spec.to_env(actions.reshape(P * N, *actions.shape[2:]).numpy())
        next_obs, reward, term, trunc, infos = self.envs.step(flat)
        # Bookkeeping in NumPy on (P, N) arrays (a NumPy call on a few numbers costs a fraction of a torch call);
        # the carried counters are CPU tensors, updated in place through NumPy views of their storage.
        reward = np.array(reward, dtype=np.float32).reshape(P, N)
        term = np.array(term, dtype=np.bool_).reshape(P, N)  # copies (np.array): the tensors returned share memory
        trunc = np.asarray(trunc, dtype=np.bool_).reshape(P, N) & ~term
        done = term | trunc
        final_obs = None
        if trunc.any():
            final = np.stack([np.asarray(o, dtype=np.float32).reshape(D) if m else np.zeros(D, np.float32)
                              for o, m in zip(infos["final_obs"], trunc.reshape(-1))])
            final_obs = torch.from_numpy(final).view(P, N, D)
        carried = self.carried
        reward_t = torch.from_numpy(reward)
        if self.prev_action:
            carried.prev_action = self.action_features(torch.as_tensor(flat).reshape(P, N, *actions.shape[2:]))
        if self.prev_reward:
            carried.prev_reward = reward_t.unsqueeze(-1).clone()
        running_return, running_length = carried.running_return.numpy(), carried.running_length.numpy()
        running_return += reward  # float64 += float32, as torch's reward.double() added
        running_length += 1
        finished = []
        if done.any():
            finished = [(int(p), int(n), float(running_return[p, n]), int(running_length[p, n]))
                        for p, n in zip(*np.nonzero(done))]
            running_return[done] = 0.0
            running_length[done] = 0
        carried.next_obs = torch.as_tensor(np.asarray(next_obs), dtype=torch.float32).view(P, N, D)
        done_t = torch.from_numpy(done)
        carried.episode_start = done_t
        return StepResult(reward_t, torch.from_numpy(term), torch.from_numpy(trunc), final_obs, finished)

    def reset_member(self, member: int, seeds: Optional[Sequence[int]] = None) -> None:
        """End member's running episodes (not recorded as finished), reset its N environments (with ``seeds`` when
        given, else continuing their own RNG) and its carried state (:meth:`CarriedState.reset_member`)."""
        P, N = self.population, self.num_envs
        mask = np.zeros(P * N, dtype=np.bool_)
        mask[member * N:(member + 1) * N] = True
        all_seeds: Optional[list[Optional[int]]] = None
        if seeds is not None:
            all_seeds = [None] * (P * N)
            all_seeds[member * N:(member + 1) * N] = [int(s) for s in seeds]
        obs, _ = self.envs.reset(seed=all_seeds, options={"reset_mask": mask})
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32).view(P, N, self.obs_dim)
        self.carried.next_obs[member] = obs_t[member]
        self.carried.reset_member(member)

    def clone_member(self, member: int) -> "EnvRunner":
        """A separate single-member runner that continues exactly where ``member`` stands: deep copies of its N
        environments (Gymnasium environments, POPGym's included, deep-copy with their RNG, so a copy steps exactly
        like the original) and a copy of its carried state. This runner is not modified."""
        N = self.num_envs
        subs = [copy.deepcopy(e) for e in self.envs.envs[member * N:(member + 1) * N]]
        envs = gym.vector.SyncVectorEnv([(lambda e=e: e) for e in subs],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        mine = self.carried.clone_member(member)
        clone = EnvRunner(self.env_cfg, [self.member_seeds[member]], mine.hidden, mine.history_length, envs=envs,
                          next_obs=mine.next_obs, prev_action=self.prev_action, prev_reward=self.prev_reward)
        clone.carried = mine
        return clone

    def close(self) -> None:
        self.envs.close()


__all__ = ["CarriedState", "EnvRunner", "StepResult"]
