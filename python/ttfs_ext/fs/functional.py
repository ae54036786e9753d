"""fs_activation: the Python forms of its arguments, then one call into torch.ops.ttfs_ext
(the compiled kernel of x's device, which checks every argument itself) or the reference
(ttfs_ext.fs.reference), which first runs the same C++ checks through the op's check-only
twin. The fake kernels, for torch.compile and torch.export, stand beside it."""
from __future__ import annotations

from typing import Optional, Union

import torch

from .. import _backend
from ..functional import _check, _fake
from . import reference

__all__ = ["fs_activation", "fs_activation_full"]

_ops = torch.ops.ttfs_ext
_MODES = {False: 0, True: 1, "count": 1, "mask": 2}


def _params_like(x: torch.Tensor, *params: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """h, d, T in the dtype the steps run in: x's, float32 for float16/bfloat16 x."""
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    return tuple(p if p.dtype == dtype or not p.is_floating_point() or not x.is_floating_point() else p.to(dtype)
                 for p in params)


def fs_activation_full(x: torch.Tensor, h: torch.Tensor, d: torch.Tensor, T: torch.Tensor, spike_mode: int = 0,
                       with_reg: bool = False, *, backend: Optional[str] = None):
    """(y, spikes, reg): the op's three outputs (see fs_activation; reg: the (K,) per-step means
    mean_x max(|v_s(t)| - 1, 0) of the fitting regulariser when with_reg, else empty)."""
    if _backend.use_kernel("ttfs_ext.fs_activation", x, backend):
        return _ops.fs_activation(x, h, d, T, spike_mode, with_reg)
    _check("_fs_activation_check", x, h, d, T, spike_mode, with_reg)
    return reference.fs_activation_full(x, h, d, T, spike_mode, with_reg)


def fs_activation(x: torch.Tensor, h: torch.Tensor, d: torch.Tensor, T: torch.Tensor,
                  return_spikes: Union[bool, str] = False, *, backend: Optional[str] = None):
    """Few-spikes neurons (Stöckl & Maass), one per element of x, in one fused pass:

        v = x;  for t = 1..K:  z = [v > T(t)];  y += d(t) z;  v -= h(t) z

    h, d, T: (K,) with 1 <= K <= 32 (the reset, the output weight and the threshold of each
    step), cast to x's dtype (float32 for float16/bfloat16 x on CUDA). Returns y (x's shape
    and dtype), or (y, spikes) with return_spikes=True (uint8 spike counts per element) or
    "mask" (int32 masks, bit t set where step t fired). Differentiable in x, h, d and T with
    the surrogate gradient of the reference (ttfs_ext.fs.reference)."""
    if return_spikes not in _MODES:  # 0/1 compare equal to False/True: accepted as such
        raise ValueError(f"ttfs_ext.fs_activation: return_spikes must be False, True, 'count' or 'mask', got "
                         f"{return_spikes!r}")
    mode = _MODES[return_spikes]
    h, d, T = _params_like(x, h, d, T)
    y, spikes, _ = fs_activation_full(x, h, d, T, mode, False, backend=backend)
    return (y, spikes) if mode else y


@_fake("fs_activation", "_fs_activation_check")
def _fs_activation_fake(x, h, d, T, spike_mode, with_reg):
    spikes = (x.new_empty(x.shape, dtype=torch.uint8) if spike_mode == 1 else
              x.new_empty(x.shape, dtype=torch.int32) if spike_mode == 2 else x.new_empty((0,), dtype=torch.uint8))
    reg = h.new_empty((h.shape[0],) if with_reg else (0,))
    return torch.empty_like(x, memory_format=torch.contiguous_format), spikes, reg


@_fake("_fs_activation_backward", "_fs_activation_backward_check")
def _fs_activation_backward_fake(grad_y, grad_reg, x, h, d, T, output_mask):
    like = (x, h, d, T)
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) if m else None
                 for t, m in zip(like, output_mask))
