"""Exact conversion of trained ReLU networks to TTFS networks (Stanojevic et al. 2022, 2024).

    net = ttfs_ext.convert(model, calibration_data, input_range=(0.0, 1.0))
    print(net.conversion)                          # agreement with the ReLU network, windows
    print(ttfs_ext.agreement(model, net, test_x))  # the same on any data

The model is traced with torch.fx and must be a chain of Linear, Conv2d, BatchNorm1d/2d,
ReLU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout and Identity (modules or
their functional forms). It is rewritten, in float64, as spiking layers in "ReLU space":

- the input range [low, high] and every batch norm are folded into the weights: a batch norm
  on a layer's output (before its ReLU) scales that layer; one after a ReLU is carried as a
  per-channel affine map into the next layer, where zero padding makes the folded shift
  depend on the output position (an exact per-position bias, for any kernel, stride,
  padding, dilation and groups);
- a max-pool under a negative folded scale pools the latest spike of that channel;
- an average pool becomes a spiking depthwise convolution of weight 1/k^2 (its input is a
  ReLU output, so its own ReLU is exact);
- the last Linear becomes the readout (the membrane potential at its t_min: the logits).

Each spiking layer fires in a window of width (1 + zeta) x its largest activation on the
calibration data. mapping="b1" keeps the weights (the identity mapping of the 2024 paper);
mapping="alpha1" rescales each neuron so that its weights sum below 1, then maps them to
the alpha1 neurons of the 2022 paper (alpha = 1, weights J = B w, thresholds; slope B).
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import nn as tnn

__all__ = ["convert", "agreement", "ConversionError", "ConversionReport", "Agreement", "SpikingLayerInfo"]

_F64 = torch.float64
Data = Union[torch.Tensor, Iterable[Any]]


class ConversionError(ValueError):
    """The model has a part that cannot be mapped exactly to a TTFS network."""


# --- report types ------------------------------------------------------------------------------

@dataclass
class Agreement:
    """How a TTFS network's outputs compare with its ReLU network's on some data."""
    samples: int
    agreement: float                  # fraction of samples with the same predicted class
    max_logit_diff: float             # max |logit_TTFS - logit_ReLU|
    max_abs_logit: float              # max |logit_ReLU|, for scale
    event_agreement: Optional[float] = None      # the same for the exact event-driven simulation
    event_max_logit_diff: Optional[float] = None
    early_spikes: Optional[list[int]] = None     # per spiking layer: spikes before the window opened
    event_deviating: Optional[list[int]] = None  # per spiking layer: event spike != closed form

    def __str__(self) -> str:
        text = (f"agreement {self.agreement:.4%} on {self.samples} samples, max |logit diff| "
                f"{self.max_logit_diff:.3g} (max |logit| {self.max_abs_logit:.3g})")
        if self.event_agreement is not None:
            text += (f"\nevent-driven simulation: agreement {self.event_agreement:.4%}, max |logit diff| "
                     f"{self.event_max_logit_diff:.3g}, early spikes per layer {self.early_spikes}, "
                     f"neurons off the closed form per layer {self.event_deviating}")
        return text


@dataclass
class SpikingLayerInfo:
    index: int                 # position in the TTFSSequential
    source: str                # the ReLU model's layers folded into it
    t_min: float
    t_max: float
    max_activation: float      # largest activation on the calibration data
    spikes_per_neuron: float   # on the calibration data


@dataclass
class ConversionReport:
    mapping: str
    zeta: float
    input_range: tuple[float, float]
    layers: list[SpikingLayerInfo] = field(default_factory=list)
    latency: float = float("nan")
    calibration: Optional[Agreement] = None

    def __str__(self) -> str:
        rows = [f"TTFS conversion (mapping={self.mapping}, zeta={self.zeta}, input range {self.input_range})",
                f"{'layer':>5}  {'from':<34}{'window':>24}{'max act.':>11}{'spikes/neuron':>15}"]
        for r in self.layers:
            window = f"[{r.t_min:.4g}, {r.t_max:.4g}]"
            rows.append(f"{r.index:>5}  {r.source[:33]:<34}{window:>24}{r.max_activation:>11.4g}"
                        f"{r.spikes_per_neuron:>15.4f}")
        rows.append(f"latency (readout t_min): {self.latency:.6g}")
        if self.calibration is not None:
            rows.append(f"calibration data: {self.calibration}")
        return "\n".join(rows)


# --- the model as a chain of exact steps --------------------------------------------------------

@dataclass
class _Affine:
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
class _MaxPool:
    kernel: tuple
    stride: tuple
    padding: tuple
    sign: Optional[torch.Tensor] = None   # (C,) of +-1, None = all +1


@dataclass
class _Flatten:
    pass


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)  # type: ignore[return-value]


class _Folder:
    """Walks the traced chain and folds it into _Affine / _MaxPool / _Flatten steps.

    State: `stage` is "post" where the current tensor is y = kappa * x + beta with x >= 0 (the
    input after its range map, or a ReLU output, with a pending per-element affine map), or
    "pre" where it is the output z of the last affine step before its ReLU."""

    def __init__(self, in_shape: tuple, low: float, high: float) -> None:
        self.steps: list[Any] = []
        self.stage = "post"
        self.shape = in_shape
        self.kappa = torch.full(in_shape, high - low, dtype=_F64)
        self.beta = torch.full(in_shape, low, dtype=_F64)
        self.pending_pools: list[_MaxPool] = []  # pools between the last affine step and its ReLU
        self.name = ""  # short name of the node being folded, for the report

    # helpers
    def _refuse(self, where: str, why: str) -> None:
        raise ConversionError(f"ttfs_ext.convert: cannot map {where} exactly: {why}")

    def _last_affine(self) -> _Affine:
        return next(s for s in reversed(self.steps) if isinstance(s, _Affine))

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
        weight = module.weight.detach().to(_F64).cpu()
        bias = (module.bias.detach().to(_F64).cpu() if module.bias is not None
                else torch.zeros(weight.shape[0], dtype=_F64))
        if isinstance(module, nn.Linear):
            if len(self.shape) != 1:
                self._refuse(where, f"a Linear applied to a {len(self.shape) + 1}-D tensor (flatten first)")
            kappa, beta = self.kappa.reshape(-1), self.beta.reshape(-1)
            step = _Affine([self.name], weight * kappa, bias + weight @ beta, None, self.shape, out_shape)
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
            step = _Affine([self.name], w, b, conv, self.shape, out_shape)
        self.steps.append(step)
        self.stage, self.shape = "pre", out_shape
        self.kappa = self.beta = None  # type: ignore[assignment]

    def batch_norm(self, where: str, module: nn.Module) -> None:
        if module.running_mean is None or module.running_var is None:
            self._refuse(where, "a batch norm without running statistics (track_running_stats=False)")
        scale = module.weight.detach().to(_F64).cpu() if module.weight is not None else None
        shift = module.bias.detach().to(_F64).cpu() if module.bias is not None else None
        mean, var = module.running_mean.to(_F64).cpu(), module.running_var.to(_F64).cpu()
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
                flip = torch.where(kappa < 0, -1.0, 1.0).to(_F64)
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
            self.kappa = torch.ones(self.shape, dtype=_F64)
            self.beta = torch.zeros(self.shape, dtype=_F64)
            return
        if bool((self.kappa >= 0).all()) and bool((self.beta == 0).all()):
            return  # ReLU of a non-negative tensor
        self._refuse(where, "a ReLU of a batch-normalised ReLU output (only one ReLU per layer is exact)")

    def max_pool(self, where: str, kernel, stride, padding, out_shape: tuple) -> None:
        pool = _MaxPool(_pair(kernel), _pair(stride if stride else kernel), _pair(padding))
        if self.stage == "post":
            kappa = self._channel_values(self.kappa, where, "scale")
            beta = self._channel_values(self.beta, where, "shift")
            if bool((kappa < 0).any()):
                pool.sign = torch.where(kappa < 0, -1.0, 1.0).to(_F64)  # max(k x) = k min(x) for k < 0
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
        weight = torch.full((channels, 1, *kernel), 1.0 / (divisor or kernel[0] * kernel[1]), dtype=_F64)
        conv = dict(stride=stride, padding=padding, dilation=(1, 1), groups=channels)
        # avgpool(kappa x + beta) = kappa avgpool(x) + avgpool(beta): a spiking depthwise
        # convolution of x >= 0 (its ReLU is exact), with the affine map carried on.
        self.steps.append(_Affine([self.name], weight, torch.zeros(channels, dtype=_F64), conv, self.shape, out_shape,
                                  relu=True))
        self.beta = F.conv2d(self.beta.unsqueeze(0), weight, None, stride, padding, groups=channels)[0]
        self.kappa = kappa.view(-1, 1, 1).expand(out_shape).clone()
        self.shape = out_shape

    def flatten(self, where: str, out_shape: tuple) -> None:
        if self.stage == "post":
            self.kappa, self.beta = self.kappa.reshape(-1), self.beta.reshape(-1)
        if len(self.shape) > 1:
            self.steps.append(_Flatten())
        self.shape = out_shape

    def finish(self) -> list[Any]:
        if not any(isinstance(s, _Affine) for s in self.steps):
            self._refuse("the model", "it has no Linear or Conv2d layer")
        if self.stage == "pre":
            last = self.steps[-1]
            if not isinstance(last, _Affine) or last.conv is not None:
                why = ("the output layer is a convolution" if isinstance(last, _Affine)
                       else "the output layer is followed by pooling or flattening")
                self._refuse(last.source[-1] if isinstance(last, _Affine) else "the output",
                             f"{why}; the readout must be a Linear layer")
            return self.steps
        # The model ends with a ReLU (and maybe a batch norm): read the last layer out
        # through an identity readout that applies the pending affine map.
        if len(self.shape) != 1:
            self._refuse("the output", "the model's output must be 2-D (batch, features)")
        self.steps.append(_Affine(["(identity readout)"], torch.diag(self.kappa), self.beta.clone(), None,
                                  self.shape, self.shape))
        return self.steps


def _conv_padding(module: nn.Conv2d, where: str, folder: _Folder) -> tuple[int, int]:
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0, 0)
        totals = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]
        if any(t % 2 for t in totals):
            folder._refuse(where, "padding='same' with an even kernel pads asymmetrically")
        return (totals[0] // 2, totals[1] // 2)
    return _pair(module.padding)


# --- tracing -------------------------------------------------------------------------------------

_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_}
_IGNORED_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
_IGNORED_FUNCTIONS = {F.dropout, F.dropout2d, F.dropout1d}
_SHAPE_METHODS = {"size", "dim"}


def _trace(model: nn.Module, sample: torch.Tensor):
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    for name, m in model.named_modules():
        if isinstance(m, (tnn._Windowed, tnn.TTFSReadout, tnn.TTFSEncoder, tnn.TTFSMaxPool2d)):
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


def _fold(model: nn.Module, sample: torch.Tensor, low: float, high: float) -> list[Any]:
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
        if isinstance(m, (tnn._Windowed, tnn.TTFSReadout, tnn.TTFSEncoder, tnn.TTFSMaxPool2d)):
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


# --- building the TTFS network -------------------------------------------------------------------

def _build_b1(steps: list[Any], low: float, high: float) -> tnn.TTFSSequential:
    modules: list[nn.Module] = [tnn.TTFSEncoder(low, high)]
    for step in steps:
        if isinstance(step, _Affine):
            modules.append(_b1_layer(step))
        elif isinstance(step, _MaxPool):
            modules.append(tnn.TTFSMaxPool2d(step.kernel, step.stride, step.padding, channel_sign=step.sign))
        else:
            modules.append(nn.Flatten())
    return tnn.TTFSSequential(*modules, widths=1.0)


def _b1_layer(step: _Affine) -> nn.Module:
    out_features, in_features = step.weight.shape[:2]
    if not step.relu:
        layer: nn.Module = tnn.TTFSReadout(in_features, out_features, dtype=_F64)
    elif step.conv is None:
        layer = tnn.TTFSLinear(in_features, out_features, dtype=_F64)
    else:
        c = step.conv
        layer = tnn.TTFSConv2d(in_features * c["groups"], out_features, tuple(step.weight.shape[2:]), c["stride"],
                               c["padding"], c["dilation"], c["groups"], dtype=_F64)
    layer.weight = nn.Parameter(step.weight.clone())
    layer.bias = nn.Parameter(step.bias.clone())
    return layer


def _rescale_alpha1(steps: list[Any], lower: float = -10.0, upper: float = 0.99) -> None:
    """Scale each spiking neuron's weights and bias by c > 0 so that they sum into
    [lower, upper] (the alpha1 mapping needs sum < 1), and the next layer's matching input
    weights by 1/c (ReLU and max-pooling commute with positive scaling)."""
    affines = [s for s in steps if isinstance(s, _Affine)]
    for step, nxt in zip(affines, affines[1:]):
        if not step.relu:
            continue
        s = step.weight.reshape(step.rows(), -1).sum(dim=1)
        c = torch.ones_like(s)
        c = torch.where(s > upper, upper / s, c)
        c = torch.where(s < lower, lower / s, c)
        step.weight = step.weight * c.view(-1, *([1] * (step.weight.dim() - 1)))
        step.bias = step.bias * c.view(-1, *([1] * (step.bias.dim() - 1)))
        inverse = 1.0 / c
        if nxt.conv is None:  # channel-major flatten: repeat over positions
            per_feature = inverse.repeat_interleave(nxt.weight.shape[1] // inverse.numel())
            nxt.weight = nxt.weight * per_feature
        elif nxt.conv["groups"] == 1:
            nxt.weight = nxt.weight * inverse.view(1, -1, 1, 1)
        else:  # grouped (depthwise average pool): input channel g*c_in + i feeds output group g
            g, c_in = nxt.conv["groups"], nxt.weight.shape[1]
            nxt.weight = nxt.weight * inverse.view(g, 1, c_in).expand(g, nxt.rows() // g, c_in).reshape(
                nxt.rows(), c_in, 1, 1)


def _alpha1_layer(step: _Affine, in_width: float, width: float) -> nn.Module:
    """The alpha1 neurons that reproduce the B1 layer of `step` (weights w, bias b) in its window
    (of width `width`, after an input window of width `in_width`): slope B = 1 / (1 - sum w),
    weights J = B w, alpha = B - S_in and threshold = B (in_width + width - b) - S_in in_width
    (= B (t_max - t_start - b) - S_in (t_min - t_start)), where S_in sums the J of the taps
    inside the image (all of them for a dense layer, fewer at a padded border). The caller
    puts it in the layer's place in the TTFSSequential, which gives it the window."""
    w, b = step.weight, step.bias
    slope = 1.0 / (1.0 - w.reshape(step.rows(), -1).sum(dim=1))
    j = w * slope.view(-1, *([1] * (w.dim() - 1)))
    if step.conv is None:
        layer = tnn.TTFSAlphaLinear(w.shape[1], w.shape[0], dtype=_F64)
        s_in, per = j.sum(dim=1), slope
    else:
        c = step.conv
        layer = tnn.TTFSAlphaConv2d(w.shape[1] * c["groups"], w.shape[0], tuple(w.shape[2:]), c["stride"],
                                    c["padding"], c["dilation"], c["groups"], dtype=_F64)
        ones = torch.ones((1, *step.in_shape), dtype=_F64)
        s_in = F.conv2d(ones, j, None, c["stride"], c["padding"], c["dilation"], c["groups"])[0]
        per = slope.view(-1, 1, 1)
        b = b.view(-1, 1, 1) if b.dim() == 1 else b
    layer.weight = nn.Parameter(j)
    layer.alpha = per - s_in
    layer.threshold = nn.Parameter(per * (in_width + width - b) - s_in * in_width)
    if step.conv is not None and bool((layer.alpha == layer.alpha[:, :1, :1]).all()) and \
            bool((layer.threshold == layer.threshold[:, :1, :1]).all()):
        layer.alpha = layer.alpha[:, 0, 0].clone()
        layer.threshold = nn.Parameter(layer.threshold[:, 0, 0].clone())
    return layer


# --- data ----------------------------------------------------------------------------------------

def _batches(data: Data, batch_size: int = 512) -> Iterator[torch.Tensor]:
    """Input tensors from a tensor (split into batches) or an iterable of tensors or of
    (input, ...) tuples, such as a DataLoader."""
    if isinstance(data, torch.Tensor):
        yield from data.split(batch_size)
        return
    for item in data:
        x = item[0] if isinstance(item, (tuple, list)) else item
        if not isinstance(x, torch.Tensor):
            raise TypeError("ttfs_ext.convert: data must be a tensor or an iterable of tensors or (input, ...) "
                            f"tuples, got an item of type {type(x).__name__}")
        yield x


def _first_batch(data: Data) -> torch.Tensor:
    for x in _batches(data):
        if x.numel():
            return x
    raise ValueError("ttfs_ext.convert: calibration_data is empty")


# --- public API ----------------------------------------------------------------------------------

def convert(model: nn.Module, calibration_data: Data, input_range: Optional[tuple[float, float]] = None,
            zeta: float = 0.5, mapping: str = "b1", windows: str = "activation") -> tnn.TTFSSequential:
    """Convert a trained ReLU network into an exact TTFS network (float64, CPU).

    calibration_data: a tensor of model inputs, or an iterable of tensors or (input, ...)
    batches (a DataLoader); the windows are sized on it and the agreement is measured on it.
    input_range: (low, high), the range of the model's inputs, encoded as spike times
    1 - (x - low)/(high - low) in [0, 1]; inputs outside it would be clipped, so the
    calibration data must lie inside. Default: the calibration data's min and max.
    zeta: safety margin, each window is (1 + zeta) x its layer's largest activation.
    mapping: "b1" (W = w, slope 1; Stanojevic et al. 2024) or "alpha1" (alpha = 1, J = B w;
    Stanojevic et al. 2022).
    windows: "activation" (the papers' rule: (1 + zeta) x the largest activation) or "event"
    ((1 + zeta) x the smallest width at which no neuron's potential reaches its threshold
    before its window opens, on the calibration data: the event-driven network is then exact
    there too, at the cost of latency). The closed form is exact with either; with
    "activation", a neuron whose inputs drive its potential over the threshold while they
    still arrive fires early in the true dynamics (ttfs_ext.simulate counts such spikes).

    Returns a TTFSSequential whose attribute `conversion` (a ConversionReport) lists the
    windows, the spikes per neuron and the agreement on the calibration data. Raises
    ConversionError, naming the layer, for a model that cannot be mapped exactly.
    """
    if mapping not in ("b1", "alpha1"):
        raise ValueError(f"ttfs_ext.convert: mapping must be 'b1' or 'alpha1', got {mapping!r}")
    if not (isinstance(zeta, (int, float)) and math.isfinite(zeta) and zeta > -1):
        raise ValueError(f"ttfs_ext.convert: zeta must be a number > -1, got {zeta!r}")
    if windows not in ("activation", "event"):
        raise ValueError(f"ttfs_ext.convert: windows must be 'activation' or 'event', got {windows!r}")
    model = _float64_copy(model)
    low, high = _input_range(calibration_data, input_range)

    steps = _fold(model, _first_batch(calibration_data).to(_F64).cpu(), low, high)
    if mapping == "alpha1":
        _rescale_alpha1(steps)
    net = _build_b1(steps, low, high)

    # Windows: the B1 closed form has no lower clamp, so t_max - t is the activation
    # whatever the provisional windows are.
    spiking = net.spiking_layers()
    max_act = [0.0] * len(spiking)
    with torch.no_grad():
        for x in _batches(calibration_data):
            t = x.to(_F64).cpu()
            k = 0
            for m in net:
                t = m(t)
                if isinstance(m, tnn._Windowed):
                    if t.numel():
                        max_act[k] = max(max_act[k], m.output_window()[1] - float(t.min()))
                    k += 1
    net.set_widths([(1.0 + zeta) * a if a > 0 else 1.0 for a in max_act])
    if windows == "event":
        _event_safe_widths(net, [s for s in steps if isinstance(s, _Affine) and s.relu], calibration_data, zeta,
                           mapping)

    if mapping == "alpha1":
        affines = iter(s for s in steps if isinstance(s, _Affine))
        for i, m in enumerate(net):
            if isinstance(m, (tnn.TTFSLinear, tnn.TTFSConv2d)):
                net[i] = _alpha1_layer(next(affines), m.in_width, m.width)  # takes m's place in the windows
            elif isinstance(m, tnn.TTFSReadout):
                next(affines)

    report = ConversionReport(mapping, float(zeta), (low, high), latency=net.latency)
    spikes = _spike_rates(net, calibration_data)
    sources = [s.source for s in steps if isinstance(s, _Affine) and s.relu]
    for (i, m), src, a, rate in zip(((i, m) for i, m in enumerate(net) if isinstance(m, tnn._Windowed)),
                                    sources, max_act, spikes):
        report.layers.append(SpikingLayerInfo(i, " + ".join(src), m.t_min, m.t_max, a, rate))
    report.calibration = agreement(model, net, calibration_data)
    net.conversion = report
    return net


def _event_safe_widths(net: tnn.TTFSSequential, spiking_steps: list[_Affine], data: Data, zeta: float,
                       mapping: str) -> None:
    """Widen each window, in order, to (1 + zeta) x the width at which the neurons' potential
    stays below threshold until the window opens, on the data. With slope B, bias current
    alpha and inside-weight sum of the mapping, threshold = B T + alpha T_prev - B b, so the
    condition max V < threshold on [t_start, t_min] is T > (max V - alpha T_prev) / B + b."""
    from .events import peak_potential

    widths = net.widths
    layer_index = [i for i, m in enumerate(net) if isinstance(m, tnn._Windowed)]
    for n, (i, step) in enumerate(zip(layer_index, spiking_steps)):
        layer = net[i]
        w = step.weight
        slope = 1.0 / (1.0 - w.reshape(step.rows(), -1).sum(dim=1)) if mapping == "alpha1" else torch.ones(
            step.rows(), dtype=_F64)
        j = w * slope.view(-1, *([1] * (w.dim() - 1)))
        conv = step.conv
        if conv is None:
            s_in, per, b = j.sum(dim=1), slope, step.bias
        else:
            ones = torch.ones((1, *step.in_shape), dtype=_F64)
            s_in = F.conv2d(ones, j, None, conv["stride"], conv["padding"], conv["dilation"], conv["groups"])[0]
            per, b = slope.view(-1, 1, 1), step.bias.view(-1, 1, 1) if step.bias.dim() == 1 else step.bias
        alpha = per - s_in
        start, end = layer.input_window()  # (0, in_width): the inputs' window, in local time
        need = 0.0
        with torch.no_grad():
            for x in _batches(data):
                if not x.numel():
                    continue
                t = x.to(_F64).cpu()
                for m in list(net)[:i]:
                    t = m(t)
                peak = peak_potential(t, j, alpha, start, end, conv)
                need = max(need, float(((peak - alpha * (end - start)) / per + b).max()))
        widths[n] = max(widths[n], (1.0 + zeta) * need)
        net.set_widths(widths)


def agreement(model: nn.Module, net: nn.Module, data: Data, event: bool = False) -> Agreement:
    """Compare a ReLU network with its TTFS network on `data` (a tensor or an iterable of
    batches), both in float64: the fraction of samples with the same predicted class and the
    largest logit difference. event=True also runs the exact event-driven simulation
    (ttfs_ext.simulate) and reports its agreement, early spikes and neurons that differ from
    the closed form."""
    from .events import simulate

    model = _float64_copy(model)
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    samples, agree, diff, scale = 0, 0, 0.0, 0.0
    ev_agree, ev_diff, early, deviating = 0, 0.0, None, None
    with torch.no_grad():
        for x in _batches(data):
            x = x.to(_F64).cpu()
            if not x.numel():
                continue
            ref, out = model(x), net(x.to(device)).cpu()
            samples += x.shape[0]
            agree += int((out.argmax(dim=1) == ref.argmax(dim=1)).sum())
            diff = max(diff, float((out - ref).abs().max()))
            scale = max(scale, float(ref.abs().max()))
            if event:
                sim = simulate(net, x.to(device))
                sim.logits = sim.logits.cpu()
                ev_agree += int((sim.logits.argmax(dim=1) == ref.argmax(dim=1)).sum())
                ev_diff = max(ev_diff, float((sim.logits - ref).abs().max()))
                counts = [layer.early_spikes for layer in sim.layers]
                devs = [layer.deviating for layer in sim.layers]
                early = counts if early is None else [a + b for a, b in zip(early, counts)]
                deviating = devs if deviating is None else [a + b for a, b in zip(deviating, devs)]
    if samples == 0:
        raise ValueError("ttfs_ext.agreement: data is empty")
    result = Agreement(samples, agree / samples, diff, scale)
    if event:
        result.event_agreement, result.event_max_logit_diff = ev_agree / samples, ev_diff
        result.early_spikes, result.event_deviating = early, deviating
    return result


def _float64_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).to(device="cpu", dtype=_F64).eval()


def _input_range(data: Data, input_range: Optional[tuple[float, float]]) -> tuple[float, float]:
    lo, hi = math.inf, -math.inf
    for x in _batches(data):
        if x.numel():
            x_lo, x_hi = (float(v) for v in torch.aminmax(x))  # NaN propagates into both
            if not (math.isfinite(x_lo) and math.isfinite(x_hi)):
                raise ValueError("ttfs_ext.convert: calibration_data contains NaN or inf")
            lo, hi = min(lo, x_lo), max(hi, x_hi)
    if lo > hi:
        raise ValueError("ttfs_ext.convert: calibration_data is empty")
    if input_range is None:
        if not hi > lo:
            raise ValueError(f"ttfs_ext.convert: the calibration data is constant ({lo}); pass input_range")
        return lo, hi
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(f"ttfs_ext.convert: input_range must be a pair (low, high), got {input_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"ttfs_ext.convert: input_range must satisfy low < high, got {input_range!r}")
    if lo < low or hi > high:
        raise ValueError(f"ttfs_ext.convert: the calibration data spans [{lo:.6g}, {hi:.6g}], outside input_range "
                         f"({low:.6g}, {high:.6g}); inputs outside the range would be clipped by the encoder, and the "
                         "TTFS network would differ from the ReLU network there")
    return low, high


def _spike_rates(net: tnn.TTFSSequential, data: Data) -> list[float]:
    """Fraction of neurons that fire (t < t_max) per spiking layer over the data."""
    fired, total = None, 0
    with torch.no_grad():
        for x in _batches(data):
            if not x.numel():
                continue
            _, rep = net.report(x.to(_F64).cpu(), warn=False)
            rates = [r.spikes_per_neuron * x.shape[0] for r in rep.layers]
            fired = rates if fired is None else [a + b for a, b in zip(fired, rates)]
            total += x.shape[0]
    return [f / total for f in fired] if fired else []
