"""The batched networks: LSTM resets at episode starts, MultiDiscrete log-probabilities, entropies and KLs
(against ``torch.distributions``), and the fused LSTM recurrence against the autograd reference loop."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from rpbt.agent.networks import FusedLSTMRecurrence, PopLSTM, log_prob_entropy, lstm_sequence
from rpbt.agent.networks import kl_divergence as rpbt_kl


def _inputs(P, T, N, D, H, L, dtype, seed=0, start_p=0.15):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P, T, N, D, generator=g, dtype=dtype).requires_grad_()
    layers, width = [], D
    for _ in range(L):
        layers.append(tuple((torch.randn(*s, generator=g, dtype=dtype) * 0.4).requires_grad_()
                            for s in [(P, width, 4 * H), (P, H, 4 * H), (P, 4 * H)]))
        width = H
    h0 = torch.randn(P, L, N, H, generator=g, dtype=dtype).requires_grad_()
    c0 = torch.randn(P, L, N, H, generator=g, dtype=dtype).requires_grad_()
    starts = torch.rand(P, T, N, generator=g) < start_p
    return x, layers, h0, c0, starts


def _outputs_and_grads(fused, x, layers, h0, c0, starts):
    out, (h, c) = lstm_sequence(x, (h0, c0), starts, layers, fused=fused)
    # a loss that weighs every output, the final h and the final c differently
    loss = out.sin().sum() + (1.3 * h).sum() + (0.7 * c).cos().sum()
    params = [x, h0, c0] + [w for layer in layers for w in layer]
    return (out, h, c), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("layers, start_p", [(1, 0.15), (2, 0.15), (2, 0.0)])
def test_fused_equals_the_reference_in_float64(layers, start_p):
    args = _inputs(2, 9, 3, 5, 4, layers, torch.float64, start_p=start_p)
    (ref_out, ref_grads), (fus_out, fus_grads) = (_outputs_and_grads(f, *args) for f in (False, True))
    for a, b in zip(ref_out + ref_grads, fus_out + fus_grads):
        assert float((a - b).abs().max()) < 1e-12


def test_fused_outputs_agree_in_float32_within_1e_6():
    args = _inputs(3, 16, 8, 6, 16, 1, torch.float32, seed=3)
    (ref_out, ref_grads), (fus_out, fus_grads) = (_outputs_and_grads(f, *args) for f in (False, True))
    for a, b in zip(ref_out, fus_out):
        assert float((a - b).abs().max()) < 1e-6
    for a, b in zip(ref_grads, fus_grads):  # gradients: float32 sums in another order
        assert float((a - b).abs().max()) <= 1e-5 * max(1.0, float(a.abs().max()))


def test_fused_recurrence_passes_gradcheck():
    P, T, N, H = 2, 5, 3, 3
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(P, T, N, 4 * H, generator=g, dtype=torch.float64).requires_grad_()
    w = (torch.randn(P, H, 4 * H, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    h0 = torch.randn(P, N, H, generator=g, dtype=torch.float64).requires_grad_()
    c0 = torch.randn(P, N, H, generator=g, dtype=torch.float64).requires_grad_()
    starts = torch.rand(P, T, N, generator=g) < 0.3
    keep = (1.0 - starts.double()).unsqueeze(-1)
    any_start = starts.any(2).any(0).tolist()
    assert torch.autograd.gradcheck(lambda *a: FusedLSTMRecurrence.apply(*a, keep, any_start), (pre, w, h0, c0))


def test_lstm_step_and_sequence_reset_state_at_episode_starts():
    torch.manual_seed(0)
    lstm = PopLSTM(population=2, input_size=3, hidden_size=5, num_layers=2)
    lstm.reset_parameters([torch.Generator().manual_seed(i) for i in range(2)])
    x = torch.randn(2, 6, 4, 3)
    state = (torch.randn(2, 2, 4, 5), torch.randn(2, 2, 4, 5))
    zero = lstm.initial_state(4)
    # step: env 0 starts an episode, so its state is replaced by zero; the others keep theirs.
    start = torch.tensor([[True, False, False, False]] * 2)
    out, _ = lstm.step(x[:, 0], state, start)
    out_zero, _ = lstm.step(x[:, 0], zero, torch.zeros(2, 4))
    out_kept, _ = lstm.step(x[:, 0], state, torch.zeros(2, 4))
    torch.testing.assert_close(out[:, 0], out_zero[:, 0])
    torch.testing.assert_close(out[:, 1:], out_kept[:, 1:])
    assert not torch.allclose(out[:, 0], out_kept[:, 0])
    # sequence: an episode starting at t=3 equals a fresh replay of x[3:] from zero.
    starts = torch.zeros(2, 6, 4, dtype=torch.bool)
    starts[:, 3] = True
    seq, _ = lstm.sequence(x, state, starts)
    fresh, _ = lstm.sequence(x[:, 3:], zero, torch.zeros(2, 3, 4))
    torch.testing.assert_close(seq[:, 3:], fresh, atol=1e-6, rtol=0)
    # and the step-by-step acting path equals the replay path
    s = state
    outs = []
    for t in range(6):
        o, s = lstm.step(x[:, t], s, starts[:, t])
        outs.append(o)
    torch.testing.assert_close(torch.stack(outs, 1), seq, atol=1e-6, rtol=0)


NVEC = (8, 3, 5)


def _split(logits: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(logits, list(NVEC), dim=-1))


def test_multi_discrete_log_prob_entropy_and_kl_are_sums_over_independent_categoricals():
    g = torch.Generator().manual_seed(0)
    p_logits = torch.randn(2, 4, 3, sum(NVEC), generator=g)
    q_logits = torch.randn(2, 4, 3, sum(NVEC), generator=g)
    actions = torch.stack([torch.randint(n, (2, 4, 3), generator=g) for n in NVEC], -1)
    logp, entropy = log_prob_entropy(p_logits, actions, False, None, NVEC)
    kl = rpbt_kl(p_logits, q_logits, False, None, NVEC)
    parts_p, parts_q = _split(p_logits), _split(q_logits)
    ref_logp = sum(Categorical(logits=lp).log_prob(actions[..., k]) for k, lp in enumerate(parts_p))
    ref_ent = sum(Categorical(logits=lp).entropy() for lp in parts_p)
    ref_kl = sum(kl_divergence(Categorical(logits=lp), Categorical(logits=lq)) for lp, lq in zip(parts_p, parts_q))
    assert logp.shape == entropy.shape == kl.shape == (2, 4, 3)
    torch.testing.assert_close(logp, ref_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy, ref_ent, atol=1e-5, rtol=0)
    torch.testing.assert_close(kl, ref_kl, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------ GRU


def _pop_gru(P=3, D=4, H=5, L=2, seed=0):
    from rpbt.agent.networks import PopGRU

    gru = PopGRU(population=P, input_size=D, hidden_size=H, num_layers=L)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # random biases too (reset_parameters zeroes them), so b_hn's place is tested
        for p in gru.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return gru


def _torch_gru_of(gru, member: int) -> torch.nn.GRU:
    """torch.nn.GRU holding member ``member``'s weights (transposed into torch's (out, in) convention)."""
    ref = torch.nn.GRU(gru.weight_ih[0].shape[1], gru.hidden_size, gru.num_layers, batch_first=True)
    with torch.no_grad():
        for k in range(gru.num_layers):
            getattr(ref, f"weight_ih_l{k}").copy_(gru.weight_ih[k][member].t())
            getattr(ref, f"weight_hh_l{k}").copy_(gru.weight_hh[k][member].t())
            getattr(ref, f"bias_ih_l{k}").copy_(gru.bias_ih[k][member])
            getattr(ref, f"bias_hh_l{k}").copy_(gru.bias_hh[k][member])
    return ref


def test_pop_gru_member_i_equals_torch_nn_gru_with_its_weights():
    P, T, N, D, H, L = 3, 7, 4, 4, 5, 2
    gru = _pop_gru(P, D, H, L)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(P, T, N, D, generator=g)
    h0 = torch.randn(P, L, N, H, generator=g)
    no_start = torch.zeros(P, T, N, dtype=torch.bool)
    with torch.no_grad():
        out, (h_T,) = gru.sequence(x, (h0,), no_start)
        for i in range(P):
            ref_out, ref_h = _torch_gru_of(gru, i)(x[i].transpose(0, 1), h0[i])  # (N, T, D) batch-first
            assert float((out[i].transpose(0, 1) - ref_out).abs().max()) < 1e-6
            assert float((h_T[i] - ref_h).abs().max()) < 1e-6
        # the acting path (one step at a time) gives the same outputs
        state = (h0,)
        for t in range(T):
            o, state = gru.step(x[:, t], state, no_start[:, t])
            assert float((o - out[:, t]).abs().max()) < 1e-6


def test_gru_step_and_sequence_reset_state_at_episode_starts():
    gru = _pop_gru(2, 3, 5, 2)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 4, 3, generator=g)
    state = (torch.randn(2, 2, 4, 5, generator=g),)
    zero = gru.initial_state(4)
    assert len(zero) == 1 and zero[0].shape == (2, 2, 4, 5)
    start = torch.tensor([[True, False, False, False]] * 2)
    with torch.no_grad():
        out, _ = gru.step(x[:, 0], state, start)
        out_zero, _ = gru.step(x[:, 0], zero, torch.zeros(2, 4))
        out_kept, _ = gru.step(x[:, 0], state, torch.zeros(2, 4))
        torch.testing.assert_close(out[:, 0], out_zero[:, 0])
        torch.testing.assert_close(out[:, 1:], out_kept[:, 1:])
        assert not torch.allclose(out[:, 0], out_kept[:, 0])
        starts = torch.zeros(2, 6, 4, dtype=torch.bool)
        starts[:, 3] = True
        seq, _ = gru.sequence(x, state, starts)
        fresh, _ = gru.sequence(x[:, 3:], zero, torch.zeros(2, 3, 4))
        torch.testing.assert_close(seq[:, 3:], fresh, atol=1e-6, rtol=0)


def test_gru_sequence_gradients_match_torch_nn_gru():
    gru = _pop_gru(2, 3, 4, 1)
    x = torch.randn(2, 5, 3, 3, generator=torch.Generator().manual_seed(3))
    out, _ = gru.sequence(x, gru.initial_state(3), torch.zeros(2, 5, 3, dtype=torch.bool))
    out.sin().sum().backward()
    for i in range(2):
        ref = _torch_gru_of(gru, i)
        ref_out, _ = ref(x[i].transpose(0, 1))
        ref_out.transpose(0, 1).sin().sum().backward()
        torch.testing.assert_close(gru.weight_hh[0].grad[i], ref.weight_hh_l0.grad.t(), atol=1e-5, rtol=0)
        torch.testing.assert_close(gru.bias_hh[0].grad[i], ref.bias_hh_l0.grad, atol=1e-5, rtol=0)
