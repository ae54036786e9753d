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

The calibration data is read once, held in memory in float64, and every window is sized on
it in a fixed number of network passes (ttfs_ext.convert.calibration).

Files: fold.py (tracing, folding, ConversionError), mappings.py (b1 and alpha1 layers),
calibration.py (the calibration pass, windows), agreement.py, report.py, conversion.py
(convert()).
"""
from .agreement import agreement
from .calibration import Data
from .conversion import convert
from .fold import ConversionError
from .report import Agreement, ConversionReport, SpikingLayerInfo

__all__ = ["convert", "agreement", "ConversionError", "ConversionReport", "Agreement", "SpikingLayerInfo"]
