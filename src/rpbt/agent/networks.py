"""Population-batched networks: every parameter has a leading member dimension P.

A population of P small recurrent networks is trained as one batch: linear layers are batched matrix products
(``torch.baddbmm``) over per-member weights, and the LSTM cell is written with the same products because
``nn.LSTM`` cannot be vmapped over stacked weights (pytorch issue 105982). On a CPU the per-call overhead of a
small recurrent net dominates, so one call for 8 members costs little more than one call for 1 member.

Shapes used throughout: P members, N environments (or sequences) per member, T time steps, L recurrent layers,
H hidden units. The recurrence is a named cell (``agent.network.cell``): :class:`PopLSTM` or :class:`PopGRU`. A
carried recurrent state is a tuple of tensors of shape (P, L, N, H) named by the cell's ``state_names``: ``(h, c)``
for the LSTM, ``(h,)`` for the GRU. The encoder in front of the cell is :class:`PopMLP` (the default) or any
per-member module stacked across members (:mod:`rpbt.agent.encoders`); both expose ``weights()`` (a dict of
member-first tensors) and ``functional(weights, x)``, which is how the actor and the critics run as one batch.

Initialization follows CleanRL's PPO-LSTM (orthogonal weights, zero biases; gain sqrt(2) for hidden layers,
0.01 for the policy head, 1 for the value head), done member by member from each member's own
``torch.Generator`` so that member i's initial weights depend only on member i's seed.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

RecurrentState = tuple[Tensor, ...]  # (h, c) for the LSTM, (h,) for the GRU; each (P, L, N, H)
LSTMState = RecurrentState  # the name most callers know


def _orthogonal_(weight: Tensor, gain: float, generators: Sequence[torch.Generator]) -> None:
    """Orthogonally initialize each member's (in, out) slice of ``weight`` (P, in, out) with its own generator."""
    with torch.no_grad():
        for i, gen in enumerate(generators):
            w = torch.empty(weight.shape[2], weight.shape[1])  # torch's (out, in) convention
            nn.init.orthogonal_(w, gain=gain, generator=gen)
            weight[i].copy_(w.t())


class PopLinear(nn.Module):
    """A linear layer per member: ``y[p] = x[p] @ weight[p] + bias[p]``.

    Parameters: ``weight`` (P, in, out), ``bias`` (P, out). ``forward`` takes x of shape (P, N, in) and returns
    (P, N, out); any extra middle dimensions are flattened and restored.
    """

    def __init__(self, population: int, in_features: int, out_features: int):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.zeros(population, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(population, out_features))

    def reset_parameters(self, gain: float, generators: Sequence[torch.Generator]) -> None:
        _orthogonal_(self.weight, gain, generators)
        with torch.no_grad():
            self.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return pop_linear(x, self.weight, self.bias)


def pop_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Functional :class:`PopLinear`: x (P, ..., in), weight (P, in, out), bias (P, out) -> (P, ..., out)."""
    shape = x.shape
    y = torch.baddbmm(bias.unsqueeze(1), x.reshape(shape[0], -1, shape[-1]), weight)
    return y.reshape(*shape[:-1], weight.shape[-1])


class PopLSTM(nn.Module):
    """A multi-layer LSTM per member, written with batched matrix products.

    Gate order (i, f, g, o) and equations as ``torch.nn.LSTM``:
    ``i, f, o = sigmoid(.)``, ``g = tanh(.)``, ``c' = f*c + i*g``, ``h' = o*tanh(c')``.
    Parameters per layer l: ``weight_ih_l`` (P, in_l, 4H), ``weight_hh_l`` (P, H, 4H), ``bias_l`` (P, 4H).

    Episode starts reset the state: before step t, ``h`` and ``c`` of every sequence whose episode starts at t are
    multiplied by zero, both while acting (:meth:`step`) and in replay (:meth:`sequence`).
    """

    kind = "lstm"
    state_names = ("h", "c")

    def __init__(self, population: int, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.population, self.hidden_size, self.num_layers = population, hidden_size, num_layers
        self.weight_ih = nn.ParameterList()
        self.weight_hh = nn.ParameterList()
        self.bias = nn.ParameterList()
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size
            self.weight_ih.append(nn.Parameter(torch.zeros(population, in_size, 4 * hidden_size)))
            self.weight_hh.append(nn.Parameter(torch.zeros(population, hidden_size, 4 * hidden_size)))
            self.bias.append(nn.Parameter(torch.zeros(population, 4 * hidden_size)))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        for layer in range(self.num_layers):
            _orthogonal_(self.weight_ih[layer], 1.0, generators)
            _orthogonal_(self.weight_hh[layer], 1.0, generators)
            with torch.no_grad():
                self.bias[layer].zero_()

    def initial_state(self, num_seqs: int, population: Optional[int] = None) -> LSTMState:
        """Zero (h, c), each (P, L, N, H)."""
        p = self.population if population is None else population
        z = torch.zeros(p, self.num_layers, num_seqs, self.hidden_size)
        return z, z.clone()

    def layer_weights(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Per layer (weight_ih, weight_hh, bias), for the functional forms below."""
        return [(self.weight_ih[k], self.weight_hh[k], self.bias[k]) for k in range(self.num_layers)]

    def step(self, x: Tensor, state: LSTMState, episode_start: Tensor) -> tuple[Tensor, LSTMState]:
        """One time step. x: (P, N, in); state: (h, c) each (P, L, N, H); episode_start: (P, N) bool or 0/1.

        Returns the top layer's output (P, N, H) and the new state.
        """
        return lstm_step(x, state, episode_start, self.layer_weights())

    def sequence(self, x: Tensor, state: LSTMState, episode_starts: Tensor) -> tuple[Tensor, LSTMState]:
        """Replay whole sequences. x: (P, T, N, in); state: initial (h, c) each (P, L, N, H);
        episode_starts: (P, T, N). Returns outputs (P, T, N, H) and the final state.

        The input projection of all T steps is one batched product; the recurrence loops over T.
        """
        return lstm_sequence(x, state, episode_starts, self.layer_weights())


def _lstm_cell(gates: Tensor, c: Tensor) -> LSTMState:
    i, f, g, o = gates.chunk(4, dim=-1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new = torch.sigmoid(o) * torch.tanh(c_new)
    return h_new, c_new


def lstm_step(x: Tensor, state: LSTMState, episode_start: Tensor,
              layers: Sequence[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, LSTMState]:
    """Functional :meth:`PopLSTM.step` with explicit per-layer weights (each with leading member dim)."""
    # On an accelerator the reset mask is always applied (multiplying by 1 changes nothing), so no step waits
    # for the device to say whether any episode starts; on the CPU the check is free and saves the product.
    reset = episode_start.device.type != "cpu" or bool(episode_start.any())
    keep = (1.0 - episode_start.to(x.dtype)).unsqueeze(-1) if reset else None  # (P, N, 1)
    h, c = state
    hs, cs = [], []
    inp = x
    for layer, (w_ih, w_hh, bias) in enumerate(layers):
        h_l, c_l = h[:, layer], c[:, layer]
        if keep is not None:
            h_l, c_l = h_l * keep, c_l * keep
        gates = torch.baddbmm(bias.unsqueeze(1), inp, w_ih)
        gates = torch.baddbmm(gates, h_l, w_hh)
        h_l, c_l = _lstm_cell(gates, c_l)
        hs.append(h_l)
        cs.append(c_l)
        inp = h_l
    return inp, (torch.stack(hs, 1), torch.stack(cs, 1))


def lstm_sequence(x: Tensor, state: LSTMState, episode_starts: Tensor,
                  layers: Sequence[tuple[Tensor, Tensor, Tensor]], fused: bool = False) -> tuple[Tensor, LSTMState]:
    """Functional :meth:`PopLSTM.sequence` with explicit per-layer weights (each with leading member dim).

    x: (P, T, N, in); state: (h, c) each (P, L, N, H); episode_starts: (P, T, N) (the state is zeroed before a
    step where True). Returns the top layer's outputs (P, T, N, H) and the final state. Each layer's input
    projection of all T steps is one batched product; the recurrence loops over T, either with autograd recording
    every step (``fused=False``, the reference) or as one :class:`FusedLSTMRecurrence` (same values, a
    hand-written backward over the whole sequence; used only when gradients are recorded).
    """
    p, t_len, n, _ = x.shape
    keep = (1.0 - episode_starts.to(x.dtype)).unsqueeze(-1)  # (P, T, N, 1)
    if episode_starts.device.type == "cpu":
        any_start = episode_starts.reshape(p, t_len, n).any(2).any(0).tolist()
    else:  # no host synchronisation on an accelerator (see lstm_step)
        any_start = [True] * t_len
    h, c = state
    inp = x
    h_final, c_final = [], []
    for layer, (w_ih, w_hh, bias) in enumerate(layers):
        pre = torch.baddbmm(bias.unsqueeze(1), inp.reshape(p, t_len * n, -1), w_ih).reshape(p, t_len, n, -1)
        h_l, c_l = h[:, layer], c[:, layer]
        if fused and torch.is_grad_enabled():  # without gradients the plain loop is the lean one
            inp, h_l, c_l = FusedLSTMRecurrence.apply(pre, w_hh, h_l, c_l, keep if any(any_start) else None,
                                                      any_start)
        else:
            outs = []
            # unbind, not pre[:, t]: the backward of T selects would each allocate a gradient of pre's full size.
            for t, pre_t in enumerate(pre.unbind(1)):
                if any_start[t]:
                    h_l, c_l = h_l * keep[:, t], c_l * keep[:, t]
                gates = torch.baddbmm(pre_t, h_l, w_hh)
                h_l, c_l = _lstm_cell(gates, c_l)
                outs.append(h_l)
            inp = torch.stack(outs, 1)
        h_final.append(h_l)
        c_final.append(c_l)
    return inp, (torch.stack(h_final, 1), torch.stack(c_final, 1))


class FusedLSTMRecurrence(torch.autograd.Function):
    """The LSTM recurrence over a whole sequence as one autograd node, with a hand-written backward.

    Forward, for t = 0..T-1 (gate order i, f, g, o as ``torch.nn.LSTM``; Hochreiter & Schmidhuber 1997):
    ``h', c' = h * keep_t, c * keep_t`` (the reset at episode starts), ``z = pre_t + h' W``,
    ``i, f, o = sigmoid(z_i, z_f, z_o)``, ``g = tanh(z_g)``, ``c = f c' + i g``, ``h = o tanh(c)``.
    Backward is backpropagation through time written out: per step one batched product (``dz W^T``) and a few
    element-wise operations, and the weight gradient ``sum_t h'_t^T dz_t`` as one batched product at the end —
    instead of autograd recording a dozen nodes per step. ``tests/agent/test_networks.py`` checks it against the
    reference loop (float64 ``gradcheck`` and float32 agreement).

    Inputs: pre (P, T, N, 4H) input projections with the bias; w_hh (P, H, 4H); h0, c0 (P, N, H); keep
    (P, T, N, 1) 0/1 or None (no episode start); any_start: per step, whether to apply keep (a Python list, so
    the loop skips the products where no episode starts). Returns outputs (P, T, N, H), h_T, c_T (P, N, H).
    """

    @staticmethod
    def forward(ctx, pre, w_hh, h0, c0, keep, any_start):
        P, T, N, G = pre.shape
        H = G // 4
        acts = torch.empty_like(pre)  # (P, T, N, 4H): i, f, g, o after their nonlinearity
        h_in = pre.new_empty(P, T, N, H)  # h' fed to step t (after the reset)
        c_in = pre.new_empty(P, T, N, H)
        tanh_c = pre.new_empty(P, T, N, H)
        out = pre.new_empty(P, T, N, H)
        h, c = h0, c0
        for t in range(T):
            if keep is not None and any_start[t]:
                h, c = h * keep[:, t], c * keep[:, t]
            h_in[:, t], c_in[:, t] = h, c
            z = torch.baddbmm(pre[:, t], h, w_hh)
            a = torch.sigmoid(z)
            a[..., 2 * H:3 * H] = torch.tanh(z[..., 2 * H:3 * H])
            acts[:, t] = a
            c = torch.addcmul(a[..., H:2 * H] * c, a[..., :H], a[..., 2 * H:3 * H])
            tc = torch.tanh(c)
            tanh_c[:, t] = tc
            h = a[..., 3 * H:] * tc
            out[:, t] = h
        ctx.save_for_backward(w_hh, acts, h_in, c_in, tanh_c, keep)
        ctx.any_start = any_start
        return out, h, c

    @staticmethod
    def backward(ctx, d_out, d_h, d_c):
        w_hh, acts, h_in, c_in, tanh_c, keep = ctx.saved_tensors
        P, T, N, G = acts.shape
        H = G // 4
        i, f, g, o = acts[..., :H], acts[..., H:2 * H], acts[..., 2 * H:3 * H], acts[..., 3 * H:]
        # Everything that does not depend on the incoming gradient, for all T at once:
        # dz = [dc * i', dc * f', dc * g', dh * o'] with the gate derivatives times their partners.
        partner = torch.cat([g * i * (1 - i), c_in * f * (1 - f), i * (1 - g * g), tanh_c * o * (1 - o)], -1)
        o_dtanh = o * (1 - tanh_c * tanh_c)  # dc/dh through h = o tanh(c)
        w_t = w_hh.transpose(1, 2)
        dz_all = torch.empty_like(acts)
        dh = torch.zeros_like(h_in[:, 0]) if d_h is None else d_h
        dc = torch.zeros_like(h_in[:, 0]) if d_c is None else d_c
        for t in reversed(range(T)):
            if d_out is not None:
                dh = dh + d_out[:, t]
            dc = torch.addcmul(dc, dh, o_dtanh[:, t])
            dz = torch.cat([dc, dc, dc, dh], -1) * partner[:, t]
            dz_all[:, t] = dz
            dh = torch.bmm(dz, w_t)
            dc = dc * f[:, t]
            if keep is not None and ctx.any_start[t]:
                dh, dc = dh * keep[:, t], dc * keep[:, t]
        d_w = torch.bmm(h_in.reshape(P, T * N, H).transpose(1, 2), dz_all.reshape(P, T * N, G))
        return dz_all, d_w, dh, dc, None, None


class PopGRU(nn.Module):
    """A multi-layer GRU per member, written with batched matrix products (Cho et al. 2014).

    Gate order (r, z, n) and equations as ``torch.nn.GRU`` (its documentation):
    ``r = sigmoid(x W_ir + b_ir + h W_hr + b_hr)``, ``z = sigmoid(x W_iz + b_iz + h W_hz + b_hz)``,
    ``n = tanh(x W_in + b_in + r * (h W_hn + b_hn))``, ``h' = (1 - z) * n + z * h``. The two biases are kept
    apart (``b_hn`` sits inside the reset gate's product). Parameters per layer l: ``weight_ih_l`` (P, in_l, 3H),
    ``weight_hh_l`` (P, H, 3H), ``bias_ih_l`` and ``bias_hh_l`` (P, 3H); member i's slices, transposed, are
    ``torch.nn.GRU``'s ``weight_ih_l{l}``, ``weight_hh_l{l}``, ``bias_ih_l{l}``, ``bias_hh_l{l}``.

    The carried state is ``(h,)``, (P, L, N, H); episode starts zero it as :class:`PopLSTM` does.
    """

    kind = "gru"
    state_names = ("h",)

    def __init__(self, population: int, input_size: int, hidden_size: int, num_layers: int = 1):
        super().__init__()
        self.population, self.hidden_size, self.num_layers = population, hidden_size, num_layers
        self.weight_ih = nn.ParameterList()
        self.weight_hh = nn.ParameterList()
        self.bias_ih = nn.ParameterList()
        self.bias_hh = nn.ParameterList()
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size
            self.weight_ih.append(nn.Parameter(torch.zeros(population, in_size, 3 * hidden_size)))
            self.weight_hh.append(nn.Parameter(torch.zeros(population, hidden_size, 3 * hidden_size)))
            self.bias_ih.append(nn.Parameter(torch.zeros(population, 3 * hidden_size)))
            self.bias_hh.append(nn.Parameter(torch.zeros(population, 3 * hidden_size)))

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        """Orthogonal weights (gain 1, as the LSTM's), zero biases, member by member from its own generator."""
        for layer in range(self.num_layers):
            _orthogonal_(self.weight_ih[layer], 1.0, generators)
            _orthogonal_(self.weight_hh[layer], 1.0, generators)
            with torch.no_grad():
                self.bias_ih[layer].zero_()
                self.bias_hh[layer].zero_()

    def initial_state(self, num_seqs: int, population: Optional[int] = None) -> RecurrentState:
        """Zero ``(h,)``, (P, L, N, H)."""
        p = self.population if population is None else population
        return (torch.zeros(p, self.num_layers, num_seqs, self.hidden_size),)

    def layer_weights(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per layer (weight_ih, weight_hh, bias_ih, bias_hh), for the functional forms below."""
        return [(self.weight_ih[k], self.weight_hh[k], self.bias_ih[k], self.bias_hh[k])
                for k in range(self.num_layers)]

    def step(self, x: Tensor, state: RecurrentState, episode_start: Tensor) -> tuple[Tensor, RecurrentState]:
        """One time step. x: (P, N, in); state: ``(h,)`` (P, L, N, H); episode_start: (P, N). Returns the top
        layer's output (P, N, H) and the new state."""
        return gru_step(x, state, episode_start, self.layer_weights())

    def sequence(self, x: Tensor, state: RecurrentState, episode_starts: Tensor) -> tuple[Tensor, RecurrentState]:
        """Replay whole sequences. x: (P, T, N, in); state: ``(h,)`` (P, L, N, H); episode_starts: (P, T, N).
        Returns outputs (P, T, N, H) and the final state."""
        return gru_sequence(x, state, episode_starts, self.layer_weights())


def _gru_cell(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    """``torch.nn.GRU``'s update from gi = x W_ih + b_ih and gh = h W_hh + b_hh (each (..., 3H), order r, z, n)."""
    i_r, i_z, i_n = gi.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def gru_step(x: Tensor, state: RecurrentState, episode_start: Tensor,
             layers: Sequence[tuple[Tensor, Tensor, Tensor, Tensor]]) -> tuple[Tensor, RecurrentState]:
    """Functional :meth:`PopGRU.step` with explicit per-layer weights (each with leading member dim)."""
    reset = episode_start.device.type != "cpu" or bool(episode_start.any())  # as lstm_step
    keep = (1.0 - episode_start.to(x.dtype)).unsqueeze(-1) if reset else None  # (P, N, 1)
    (h,) = state
    hs = []
    inp = x
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
        h_l = h[:, layer]
        if keep is not None:
            h_l = h_l * keep
        h_l = _gru_cell(torch.baddbmm(b_ih.unsqueeze(1), inp, w_ih), torch.baddbmm(b_hh.unsqueeze(1), h_l, w_hh), h_l)
        hs.append(h_l)
        inp = h_l
    return inp, (torch.stack(hs, 1),)


def gru_sequence(x: Tensor, state: RecurrentState, episode_starts: Tensor,
                 layers: Sequence[tuple[Tensor, Tensor, Tensor, Tensor]], fused: bool = False
                 ) -> tuple[Tensor, RecurrentState]:
    """Functional :meth:`PopGRU.sequence`: x (P, T, N, in); state ``(h,)`` (P, L, N, H); episode_starts (P, T, N).

    Each layer's input projection of all T steps is one batched product; the recurrence loops over T with autograd
    recording every step. ``fused`` is accepted for the LSTM's signature and ignored (no fused GRU recurrence).
    """
    p, t_len, n, _ = x.shape
    keep = (1.0 - episode_starts.to(x.dtype)).unsqueeze(-1)  # (P, T, N, 1)
    if episode_starts.device.type == "cpu":
        any_start = episode_starts.reshape(p, t_len, n).any(2).any(0).tolist()
    else:
        any_start = [True] * t_len
    (h,) = state
    inp = x
    h_final = []
    for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
        pre = torch.baddbmm(b_ih.unsqueeze(1), inp.reshape(p, t_len * n, -1), w_ih).reshape(p, t_len, n, -1)
        h_l = h[:, layer]
        outs = []
        for t, pre_t in enumerate(pre.unbind(1)):
            if any_start[t]:
                h_l = h_l * keep[:, t]
            h_l = _gru_cell(pre_t, torch.baddbmm(b_hh.unsqueeze(1), h_l, w_hh), h_l)
            outs.append(h_l)
        inp = torch.stack(outs, 1)
        h_final.append(h_l)
    return inp, (torch.stack(h_final, 1),)


class CellFunctions(NamedTuple):
    """A recurrent cell's module and functional forms (what :func:`trunks_step` / :func:`trunks_sequence` run)."""

    module: type
    step: Callable[..., tuple[Tensor, RecurrentState]]
    sequence: Callable[..., tuple[Tensor, RecurrentState]]


CELLS = {
    "lstm": CellFunctions(PopLSTM, lstm_step, lstm_sequence),
    "gru": CellFunctions(PopGRU, gru_step, gru_sequence),
}


class PopMLP(nn.Module):
    """A stack of :class:`PopLinear` layers with tanh activations (the encoder in front of the LSTM)."""

    def __init__(self, population: int, in_features: int, sizes: Sequence[int]):
        super().__init__()
        self.layers = nn.ModuleList()
        for size in sizes:
            self.layers.append(PopLinear(population, in_features, size))
            in_features = size
        self.out_features = in_features

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        for layer in self.layers:
            layer.reset_parameters(math.sqrt(2.0), generators)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x

    def weights(self) -> dict[str, Tensor]:
        """The layers' weights and biases by name (``layers.k.weight`` (P, in, out), ``layers.k.bias`` (P, out))."""
        return dict(self.named_parameters())

    def functional(self, weights: dict[str, Tensor], x: Tensor) -> Tensor:
        """The encoder with explicit weights of any member count P': x (P', ..., in) -> (P', ..., out)."""
        return _encode(x, [(weights[f"layers.{k}.weight"], weights[f"layers.{k}.bias"])
                           for k in range(len(self.layers))])


class RecurrentTrunk(nn.Module):
    """An encoder followed by a recurrent cell: the body of the actor and of each critic.

    Args: population P; obs_dim I (the network input's width); encoder_sizes (the default :class:`PopMLP`'s
    widths); hidden H and layers L of the cell; cell ``lstm`` or ``gru`` (:data:`CELLS`; the cell is the attribute
    of that name, so the parameter names say which it is); encoder: a population encoder module to use instead of
    the MLP (``out_features``, ``weights()``, ``functional(weights, x)``, ``reset_parameters(generators)``).

    ``step``: x (P, N, I) -> features (P, N, H); ``sequence``: x (P, T, N, I) -> features (P, T, N, H).
    """

    def __init__(self, population: int, obs_dim: int, encoder_sizes: Sequence[int], hidden: int, layers: int,
                 cell: str = "lstm", encoder: Optional[nn.Module] = None):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"agent.network.cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.encoder = PopMLP(population, obs_dim, encoder_sizes) if encoder is None else encoder
        self.cell_kind = cell
        setattr(self, cell, CELLS[cell].module(population, self.encoder.out_features, hidden, layers))

    @property
    def cell(self) -> nn.Module:
        """The recurrent cell (:class:`PopLSTM` or :class:`PopGRU`)."""
        return getattr(self, self.cell_kind)

    def reset_parameters(self, generators: Sequence[torch.Generator]) -> None:
        self.encoder.reset_parameters(generators)
        self.cell.reset_parameters(generators)

    def step(self, obs: Tensor, state: RecurrentState, episode_start: Tensor) -> tuple[Tensor, RecurrentState]:
        return self.cell.step(self.encoder(obs), state, episode_start)

    def sequence(self, obs: Tensor, state: RecurrentState, episode_starts: Tensor
                 ) -> tuple[Tensor, RecurrentState]:
        return self.cell.sequence(self.encoder(obs), state, episode_starts)


class PolicyHead(nn.Module):
    """Maps LSTM features to an action distribution's parameters.

    Discrete(n): logits (..., n). MultiDiscrete(nvec): the K categoricals' logits concatenated (..., sum(nvec)).
    Box(d): mean (..., d) and a state-independent ``log_std`` parameter (P, d).
    """

    def __init__(self, population: int, hidden: int, action_dim: int, continuous: bool, log_std_init: float):
        super().__init__()
        self.continuous = continuous
        self.linear = PopLinear(population, hidden, action_dim)
        if continuous:
            self.log_std = nn.Parameter(torch.full((population, action_dim), float(log_std_init)))

    def reset_parameters(self, generators: Sequence[torch.Generator], log_std_init: float) -> None:
        self.linear.reset_parameters(0.01, generators)
        if self.continuous:
            with torch.no_grad():
                self.log_std.fill_(log_std_init)

    def forward(self, features: Tensor) -> Tensor:
        return self.linear(features)


def _categoricals(logits: Tensor, nvec: Optional[Sequence[int]]) -> list[Tensor]:
    """The log-softmax of each categorical: one for Discrete (nvec None), K for MultiDiscrete (the head's logits
    split into K groups of nvec[k] columns)."""
    if nvec is None:
        return [torch.log_softmax(logits, dim=-1)]
    return [torch.log_softmax(part, dim=-1) for part in torch.split(logits, list(nvec), dim=-1)]


def log_prob_entropy(
    head_out: Tensor, actions: Tensor, continuous: bool, log_std: Optional[Tensor],
    nvec: Optional[Sequence[int]] = None,
) -> tuple[Tensor, Tensor]:
    """Log-probability of ``actions`` and entropy of the distribution, both shaped like the batch.

    head_out: logits (P, ..., A) for Discrete, the K categoricals' logits concatenated (P, ..., sum(nvec)) for
    MultiDiscrete (``nvec`` given), means (P, ..., A) for Box; actions: (P, ...) integer indices for Discrete,
    (P, ..., K) indices for MultiDiscrete, (P, ..., A) for Box; log_std: (P, A) for Box. Returns (logp, entropy),
    each (P, ...). MultiDiscrete is a product of independent categoricals (as Stable-Baselines3's
    ``MultiCategoricalDistribution``): log-probabilities and entropies are summed over the K components.
    """
    if not continuous:
        logp, entropy = 0, 0
        for k, logp_all in enumerate(_categoricals(head_out, nvec)):
            a = actions if nvec is None else actions[..., k]
            logp = logp + logp_all.gather(-1, a.long().unsqueeze(-1)).squeeze(-1)
            entropy = entropy - (logp_all.exp() * logp_all).sum(-1)
        return logp, entropy  # type: ignore[return-value]
    assert log_std is not None
    shape = (log_std.shape[0],) + (1,) * (head_out.dim() - 2) + (log_std.shape[1],)
    ls = log_std.reshape(shape)
    var = torch.exp(2 * ls)
    logp = (-((actions - head_out) ** 2) / (2 * var) - ls - 0.5 * math.log(2 * math.pi)).sum(-1)
    entropy = (0.5 + 0.5 * math.log(2 * math.pi) + ls).sum(-1).expand_as(logp)
    return logp, entropy


def log_prob(head_out: Tensor, actions: Tensor, continuous: bool, log_std: Optional[Tensor],
             nvec: Optional[Sequence[int]] = None) -> Tensor:
    """Log-probability of ``actions`` alone (the first output of :func:`log_prob_entropy`, without the entropy)."""
    if not continuous and nvec is None:
        return torch.log_softmax(head_out, dim=-1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    return log_prob_entropy(head_out, actions, continuous, log_std, nvec)[0]


def kl_divergence(
    p_out: Tensor, q_out: Tensor, continuous: bool, log_std: Optional[Tensor], nvec: Optional[Sequence[int]] = None
) -> Tensor:
    """KL(p || q) between two action distributions of the same family, shaped like the batch (P, ...).

    For MultiDiscrete (``nvec`` given) the sum of the K categoricals' KLs (they are independent). For Box the
    log-std is shared (state-independent), so KL reduces to the squared mean difference over 2 var.

    The categorical KL is summed in float64 and returned in the logits' dtype: for two nearly equal distributions
    (an SA-PPO perturbation of a fresh policy gives KLs near 1e-8) sum_a p (log p - log q) cancels terms of about
    1e-4, which float32 leaves dominated by rounding, so the value would depend on the CPU's kernels. The Box KL
    needs no such care: the difference of two float32 means is exact.
    """
    if not continuous:
        kl = 0
        for lp, lq in zip(_categoricals(p_out.double(), nvec), _categoricals(q_out.double(), nvec)):
            kl = kl + (lp.exp() * (lp - lq)).sum(-1)
        return kl.to(p_out.dtype)  # type: ignore[union-attr]
    assert log_std is not None
    shape = (log_std.shape[0],) + (1,) * (p_out.dim() - 2) + (log_std.shape[1],)
    var = torch.exp(2 * log_std.reshape(shape))
    return ((p_out - q_out) ** 2 / (2 * var)).sum(-1)


class TrunkWeights(NamedTuple):
    """K stacked trunks' weights (K*P members first), as :func:`stack_trunks` builds them.

    encoder: the encoders' tensors by name (the first trunk's ``encoder.weights()`` names); cell: per layer the
    cell's tensors (LSTM: weight_ih, weight_hh, bias; GRU: weight_ih, weight_hh, bias_ih, bias_hh); encode: the
    first trunk's ``encoder.functional``; cell_kind: ``lstm`` or ``gru``.
    """

    encoder: dict[str, Tensor]
    cell: list[tuple[Tensor, ...]]
    encode: Callable[[dict[str, Tensor], Tensor], Tensor]
    cell_kind: str


def stack_trunks(trunks: Sequence["RecurrentTrunk"]) -> TrunkWeights:
    """Concatenate K same-shaped trunks' weights along the member dimension (K*P first), differentiably.

    Running the actor and the critic(s) as one batch of K*P networks halves (or thirds) the number of sequential
    recurrent steps, which dominate the cost of a small recurrent net on a CPU.
    """
    encs = [t.encoder.weights() for t in trunks]
    enc = {name: torch.cat([e[name] for e in encs]) for name in encs[0]}
    cells = [t.cell.layer_weights() for t in trunks]
    cell = [tuple(torch.cat([c[k][j] for c in cells]) for j in range(len(cells[0][k])))
            for k in range(len(cells[0]))]
    return TrunkWeights(enc, cell, trunks[0].encoder.functional, trunks[0].cell_kind)


def slice_trunk_weights(weights: TrunkWeights, members: slice) -> TrunkWeights:
    """The weights of ``members`` alone (e.g. ``slice(i, i + 1)``): every tensor sliced along the member dimension."""
    return TrunkWeights({k: v[members] for k, v in weights.encoder.items()},
                        [tuple(t[members] for t in lay) for lay in weights.cell], weights.encode, weights.cell_kind)


def _encode(x: Tensor, enc: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    shape = x.shape
    y = x.reshape(shape[0], -1, shape[-1])
    for w, b in enc:
        y = torch.tanh(torch.baddbmm(b.unsqueeze(1), y, w))
    return y.reshape(*shape[:-1], y.shape[-1])


def _cat_states(states: Sequence[RecurrentState]) -> RecurrentState:
    return tuple(torch.cat([s[j] for s in states]) for j in range(len(states[0])))


def _split_states(out: Tensor, state: RecurrentState, k: int) -> list[tuple[Tensor, RecurrentState]]:
    parts = [t.chunk(k) for t in state]
    return [(o, tuple(p[i] for p in parts)) for i, o in enumerate(out.chunk(k))]


def trunks_step(weights: TrunkWeights, obs: Tensor, states: Sequence[RecurrentState], episode_start: Tensor
                ) -> list[tuple[Tensor, RecurrentState]]:
    """One step of K stacked trunks on the same observations. obs: (P, N, I); states: K states, each a tuple of
    (P, L, N, H) (``(h, c)`` or ``(h,)``). Returns K (features (P, N, H), new state) pairs, in stacking order."""
    k = len(states)
    x = weights.encode(weights.encoder, torch.cat([obs] * k))  # cat, not repeat: ~6x cheaper per call
    out, new = CELLS[weights.cell_kind].step(x, _cat_states(states), torch.cat([episode_start] * k), weights.cell)
    return _split_states(out, new, k)


def trunks_sequence(weights: TrunkWeights, obs: Tensor, states: Sequence[RecurrentState], episode_starts: Tensor,
                    fused: bool = False) -> list[tuple[Tensor, RecurrentState]]:
    """Replay K stacked trunks over the same sequences. obs: (P, T, N, I); states: K states (P, L, N, H) each;
    ``fused``: the LSTM recurrence as :class:`FusedLSTMRecurrence` (see :func:`lstm_sequence`; the GRU ignores it)."""
    k = len(states)
    x = weights.encode(weights.encoder, obs.repeat(k, 1, 1, 1))  # (repeat's backward sums the K gradients in one order)
    out, new = CELLS[weights.cell_kind].sequence(x, _cat_states(states), episode_starts.repeat(k, 1, 1), weights.cell,
                                                 fused=fused)
    return _split_states(out, new, k)
