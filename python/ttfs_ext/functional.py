"""TTFS ops on spike times: the Python forms of the arguments, then one call into torch.ops.

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

Each op's public function handles only what the Python API adds (absolute or local windows,
0-dim tensor windows, int pairs, unbatched convolutions, a bias of another float dtype) and calls
the op: the compiled kernel of t_in's device, which checks every argument itself
(csrc/layers/checks.cpp), or the reference (ttfs_ext.reference), which first runs the same C++
checks through the op's check-only twin (torch.ops.ttfs_ext._<op>_check). The fake kernel of
each op, for torch.compile and torch.export, stands beside its function.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import torch

from . import _backend, reference

__all__ = ["linear", "conv2d", "readout", "max_pool2d", "encode", "first_spike_linear", "first_spike_conv2d"]

Window = Union[float, torch.Tensor]
IntPair = Union[int, tuple[int, int], list[int]]
_ops = torch.ops.ttfs_ext


# --- the Python forms of the arguments ----------------------------------------------------

def _scalar(op: str, name: str, value: Window) -> float:
    """A window scalar as a float: floats, ints, 0-dim tensors. Finiteness is the op's check."""
    if type(value) is float:  # the common case, first: a layer call's fixed cost
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{op}: {name} must be a float or a 0-dim tensor, got shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{op}: {name} must be a float or a 0-dim tensor, got {type(value).__name__}")
    return float(value)


def _window(op: str, t_min: Window, t_max: Window) -> tuple[float, float]:
    """An absolute window: t_min < t_max (the op itself takes any finite pair)."""
    lo, hi = _scalar(op, "t_min", t_min), _scalar(op, "t_max", t_max)
    if math.isfinite(lo) and math.isfinite(hi) and not hi > lo:
        raise ValueError(f"{op}: the window must satisfy t_min < t_max, got t_min={lo} and t_max={hi}")
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
    """The two scalars of the B1 ops: (t_min, t_max), or (in_width, width) in local time. The
    common call, float windows in one complete form, costs a few comparisons."""
    if in_width is None and width is None:
        if type(t_min) is float and type(t_max) is float and t_max > t_min:
            return t_min, t_max
    elif t_min is None and t_max is None and type(in_width) is float and type(width) is float:
        if in_width > 0 and width > 0:
            return in_width, width
    if _local(op, {"t_min": t_min, "t_max": t_max}, {"in_width": in_width, "width": width}):
        return _width(op, "in_width", in_width), _width(op, "width", width)
    return _window(op, t_min, t_max)


def _neuron_window(op: str, t_start, t_max, in_width, width) -> tuple[float, float, float]:
    """(t_start, t_max, t_origin) of the first_spike ops: absolute time on one axis, or local
    time, where the inputs' axis starts at their window's start (t_start = 0) and the outputs'
    at in_width on it, so that their window ends at width (exactly: no spike is width)."""
    if _local(op, {"t_start": t_start, "t_max": t_max}, {"in_width": in_width, "width": width}):
        lo, hi = _width(op, "in_width", in_width), _width(op, "width", width)
        return 0.0, hi, lo
    return _scalar(op, "t_start", t_start), _scalar(op, "t_max", t_max), 0.0


def _bias(t_in: torch.Tensor, bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The bias is added to potentials in spike-time precision: another float dtype is cast."""
    if bias is None or bias.dtype == t_in.dtype or not bias.is_floating_point():
        return bias
    return bias.to(t_in.dtype)


# --- the reference path and the fakes: the op's own checks, through its check-only twin -------

def _check(check: str, *args: Any) -> None:
    """Runs an op's argument checks (C++) before the reference. Inside torch.compile the
    reference's own torch ops raise; without the compiled extension, torch's own errors."""
    if _backend._C is not None and not torch.compiler.is_compiling():
        getattr(_ops, check)(*args)


def _concrete(args: tuple) -> bool:
    """Whether a fake kernel's arguments have concrete shapes and values (no symbols)."""
    for a in args:
        if isinstance(a, torch.Tensor):
            if not all(type(s) is int for s in a.shape):
                return False
        elif isinstance(a, (list, tuple)):
            if not all(type(v) in (int, bool) for v in a):
                return False
        elif a is not None and type(a) not in (int, float, bool):
            return False
    return True


def _fake(op: str, check: str) -> Callable:
    """Registers a fake kernel (shapes only) that first runs the op's checks where its
    arguments are concrete: a meta tensor among CPU tensors dispatches to it (Meta outranks CPU)."""
    def register(fn: Callable) -> Callable:
        if _backend._C is None:
            return fn

        def fake(*args, **kwargs):
            if _concrete(args + tuple(kwargs.values())):
                getattr(_ops, check)(*args, **kwargs)
            return fn(*args, **kwargs)
        torch.library.register_fake(f"ttfs_ext::{op}")(fake)
        return fn
    return register


def _grads_fake(t_in, weight, shapes, mask):
    """(t_in, weight, *params) gradients of the given shapes, None where the mask is off."""
    like = (t_in, weight) + (t_in,) * (len(shapes) - 2)
    return tuple(x.new_empty(s) if m else None for x, s, m in zip(like, shapes, mask))


def _conv_out_shape(t_in, weight, stride, padding, dilation) -> tuple:
    h, w = conv2d_output_size(tuple(t_in.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)
    return (t_in.shape[0], weight.shape[0], h, w)


def conv2d_output_size(size: tuple[int, int], kernel_size: tuple[int, int], stride: tuple[int, int],
                       padding: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """(H_out, W_out) of a convolution, as in nn.Conv2d."""
    return tuple(  # type: ignore[return-value]
        (size[i] + 2 * padding[i] - dilation[i] * (kernel_size[i] - 1) - 1) // stride[i] + 1 for i in range(2))


# --- linear -------------------------------------------------------------------------------

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
    lo, hi = _layer_window("ttfs_ext.linear", t_min, t_max, in_width, width)
    bias = _bias(t_in, bias)
    if _backend.use_kernel("ttfs_ext.linear", t_in, backend):
        return _ops.linear(t_in, weight, bias, lo, hi)
    _check("_linear_check", t_in, weight, bias, lo, hi)
    return reference.linear(t_in, weight, bias, lo, hi)


@_fake("linear", "_linear_check")
def _linear_fake(t_in, weight, bias, t_min, t_max):
    return t_in.new_empty((*t_in.shape[:-1], weight.shape[0]))


@_fake("_linear_backward", "_linear_backward_check")
def _linear_backward_fake(grad_out, t_in, weight, t_out, t_min, t_max, output_mask):
    return _grads_fake(t_in, weight, (t_in.shape, weight.shape, (weight.shape[0],)), output_mask)


# --- readout ------------------------------------------------------------------------------

def readout(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
            t_min: Optional[Window] = None, *, in_width: Optional[Window] = None,
            backend: Optional[str] = None) -> torch.Tensor:
    """Membrane potential of the (non-spiking) output layer at t_min, which are the logits:
    V = W (t_min - t_in) + b, or in local time V = W (in_width - tau_in) + b. Shapes as in
    linear()."""
    if type(t_min) is float and in_width is None:  # the common call
        lo = t_min
    elif _local("ttfs_ext.readout", {"t_min": t_min}, {"in_width": in_width}):
        lo = _width("ttfs_ext.readout", "in_width", in_width)
    else:
        lo = _scalar("ttfs_ext.readout", "t_min", t_min)
    bias = _bias(t_in, bias)
    if _backend.use_kernel("ttfs_ext.readout", t_in, backend):
        return _ops.readout(t_in, weight, bias, lo)
    _check("_readout_check", t_in, weight, bias, lo)
    return reference.readout(t_in, weight, bias, lo)


@_fake("readout", "_readout_check")
def _readout_fake(t_in, weight, bias, t_min):
    return t_in.new_empty((*t_in.shape[:-1], weight.shape[0]))


@_fake("_readout_backward", "_readout_backward_check")
def _readout_backward_fake(grad_out, t_in, weight, t_min, output_mask):
    return _grads_fake(t_in, weight, (t_in.shape, weight.shape, (weight.shape[0],)), output_mask)


# --- conv2d -------------------------------------------------------------------------------

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
    lo, hi = _layer_window("ttfs_ext.conv2d", t_min, t_max, in_width, width)
    bias = _bias(t_in, bias)
    unbatched = t_in.dim() == 3  # int stride, padding, dilation: the schema's int[2] takes them
    if unbatched:
        t_in = t_in.unsqueeze(0)
    if _backend.use_kernel("ttfs_ext.conv2d", t_in, backend):
        out = _ops.conv2d(t_in, weight, bias, lo, hi, stride, padding, dilation, groups)
    else:
        _check("_conv2d_check", t_in, weight, bias, lo, hi, stride, padding, dilation, groups)
        out = reference.conv2d(t_in, weight, bias, lo, hi, stride, padding, dilation, groups)
    return out.squeeze(0) if unbatched else out


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """The memory format the conv ops keep (the C++ conv_memory_format, layers/conv2d.cpp):
    channels_last for a 4-d tensor laid out so and not also contiguous, else contiguous."""
    nhwc = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc else torch.contiguous_format


def _conv_grads_layout(g_in, g_w, t_in, weight) -> tuple:
    """The input and weight gradients of the conv ops in the layout of their tensors."""
    return (None if g_in is None else g_in.contiguous(memory_format=_memory_format(t_in)),
            None if g_w is None else g_w.contiguous(memory_format=_memory_format(weight)))


@_fake("conv2d", "_conv2d_check")
def _conv2d_fake(t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups):
    return t_in.new_empty(_conv_out_shape(t_in, weight, stride, padding, dilation)).contiguous(
        memory_format=_memory_format(t_in))


@_fake("_conv2d_backward", "_conv2d_backward_check")
def _conv2d_backward_fake(grad_out, t_in, weight, t_out, t_min, t_max, stride, padding, dilation, groups,
                          bias_per_position, output_mask):
    bias_shape = tuple(grad_out.shape[1:]) if bias_per_position else (weight.shape[0],)
    g_in, g_w, g_b = _grads_fake(t_in, weight, (t_in.shape, weight.shape, bias_shape), output_mask)
    return _conv_grads_layout(g_in, g_w, t_in, weight) + (g_b,)


# --- max_pool2d and encode: Python only, no op of their own -----------------------------------

def _pair(op: str, name: str, value: IntPair, minimum: int) -> tuple[int, int]:
    message = f"{op}: {name} must be an int >= {minimum} or a pair of them, got {value!r}"
    try:
        pair = (value, value) if isinstance(value, int) else tuple(value)
    except TypeError:  # a float, None, ...: not a pair
        raise ValueError(message) from None
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in pair):
        raise ValueError(message)
    return pair  # type: ignore[return-value]


def _all_finite(t: torch.Tensor) -> bool:
    """True if t has no NaN or inf: a finite sum of squares proves it in one vectorised read (a
    NaN or inf element makes it NaN or +inf, and squares cannot cancel); only a non-finite
    result, which float overflow can also cause, pays for the exact test. The ops' own check
    is its C++ twin (csrc/layers/checks.cpp)."""
    with torch.no_grad():  # a check, not part of the graph
        if t.dtype in (torch.float32, torch.float64) and t.is_contiguous():
            flat = t.view(-1)
            quick = torch.dot(flat, flat)
        else:
            quick = t.sum()
        return math.isfinite(quick.item()) or bool(torch.isfinite(t).all())


def max_pool2d(t_in: torch.Tensor, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0) -> torch.Tensor:
    """TTFS max-pooling: the earliest spike (minimum of t) of each window. Exact, built on
    PyTorch's max-pooling of -t; padding never wins."""
    op = "ttfs_ext.max_pool2d"
    if not isinstance(t_in, torch.Tensor):
        raise TypeError(f"{op}: t_in must be a tensor, got {type(t_in).__name__}")
    if t_in.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{op}: t_in (spike times) must be float32 or float64, got {t_in.dtype}")
    if _backend.input_checks_enabled(t_in.device) and t_in.numel() and not _all_finite(t_in):
        raise ValueError(f"{op}: t_in contains NaN or inf spike times")
    if t_in.dim() not in (3, 4):
        raise ValueError(f"{op}: t_in must be (N, C, H, W) or (C, H, W), got shape {tuple(t_in.shape)}")
    kernel = _pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else _pair(op, "stride", stride, 1)
    padding = _pair(op, "padding", padding, 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    if torch.is_grad_enabled() and t_in.requires_grad:
        return _EarliestSpikePool.apply(t_in, kernel, stride, padding)
    return reference.max_pool2d(t_in, kernel, stride, padding)


class _EarliestSpikePool(torch.autograd.Function):
    """reference.max_pool2d (-max_pool2d(-t)) that keeps only the winners' indices for backward:
    autograd of the reference would also keep -t, a copy of the input (the ReLU twin's pool keeps
    its input, which its ReLU keeps anyway). The gradient is the pool's: each output's to the
    earliest spike of its window. Once differentiable, as the compiled ops."""

    @staticmethod
    def forward(ctx, t_in, kernel, stride, padding):
        neg, indices = torch.nn.functional.max_pool2d(-t_in, kernel, stride, padding, return_indices=True)
        ctx.save_for_backward(indices)
        ctx.geometry = (kernel, stride, padding)
        ctx.input = (t_in.shape, _memory_format(t_in))
        return neg.neg_()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (indices,) = ctx.saved_tensors
        kernel, stride, padding = ctx.geometry
        shape, fmt = ctx.input
        like = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=fmt)  # sizes, layout: never read
        grad_in = torch.ops.aten.max_pool2d_with_indices_backward(grad, like, kernel, stride, padding, (1, 1),
                                                                   False, indices)
        return grad_in, None, None, None


def encode(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Input spike times in the window [0, 1]: t = 1 - clamp((x - low) / (high - low), 0, 1).
    Values at or above `high` fire at 0; at or below `low` they fire at 1 (no spike)."""
    op = "ttfs_ext.encode"
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{op}: x must be a floating-point tensor (convert images with x.float() / 255)")
    low, high = _scalar(op, "low", low), _scalar(op, "high", high)
    for name, value in (("low", low), ("high", high)):
        if not math.isfinite(value):
            raise ValueError(f"{op}: {name} must be finite, got {value}")
    if not high > low:
        raise ValueError(f"{op}: need low < high, got low={low} and high={high}")
    if _backend.input_checks_enabled(x.device) and x.numel() and not _all_finite(x):
        raise ValueError(f"{op}: x contains NaN or inf")
    return reference.encode(x, low, high)


# --- the general neuron, event-exact ------------------------------------------------------

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
    start, end, origin = _neuron_window("ttfs_ext.first_spike_linear", t_start, t_max, in_width, width)
    rows = t_in.reshape(-1, t_in.shape[-1]) if t_in.dim() >= 1 else t_in  # the op takes (rows, N)
    if _backend.use_kernel("ttfs_ext.first_spike_linear", t_in, backend):
        out = _ops.first_spike_linear(rows, weight, alpha, threshold, start, end, origin)[0]
    else:
        _check("_first_spike_linear_check", rows, weight, alpha, threshold, start, end, origin)
        out = reference.first_spike_linear(rows, weight, alpha, threshold, start, end, origin)
    return out.reshape(*t_in.shape[:-1], out.shape[-1])


@_fake("first_spike_linear", "_first_spike_linear_check")
def _first_spike_linear_fake(t_in, weight, alpha, threshold, t_start, t_max, t_origin=0.0):
    shape = (t_in.shape[0], weight.shape[0])
    return t_in.new_empty(shape), t_in.new_empty(shape)


@_fake("_first_spike_linear_backward", "_first_spike_linear_backward_check")
def _first_spike_linear_backward_fake(grad_out, t_in, weight, t_out, slope, t_start, t_origin, output_mask):
    o = (weight.shape[0],)
    return _grads_fake(t_in, weight, (t_in.shape, weight.shape, o, o), output_mask)


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
    start, end, origin = _neuron_window("ttfs_ext.first_spike_conv2d", t_start, t_max, in_width, width)
    unbatched = t_in.dim() == 3  # int stride, padding, dilation: the schema's int[2] takes them
    if unbatched:
        t_in = t_in.unsqueeze(0)
    if _backend.use_kernel("ttfs_ext.first_spike_conv2d", t_in, backend):
        out = _ops.first_spike_conv2d(t_in, weight, alpha, threshold, start, end, stride, padding, dilation, groups,
                                      1 << 23, origin)[0]
    else:
        _check("_first_spike_conv2d_check", t_in, weight, alpha, threshold, start, end, stride, padding, dilation,
               groups, 1 << 23, origin)
        out = reference.first_spike_conv2d(t_in, weight, alpha, threshold, start, end, stride, padding, dilation,
                                           groups, origin)
    return out.squeeze(0) if unbatched else out


@_fake("first_spike_conv2d", "_first_spike_conv2d_check")
def _first_spike_conv2d_fake(t_in, weight, alpha, threshold, t_start, t_max, stride, padding, dilation, groups,
                             workspace=1 << 23, t_origin=0.0):
    shape, fmt = _conv_out_shape(t_in, weight, stride, padding, dilation), _memory_format(t_in)
    return (t_in.new_empty(shape).contiguous(memory_format=fmt), t_in.new_empty(shape).contiguous(memory_format=fmt))


@_fake("_first_spike_conv2d_backward", "_first_spike_conv2d_backward_check")
def _first_spike_conv2d_backward_fake(grad_out, t_in, weight, t_out, slope, t_start, t_origin, stride, padding,
                                      dilation, groups, alpha_per_position, threshold_per_position, output_mask,
                                      workspace=1 << 23):
    per_position, per_channel = tuple(grad_out.shape[1:]), (weight.shape[0],)
    g_in, g_w, g_alpha, g_theta = _grads_fake(
        t_in, weight, (t_in.shape, weight.shape, per_position if alpha_per_position else per_channel,
                       per_position if threshold_per_position else per_channel), output_mask)
    return _conv_grads_layout(g_in, g_w, t_in, weight) + (g_alpha, g_theta)


# --- the neurons of feedback SNNs (IDE / SPIDE; the networks: ttfs_ext.spide) -----------------

def _spide_scalar(op: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a float, got {type(value).__name__}")
    return float(value)


def spide_forward_step(u: torch.Tensor, rate: torch.Tensor, current: torch.Tensor,
                       extra: Optional[torch.Tensor] = None, gate: Optional[torch.Tensor] = None, *,
                       v_th: float = 1.0, reset: float = 2.0, leak: float = 1.0,
                       backend: Optional[str] = None) -> torch.Tensor:
    """One time step of a population of IF (leak = 1) or LIF neurons with reset by
    subtraction, in place on u (the membrane potential) and rate (the spike count, or the
    leak-weighted count for LIF):

        v = u + current [+ extra];  s = [v >= v_th];  u <- (v - reset s) leak;  rate <- leak rate + s

    reset is the quantum V_th - u_rest: v_th for IDE's reset to 0, 2 v_th for SPIDE's modified
    reset u_rest = -V_th. Returns s (0/1 in u's dtype), times gate when given (a dropout mask).
    Every tensor has u's shape, dtype (float32 or float64) and device; u is contiguous or
    channels last, rate in u's layout (the result has it too).
    Not differentiable."""
    op = "ttfs_ext.spide_forward_step"
    v_th, reset, leak = (_spide_scalar(op, n, x) for n, x in (("v_th", v_th), ("reset", reset), ("leak", leak)))
    if _backend.use_kernel(op, u, backend):
        return _ops.spide_forward_step(u, rate, current, extra, gate, v_th, reset, leak)
    _check("_spide_forward_step_check", u, rate, current, extra, gate, v_th, reset, leak)
    return reference.spide_forward_step(u, rate, current, extra, gate, v_th, reset, leak)


def spide_backward_step(u: torch.Tensor, rate: torch.Tensor, current: torch.Tensor,
                        current_gate: Optional[torch.Tensor] = None, inject: Optional[torch.Tensor] = None,
                        gate: Optional[torch.Tensor] = None, *, v_th: float = 0.5, reset: float = 1.0,
                        amplitude: float = 1.0, leak: float = 1.0, backend: Optional[str] = None) -> torch.Tensor:
    """One time step of a population of SPIDE's ternary backward neurons, in place on u and rate:

        v = u + current [* current_gate] [+ inject];  k = [v >= v_th] - [v <= -v_th]
        u <- (v - reset k) leak;  rate <- leak rate + amplitude k

    Returns amplitude k, times gate when given (the forward mask m = [0 < a < 1], ready for the
    transposed connection). SPIDE's defaults: v_th 0.5, reset 1 (u_rest = -v_th), amplitude 1.
    Shapes, dtypes and devices as spide_forward_step. Not differentiable."""
    op = "ttfs_ext.spide_backward_step"
    v_th, reset, amplitude, leak = (_spide_scalar(op, n, x) for n, x in
                                    (("v_th", v_th), ("reset", reset), ("amplitude", amplitude), ("leak", leak)))
    if _backend.use_kernel(op, u, backend):
        return _ops.spide_backward_step(u, rate, current, current_gate, inject, gate, v_th, reset, amplitude, leak)
    _check("_spide_backward_step_check", u, rate, current, current_gate, inject, gate, v_th, reset, amplitude, leak)
    return reference.spide_backward_step(u, rate, current, current_gate, inject, gate, v_th, reset, amplitude, leak)


@_fake("spide_forward_step", "_spide_forward_step_check")
def _spide_forward_step_fake(u, rate, current, extra, gate, v_th, reset, leak):
    return _spide_like(u)


@_fake("spide_backward_step", "_spide_backward_step_check")
def _spide_backward_step_fake(u, rate, current, current_gate, inject, gate, v_th, reset, amplitude, leak):
    return _spide_like(u)


def _spide_like(u: torch.Tensor) -> torch.Tensor:
    """The steps' result: u's shape in u's layout (contiguous, else channels last)."""
    return torch.empty_like(u, memory_format=torch.contiguous_format if u.is_contiguous() else torch.channels_last)


__all__ += ["spide_forward_step", "spide_backward_step"]


# --- event-driven products with spike tensors -------------------------------------------------

def spike_conv_weight(weight: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """A convolution weight packed for spike_conv2d: (C_in, kH, kW, C_out), where C_in counts
    the channels of the product's input. weight is conv2d's (C_out, C_in, kH, kW), or with
    transposed=True conv_transpose2d's (C_in, C_out, kH, kW). Pack once, use for many steps."""
    if weight.dim() != 4:
        raise ValueError(f"ttfs_ext.spike_conv_weight: weight must be 4-D, got shape {tuple(weight.shape)}")
    return (weight.permute(0, 2, 3, 1) if transposed else weight.permute(1, 2, 3, 0)).contiguous()


def spike_conv2d(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1, *, transposed: bool = False,
                 output_size: Optional[IntPair] = None, backend: Optional[str] = None) -> torch.Tensor:
    """conv2d, or with transposed=True conv_transpose2d (groups 1), of a spike tensor: input
    (N, C_in, H, W) mostly zeros (any values: ternary, gated), event-driven on the CPU, so the
    work is (nonzeros) x kH x kW x C_out multiply-adds instead of the dense product's (all
    inputs) x the same. weight: packed by spike_conv_weight. output_size: (H_out, W_out),
    default conv2d's size, or conv_transpose2d's without output padding. Returns
    (N, C_out, H_out, W_out) in channels-last memory (the input is read in it too: a
    channels-last input costs no copy). A zero input adds nothing, even against a
    non-finite weight. The kernel is the CPU's; on CUDA the call runs the reference, the dense
    convolution (the fast one there; backend="cuda" raises). Not differentiable."""
    op = "ttfs_ext.spike_conv2d"
    stride, padding, dilation = (_pair(op, n, v, m) for n, v, m in (("stride", stride, 1), ("padding", padding, 0),
                                                                      ("dilation", dilation, 1)))
    if output_size is None:
        if input.dim() != 4 or weight.dim() != 4:
            raise ValueError(f"{op}: input and weight must be 4-D, got shapes {tuple(input.shape)} and "
                             f"{tuple(weight.shape)}")
        span = [dilation[i] * (weight.shape[1 + i] - 1) + 1 for i in range(2)]
        output_size = [(input.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + span[i] if transposed else
                       (input.shape[2 + i] + 2 * padding[i] - span[i]) // stride[i] + 1 for i in range(2)]
    else:
        output_size = _pair(op, "output_size", output_size, 0)
    # automatic on CUDA: the dense convolution (there is no event-driven CUDA kernel)
    if not (backend is None and input.device.type == "cuda") and _backend.use_kernel(op, input, backend):
        return _ops.spike_conv2d(input, weight, bias, stride, padding, dilation, bool(transposed), output_size)
    _check("_spike_conv2d_check", input, weight, bias, stride, padding, dilation, bool(transposed), output_size)
    return reference.spike_conv2d(input, weight, bias, stride, padding, dilation, bool(transposed), output_size)


@_fake("spike_conv2d", "_spike_conv2d_check")
def _spike_conv2d_fake(input, weight, bias, stride, padding, dilation, transposed, output_size):
    shape = (input.shape[0], weight.shape[3], *output_size)
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=torch.channels_last)


__all__ += ["spike_conv_weight", "spike_conv2d"]
