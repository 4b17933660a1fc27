"""Exploit as one transfer: member state, explored hyperparameters, then a named hidden-state strategy.

PBT's exploit copies a donor into a recipient (Jaderberg et al. 2017). rpbt moves the donor's whole
:class:`~rpbt.checkpoint.MemberState` (weights, optimizer, normalizers, gradient scaler, hyperparameters, counters,
RNG; ``pbt.transfer: whole_state``; ``weights_only``, an ablation setting, moves only the network weights, see
:func:`weights_only_state`), then applies the explored hyperparameters on top (they win over anything the donor's
state carried: the learning rate in force is the explored one — Ray issue 62173), then handles the LSTM states of
the recipient's running episodes, which were computed by the old weights, with a strategy:

- ``keep``: leave them (stale; the baseline the spike study compares against; a warning is logged);
- ``zero``: zero every carried state ((h, c) of an LSTM, h of a GRU), shape (P, L, N, H) preserved;
- ``reset_episodes``: zero the states and end every running episode (the previous rollout bootstrapped its last
  step with the value of the next observation, as GAE does at a time limit), then reset the environments;
- ``burn_in``: recompute each environment's state, for the actor and every critic, by replaying the raw
  observations of its current episode, normalized with the donor's statistics, through the new weights from a
  zero state (Kapturowski et al. 2019, R2D2). At most ``burn_in_max_steps`` observations are kept per
  environment; a longer episode replays its last window from zero and is counted as truncated. With
  ``agent.network.prev_action`` / ``prev_reward`` the history also keeps the previous action features and reward
  fed with each observation (zero at the episode's first step), and burn-in replays them alongside. An
  environment whose next step starts a new episode gets a zero state (the LSTM resets it before that step anyway).
  Only the recipient's weights are run, and the recurrence runs in ``torch.nn.LSTM``'s (``torch.nn.GRU``'s) fused
  loop (which :class:`~rpbt.agent.networks.PopLSTM` (:class:`~rpbt.agent.networks.PopGRU`) matches by construction;
  any other trunk class replays through its own ``sequence``): about 10-30 ms for 8 environments x 512 steps on
  one CPU thread (``benchmarks/burn_in_cost.py``). The history is not part of the member state: it is part of the
  environments' carried state (:class:`~rpbt.envs.runner.CarriedState`).

Why ``reset_episodes`` needs no extra bootstrap: an exploit happens between updates, after the previous rollout was
learned from. That rollout's last step was bootstrapped by GAE with ``last_values`` = V(s_T), the value of the
observation the cut episode would have continued from (:func:`rpbt.agent.rollout.compute_gae`), which is exactly
how a time-limit truncation is bootstrapped; the cut episode is not recorded as finished (it does not enter the
score), and the next rollout starts every cut environment with ``episode_start`` True, so no advantage is carried
across the cut.

Measurements at every exploit, whatever the strategy, compare the state the strategy left with the burned-in one:
``pbt/hidden_state_drift`` (||left - burned|| / ||burned|| over every trunk's carried tensors: h and c, or h),
``pbt/policy_kl_at_exploit``
(mean KL(pi(.|burned) || pi(.|left)) at the next observation), ``pbt/value_gap_at_exploit`` (mean |V_left - V_burned|
in return units) and ``pbt/burn_in_truncated`` (environments whose episode was longer than the window). Environments
whose next step starts a new episode are left out of the drift (their state is reset before it is used) and
contribute 0 to the KL and the value gap, for the same reason. Under ``burn_in`` the first three read 0 by
construction, so the same three comparisons are also made *before* the strategy is applied, between the
recipient's stale pre-exploit states (computed by its old weights) and the burned-in ones:
``pbt/stale_state_drift``, ``pbt/stale_policy_kl_at_exploit`` and ``pbt/stale_value_gap_at_exploit``, in every mode:
what ``keep`` would have left, i.e. what burn-in (or zero, or reset) corrected.
"""

from __future__ import annotations

import logging
import warnings
from typing import Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

from rpbt.agent.networks import LSTMState, PopGRU, PopLSTM, RecurrentTrunk
from rpbt.agent.policy import PopulationPolicy
from rpbt.checkpoint import CheckpointError, MemberState
from rpbt.envs.runner import CarriedState, EnvRunner

log = logging.getLogger(__name__)

HIDDEN_STATE_STRATEGIES = ("keep", "zero", "reset_episodes", "burn_in")
TRANSFERS = ("whole_state", "weights_only")


class _TrunkSequence(nn.Module):
    """Adapter so :func:`torch.func.functional_call` can run :meth:`RecurrentTrunk.sequence` with swapped weights."""

    def __init__(self, trunk: nn.Module):
        super().__init__()
        self.trunk = trunk

    def forward(self, obs: Tensor, state: LSTMState, starts: Tensor) -> tuple[Tensor, LSTMState]:
        return self.trunk.sequence(obs, state, starts)


def continuing_envs(carried: CarriedState, member: int) -> Tensor:
    """(N,) bool: member's environments whose next step continues the current episode (no episode start)."""
    return ~carried.episode_start[member].bool()


def _member_params(module: nn.Module, member: int) -> dict[str, Tensor]:
    """Member's slice (1, ...) of every parameter and buffer of ``module`` (a module encoder may hold buffers)."""
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    return {k: v[member:member + 1] for k, v in tensors.items()}


@torch.no_grad()
def _final_states_torch_lstm(trunk: RecurrentTrunk, member: int, obs: Tensor, kept: Tensor) -> LSTMState:
    """Member's trunk over left-aligned sequences obs (1, N, W, D) of lengths kept (N,) from zero: (h, c) (L, N, H)
    for :class:`PopLSTM`, (h,) for :class:`PopGRU`.

    The encoder runs as the module itself (member's weight slice); the recurrence runs in ``torch.nn.LSTM``'s
    (``torch.nn.GRU``'s) fused loop, which the population cell matches by construction (same gate order and
    equations; the LSTM's one bias is ``bias_ih = bias``, ``bias_hh = 0``). Packed sequences give each environment
    its state after its own last step.
    """
    feats = functional_call(trunk.encoder, _member_params(trunk.encoder, member), (obs,))[0]  # (N, W, F)
    cell = trunk.cell
    params = []  # torch's flat weight list, per layer: weight_ih (GH, in), weight_hh (GH, H), bias_ih, bias_hh
    for layer in cell.layer_weights():
        w_ih, w_hh, *biases = (t[member] for t in layer)
        if len(biases) == 1:  # the LSTM's single bias
            biases = [biases[0], torch.zeros_like(biases[0])]
        params += [w_ih.t().contiguous(), w_hh.t().contiguous(), *biases]
    packed = nn.utils.rnn.pack_padded_sequence(feats, kept.clamp(min=1), batch_first=True, enforce_sorted=False)
    zeros = torch.zeros(cell.num_layers, feats.shape[0], cell.hidden_size, device=feats.device, dtype=feats.dtype)
    # torch.nn.LSTM's / GRU's own kernel (what their ``forward`` calls on packed input), without building a module:
    # args (data, batch_sizes, (h0, c0) or h0, params, has_biases, num_layers, dropout, train, bidirectional).
    with warnings.catch_warnings():  # cuDNN asks for one flat weight buffer; these weights are used once
        warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
        if isinstance(cell, PopGRU):
            _, h = torch.gru(packed.data, packed.batch_sizes, zeros, params, True, cell.num_layers, 0.0, False, False)
            final: tuple[Tensor, ...] = (h,)
        else:
            _, h, c = torch.lstm(packed.data, packed.batch_sizes, (zeros, zeros), params, True, cell.num_layers, 0.0,
                                 False, False)
            final = (h, c)
    # Packed outputs are in sorted order; put the final states back in environment order.
    return tuple(t.index_select(1, packed.unsorted_indices) for t in final)


@torch.no_grad()
def _final_states_generic(trunk: nn.Module, member: int, obs: Tensor, kept: Tensor) -> LSTMState:
    """Same as :func:`_final_states_torch_lstm` through the trunk's own ``sequence`` (right-aligned, reset at each
    sequence's first step), for trunks that are not exactly :class:`RecurrentTrunk` + :class:`PopLSTM`."""
    _, n_envs, width, _ = obs.shape
    shift = (width - kept).tolist()
    right = torch.stack([torch.roll(obs[0, n], shift[n], dims=0) for n in range(n_envs)], 1)  # (W, N, D)
    starts = torch.zeros(1, width, n_envs, dtype=torch.bool, device=obs.device)
    starts[0, (width - kept).clamp(max=width - 1), torch.arange(n_envs)] = True
    zero = tuple(s.to(obs.device) for s in trunk.cell.initial_state(n_envs, 1))
    _, final = functional_call(_TrunkSequence(trunk), {"trunk." + k: v for k, v in
                                                        _member_params(trunk, member).items()},
                               (right.unsqueeze(0), zero, starts))
    return tuple(t[0] for t in final)


@torch.no_grad()
def burn_in_states(policy: PopulationPolicy, carried: CarriedState, member: int
                   ) -> tuple[dict[str, LSTMState], int]:
    """Member's carried LSTM states recomputed from zero over its current episodes with its current weights.

    The member's raw observations (at most W = ``carried.history_length`` per environment) are normalized with the
    member's current observation statistics, followed by the previous actions and rewards fed with them when the
    policy is fed those (:meth:`~rpbt.agent.policy.PopulationPolicy.network_input`), and replayed through the
    member's slice of every trunk (actor and each critic) from a zero state. Only that member's weights are run, so
    the cost does not grow with the population.

    Returns ({name: (h, c) or (h,)} each (L, N, H)) and the number of truncated burn-ins (continuing environments whose
    episode is longer than W). An environment whose next step starts a new episode gets a zero state and is not
    counted. Raises ``RuntimeError`` when the carried state keeps no history (W = 0).
    """
    going = continuing_envs(carried, member).to(carried.history_start.device)
    all_lengths = carried.episode_lengths()[member]
    lengths = torch.where(going, all_lengths, torch.zeros_like(all_lengths))
    (raw, prev), kept = carried.history_windows(member, lengths)  # (N, W', D), (N, W', A' + R'), (N,)
    truncated = int((lengths > carried.history_length).sum())
    n_envs, width, _ = raw.shape
    # Normalize with the member's statistics (the normalizer is population-batched; D is small, so this is cheap).
    x = torch.zeros(policy.population, n_envs, width, policy.obs_dim, device=raw.device)
    x[member] = raw
    obs = policy.normalize_obs(x)[member:member + 1]  # (1, N, W', D)
    if prev.shape[-1] > 0:  # the previous inputs as they were fed (already zero at episode starts)
        obs = torch.cat([obs, prev.unsqueeze(0).to(obs.dtype)], -1)  # (1, N, W', I)
    empty = kept == 0
    out: dict[str, LSTMState] = {}
    for name in policy.state_names():
        trunk = policy.trunk(name)
        fast = type(trunk) is RecurrentTrunk and type(trunk.cell) in (PopLSTM, PopGRU)
        state = (_final_states_torch_lstm if fast else _final_states_generic)(trunk, member, obs, kept.cpu())
        state = tuple(t.clone() for t in state)
        for t in state:
            t[:, empty] = 0.0
        out[name] = tuple(t.contiguous() for t in state)
    return out, truncated


@torch.no_grad()
def outputs_at_next_obs(policy: PopulationPolicy, carried: CarriedState, member: int,
                        states: Optional[dict[str, LSTMState]] = None) -> tuple[Tensor, Tensor]:
    """Member's policy head and value at its next observation, from its carried recurrent states or from ``states``
    ({name: (h, c) or (h,)} each (L, N, H)) in their place.

    Returns (head, value): the whole population's policy head (P, N, ...) (other members as carried) and the
    member's V (N,) in return units (the smaller critic with twin critics). One population step; the carried
    state is not changed.
    """
    hidden = carried.hidden
    if states is not None:
        hidden = {k: tuple(t.clone() for t in st) for k, st in carried.hidden.items()}
        for name, state in states.items():
            for t, t_s in zip(hidden[name], state):
                t[member] = t_s
    dev = policy.device
    out = policy.act(carried.next_obs.to(dev), hidden, carried.prev_action.to(dev), carried.prev_reward.to(dev),
                     carried.episode_start.to(dev), values=True)
    return out.head, policy.values_from_raw(out.values_raw).min(0).values[member]


@torch.no_grad()
def exploit_measurements(policy: PopulationPolicy, carried: CarriedState, member: int,
                         burned: dict[str, LSTMState],
                         burned_outputs: Optional[tuple[Tensor, Tensor]] = None) -> dict[str, float]:
    """Compare member's carried states (as the strategy left them) with ``burned`` at the next observation.

    burned: {name: (h, c) or (h,)} each (L, N, H), the reference states (from :func:`burn_in_states`); burned_outputs:
    :func:`outputs_at_next_obs` with them, when already computed. Returns
    ``pbt/hidden_state_drift`` = ||left - burned|| / ||burned|| (Frobenius norm over every carried h (and c) of the
    continuing environments; 0 when both are zero, ``inf`` when only the reference is zero),
    ``pbt/policy_kl_at_exploit`` = mean over environments of KL(pi(.|burned) || pi(.|left)) at ``next_obs``, and
    ``pbt/value_gap_at_exploit`` = mean |V_left - V_burned| in return units (the smaller critic with twin critics).
    When the carried states are bit-identical to ``burned`` (after ``burn_in``), the left outputs are the burned
    ones and are not recomputed.
    """
    going = continuing_envs(carried, member).to(policy.device)
    num, den = 0.0, 0.0
    identical = True
    for name, state_b in burned.items():
        pairs = list(zip(carried.hidden[name], state_b))  # (left, burned) per carried tensor: h and c, or h
        identical = identical and all(torch.equal(left[member], ref) for left, ref in pairs)
        num += float(sum((left[member][:, going] - ref[:, going]).pow(2).sum() for left, ref in pairs))
        den += float(sum(ref[:, going].pow(2).sum() for _, ref in pairs))
    drift = (num ** 0.5) / (den ** 0.5) if den > 0 else (0.0 if num == 0 else float("inf"))
    head_b, v_b = burned_outputs if burned_outputs is not None else outputs_at_next_obs(policy, carried, member,
                                                                                        burned)
    head_l, v_l = (head_b, v_b) if identical else outputs_at_next_obs(policy, carried, member)
    kl = policy.kl_between(head_b, head_l)[member].clamp_min(0.0)  # KL >= 0; nearly equal ones round to -1e-10
    return {
        "pbt/hidden_state_drift": drift,
        "pbt/policy_kl_at_exploit": float(kl.mean()),
        "pbt/value_gap_at_exploit": float((v_l - v_b).abs().mean()),
    }


def weights_only_state(policy: PopulationPolicy, member: int, donor_state: MemberState) -> MemberState:
    """The member state a ``weights_only`` exploit restores: member ``member``'s own state (normalizer statistics,
    optimizer moments and step, gradient-scaler statistics, hyperparameters, counters, recent returns, generator)
    with every network parameter (``named_parameters``: trunks, heads, log-std) replaced by ``donor_state``'s.

    What a ``load_state_dict`` of the policy's weights alone does; an ablation setting (``pbt.transfer``), not a
    recommendation: the donor's weights then meet the recipient's input scaling and optimizer moments. Raises
    :class:`~rpbt.checkpoint.CheckpointError` naming the weights ``donor_state`` lacks.
    """
    own = policy.snapshot(member)
    weights = [name for name, _ in policy.named_parameters()]
    missing = [name for name in weights if name not in donor_state.tensors]
    if missing:
        raise CheckpointError(f"donor state lacks network weights {missing[:5]} (different agent config?)")
    tensors = dict(own.tensors)
    tensors.update({name: donor_state.tensors[name] for name in weights})
    return MemberState(tensors=tensors, rng=own.rng, meta=dict(own.meta))


def apply_hidden_state_strategy(policy: PopulationPolicy, runner: EnvRunner, member: int, strategy: str,
                                burned: Optional[dict[str, LSTMState]] = None) -> None:
    """Apply ``strategy`` to member's carried states (see module docstring). Raises ``ValueError`` if unknown."""
    if strategy not in HIDDEN_STATE_STRATEGIES:
        raise ValueError(f"pbt.hidden_state must be one of {HIDDEN_STATE_STRATEGIES}, got {strategy!r}")
    carried = runner.carried
    if strategy == "keep":
        return
    if strategy == "burn_in":
        if burned is None:
            burned, _ = burn_in_states(policy, carried, member)
        for name, state in burned.items():
            for t, t_b in zip(carried.hidden[name], state):
                t[member] = t_b
        return
    for state in carried.hidden.values():
        for t in state:
            t[member] = 0.0
    if strategy == "reset_episodes":
        runner.reset_member(member)


_warned_keep = False


def _warn_keep() -> None:
    global _warned_keep
    _warned_keep = True
    log.warning("pbt.hidden_state=keep reuses LSTM states computed by the old weights for the new ones; it is a "
                "baseline for comparison only (use burn_in)")


def exploit(policy: PopulationPolicy, runner: EnvRunner, recipient: int, donor_state: MemberState,
            new_hparams: dict[str, float], strategy: str = "burn_in", optimizer_state: str = "copy",
            rng_seed: Optional[int] = None, transfer: str = "whole_state") -> dict[str, float]:
    """Copy ``donor_state`` into member ``recipient`` of ``policy`` as one transfer; ``runner`` holds the
    recipient's environments and carried state.

    Order: restore the whole member state (``transfer='weights_only'``: only the network weights, the recipient
    keeping the rest of its own state, :func:`weights_only_state`); reset the optimizer moments if
    ``optimizer_state == 'reset'``; apply ``new_hparams`` on top; re-seed the recipient's generator with
    ``rng_seed`` when given (otherwise it continues the donor's stream: donor and recipient would then draw the
    same action noise and minibatch orders, so a population run forks it — see :func:`rpbt.seeding.exploit_seed`;
    with ``weights_only`` the recipient keeps its own generator, which is not the donor's, and ``rng_seed`` is not
    used); recompute the burned-in states (for the strategy or for the measurements); apply the hidden-state
    strategy; measure. Returns the measurements (see module docstring). Only call between updates.

    Raises ``ValueError`` for an unknown strategy, optimizer_state or transfer,
    :class:`~rpbt.checkpoint.CheckpointError` when the state does not fit the policy.
    """
    if strategy not in HIDDEN_STATE_STRATEGIES:
        raise ValueError(f"pbt.hidden_state must be one of {HIDDEN_STATE_STRATEGIES}, got {strategy!r}")
    if optimizer_state not in ("copy", "reset"):
        raise ValueError(f"pbt.optimizer_state must be 'copy' or 'reset', got {optimizer_state!r}")
    if transfer not in TRANSFERS:
        raise ValueError(f"pbt.transfer must be one of {TRANSFERS}, got {transfer!r}")
    if strategy == "keep" and not _warned_keep:
        _warn_keep()
    if transfer == "weights_only":
        policy.restore(recipient, weights_only_state(policy, recipient, donor_state))
        rng_seed = None  # the recipient's own stream goes on
    else:
        policy.restore(recipient, donor_state)
    if optimizer_state == "reset":
        policy.optimizer.reset_member(recipient)
    policy.set_hparams(recipient, new_hparams)
    if rng_seed is not None:
        policy.generators[recipient].manual_seed(int(rng_seed))
    carried = runner.carried
    truncated = 0
    burned = None
    stale: dict[str, float] = {}
    if carried.history_length > 0:
        burned, truncated = burn_in_states(policy, carried, recipient)
        burned_outputs = outputs_at_next_obs(policy, carried, recipient, burned)
        # The recipient's own carried states, before the strategy touches them, under the new weights.
        stale = exploit_measurements(policy, carried, recipient, burned, burned_outputs)
    apply_hidden_state_strategy(policy, runner, recipient, strategy, burned)
    measurements: dict[str, float] = {"pbt/burn_in_truncated": float(truncated)}
    if burned is not None:
        # After reset_episodes every environment starts a new episode: the comparison is then over no continuing
        # environment (drift, KL and value gap are 0: the zero state is the right one for a new episode).
        # (reset_episodes changed the next observations: the burned states' outputs are computed again there)
        reference = None if strategy == "reset_episodes" else burned_outputs
        measurements.update(exploit_measurements(policy, carried, recipient, burned, reference))
        measurements["pbt/stale_state_drift"] = stale["pbt/hidden_state_drift"]
        measurements["pbt/stale_policy_kl_at_exploit"] = stale["pbt/policy_kl_at_exploit"]
        measurements["pbt/stale_value_gap_at_exploit"] = stale["pbt/value_gap_at_exploit"]
    return measurements
