"""relu_twin: the ReLU network that computes what a B1 network computes, sharing its parameters."""
from __future__ import annotations

import copy

import torch
from torch import nn

from .. import nn as tnn
from .. import reference

__all__ = ["relu_twin"]


class _InputActivation(nn.Module):
    """The activation of the input layer, 1 - t = clamp((x - low) / (high - low), 0, 1)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.input_activation(x, self.low, self.high)


class _PositionBias(nn.Module):
    """Adds a bias per output position (C, H, W), the parameter of the TTFS layer."""

    def __init__(self, bias: nn.Parameter) -> None:
        super().__init__()
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class _SignedMaxPool(nn.Module):
    def __init__(self, pool: tnn.TTFSMaxPool2d) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.pool(-x)  # the TTFS pool of -x = max or min of x per channel


def relu_twin(net: tnn.TTFSSequential) -> nn.Sequential:
    """The ReLU network computing the same function as the B1 network `net`, with the same
    parameter objects (training one trains the other: use copy.deepcopy(net) for a twin of
    one's own)."""
    layers: list[nn.Module] = []
    for m in net:
        if isinstance(m, tnn.TTFSEncoder):
            layers.append(_InputActivation(m.low, m.high))
        elif isinstance(m, (tnn.TTFSLinear, tnn.TTFSReadout)):
            twin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device="meta")
            twin.weight, twin.bias = m.weight, m.bias
            layers.append(twin)
            if isinstance(m, tnn.TTFSLinear):
                layers.append(nn.ReLU())
        elif isinstance(m, tnn.TTFSConv2d):
            per_position = m.bias is not None and m.bias.dim() == 3  # (C, H, W): conversion's padding shift
            twin = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding_pair(), m.dilation,
                             m.groups, bias=m.bias is not None and not per_position, device="meta")
            twin.weight = m.weight
            if not per_position:
                twin.bias = m.bias
            layers += [twin, _PositionBias(m.bias), nn.ReLU()] if per_position else [twin, nn.ReLU()]
        elif isinstance(m, tnn.TTFSMaxPool2d):
            layers.append(_SignedMaxPool(m) if m.channel_sign is not None else
                          nn.MaxPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            layers.append(copy.deepcopy(m))
        else:
            raise TypeError(f"relu_twin: {type(m).__name__} has no ReLU twin (B1 layers only)")
    return nn.Sequential(*layers)
