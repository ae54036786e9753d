"""ttfs_ext: exact time-to-first-spike (TTFS) spiking layers for PyTorch.

Spike times of the B1 model of Stanojevic et al. (2022, 2024) in closed form, with exact
gradients, as compiled CPU/CUDA ops (torch.ops.ttfs_ext), a pure-PyTorch reference
(ttfs_ext.reference), functional ops (ttfs_ext.functional) and drop-in modules (ttfs_ext.nn).
"""
import torch  # noqa: F401  (libtorch must be loaded before the extension)

__version__ = "0.1.0"

from ._backend import (  # noqa: E402
    get_backend,
    input_checks_enabled,
    kernel_devices,
    set_backend,
    set_input_checks,
    status,
)
from . import functional, reference  # noqa: E402  (functional registers the fake kernels)
from . import nn  # noqa: E402
from .convert import ConversionError, agreement, convert  # noqa: E402
from .events import simulate  # noqa: E402
from . import fs  # noqa: E402  (few-spikes neurons; registers the fs_activation fakes)

__all__ = [
    "functional", "reference", "nn", "status", "set_backend", "get_backend", "kernel_devices",
    "set_input_checks", "input_checks_enabled", "__version__", "convert", "agreement", "simulate",
    "ConversionError", "fs",
]
