"""Backend choice, fallback warnings and status."""
import os

import pytest
import torch

import ttfs_ext
from ttfs_ext import _backend
from ttfs_ext import functional as TF

from _utils import dense_case, expected_cpu_isa


def _grad_fn_name(out):
    return out.grad_fn.name()  # the kernels' nodes: torch::autograd::CppNode<ttfs_ext::...>


@pytest.fixture
def case():
    t_in, w, b, t_min, t_max = dense_case(80, (4,), 5, 3)
    return t_in, w.requires_grad_(), b, t_min, t_max


def test_status_reports_build():
    info = ttfs_ext.status()
    for key in ("version", "compiled", "build", "build_reason", "with_cuda", "cuda_arch_list", "built_with_torch",
                "built_with_cuda", "torch_version", "cuda_available", "kernel_devices", "backend", "fallbacks"):
        assert key in info
    assert info["compiled"] and "cpu" in info["kernel_devices"]
    assert info["version"] == ttfs_ext.__version__ == _backend._C.build_info()["version"]
    assert info["built_with_torch"].split("+")[0].rsplit(".", 1)[0] == torch.__version__.split("+")[0].rsplit(".", 1)[0]
    # The build kind follows torch and the CUDA decision (CMakeLists.txt).
    expected = "cuda" if info["with_cuda"] else ("cpu" if torch.version.cuda is None else "cpu-with-cuda-torch")
    assert info["build"] == expected and info["build_reason"]
    assert ("cuda" in info["kernel_devices"]) == info["with_cuda"]
    if not info["with_cuda"]:
        assert info["cuda_arch_list"] is None and info["built_with_cuda"] is None
    # The CPU loops run the detected ISA unless a test forces another (tests/test_cpu_isa.py
    # runs each); the one-pass dense kernels follow it, with AVX-512 and AVX2 code only.
    isas = ["x86-64-v4", "x86-64-v3", "baseline"]
    assert info["cpu_isa_detected"] in isas and info["cpu_isa"] == expected_cpu_isa()
    policy = info["cpu_dense_one_pass"]
    assert policy["isa"] == info["cpu_isa"]
    assert policy["enabled"] == (info["cpu_isa"] != "baseline")
    assert 1 <= policy["min_rows"] <= policy["forward_max_rows"] <= policy["max_rows"]
    assert policy["min_weight_bytes"] > 0


def test_cpu_kernels_run_on_torchs_threads():
    # An OpenMP build of torch runs at::parallel_for as an OpenMP region: a library compiled
    # without -fopenmp runs every CPU kernel on one thread (as the first builds did).
    info = ttfs_ext.status()
    if not info["compiled"]:
        pytest.skip("extension not built")
    backend = torch.__config__.parallel_info()
    expected = "openmp" if "parallel backend: OpenMP" in backend else "native"
    assert info["cpu_parallel"] == expected, backend


def test_explicit_backends(case):
    assert "ttfs_ext::(anonymous namespace)::LinearFunction" in _grad_fn_name(TF.linear(*case, backend="cpu"))
    assert "ttfs_ext" not in _grad_fn_name(TF.linear(*case, backend="reference"))
    torch.testing.assert_close(TF.linear(*case, backend="cpu"), TF.linear(*case, backend="reference"))
    with pytest.raises(ValueError, match="backend must be one of"):
        TF.linear(*case, backend="triton")
    with pytest.raises(ValueError, match="backend 'cuda' was requested but t_in is on cpu"):
        TF.linear(*case, backend="cuda")


@pytest.mark.skipif(ttfs_ext.status()["with_cuda"], reason="this build has CUDA")
def test_cuda_backend_unavailable_raises():
    with pytest.raises(RuntimeError, match="backend 'cuda' was requested but is not available: .*without CUDA"):
        _backend.use_kernel("ttfs_ext.functional.linear", torch.device("cuda", 0), "cuda")


def test_set_backend(case):
    ttfs_ext.set_backend("reference")
    try:
        assert ttfs_ext.get_backend() == "reference" and ttfs_ext.status()["backend"] == "reference"
        assert "ttfs_ext" not in _grad_fn_name(TF.linear(*case))
        assert "ttfs_ext" in _grad_fn_name(TF.linear(*case, backend="cpu"))  # per call wins
    finally:
        ttfs_ext.set_backend(None)
    assert "ttfs_ext::(anonymous namespace)::LinearFunction" in _grad_fn_name(TF.linear(*case))
    with pytest.raises(ValueError, match="backend must be one of"):
        ttfs_ext.set_backend("gpu")


def test_fallback_warns_once_and_is_visible(case, monkeypatch):
    monkeypatch.setattr(_backend, "_KERNEL_DEVICES", frozenset())
    monkeypatch.setattr(_backend, "_fallbacks", set())
    with pytest.warns(RuntimeWarning, match="no compiled kernel for 'cpu' tensors"):
        out = TF.linear(*case)
    assert "ttfs_ext" not in _grad_fn_name(out)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TF.conv2d(torch.rand(1, 1, 3, 3, dtype=torch.float64), torch.rand(1, 1, 3, 3, dtype=torch.float64),
                  None, 1.0, 2.0)
    assert ttfs_ext.status()["fallbacks"] == ["cpu"]
    with pytest.raises(RuntimeError, match="backend 'cpu' was requested but is not available"):
        TF.linear(*case, backend="cpu")


def test_compile_caches_are_keyed_by_this_build():
    """torch.compile's on-disk caches do not key a graph by the custom ops' code: a graph compiled
    against another build of ttfs_ext was loaded after a rebuild and corrupted the heap. The
    build goes into the key, next to the user's own tag, once."""
    config = pytest.importorskip("torch.compiler.config")
    tag = f"ttfs_ext={_backend.build_id()},aten_cpu={os.environ.get('ATEN_CPU_CAPABILITY', '')}"
    assert tag in config.cache_key_tag
    # Plain assignments, never monkeypatch: its undo may delete the entry, and torch 2.14's
    # config then hides it from Inductor for the rest of the process.
    before = config.cache_key_tag
    try:
        config.cache_key_tag = "mine"
        _backend.tag_compile_caches()
        _backend.tag_compile_caches()
        assert config.cache_key_tag == f"mine;{tag}"
    finally:
        config.cache_key_tag = before
