"""The fused LSTM recurrence (one autograd node, hand-written backward) against the autograd reference loop."""

from __future__ import annotations

import pytest
import torch

from rpbt.agent.networks import FusedLSTMRecurrence, lstm_sequence


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
