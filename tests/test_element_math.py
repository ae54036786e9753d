"""The shared element math (csrc/kernels/element_math.h) where the CPU reaches it only under the
CUDA-like kernel profile: the float16/bfloat16 conversions of the B1 layers' passes (CUDA
autocast), which must round exactly as ATen's own casts do."""
import pytest
import torch

import ttfs_ext

pytestmark = pytest.mark.skipif(not hasattr(ttfs_ext._backend._C, "_set_cpu_kernel_profile"),
                                reason="a build without the CPU kernel profiles")


@pytest.fixture
def cuda_profile():
    C = ttfs_ext._backend._C
    C._set_cpu_kernel_profile("cuda")
    try:
        yield
    finally:
        C._set_cpu_kernel_profile("cpu")


def _awkward_values(n: int, seed: int) -> torch.Tensor:
    """float32 values around every rounding case of a 16-bit cast: random mantissas over a wide
    exponent range (subnormal and normal for float16), exact halfway points, zero and float16's
    largest value."""
    gen = torch.Generator().manual_seed(seed)
    mant = torch.rand(n, generator=gen, dtype=torch.float64) + 1.0
    exp = torch.randint(-30, 15, (n,), generator=gen).double()  # below float16's overflow: the
    # identity GEMM below would turn an inf into NaN (inf * 0) in the other outputs
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    x = (sign * mant * 2.0 ** exp).float()
    # halfway cases: bit patterns whose dropped bits are exactly 1000...0
    bits = x.view(torch.int32)
    x[: n // 8] = (bits[: n // 8] & ~0xFFFF | 0x8000).view(torch.float32)
    x[n // 8: n // 4] = (bits[n // 8: n // 4] & ~0x1FFF | 0x1000).view(torch.float32)
    x[-2:] = torch.tensor([0.0, 65504.0])  # not -0.0: the GEMM's sum of zeros is +0
    return x


@pytest.mark.parametrize("matrix_dtype", [torch.float16, torch.bfloat16])
def test_prologue_and_epilogue_casts_round_as_aten(cuda_profile, matrix_dtype):
    """readout through an identity weight returns float32(cast(t_min - t_in)): the prologue's
    float32 -> 16-bit cast and the epilogue's 16-bit -> float32 cast, bit for bit against ATen."""
    n = 4096
    x = _awkward_values(n, seed=3)
    t_min = 0.0
    t_in = (t_min - x).reshape(1, n)  # exact: t_min is 0
    eye = torch.eye(n, dtype=matrix_dtype)
    out = torch.ops.ttfs_ext.readout(t_in, eye, None, t_min)
    # + 0.0: values that round to -0 come back +0, as the GEMM's sum of zeros is +0
    expected = x.to(matrix_dtype).float().reshape(1, n) + 0.0
    assert out.dtype == torch.float32
    assert torch.equal(out.view(torch.int32), expected.view(torch.int32))
