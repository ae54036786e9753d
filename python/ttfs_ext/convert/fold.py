"""Tracing and folding: the model, traced with torch.fx, as a chain of exact steps in ReLU
space (affine layers with the input range and batch norms folded in, signed max-pools,
flattens); ConversionError for what cannot be mapped exactly."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as tnn

F64 = torch.float64


class ConversionError(ValueError):
    """The model has a part that cannot be mapped exactly to a TTFS network."""


# --- the model as a chain of exact steps --------------------------------------------------------

@dataclass
class AffineStep:
    """A Linear or Conv2d in ReLU space; bias (O,) or per position (O, H_out, W_out)."""
    source: list[str]
    weight: torch.Tensor
    bias: torch.Tensor
    conv: Optional[dict] = None      # stride, padding, dilation, groups (pairs)
    in_shape: tuple = ()
    out_shape: tuple = ()
    relu: bool = False               # a spiking layer (else: the readout)

    def rows(self) -> int:
        return self.weight.shape[0]


@dataclass
class PoolStep:
    kernel: tuple
    stride: tuple
    padding: tuple
    sign: Optional[torch.Tensor] = None   # (C,) of +-1, None = all +1


@dataclass
class FlattenStep:
    pass


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


class _Folder:
    """Walks the traced chain and folds it into AffineStep / PoolStep / FlattenStep steps.

    State: `stage` is "post" where the current tensor is y = kappa * x + beta with x >= 0 (the
    input after its range map, or a ReLU output, with a pending per-element affine map), or
    "pre" where it is the output z of the last affine step before its ReLU."""

    def __init__(self, in_shape: tuple, low: float, high: float) -> None:
        self.steps: list[Any] = []
        self.stage = "post"
        self.shape = in_shape
        self.kappa = torch.full(in_shape, high - low, dtype=F64)
        self.beta = torch.full(in_shape, low, dtype=F64)
        self.pending_pools: list[PoolStep] = []  # pools between the last affine step and its ReLU
        self.name = ""  # short name of the node being folded, for the report

    # helpers
    def _refuse(self, where: str, why: str) -> None:
        raise ConversionError(f"ttfs_ext.convert: cannot map {where} exactly: {why}")

    def _last_affine(self) -> AffineStep:
        return next(s for s in reversed(self.steps) if isinstance(s, AffineStep))

    def _channel_values(self, t: torch.Tensor, where: str, what: str) -> torch.Tensor:
        """(C,) values of a (C, H, W) or (C,) tensor that is constant over positions."""
        if t.dim() == 1:
            return t
        flat = t.reshape(t.shape[0], -1)
        if not bool((flat == flat[:, :1]).all()):
            self._refuse(where, f"the folded {what} varies across positions within a channel")
        return flat[:, 0]

    # steps
    def affine(self, where: str, module: nn.Module, out_shape: tuple) -> None:
        if self.stage == "pre":
            self._refuse(where, f"there is no ReLU between {self._last_affine().source[-1]} and it")
        weight = module.weight.detach().to(F64).cpu()
        bias = (module.bias.detach().to(F64).cpu() if module.bias is not None
                else torch.zeros(weight.shape[0], dtype=F64))
        if isinstance(module, nn.Linear):
            if len(self.shape) != 1:
                self._refuse(where, f"a Linear applied to a {len(self.shape) + 1}-D tensor (flatten first)")
            kappa, beta = self.kappa.reshape(-1), self.beta.reshape(-1)
            step = AffineStep([self.name], weight * kappa, bias + weight @ beta, None, self.shape, out_shape)
        else:
            if module.padding_mode != "zeros":
                self._refuse(where, f"padding_mode={module.padding_mode!r} (only zero padding is exact)")
            conv = dict(stride=_pair(module.stride), padding=_conv_padding(module, where, self),
                        dilation=_pair(module.dilation), groups=module.groups)
            kappa = self._channel_values(self.kappa, where, "input scale")
            groups, c_in = module.groups, weight.shape[1]
            w = weight * kappa.view(groups, 1, c_in).expand(groups, weight.shape[0] // groups, c_in).reshape(
                weight.shape[0], c_in, 1, 1)
            # The folded shift passes through the zero padding only inside the image: convolve it.
            shift = F.conv2d(self.beta.unsqueeze(0), weight, None, conv["stride"], conv["padding"], conv["dilation"],
                             groups)[0]
            b = bias.view(-1, 1, 1) + shift
            flat = b.reshape(b.shape[0], -1)
            b = flat[:, 0].clone() if bool((flat == flat[:, :1]).all()) else b
            step = AffineStep([self.name], w, b, conv, self.shape, out_shape)
        self.steps.append(step)
        self.stage, self.shape = "pre", out_shape
        self.kappa = self.beta = None  # type: ignore[assignment]

    def batch_norm(self, where: str, module: nn.Module) -> None:
        if module.running_mean is None or module.running_var is None:
            self._refuse(where, "a batch norm without running statistics (track_running_stats=False)")
        scale = module.weight.detach().to(F64).cpu() if module.weight is not None else None
        shift = module.bias.detach().to(F64).cpu() if module.bias is not None else None
        mean, var = module.running_mean.to(F64).cpu(), module.running_var.to(F64).cpu()
        kappa = (scale if scale is not None else torch.ones_like(mean)) / torch.sqrt(var + module.eps)
        beta = (shift if shift is not None else torch.zeros_like(mean)) - mean * kappa
        if self.stage == "pre":  # on a layer's output: scale that layer's rows
            step = self._last_affine()
            if len(self.shape) == 1 and step.conv is not None and len(step.out_shape) != 1:
                self._refuse(where, "a BatchNorm1d on the flattened output of a convolution before its ReLU")
            step.source.append(self.name)
            step.weight = step.weight * kappa.view(-1, *([1] * (step.weight.dim() - 1)))
            k = kappa.view(-1, *([1] * (step.bias.dim() - 1)))
            step.bias = step.bias * k + beta.view_as(k)
            for pool in self.pending_pools:  # BN(maxpool(z)) = signed pool of BN(z)
                flip = torch.where(kappa < 0, -1.0, 1.0).to(F64)
                pool.sign = flip if pool.sign is None else pool.sign * flip
            return
        view = (-1,) + (1,) * (len(self.shape) - 1)
        self.kappa = self.kappa * kappa.view(view)
        self.beta = self.beta * kappa.view(view) + beta.view(view)

    def relu(self, where: str) -> None:
        if self.stage == "pre":
            step = self._last_affine()
            step.relu = True
            step.source.append(self.name)
            self.stage, self.pending_pools = "post", []
            self.kappa = torch.ones(self.shape, dtype=F64)
            self.beta = torch.zeros(self.shape, dtype=F64)
            return
        if bool((self.kappa >= 0).all()) and bool((self.beta == 0).all()):
            return  # ReLU of a non-negative tensor
        self._refuse(where, "a ReLU of a batch-normalised ReLU output (only one ReLU per layer is exact)")

    def max_pool(self, where: str, kernel, stride, padding, out_shape: tuple) -> None:
        pool = PoolStep(_pair(kernel), _pair(stride if stride else kernel), _pair(padding))
        if self.stage == "post":
            kappa = self._channel_values(self.kappa, where, "scale")
            beta = self._channel_values(self.beta, where, "shift")
            if bool((kappa < 0).any()):
                pool.sign = torch.where(kappa < 0, -1.0, 1.0).to(F64)  # max(k x) = k min(x) for k < 0
            self.kappa = kappa.view(-1, 1, 1).expand(out_shape).clone()
            self.beta = beta.view(-1, 1, 1).expand(out_shape).clone()
        else:
            self.pending_pools.append(pool)
        self.steps.append(pool)
        self.shape = out_shape

    def avg_pool(self, where: str, kernel, stride, padding, count_include_pad: bool, divisor: Optional[int],
                 out_shape: tuple) -> None:
        kernel, stride, padding = _pair(kernel), _pair(stride if stride else kernel), _pair(padding)
        if self.stage == "pre":
            self._refuse(where, "an average pool between a layer and its ReLU")
        if any(padding) and not count_include_pad and divisor is None:
            self._refuse(where, "count_include_pad=False with padding divides by a count that depends on position")
        channels = self.shape[0]
        kappa = self._channel_values(self.kappa, where, "scale")
        weight = torch.full((channels, 1, *kernel), 1.0 / (divisor or kernel[0] * kernel[1]), dtype=F64)
        conv = dict(stride=stride, padding=padding, dilation=(1, 1), groups=channels)
        # avgpool(kappa x + beta) = kappa avgpool(x) + avgpool(beta): a spiking depthwise
        # convolution of x >= 0 (its ReLU is exact), with the affine map carried on.
        self.steps.append(AffineStep([self.name], weight, torch.zeros(channels, dtype=F64), conv, self.shape, out_shape,
                                  relu=True))
        self.beta = F.conv2d(self.beta.unsqueeze(0), weight, None, stride, padding, groups=channels)[0]
        self.kappa = kappa.view(-1, 1, 1).expand(out_shape).clone()
        self.shape = out_shape

    def flatten(self, where: str, out_shape: tuple) -> None:
        if self.stage == "post":
            self.kappa, self.beta = self.kappa.reshape(-1), self.beta.reshape(-1)
        if len(self.shape) > 1:
            self.steps.append(FlattenStep())
        self.shape = out_shape

    def finish(self) -> list[Any]:
        if not any(isinstance(s, AffineStep) for s in self.steps):
            self._refuse("the model", "it has no Linear or Conv2d layer")
        if self.stage == "pre":
            last = self.steps[-1]
            if not isinstance(last, AffineStep) or last.conv is not None:
                why = ("the output layer is a convolution" if isinstance(last, AffineStep)
                       else "the output layer is followed by pooling or flattening")
                self._refuse(last.source[-1] if isinstance(last, AffineStep) else "the output",
                             f"{why}; the readout must be a Linear layer")
            return self.steps
        # The model ends with a ReLU (and maybe a batch norm): read the last layer out
        # through an identity readout that applies the pending affine map.
        if len(self.shape) != 1:
            self._refuse("the output", "the model's output must be 2-D (batch, features)")
        self.steps.append(AffineStep(["(identity readout)"], torch.diag(self.kappa), self.beta.clone(), None,
                                  self.shape, self.shape))
        return self.steps


def _conv_padding(module: nn.Conv2d, where: str, folder: _Folder) -> tuple[int, int]:
    pair = tnn.explicit_padding(module.padding, module.kernel_size, module.dilation)
    if pair is None:
        folder._refuse(where, "padding='same' with an even kernel pads asymmetrically")
    return pair


# --- tracing -------------------------------------------------------------------------------------

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_IGNORED_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_IGNORED_FUNCTIONS = {F.dropout, F.dropout2d, F.dropout1d}
_SHAPE_METHODS = {"size", "dim"}


def _trace(model: nn.Module, sample: torch.Tensor):
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    for name, m in model.named_modules():
        if isinstance(m, (tnn.SpikingLayer, tnn.TTFSReadout, tnn.TTFSEncoder, tnn.TTFSMaxPool2d)):
            raise ConversionError(f"ttfs_ext.convert: cannot map layer '{name or 'the model'}' "
                                  f"({type(m).__name__}): it is already a TTFS layer")
    try:
        gm = symbolic_trace(model)
    except Exception as err:  # data-dependent control flow and the like
        raise ConversionError(f"ttfs_ext.convert: could not trace the model with torch.fx ({type(err).__name__}: "
                              f"{err}); write it as an nn.Sequential") from err
    try:
        ShapeProp(gm).propagate(sample)
    except Exception as err:
        raise ValueError(f"ttfs_ext.convert: the model fails on the calibration data (input shape "
                         f"{tuple(sample.shape)}): {err.__cause__ or err}") from err
    return gm


def _shape(node) -> tuple:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        raise ConversionError(f"ttfs_ext.convert: node {node.name} does not produce a single tensor")
    return tuple(meta.shape)[1:]


def _describe(node, gm) -> str:
    if node.op == "call_module":
        return f"layer '{node.target}' ({type(gm.get_submodule(node.target)).__name__})"
    if node.op == "call_function":
        return f"'{getattr(node.target, '__name__', node.target)}' (in forward, node {node.name})"
    return f"'{node.op} {node.target}' (node {node.name})"


def _short_name(node) -> str:
    if node.op == "call_module":
        return str(node.target)
    if node.op == "call_function":
        return f"{getattr(node.target, '__name__', node.name)}()"
    return f".{node.target}()"


def fold(model: nn.Module, sample: torch.Tensor, low: float, high: float) -> list[Any]:
    gm = _trace(model, sample)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(f"ttfs_ext.convert: the model must take one input, it takes {len(placeholders)}")
    folder = _Folder(tuple(sample.shape[1:]), low, high)
    current = placeholders[0]
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "call_method" and node.target in _SHAPE_METHODS:
            continue
        where = _describe(node, gm)
        if node.op == "output":
            result = node.args[0]
            if result is not current:
                raise ConversionError(f"ttfs_ext.convert: the model's output is not the end of a single chain of "
                                      f"layers (it returns {result})")
            break
        if not node.args or node.args[0] is not current:
            raise ConversionError(f"ttfs_ext.convert: cannot map {where} exactly: the model is not a single chain "
                                  "of layers (branches and residual connections are not supported)")
        data_users = [u for u in current.users if not (u.op == "call_method" and u.target in _SHAPE_METHODS)]
        if len(data_users) != 1:
            raise ConversionError(f"ttfs_ext.convert: cannot map the model exactly: the output of {current.name} "
                                  "feeds several layers (branches and residual connections are not supported)")
        folder.name = _short_name(node)
        _fold_node(folder, gm, node, where)
        current = node
    return folder.finish()


def _fold_node(folder: _Folder, gm, node, where: str) -> None:
    out_shape = _shape(node)
    kwargs = dict(node.kwargs)
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, (tnn.SpikingLayer, tnn.TTFSReadout, tnn.TTFSEncoder, tnn.TTFSMaxPool2d)):
            folder._refuse(where, "it is already a TTFS layer")
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            folder.affine(where, m, out_shape)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            folder.batch_norm(where, m)
        elif isinstance(m, nn.ReLU):
            folder.relu(where)
        elif isinstance(m, nn.MaxPool2d):
            if _pair(m.dilation) != (1, 1) or m.ceil_mode or m.return_indices:
                folder._refuse(where, "dilation, ceil_mode and return_indices are not supported")
            folder.max_pool(where, m.kernel_size, m.stride, m.padding, out_shape)
        elif isinstance(m, nn.AvgPool2d):
            if m.ceil_mode:
                folder._refuse(where, "ceil_mode=True")
            folder.avg_pool(where, m.kernel_size, m.stride, m.padding, m.count_include_pad, m.divisor_override,
                            out_shape)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            size_in = _shape(node.args[0])[1:]
            if any(i % o for i, o in zip(size_in, out_shape[1:])):
                folder._refuse(where, f"an adaptive pool from {size_in} to {out_shape[1:]} has unequal windows")
            kernel = tuple(i // o for i, o in zip(size_in, out_shape[1:]))
            folder.avg_pool(where, kernel, kernel, 0, True, None, out_shape)
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                folder._refuse(where, "only Flatten(start_dim=1, end_dim=-1) is supported")
            folder.flatten(where, out_shape)
        elif isinstance(m, _IGNORED_MODULES):
            return
        else:
            folder._refuse(where, f"{type(m).__name__} is not one of Linear, Conv2d, BatchNorm1d/2d, ReLU, MaxPool2d, "
                                  "AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, Identity")
    elif node.op == "call_function":
        fn = node.target
        if fn in _RELU_FUNCTIONS:
            folder.relu(where)
        elif fn in _IGNORED_FUNCTIONS:
            return
        elif fn is torch.flatten:
            start = node.args[1] if len(node.args) > 1 else kwargs.get("start_dim", 0)
            if start != 1 or len(out_shape) != 1:
                folder._refuse(where, "only torch.flatten(x, 1) is supported")
            folder.flatten(where, out_shape)
        elif fn is F.max_pool2d:
            args = _bind(node, ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                                "return_indices"))
            if _pair(args.get("dilation", 1)) != (1, 1) or args.get("ceil_mode") or args.get("return_indices"):
                folder._refuse(where, "dilation, ceil_mode and return_indices are not supported")
            folder.max_pool(where, args["kernel_size"], args.get("stride"), args.get("padding", 0), out_shape)
        elif fn is F.avg_pool2d:
            args = _bind(node, ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                                "divisor_override"))
            if args.get("ceil_mode"):
                folder._refuse(where, "ceil_mode=True")
            folder.avg_pool(where, args["kernel_size"], args.get("stride"), args.get("padding", 0),
                            args.get("count_include_pad", True), args.get("divisor_override"), out_shape)
        elif fn in (operator.getitem,):
            folder._refuse(where, "indexing")
        else:
            folder._refuse(where, "this function is not a ReLU, flatten, pooling or dropout")
    elif node.op == "call_method":
        if node.target in ("relu", "relu_"):
            folder.relu(where)
        elif node.target in ("flatten", "view", "reshape"):
            if len(out_shape) != 1 or (node.target == "flatten" and (node.args[1:] or [0])[0] != 1):
                folder._refuse(where, f"only a flatten to (batch, features) is supported, got {node.target} to "
                                      f"{out_shape}")
            folder.flatten(where, out_shape)
        else:
            folder._refuse(where, f"the tensor method '{node.target}'")
    else:
        folder._refuse(where, f"a '{node.op}' node")


def _bind(node, names: Sequence[str]) -> dict:
    args = dict(zip(names, node.args))
    args.update(node.kwargs)
    return args

