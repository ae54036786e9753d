import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "cpu_profile_only: run with kernel_profile's 'cpu' profile only (a test of the "
                                       "CPU kernels' own machinery, or too slow to run twice)")


def pytest_collection_modifyitems(config, items):
    # The cuda-like CPU profile (kernel_profile) drives the CPU kernels as the CUDA device
    # drives its own: a test on another device (a "device" parameter other than "cpu", or
    # needs_cuda) runs that device's kernels, so the profile would only repeat it; a test
    # marked cpu_profile_only keeps the "cpu" profile alone.
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("kernel_profile") == "cuda-like" and (
                params.get("device", "cpu") != "cpu" or "needs_cuda" in item.keywords
                or "cpu_profile_only" in item.keywords):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "needs_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_tf32():
    """float32 means IEEE float32 in every comparison: no TF32 in CUDA matrix products or
    cuDNN convolutions (cuDNN's default), and the 'highest' float32 matmul precision, for
    each test; the previous flags are restored afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    precision = torch.get_float32_matmul_precision()
    try:
        legacy = (matmul.allow_tf32, cudnn.allow_tf32)
    except RuntimeError:  # torch >= 2.9: the flags were set through the fp32_precision API,
        legacy = None     # whose mixed states the legacy getters refuse to read
        new = (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision)
    matmul.allow_tf32 = False
    cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(precision)
    if legacy is not None:
        matmul.allow_tf32, cudnn.allow_tf32 = legacy
    else:
        matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.rnn.fp32_precision = new


# --- the CPU kernels driven as on CUDA -------------------------------------------------------

@pytest.fixture(params=["cpu", "cuda-like"])
def kernel_profile(request):
    """Runs a CPU test twice: with the CPU kernels' own profile ("cpu": NaN/inf checks fused in
    the prologue, one-pass GEMMs, the kernels' own sort, float32 under CPU autocast) and
    driven exactly as the CUDA device drives its kernels ("cuda-like": the C++ profile
    "cuda"), with the data checks that CUDA runs turned on, so that the NaN/inf error tests
    keep their meaning. Restores the "cpu" profile and the previous checks afterwards. A test
    on another device (a "device" parameter other than "cpu") is not run with "cuda-like"
    (deselected above); the fixture is a no-op there."""
    from _utils import cpu_kernel_profile, has_kernel_profiles, input_checks

    profile = request.param
    params = getattr(getattr(request.node, "callspec", None), "params", {})
    if params.get("device", "cpu") != "cpu":
        yield profile
        return
    if profile == "cpu":
        if not has_kernel_profiles():  # the old build: its CPU kernels have the one profile
            yield profile
            return
        with cpu_kernel_profile("cpu"):
            yield profile
        return
    if not has_kernel_profiles():
        pytest.skip("this build of ttfs_ext has no CPU kernel profiles (ttfs_ext._C._set_cpu_kernel_profile): "
                    "rebuild the extension to run the CPU kernels as CUDA drives its own")
    with cpu_kernel_profile("cuda"), input_checks(True, cuda=True):
        yield profile
