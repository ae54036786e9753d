"""The papers' models: FC2 and the VGG-like nets of the reference code."""
from __future__ import annotations

from typing import Optional

from torch import nn

from .. import nn as tnn

__all__ = ["VGG_MNIST", "VGG_CIFAR", "fc2", "vgg"]

# The VGG-like nets of the reference code (main.py): 3x3 'same' convolutions, "P" = 2x2 max-pool.
VGG_MNIST = ([64, 64, 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"], [512, 512])
VGG_CIFAR = ([64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"], [512])


def _glorot(module: nn.Module) -> nn.Module:
    """glorot_uniform weights and zero biases, as the reference code initialises both nets."""
    nn.init.xavier_uniform_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


def fc2(in_features: int = 784, hidden: int = 340, classes: int = 10, input_shape: Optional[tuple] = (1, 28, 28),
        width: float = 1.0) -> tnn.TTFSSequential:
    """FC2 of the 2024 paper: in_features-hidden-classes (784-340-10), glorot init, zero biases."""
    layers: list[nn.Module] = [tnn.TTFSEncoder()]
    if input_shape is not None:
        layers.append(nn.Flatten())
    layers += [_glorot(tnn.TTFSLinear(in_features, hidden)), _glorot(tnn.TTFSReadout(hidden, classes))]
    return tnn.TTFSSequential(*layers, widths=width)


def vgg(config: tuple = VGG_MNIST, in_channels: int = 1, image_size: int = 28, classes: int = 10,
        width: float = 1.0) -> tnn.TTFSSequential:
    """The VGG-like nets of the reference code: config = (conv channels with "P" for a 2x2
    max-pool, dense widths); VGG_MNIST has 16 weight layers, VGG_CIFAR 15. A max-pool on an
    odd size floors, as in Keras."""
    conv, dense = config
    layers: list[nn.Module] = [tnn.TTFSEncoder()]
    channels, size = in_channels, image_size
    for item in conv:
        if item == "P":
            layers.append(tnn.TTFSMaxPool2d(2))
            size //= 2
        else:
            layers.append(_glorot(tnn.TTFSConv2d(channels, int(item), 3, padding=1)))
            channels = int(item)
    layers.append(nn.Flatten())
    features = channels * size * size
    for units in dense:
        layers.append(_glorot(tnn.TTFSLinear(features, units)))
        features = units
    layers.append(_glorot(tnn.TTFSReadout(features, classes)))
    return tnn.TTFSSequential(*layers, widths=width)
