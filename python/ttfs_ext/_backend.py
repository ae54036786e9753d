"""Which implementation runs an op: the compiled kernel of the tensor's device, or the
pure-PyTorch reference.

- An explicit backend ('cpu', 'cuda', 'reference'), per call or through set_backend(),
  raises if it cannot run the given tensors.
- The default picks the compiled kernel for the tensor's device; where there is none
  (extension not built, CUDA not compiled in, another device type) it falls back to the
  reference with a one-time warning, and status() lists the fallback.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Union

import torch

try:
    from . import _C
    _LOAD_ERROR: Optional[str] = None
except ImportError as err:  # the package still works, through the reference
    _C = None
    _LOAD_ERROR = f"{type(err).__name__}: {err}"

BACKENDS = ("cpu", "cuda", "reference")
_default_backend: Optional[str] = None
_fallbacks: set[str] = set()
_input_checks = os.environ.get("TTFS_EXT_INPUT_CHECKS", "1") != "0"
_cuda_input_checks = os.environ.get("TTFS_EXT_CUDA_INPUT_CHECKS", "0") == "1"


def _registered(device_type: str) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA"}[device_type]
    return _C is not None and torch._C._dispatch_has_kernel_for_dispatch_key("ttfs_ext::linear", key)


# Fixed at import, so that torch.compile sees a constant.
_KERNEL_DEVICES = frozenset(d for d in ("cpu", "cuda") if _registered(d))


def kernel_devices() -> list[str]:
    """Device types with compiled ttfs_ext kernels in this build."""
    return sorted(_KERNEL_DEVICES)


def set_backend(backend: Optional[str]) -> None:
    """Use `backend` ('cpu', 'cuda' or 'reference') for every op; None restores automatic choice."""
    global _default_backend
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    _default_backend = backend


def get_backend() -> Optional[str]:
    """The backend set by set_backend(), or None for automatic choice."""
    return _default_backend


def set_input_checks(enabled: bool = True, *, cuda: Optional[bool] = None) -> None:
    """Turn the data checks (NaN/inf spike times, inputs and neuron parameters) on or off. Shape,
    dtype, device and window checks always run. The environment variable
    TTFS_EXT_INPUT_CHECKS=0 turns them off. The CPU kernels of linear, readout, conv2d and
    fs_activation check their input in their first pass over it (no extra read).

    On CUDA the data checks run only where also asked for with ``cuda=True`` (or
    TTFS_EXT_CUDA_INPUT_CHECKS=1): a check reads its result back to the host, which synchronises
    the GPU once per op call and would stall a training step some 30 times. Off on CUDA, NaN and
    inf propagate through the kernels exactly as through the CPU kernels with checks off.
    ``cuda=None`` keeps the CUDA setting as it is. No check runs while a CUDA graph is captured."""
    global _input_checks, _cuda_input_checks
    _input_checks = bool(enabled)
    if cuda is not None:
        _cuda_input_checks = bool(cuda)
    if _C is not None:
        _C._set_input_checks(_input_checks)
        if hasattr(_C, "_set_cuda_input_checks"):
            _C._set_cuda_input_checks(_cuda_input_checks)


def input_checks_enabled(device: Optional[Union[str, torch.device]] = None) -> bool:
    """Whether the data checks run now: in general (``device=None``), or for tensors on
    ``device`` (on CUDA only with ``set_input_checks(cuda=True)``). Never while torch.compile
    traces."""
    if not _input_checks or torch.compiler.is_compiling():
        return False
    if device is None:
        return True
    dev = torch.device(device)
    if dev.type == "cuda" or (dev.type == "cpu" and _cpu_runs_cuda_profile()):
        return _cuda_input_checks
    return True


def _cpu_runs_cuda_profile() -> bool:
    """The CUDA-like CPU kernel profile of the tests (ttfs_ext._C._set_cpu_kernel_profile)."""
    return _C is not None and hasattr(_C, "_cpu_kernel_profile") and _C._cpu_kernel_profile() == "cuda"


if _C is not None:
    _C._set_input_checks(_input_checks)
    if hasattr(_C, "_set_cuda_input_checks"):
        _C._set_cuda_input_checks(_cuda_input_checks)


def apply_cpu_isa_env() -> None:
    """Runs the CPU loops in the ISA named by TTFS_EXT_CPU_ISA ('x86-64-v4' for AVX-512,
    'x86-64-v3' for AVX2, 'baseline'), or in the best this CPU supports when it is unset or
    empty: as ATEN_CPU_CAPABILITY does for ATen, to reproduce another CPU's code path."""
    if _C is None:
        return
    name = os.environ.get("TTFS_EXT_CPU_ISA", "")
    try:
        _C._set_cpu_isa(name)
    except ValueError as err:
        raise ValueError(f"TTFS_EXT_CPU_ISA={name!r}: {err}") from None


apply_cpu_isa_env()


def build_id() -> str:
    """This install of the compiled ops: the package version and the extension file's size and
    modification time (a rebuild or reinstall changes it), or 'reference' without one."""
    from . import __version__
    if _C is None:
        return f"{__version__}-reference"
    st = os.stat(_C.__file__)
    return f"{__version__}-{st.st_size:x}-{st.st_mtime_ns:x}"


def tag_compile_caches() -> None:
    """Puts this build into the key of torch.compile's on-disk caches (FX graph, AOTAutograd):
    they key a graph by torch's version and the graph's text, not by the code of the custom ops
    in it, so a graph compiled against another build of ttfs_ext (whose outputs or workspaces
    may differ) would be loaded and run; seen here as heap corruption after a rebuild. The tag
    is added to the user's own (torch.compiler.config.cache_key_tag), once."""
    config = getattr(torch.compiler, "config", None)
    try:
        current = config.cache_key_tag
    except AttributeError:  # a torch without the tag (or with it hidden): nothing to add to
        return
    # Also ATen's CPU capability: torch (2.13) reuses a graph compiled without ATEN_CPU_CAPABILITY
    # in a process that sets it to avx2 and computes garbage, a plain nn.Conv2d network included.
    tag = f"ttfs_ext={build_id()},aten_cpu={os.environ.get('ATEN_CPU_CAPABILITY', '')}"
    if tag not in current:
        config.cache_key_tag = f"{current};{tag}" if current else tag


tag_compile_caches()


def use_kernel(op: str, t_in: torch.Tensor | torch.device, backend: Optional[str]) -> bool:
    """The one decision of every op: True to run the compiled kernel of t_in's device (t_in:
    the call's spike times, or their device), False to run the reference. The backend is the
    call's, else set_backend()'s, else automatic: the kernel where this build has one, else the
    reference with a one-time warning (status() lists the fallback). An explicit backend that
    cannot run the call raises."""
    choice = backend if backend is not None else _default_backend
    if isinstance(t_in, torch.Tensor):
        if t_in.is_cpu and (choice is None or choice == "cpu") and "cpu" in _KERNEL_DEVICES:
            return True  # the common call, first: a layer call's fixed cost
        device = t_in.device
    else:
        device = t_in
    device_type = device.type
    if choice is None or choice == device_type:
        if device_type in _KERNEL_DEVICES:
            return True
        if choice is None:
            _warn_fallback(op, device_type)
            return False
        raise RuntimeError(f"{op}: backend {choice!r} was requested but is not available: {_unavailable(choice)}")
    if choice not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS} or None, got {choice!r}")
    if choice == "reference":
        return False
    raise ValueError(f"{op}: backend {choice!r} was requested but t_in is on {device}")


def _unavailable(device_type: str) -> str:
    if _C is None:
        return f"the compiled extension ttfs_ext._C failed to load ({_LOAD_ERROR})"
    if device_type == "cuda":
        return "ttfs_ext was built without CUDA (reinstall with nvcc and a CUDA build of torch)"
    return f"ttfs_ext has no kernels for device type {device_type!r}"


def _warn_fallback(op: str, device_type: str) -> None:
    if device_type in _fallbacks:
        return
    _fallbacks.add(device_type)
    warnings.warn(
        f"ttfs_ext: no compiled kernel for {device_type!r} tensors ({_unavailable(device_type)}); "
        f"{op} and the other ops use the pure-PyTorch reference. ttfs_ext.status() lists fallbacks.",
        RuntimeWarning,
        stacklevel=4,
    )


def status() -> dict[str, Any]:
    """How ttfs_ext was built and what it runs on."""
    from . import __version__

    info: dict[str, Any] = {
        "version": __version__,
        "compiled": _C is not None,
        "load_error": _LOAD_ERROR,
        "build": None,
        "build_reason": None,
        "with_cuda": False,
        "cuda_arch_list": None,
        "built_with_torch": None,
        "built_with_cuda": None,
        "cpu_isa": None,
        "cpu_isa_detected": None,
        "cpu_parallel": None,
        "cpu_dense_one_pass": None,
    }
    if _C is not None:
        built = _C.build_info()
        info.update(
            # "cpu" (a CPU torch), "cpu-with-cuda-torch" (CPU kernels only, against a CUDA torch:
            # CUDA tensors run the reference) or "cuda"; build_reason: why CMake decided so
            build=built["build"],
            build_reason=built["build_reason"],
            with_cuda=built["with_cuda"],
            cuda_arch_list=built["cuda_arch_list"],
            built_with_torch=built["torch_version"],
            built_with_cuda=built["cuda_version"],
            cpu_isa=built["cpu_isa"],  # the CPU loops' AVX-512 / AVX2 / baseline code (TTFS_EXT_CPU_ISA)
            cpu_isa_detected=built["cpu_isa_detected"],  # the best this CPU supports
            cpu_parallel=built["cpu_parallel"],  # "openmp"/"native"; "one thread": built without OpenMP
            # dense layers with a weight of min_weight_bytes or more: one pass over the weight for
            # both gradients (at most max_rows rows) and for the forward GEMM (forward_max_rows)
            cpu_dense_one_pass=built["cpu_dense_one_pass"],
        )
    info.update(
        torch_version=torch.__version__,
        torch_cuda_version=torch.version.cuda,
        cuda_available=torch.cuda.is_available(),
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        kernel_devices=kernel_devices(),
        backend=_default_backend or "auto",
        fallbacks=sorted(_fallbacks),
        input_checks=_input_checks,
        cuda_input_checks=_cuda_input_checks,
    )
    return info
