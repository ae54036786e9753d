"""Python-side registrations of the compiled ops (house style: the schemas, kernels and
autograd live in C++, everything the compiler stack needs lives here):
- fake kernels, so torch.compile and torch.export can trace the ops;
- autocast on CUDA: matrices in the autocast dtype, spike times and biases in float32.
"""
from __future__ import annotations

from typing import Optional

import torch

from .functional import conv2d_output_size


# --- fake kernels ---------------------------------------------------------------------
# Metadata only, with the checks of the real kernels that a fake can make: a meta tensor among
# CPU tensors dispatches here (Meta outranks CPU), so every fake checks every device.

def _check_devices(op: str, t_in, **tensors) -> None:
    for name, t in tensors.items():
        torch._check(t is None or t.device == t_in.device,
                     lambda: f"{op}: {name} is on {t.device} but t_in is on {t_in.device}")


def _check_shape(op: str, name: str, t, shape) -> None:
    torch._check(tuple(t.shape) == tuple(shape),
                 lambda: f"{op}: {name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def _linear_out_shape(op: str, t_in, weight):
    torch._check(weight.dim() == 2 and t_in.dim() >= 1 and t_in.shape[-1] == weight.shape[1],
                 lambda: f"{op}: t_in (..., in) does not match weight (out, in)")
    return (*t_in.shape[:-1], weight.shape[0])


def _conv_out_shape(op: str, t_in, weight, stride, padding, dilation, groups):
    torch._check(t_in.dim() == 4 and weight.dim() == 4, lambda: f"{op}: t_in and weight must be 4-D")
    for name, value, minimum in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        torch._check(len(value) == 2 and all(v >= minimum for v in value),
                     lambda: f"{op}: {name} must be two ints >= {minimum}, got {value}")
    torch._check(groups >= 1 and weight.shape[0] % groups == 0 and t_in.shape[1] == weight.shape[1] * groups,
                 lambda: f"{op}: t_in has {t_in.shape[1]} channels but weight {tuple(weight.shape)} with "
                         f"groups={groups} expects {weight.shape[1] * groups} (and C_out divisible by groups)")
    h, w = conv2d_output_size(tuple(t_in.shape[2:]), tuple(weight.shape[2:]), stride, padding, dilation)
    torch._check(h >= 1 and w >= 1, lambda: f"{op}: the kernel does not fit the padded input")
    return (t_in.shape[0], weight.shape[0], h, w)


@torch.library.register_fake("ttfs_ext::dense")
def _dense_fake(t_in, weight, bias, t_min, t_max):
    _check_devices("ttfs_ext.dense", t_in, weight=weight, bias=bias)
    return t_in.new_empty(_linear_out_shape("ttfs_ext.dense", t_in, weight))


@torch.library.register_fake("ttfs_ext::readout")
def _readout_fake(t_in, weight, bias, t_min):
    _check_devices("ttfs_ext.readout", t_in, weight=weight, bias=bias)
    return t_in.new_empty(_linear_out_shape("ttfs_ext.readout", t_in, weight))


def _grads_fake(t_in, weight, bias_shape, mask):
    return (t_in.new_empty(t_in.shape) if mask[0] else None,
            weight.new_empty(weight.shape) if mask[1] else None,
            t_in.new_empty(bias_shape) if mask[2] else None)


@torch.library.register_fake("ttfs_ext::_dense_backward")
def _dense_backward_fake(grad_out, t_in, weight, t_out, t_min, t_max, output_mask):
    op = "ttfs_ext.linear backward"
    _check_devices(op, t_in, weight=weight, grad_out=grad_out, t_out=t_out)
    out_shape = _linear_out_shape(op, t_in, weight)
    _check_shape(op, "grad_out", grad_out, out_shape)
    _check_shape(op, "t_out", t_out, out_shape)
    return _grads_fake(t_in, weight, (weight.shape[0],), output_mask)


@torch.library.register_fake("ttfs_ext::_readout_backward")
def _readout_backward_fake(grad_out, t_in, weight, t_min, output_mask):
    op = "ttfs_ext.readout backward"
    _check_devices(op, t_in, weight=weight, grad_out=grad_out)
    _check_shape(op, "grad_out", grad_out, _linear_out_shape(op, t_in, weight))
    return _grads_fake(t_in, weight, (weight.shape[0],), output_mask)


@torch.library.register_fake("ttfs_ext::conv2d")
def _conv2d_fake(t_in, weight, bias, t_min, t_max, stride, padding, dilation, groups):
    _check_devices("ttfs_ext.conv2d", t_in, weight=weight, bias=bias)
    return t_in.new_empty(_conv_out_shape("ttfs_ext.conv2d", t_in, weight, stride, padding, dilation, groups))


@torch.library.register_fake("ttfs_ext::_conv2d_backward")
def _conv2d_backward_fake(grad_out, t_in, weight, t_out, t_min, t_max, stride, padding, dilation, groups,
                          bias_per_position, output_mask):
    op = "ttfs_ext.conv2d backward"
    _check_devices(op, t_in, weight=weight, grad_out=grad_out, t_out=t_out)
    out_shape = _conv_out_shape(op, t_in, weight, stride, padding, dilation, groups)
    _check_shape(op, "grad_out", grad_out, out_shape)
    _check_shape(op, "t_out", t_out, out_shape)
    bias_shape = tuple(out_shape[1:]) if bias_per_position else (weight.shape[0],)
    return _grads_fake(t_in, weight, bias_shape, output_mask)


@torch.library.register_fake("ttfs_ext::first_spike_dense")
def _first_spike_dense_fake(t_in, weight, alpha, threshold, t_start, t_max, t_origin=0.0):
    op = "ttfs_ext.first_spike_dense"
    _check_devices(op, t_in, weight=weight, alpha=alpha, threshold=threshold)
    torch._check(t_in.dim() == 2, lambda: f"{op}: t_in must be 2-D (rows, in_features)")
    shape = _linear_out_shape(op, t_in, weight)
    return t_in.new_empty(shape), t_in.new_empty(shape)


@torch.library.register_fake("ttfs_ext::first_spike_conv2d")
def _first_spike_conv2d_fake(t_in, weight, alpha, threshold, t_start, t_max, stride, padding, dilation, groups,
                             workspace=1 << 23, t_origin=0.0):
    op = "ttfs_ext.first_spike_conv2d"
    _check_devices(op, t_in, weight=weight, alpha=alpha, threshold=threshold)
    shape = _conv_out_shape(op, t_in, weight, stride, padding, dilation, groups)
    return t_in.new_empty(shape), t_in.new_empty(shape)


def _neuron_grads_fake(op, grad_out, t_in, weight, t_out, slope, out_shape, alpha_shape, threshold_shape, mask):
    _check_devices(op, t_in, weight=weight, grad_out=grad_out, t_out=t_out, slope=slope)
    for name, t in (("grad_out", grad_out), ("t_out", t_out), ("slope", slope)):
        _check_shape(op, name, t, out_shape)
    return (t_in.new_empty(t_in.shape) if mask[0] else None,
            weight.new_empty(weight.shape) if mask[1] else None,
            t_in.new_empty(alpha_shape) if mask[2] else None,
            t_in.new_empty(threshold_shape) if mask[3] else None)


@torch.library.register_fake("ttfs_ext::_first_spike_dense_backward")
def _first_spike_dense_backward_fake(grad_out, t_in, weight, t_out, slope, t_start, t_origin, output_mask):
    op = "ttfs_ext.first_spike_dense backward"
    out_shape = _linear_out_shape(op, t_in, weight)
    return _neuron_grads_fake(op, grad_out, t_in, weight, t_out, slope, out_shape, (weight.shape[0],),
                              (weight.shape[0],), output_mask)


@torch.library.register_fake("ttfs_ext::_first_spike_conv2d_backward")
def _first_spike_conv2d_backward_fake(grad_out, t_in, weight, t_out, slope, t_start, t_origin, stride, padding,
                                      dilation, groups, alpha_per_position, threshold_per_position, output_mask,
                                      workspace=1 << 23):
    op = "ttfs_ext.first_spike_conv2d backward"
    out_shape = _conv_out_shape(op, t_in, weight, stride, padding, dilation, groups)
    per_position, per_channel = tuple(out_shape[1:]), (weight.shape[0],)
    return _neuron_grads_fake(op, grad_out, t_in, weight, t_out, slope, out_shape,
                              per_position if alpha_per_position else per_channel,
                              per_position if threshold_per_position else per_channel, output_mask)


# --- autograd -------------------------------------------------------------------------
# Registered in C++ (csrc/autograd.cpp): a Python autograd wrapper cost ~20-40 us per call.


# --- autocast (CUDA) --------------------------------------------------------------------
# Spike times stay float32 at layer boundaries; only the matrix operands take the autocast
# dtype (the GEMM/convolution accumulates in float32). float64 inputs are left alone.

_autocast_lib = torch.library.Library("ttfs_ext", "IMPL")
_AUTOCAST_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCUDA)


def _autocast_operands(t_in: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]):
    if t_in.dtype == torch.float64:
        return t_in, weight, bias
    low = torch.get_autocast_dtype("cuda")
    t_in = t_in.float()
    return t_in, weight.to(low), (None if bias is None else bias.float())


def _autocast_impl(op_name: str):
    op = getattr(torch.ops.ttfs_ext, op_name)

    def impl(t_in, weight, bias, *args):
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
            return op(*_autocast_operands(t_in, weight, bias), *args)
    return impl


for _name in ("dense", "readout", "conv2d"):
    _autocast_lib.impl(_name, _autocast_impl(_name), "AutocastCUDA")
