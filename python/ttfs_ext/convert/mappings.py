"""The two mappings of the folded steps to spiking layers: b1 (W = w, slope 1; Stanojevic et
al. 2024) and alpha1 (alpha = 1 inside the image, J = B w with slope B = 1 / (1 - sum w);
Stanojevic et al. 2022)."""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .. import nn as tnn
from .fold import F64, AffineStep, PoolStep

__all__ = ["build_b1", "rescale_alpha1", "mapped_neurons", "alpha1_layer"]


def build_b1(steps: list[Any], low: float, high: float) -> tnn.TTFSSequential:
    """The B1 network of the steps, with provisional windows (width 1)."""
    modules: list[nn.Module] = [tnn.TTFSEncoder(low, high)]
    for step in steps:
        if isinstance(step, AffineStep):
            modules.append(_b1_layer(step))
        elif isinstance(step, PoolStep):
            modules.append(tnn.TTFSMaxPool2d(step.kernel, step.stride, step.padding, channel_sign=step.sign))
        else:
            modules.append(nn.Flatten())
    return tnn.TTFSSequential(*modules, widths=1.0)


def _b1_layer(step: AffineStep) -> nn.Module:
    out_features, in_features = step.weight.shape[:2]
    if not step.relu:
        layer: nn.Module = tnn.TTFSReadout(in_features, out_features, dtype=F64)
    elif step.conv is None:
        layer = tnn.TTFSLinear(in_features, out_features, dtype=F64)
    else:
        c = step.conv
        layer = tnn.TTFSConv2d(in_features * c["groups"], out_features, tuple(step.weight.shape[2:]), c["stride"],
                               c["padding"], c["dilation"], c["groups"], dtype=F64)
    layer.weight = nn.Parameter(step.weight.clone())
    layer.bias = nn.Parameter(step.bias.clone())
    return layer


def rescale_alpha1(steps: list[Any], lower: float = -10.0, upper: float = 0.99) -> None:
    """Scale each spiking neuron's weights and bias by c > 0 so that they sum into
    [lower, upper] (the alpha1 mapping needs sum < 1), and the next layer's matching input
    weights by 1/c (ReLU and max-pooling commute with positive scaling)."""
    affines = [s for s in steps if isinstance(s, AffineStep)]
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


def mapped_neurons(step: AffineStep, mapping: str) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """(J, slope B, S_in) of a spiking step's neurons under the mapping: B None (1) and J = w
    for b1; for alpha1 B = 1 / (1 - sum w) and J = B w. S_in sums J over the taps inside the
    image (all of them for a dense layer, fewer at a padded border)."""
    w = step.weight
    slope = 1.0 / (1.0 - w.reshape(step.rows(), -1).sum(dim=1)) if mapping == "alpha1" else None
    j = w if slope is None else w * slope.view(-1, *([1] * (w.dim() - 1)))
    if step.conv is None:
        return j, slope, j.sum(dim=1)
    return j, slope, tnn.inside_sum(j, step.in_shape, **step.conv)


def alpha1_layer(step: AffineStep, in_width: float, width: float) -> nn.Module:
    """The alpha1 neurons that reproduce the B1 layer of `step` in its window (of width
    `width`, after an input window of width `in_width`; ttfs_ext.nn.neurons). The caller puts
    it in the layer's place in the TTFSSequential, which gives it the window."""
    j, slope, s_in = mapped_neurons(step, "alpha1")
    if step.conv is None:
        layer = tnn.TTFSAlphaLinear(j.shape[1], j.shape[0], dtype=F64)
    else:
        c = step.conv
        layer = tnn.TTFSAlphaConv2d(j.shape[1] * c["groups"], j.shape[0], tuple(j.shape[2:]), c["stride"],
                                    c["padding"], c["dilation"], c["groups"], dtype=F64)
    alpha, threshold = tnn.alpha_and_threshold(s_in, step.bias, in_width, in_width + width, slope)
    layer.weight = nn.Parameter(j)
    layer.alpha = alpha
    layer.threshold = nn.Parameter(threshold)
    if step.conv is not None and bool((layer.alpha == layer.alpha[:, :1, :1]).all()) and \
            bool((layer.threshold == layer.threshold[:, :1, :1]).all()):
        layer.alpha = layer.alpha[:, 0, 0].clone()
        layer.threshold = nn.Parameter(layer.threshold[:, 0, 0].clone())
    return layer
