"""Shared helpers of the tests: devices, random TTFS layers, tolerances."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.needs_cuda)]

# Documented tolerances (README, "Accuracy"): float64 matches the reference to 1e-12
# relative; float32 kernels match the float64 reference to these bounds, relative to the
# size of the spike times (the window end) or of the gradients.
TOL = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=2e-5, atol=2e-5),
}


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    """|actual - expected| <= atol * max(1, max|expected|) + rtol * |expected|, in float64."""
    expected = expected.detach().double()
    actual = actual.detach().double().to(expected.device)
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    tol = TOL[dtype]
    torch.testing.assert_close(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, msg=lambda m: f"{what}: {m}")


def expected_cpu_isa() -> str:
    """The ISA the CPU loops run when no test forces one: TTFS_EXT_CPU_ISA, or the CPU's best."""
    import os

    import ttfs_ext
    return os.environ.get("TTFS_EXT_CPU_ISA") or ttfs_ext.status()["cpu_isa_detected"]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def input_times(shape, t_min_prev: float, t_min: float, gen: torch.Generator) -> torch.Tensor:
    """Spike times in the previous window; a fifth are silent (t = t_min, activation 0)."""
    t = t_min_prev + (t_min - t_min_prev) * torch.rand(shape, generator=gen, dtype=torch.float64)
    silent = torch.rand(shape, generator=gen) < 0.2
    return torch.where(silent, torch.full_like(t, t_min), t)


def dense_case(seed: int, batch_shape=(16,), n_in: int = 20, n_out: int = 12, bias: bool = True):
    """(t_in, weight, bias, t_min, t_max) in float64 on the CPU; about half the neurons spike."""
    gen = generator(seed)
    t_min, t_max = 1.0, 1.0 + 4.0 + 4.0 * float(torch.rand((), generator=gen))
    t_in = input_times((*batch_shape, n_in), 0.0, t_min, gen)
    weight = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64) / max(n_in, 1) ** 0.5
    b = 0.3 * torch.randn(n_out, generator=gen, dtype=torch.float64) if bias else None
    return t_in, weight, b, t_min, t_max


def conv_case(seed: int, n: int = 2, c_in: int = 4, c_out: int = 6, size=(9, 8), kernel=(3, 3), groups: int = 1):
    gen = generator(seed)
    t_min, t_max = 1.0, 6.0
    t_in = input_times((n, c_in, *size), 0.0, t_min, gen)
    fan_in = c_in // groups * kernel[0] * kernel[1]
    weight = torch.randn(c_out, c_in // groups, *kernel, generator=gen, dtype=torch.float64) / fan_in ** 0.5
    return t_in, weight, t_min, t_max, gen


def forward_backward(fn, tensors, device, dtype, grad_seed: int = 1234):
    """Runs fn on copies of `tensors` (None passes through) cast to (device, dtype) with
    requires_grad, and returns (output, [gradient of each non-None tensor]) for a random
    upstream gradient that is the same for every dtype and device."""
    leaves = [None if t is None else t.detach().to(device=device, dtype=dtype).requires_grad_() for t in tensors]
    out = fn(*leaves)
    g = torch.randn(out.shape, generator=generator(grad_seed), dtype=torch.float64).to(out)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], g)
    return out, list(grads)


# --- the CPU kernel profiles and the data checks ----------------------------------------------

def has_kernel_profiles() -> bool:
    """Whether this build can drive its CPU kernels as CUDA drives its own (profile "cuda")."""
    from ttfs_ext import _backend

    return hasattr(_backend._C, "_set_cpu_kernel_profile")


@contextlib.contextmanager
def cpu_kernel_profile(name: str) -> Iterator[None]:
    """The CPU kernels in profile `name` ("cpu" or "cuda") inside the block, the previous one after."""
    from ttfs_ext import _backend

    previous = _backend._C._cpu_kernel_profile()
    _backend._C._set_cpu_kernel_profile(name)
    try:
        yield
    finally:
        _backend._C._set_cpu_kernel_profile(previous)


def input_checks_state() -> tuple[bool, Optional[bool]]:
    """(data checks on the CPU, on CUDA): the second None where the build has one switch."""
    import ttfs_ext
    from ttfs_ext import _backend

    if hasattr(_backend._C, "_cuda_input_checks_enabled"):  # the CUDA switch itself, whatever the general one
        cuda = bool(_backend._C._cuda_input_checks_enabled())
    else:
        try:
            cuda = ttfs_ext.input_checks_enabled("cuda")
        except TypeError:
            cuda = None
    return ttfs_ext.input_checks_enabled(), cuda


@contextlib.contextmanager
def input_checks(enabled: bool, cuda: Optional[bool] = None) -> Iterator[None]:
    """ttfs_ext.set_input_checks(enabled[, cuda=cuda]) inside the block, the previous state after."""
    import ttfs_ext

    cpu_before, cuda_before = input_checks_state()
    if cuda is None:
        ttfs_ext.set_input_checks(enabled)
    else:
        ttfs_ext.set_input_checks(enabled, cuda=cuda)
    try:
        yield
    finally:
        if cuda_before is None:
            ttfs_ext.set_input_checks(cpu_before)
        else:
            ttfs_ext.set_input_checks(cpu_before, cuda=cuda_before)
