"""The event-exact general neuron (ttfs_ext.functional.first_spike_*, kernels and reference)
against independent oracles: exact rational arithmetic per neuron, and forward-Euler
integration of the ODE."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ttfs_ext import functional as TF

from _oracle import euler_first_spike, exact_first_spike

F64 = torch.float64
BACKENDS = ["reference", "cpu"]


def random_neurons(seed: int, rows: int, n_in: int, n_out: int, t_start: float = 0.5):
    """General neurons with a mix of outcomes: early and late spikes, no spike, inputs before
    t_start, ties, thresholds <= 0, negative alpha."""
    g = torch.Generator().manual_seed(seed)
    t_in = t_start - 0.2 + 1.5 * torch.rand(rows, n_in, generator=g, dtype=F64)
    t_in[:, 0] = t_in[:, 1]  # a tie
    w = torch.randn(n_out, n_in, generator=g, dtype=F64) * 1.5 / n_in ** 0.5
    alpha = torch.randn(n_out, generator=g, dtype=F64)
    theta = 0.2 + torch.rand(n_out, generator=g, dtype=F64)
    theta[0] = -0.1
    return t_in, w, alpha, theta, t_start, t_start + 2.0


@pytest.mark.usefixtures("kernel_profile")  # the kernels' own sort, and at::sort as on CUDA
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(4))
def test_dense_matches_exact_rational_oracle(backend, seed):
    t_in, w, alpha, theta, t_start, t_max = random_neurons(seed, 6, 9, 8)
    out = TF.first_spike_linear(t_in, w, alpha, theta, t_start, t_max, backend=backend)
    expected = torch.tensor([[exact_first_spike(t_in[r].tolist(), w[o].tolist(), float(alpha[o]), float(theta[o]),
                                                t_start, t_max) for o in range(w.shape[0])]
                             for r in range(t_in.shape[0])], dtype=F64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    fired = expected < t_max
    assert 0 < int(fired.sum()) < fired.numel()
    assert bool((expected[fired] < t_start + 1.3).any())  # some fire while inputs still arrive


@pytest.mark.usefixtures("kernel_profile")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 1, 1, 1), (2, 2, 1, 2), (1, 2, 2, 1)])
def test_conv_matches_exact_rational_oracle(backend, stride, padding, dilation, groups):
    """Each output position is a neuron over its patch; padded taps never arrive."""
    g = torch.Generator().manual_seed(7 + stride + 3 * padding + groups)
    t_start, t_max = 0.0, 2.5
    t_in = 1.2 * torch.rand(2, 4, 5, 6, generator=g, dtype=F64)
    w = torch.randn(6, 4 // groups, 3, 3, generator=g, dtype=F64) / 3.0
    h_out = (5 + 2 * padding - dilation * 2 - 1) // stride + 1
    w_out = (6 + 2 * padding - dilation * 2 - 1) // stride + 1
    alpha = torch.randn(6, h_out, w_out, generator=g, dtype=F64)
    theta = 0.3 + torch.rand(6, generator=g, dtype=F64)
    out = TF.first_spike_conv2d(t_in, w, alpha, theta, t_start, t_max, stride, padding, dilation, groups,
                                backend=backend)
    padded = F.pad(t_in, (padding,) * 4, value=float("inf"))
    expected = torch.empty_like(out)
    c_group, o_group = 4 // groups, 6 // groups
    for b in range(2):
        for o in range(6):
            c0 = (o // o_group) * c_group
            for i in range(h_out):
                for j in range(w_out):
                    patch = padded[b, c0:c0 + c_group, i * stride:i * stride + 2 * dilation + 1:dilation,
                                   j * stride:j * stride + 2 * dilation + 1:dilation]
                    expected[b, o, i, j] = exact_first_spike(patch.flatten().tolist(), w[o].flatten().tolist(),
                                                             float(alpha[o, i, j]), float(theta[o]), t_start, t_max)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    assert 0 < int((expected < t_max).sum()) < expected.numel()


@pytest.mark.parametrize("seed", range(2))
def test_spike_times_are_threshold_crossings_euler(seed):
    """Forward Euler on a grid of 1e-4: its first grid time at threshold is within a few steps
    of the event-exact time (the piecewise-linear V is integrated up to O(dt) per input)."""
    t_in, w, alpha, theta, t_start, t_max = random_neurons(100 + seed, 3, 6, 5)
    out = TF.first_spike_linear(t_in, w, alpha, theta, t_start, t_max)
    dt = 1e-4
    for r in range(t_in.shape[0]):
        for o in range(w.shape[0]):
            euler = euler_first_spike(t_in[r].tolist(), w[o].tolist(), float(alpha[o]), float(theta[o]), t_start,
                                      t_max, dt)
            if float(out[r, o]) < t_max - 1e-2:
                assert abs(euler - float(out[r, o])) < 50 * dt, (r, o, euler, float(out[r, o]))
