"""TTFS ops on spike times, with argument checks and backend choice.

Spike times are float32 or float64 tensors on one of two time axes:
- absolute time: every layer on one axis. A layer fires in [t_min, t_max]; its inputs fired
  in the window that ends at t_min. Pass t_min and t_max.
- local time, what networks carry (ttfs_ext.nn.TTFSSequential): each window measured from
  its own start. A layer of width T gives times in [0, T] (T: no spike; below 0: a spike
  before its window opens) from inputs in [0, in_width], the window before. Pass in_width
  and width (keywords). A float32 time then rounds at the size of its own window, not at the
  depth of the network: deep float32 networks stay as precise as their ReLU twins.
Both forms run the same kernels, at the same cost: the activation is t_min - t_in, or
in_width - tau_in. A neuron that does not fire has t = t_max (width in local time). Windows
are Python floats or 0-dim tensors (floats are cheaper: a tensor is read once per call, and
synchronises if it lives on a GPU). On CUDA, under torch.autocast, the matrix work runs in
float16/bfloat16 while spike times, biases and the threshold stay float32.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch

from . import _backend, reference

__all__ = ["linear", "conv2d", "readout", "max_pool2d", "encode", "first_spike_linear", "first_spike_conv2d"]

Window = Union[float, torch.Tensor]
IntPair = Union[int, tuple[int, int], list[int]]
_TIME_DTYPES = (torch.float32, torch.float64)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


# --- checks: each error names the argument ----------------------------------------------

def _scalar(op: str, name: str, value: Window) -> float:
    if type(value) is float and math.isfinite(value):  # the common case, first: a layer call's fixed cost
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{op}: {name} must be a float or a 0-dim tensor, got shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a float or a 0-dim tensor, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{op}: {name} must be finite, got {value}")
    return value


def _window(op: str, t_min: Window, t_max: Window, names: tuple[str, str] = ("t_min", "t_max")) -> tuple[float, float]:
    lo, hi = _scalar(op, names[0], t_min), _scalar(op, names[1], t_max)
    if not hi > lo:
        raise ValueError(f"{op}: the window must satisfy {names[0]} < {names[1]}, got {names[0]}={lo} and "
                         f"{names[1]}={hi}")
    return lo, hi


def _width(op: str, name: str, value: Window) -> float:
    value = _scalar(op, name, value)
    if not value > 0:
        raise ValueError(f"{op}: {name} must be positive, got {value}")
    return value


def _local(op: str, absolute: dict[str, Optional[Window]], local: dict[str, Optional[Window]]) -> bool:
    """Whether a call is in local time (the keywords of `local` given) or absolute time (those
    of `absolute`): exactly one form, complete."""
    given = {name for name, v in {**absolute, **local}.items() if v is not None}
    is_local = bool(given & set(local))
    if is_local and given & set(absolute):
        raise TypeError(f"{op}: pass {' and '.join(absolute)} (absolute time) or {' and '.join(local)} (local "
                        f"time), not both")
    missing = [name for name in (local if is_local else absolute) if name not in given]
    if missing:
        raise TypeError(f"{op}: missing {' and '.join(missing)} (absolute time: {', '.join(absolute)}; local time: "
                        f"{', '.join(local)})")
    return is_local


def _layer_window(op: str, t_min, t_max, in_width, width) -> tuple[float, float]:
    """The two scalars of the B1 ops: (t_min, t_max), or (in_width, width) in local time."""
    if _local(op, {"t_min": t_min, "t_max": t_max}, {"in_width": in_width, "width": width}):
        return _width(op, "in_width", in_width), _width(op, "width", width)
    return _window(op, t_min, t_max)


def _fast_window(t_min, t_max, in_width, width) -> Optional[tuple[float, float]]:
    """The scalars of the common call, float windows in one complete form, or None: a few
    comparisons (a NaN fails them; the kernel rejects an inf), the Python checks left to the
    calls that need them."""
    if in_width is None and width is None:
        if type(t_min) is float and type(t_max) is float and t_max > t_min:
            return t_min, t_max
    elif t_min is None and t_max is None and type(in_width) is float and type(width) is float:
        if in_width > 0 and width > 0:
            return in_width, width
    return None


def _all_finite(t: torch.Tensor) -> bool:
    """True if t has no NaN or inf. A finite sum of squares proves it in one vectorised read
    (a NaN or inf element makes it NaN or +inf, and squares cannot cancel); only a non-finite
    result, which float overflow can also cause, pays for the exact test.
    Per call on 256 x 784 float32 (2 threads, medians; benchmarks/NOTES.md, v3): the dot
    product 14 us, t.sum() 21 us, torch.isfinite(t).all() 620 us (four passes, two temporaries)."""
    if t.dtype in (torch.float32, torch.float64) and t.is_contiguous():
        flat = t.view(-1)
        quick = torch.dot(flat, flat)
    else:
        quick = t.sum()
    return math.isfinite(quick.item()) or bool(torch.isfinite(t).all())


def _check_times(op: str, t_in: torch.Tensor, name: str = "t_in") -> None:
    if not isinstance(t_in, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a tensor, got {type(t_in).__name__}")
    if t_in.dtype not in _TIME_DTYPES:
        raise TypeError(f"{op}: {name} (spike times) must be float32 or float64, got {t_in.dtype}")
    if _backend.input_checks_enabled() and t_in.numel() and not _all_finite(t_in):
        raise ValueError(f"{op}: {name} contains NaN or inf spike times")


def _check_params(op: str, t_in: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Checks dtype and device of weight and bias; returns bias in the spike-time dtype."""
    _check_times(op, t_in)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{op}: weight must be a tensor, got {type(weight).__name__}")
    low_precision = weight.dtype in _LOW_PRECISION and t_in.dtype == torch.float32 and t_in.is_cuda
    if weight.dtype != t_in.dtype and not low_precision:
        raise TypeError(f"{op}: weight must have the dtype of t_in ({t_in.dtype}), or float16/bfloat16 "
                        f"with float32 t_in on CUDA; got {weight.dtype}")
    if weight.device != t_in.device:
        raise ValueError(f"{op}: weight is on {weight.device} but t_in is on {t_in.device}")
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor) or not bias.is_floating_point():
        raise TypeError(f"{op}: bias must be a floating-point tensor or None")
    if bias.device != t_in.device:
        raise ValueError(f"{op}: bias is on {bias.device} but t_in is on {t_in.device}")
    # The bias is added to potentials in spike-time precision.
    return bias if bias.dtype == t_in.dtype else bias.to(t_in.dtype)


# Errors a kernel raises for a bad argument (c10::Error, ValueError, TypeError, IndexError).
_KERNEL_ERRORS = (RuntimeError, ValueError, TypeError, IndexError)


def _direct(t_in: torch.Tensor, bias: Optional[torch.Tensor], backend: Optional[str]) -> bool:
    """True for the common call, which goes straight to the kernel (with _fast_window's
    scalars): the kernel of t_in's device as the backend (chosen or automatic), the bias in the
    spike-time dtype. The kernel checks shapes, dtypes, devices, finite windows and (CPU)
    NaN/inf spike times itself; only when it raises do the Python checks run, to name the
    argument at fault. The Python checks cost more than their own ~10 us: after a layer that
    streamed megabytes through the cache the interpreter runs cold, and they took 36 us there,
    5-8 % of a small layer (benchmarks/NOTES.md, v5)."""
    return (isinstance(t_in, torch.Tensor)
            and (bias is None or (isinstance(bias, torch.Tensor) and bias.dtype == t_in.dtype))
            and _backend.direct_kernel(t_in, backend))


def _pair(op: str, name: str, value: IntPair, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= minimum for v in pair):
        raise ValueError(f"{op}: {name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return pair  # type: ignore[return-value]


# --- ops -------------------------------------------------------------------------------

def linear(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           t_min: Optional[Window] = None, t_max: Optional[Window] = None, *, in_width: Optional[Window] = None,
           width: Optional[Window] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Spike times of a dense TTFS layer.

    Absolute time, firing in [t_min, t_max]: t_out = min(t_max - (W (t_min - t_in) + b), t_max).
    Local time: tau_out = min(width - (W (in_width - tau_in) + b), width), with tau_in in
    [0, in_width] from the start of the input window and tau_out from the start of the
    layer's own. t_in: (..., in_features); weight: (out_features, in_features) as in
    nn.Linear; bias: (out_features,) or None. Returns (..., out_features).
    """
    window = _fast_window(t_min, t_max, in_width, width)
    if window is not None and _direct(t_in, bias, backend):
        try:
            return torch.ops.ttfs_ext.dense(t_in, weight, bias, *window)
        except _KERNEL_ERRORS:
            pass  # the checks below name the argument at fault, or the kernel raises again
    op = "ttfs_ext.functional.linear"
    lo, hi = _layer_window(op, t_min, t_max, in_width, width)
    bias = _check_params(op, t_in, weight, bias)
    _check_linear_shapes(op, t_in, weight, bias)
    if _backend.use_kernel(op, t_in.device, backend):
        return torch.ops.ttfs_ext.dense(t_in, weight, bias, lo, hi)
    return reference.linear(t_in, weight, bias, lo, hi)


def readout(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
            t_min: Optional[Window] = None, *, in_width: Optional[Window] = None,
            backend: Optional[str] = None) -> torch.Tensor:
    """Membrane potential of the (non-spiking) output layer at t_min, which are the logits:
    V = W (t_min - t_in) + b, or in local time V = W (in_width - tau_in) + b. Shapes as in
    linear()."""
    fast = t_min if in_width is None else in_width if t_min is None and type(in_width) is float and in_width > 0 \
        else None
    if type(fast) is float and _direct(t_in, bias, backend):
        try:
            return torch.ops.ttfs_ext.readout(t_in, weight, bias, fast)
        except _KERNEL_ERRORS:
            pass  # the checks below name the argument at fault, or the kernel raises again
    op = "ttfs_ext.functional.readout"
    if _local(op, {"t_min": t_min}, {"in_width": in_width}):
        lo = _width(op, "in_width", in_width)
    else:
        lo = _scalar(op, "t_min", t_min)
    bias = _check_params(op, t_in, weight, bias)
    _check_linear_shapes(op, t_in, weight, bias)
    if _backend.use_kernel(op, t_in.device, backend):
        return torch.ops.ttfs_ext.readout(t_in, weight, bias, lo)
    return reference.readout(t_in, weight, bias, lo)


def _check_linear_shapes(op: str, t_in: torch.Tensor, weight: torch.Tensor,
                         bias: Optional[torch.Tensor]) -> None:
    if weight.dim() != 2:
        raise ValueError(f"{op}: weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
    if t_in.dim() < 1 or t_in.shape[-1] != weight.shape[1]:
        raise ValueError(f"{op}: t_in must have shape (..., {weight.shape[1]}) to match weight "
                         f"{tuple(weight.shape)}, got {tuple(t_in.shape)}")
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != weight.shape[0]):
        raise ValueError(f"{op}: bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")


def conv2d(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
           t_min: Optional[Window] = None, t_max: Optional[Window] = None, stride: IntPair = 1, padding: IntPair = 0,
           dilation: IntPair = 1, groups: int = 1, *, in_width: Optional[Window] = None,
           width: Optional[Window] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Spike times of a convolutional TTFS layer (absolute or local time, as linear());
    padding holds an activation of 0 (t_min, or in_width in local time).

    t_in: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_out, C_in/groups, kH, kW) as
    in nn.Conv2d; bias: (C_out,), per output position (C_out, H_out, W_out) (as conversion of
    batch-normalised networks needs), or None.
    """
    window = _fast_window(t_min, t_max, in_width, width)
    if window is not None and _direct(t_in, bias, backend) and t_in.dim() == 4:
        try:
            return torch.ops.ttfs_ext.conv2d(t_in, weight, bias, *window, stride, padding, dilation, groups)
        except _KERNEL_ERRORS:
            pass  # the checks below name the argument at fault, or the kernel raises again
    op = "ttfs_ext.functional.conv2d"
    lo, hi = _layer_window(op, t_min, t_max, in_width, width)
    bias = _check_params(op, t_in, weight, bias)
    stride, padding = _pair(op, "stride", stride, 1), _pair(op, "padding", padding, 0)
    dilation = _pair(op, "dilation", dilation, 1)
    unbatched = t_in.dim() == 3
    if unbatched:
        t_in = t_in.unsqueeze(0)
    _check_conv_shapes(op, t_in, weight, bias, stride, padding, dilation, groups)
    if _backend.use_kernel(op, t_in.device, backend):
        out = torch.ops.ttfs_ext.conv2d(t_in, weight, bias, lo, hi, stride, padding, dilation, groups)
    else:
        out = reference.conv2d(t_in, weight, bias, lo, hi, stride, padding, dilation, groups)
    return out.squeeze(0) if unbatched else out


def conv2d_output_size(size: tuple[int, int], kernel_size: tuple[int, int], stride: tuple[int, int],
                       padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """(H_out, W_out) of a convolution, as in nn.Conv2d."""
    return tuple(  # type: ignore[return-value]
        (size[i] + 2 * padding[i] - dilation[i] * (kernel_size[i] - 1) - 1) // stride[i] + 1 for i in range(2))


def _check_conv_shapes(op, t_in, weight, bias, stride, padding, dilation, groups) -> None:
    if t_in.dim() != 4:
        raise ValueError(f"{op}: t_in must be (N, C, H, W) or (C, H, W), got shape {tuple(t_in.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_out, C_in/groups, kH, kW), got shape {tuple(weight.shape)}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    c_out = weight.shape[0]
    if t_in.shape[1] != weight.shape[1] * groups or c_out % groups:
        raise ValueError(f"{op}: t_in has {t_in.shape[1]} channels but weight {tuple(weight.shape)} with "
                         f"groups={groups} expects {weight.shape[1] * groups} (and C_out divisible by groups)")
    h_out, w_out = conv2d_output_size(tuple(t_in.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)
    if h_out < 1 or w_out < 1:
        raise ValueError(f"{op}: the kernel {tuple(weight.shape[2:])} (dilation {dilation}) does not fit in the "
                         f"padded input {tuple(t_in.shape[2:])} (padding {padding})")
    if bias is not None and tuple(bias.shape) not in ((c_out,), (c_out, h_out, w_out)):
        raise ValueError(f"{op}: bias must have shape ({c_out},) or ({c_out}, {h_out}, {w_out}), "
                         f"got {tuple(bias.shape)}")


def max_pool2d(t_in: torch.Tensor, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0) -> torch.Tensor:
    """TTFS max-pooling: the earliest spike (minimum of t) of each window. Exact, built on
    PyTorch's max-pooling of -t; padding never wins."""
    op = "ttfs_ext.functional.max_pool2d"
    _check_times(op, t_in)
    if t_in.dim() not in (3, 4):
        raise ValueError(f"{op}: t_in must be (N, C, H, W) or (C, H, W), got shape {tuple(t_in.shape)}")
    kernel = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    return reference.max_pool2d(t_in, kernel, stride, padding)


def encode(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Input spike times in the window [0, 1]: t = 1 - clamp((x - low) / (high - low), 0, 1).
    Values at or above `high` fire at 0; at or below `low` they fire at 1 (no spike)."""
    op = "ttfs_ext.functional.encode"
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating-point tensor (convert images with x.float() / 255)")
    low, high = _scalar(op, "low", low), _scalar(op, "high", high)
    if not high > low:
        raise ValueError(f"{op}: need low < high, got low={low} and high={high}")
    if _backend.input_checks_enabled() and x.numel() and not _all_finite(x):
        raise ValueError(f"{op}: x contains NaN or inf")
    return reference.encode(x, low, high)


# --- the general neuron, event-exact ------------------------------------------------------

def _neuron_window(op: str, t_start, t_max, in_width, width) -> tuple[float, float, float]:
    """(t_start, t_max, t_origin) of the first_spike ops: absolute time on one axis, or local
    time, where the inputs' axis starts at their window's start (t_start = 0) and the outputs'
    at in_width on it, so that their window ends at width (exactly: no spike is width)."""
    if _local(op, {"t_start": t_start, "t_max": t_max}, {"in_width": in_width, "width": width}):
        lo, hi = _width(op, "in_width", in_width), _width(op, "width", width)
        return 0.0, hi, lo
    start, end = _window(op, t_start, t_max, ("t_start", "t_max"))
    return start, end, 0.0


def first_spike_linear(t_in: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, threshold: torch.Tensor,
                       t_start: Optional[Window] = None, t_max: Optional[Window] = None, *,
                       in_width: Optional[Window] = None, width: Optional[Window] = None,
                       backend: Optional[str] = None) -> torch.Tensor:
    """Exact first spike times of a layer of general non-leaky integrate-and-fire neurons,
    without assuming that every input arrives before a neuron fires:

        dV_i/dt = alpha_i H(t - t_start) + sum_j W_ij H(t - t_j),   V_i(t_start) = 0,

    neuron i fires at the first t >= t_start with V_i(t) >= threshold_i, or not before t_max
    (then t = t_max). An input with t_j < t_start acts from t_start. Exact gradients with
    respect to t_in, weight, alpha and threshold (for a firing neuron with causal set C and
    slope B_i = alpha_i + sum_C W_ij: dt_i/dt_j = W_ij/B_i, dt_i/dW_ij = (t_j - t_i)/B_i,
    dt_i/dtheta_i = 1/B_i, dt_i/dalpha_i = (t_start - t_i)/B_i; zero where it does not fire).

    Local time (in_width, width): the neurons integrate from the start of their input window,
    t_in in [0, in_width] is measured from it, and the spike times from the start of the
    layer's own window, which opens at in_width: in [0, width], width for no spike, below 0
    for a spike before the window opens. The neuron is shift-invariant: the same spikes.

    t_in: (..., N); weight: (O, N); alpha, threshold: (O,). Returns (..., O). The kernels
    accumulate in float64 and need memory proportional to batch x (N + O).
    """
    op = "ttfs_ext.functional.first_spike_linear"
    start, end, origin = _neuron_window(op, t_start, t_max, in_width, width)
    _check_neuron_params(op, t_in, weight, alpha, threshold)
    _check_linear_shapes(op, t_in, weight, None)
    for name, p in (("alpha", alpha), ("threshold", threshold)):
        if tuple(p.shape) != (weight.shape[0],):
            raise ValueError(f"{op}: {name} must have shape ({weight.shape[0]},), got {tuple(p.shape)}")
    if _backend.use_kernel(op, t_in.device, backend):
        lead = t_in.shape[:-1]
        out, _ = torch.ops.ttfs_ext.first_spike_dense(t_in.reshape(-1, t_in.shape[-1]), weight, alpha, threshold,
                                                      start, end, origin)
        return out.reshape(*lead, weight.shape[0])
    return reference.first_spike_linear(t_in, weight, alpha, threshold, start, end, origin)


def first_spike_conv2d(t_in: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor, threshold: torch.Tensor,
                       t_start: Optional[Window] = None, t_max: Optional[Window] = None, stride: IntPair = 1,
                       padding: IntPair = 0, dilation: IntPair = 1, groups: int = 1, *,
                       in_width: Optional[Window] = None, width: Optional[Window] = None,
                       backend: Optional[str] = None) -> torch.Tensor:
    """first_spike_linear for a convolution (absolute or local time, as there): each output
    position is a neuron over its patch; padding never spikes (a padded tap adds no current).
    t_in: (N, C_in, H, W) or (C_in, H, W); weight: (C_out, C_in/groups, kH, kW); alpha,
    threshold: (C_out,) or per output position (C_out, H_out, W_out), each on its own.
    Returns (N, C_out, H_out, W_out)."""
    op = "ttfs_ext.functional.first_spike_conv2d"
    start, end, origin = _neuron_window(op, t_start, t_max, in_width, width)
    _check_neuron_params(op, t_in, weight, alpha, threshold)
    stride, padding = _pair(op, "stride", stride, 1), _pair(op, "padding", padding, 0)
    dilation = _pair(op, "dilation", dilation, 1)
    unbatched = t_in.dim() == 3
    if unbatched:
        t_in = t_in.unsqueeze(0)
    _check_conv_shapes(op, t_in, weight, None, stride, padding, dilation, groups)
    c_out = weight.shape[0]
    out_size = conv2d_output_size(tuple(t_in.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)
    for name, p in (("alpha", alpha), ("threshold", threshold)):
        if tuple(p.shape) not in ((c_out,), (c_out, *out_size)):
            raise ValueError(f"{op}: {name} must have shape ({c_out},) or ({c_out}, {out_size[0]}, {out_size[1]}), "
                             f"got {tuple(p.shape)}")
    if _backend.use_kernel(op, t_in.device, backend):
        out, _ = torch.ops.ttfs_ext.first_spike_conv2d(t_in, weight, alpha, threshold, start, end, stride, padding,
                                                       dilation, groups, 1 << 23, origin)
    else:
        out = reference.first_spike_conv2d(t_in, weight, alpha, threshold, start, end, stride, padding, dilation,
                                           groups, origin)
    return out.squeeze(0) if unbatched else out


def _check_neuron_params(op: str, t_in: torch.Tensor, weight: torch.Tensor, alpha: torch.Tensor,
                         threshold: torch.Tensor) -> None:
    _check_times(op, t_in)
    for name, p in (("weight", weight), ("alpha", alpha), ("threshold", threshold)):
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a tensor, got {type(p).__name__}")
        if p.dtype != t_in.dtype:
            raise TypeError(f"{op}: {name} must have the dtype of t_in ({t_in.dtype}), got {p.dtype}")
        if p.device != t_in.device:
            raise ValueError(f"{op}: {name} is on {p.device} but t_in is on {t_in.device}")
        if _backend.input_checks_enabled() and p.numel() and not _all_finite(p):
            raise ValueError(f"{op}: {name} contains NaN or inf")
