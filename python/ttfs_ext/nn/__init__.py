"""Drop-in TTFS modules.

TTFSLinear, TTFSConv2d and TTFSReadout take the constructor arguments and have the
state_dict keys of nn.Linear / nn.Conv2d, so a ReLU network's checkpoint loads into its TTFS
twin. Spiking layers fire in a window [t_min, t_max]; TTFSSequential chains the windows
(t_min of each spiking layer = t_max of the one before, the input window being [0, 1]) and
reports spike statistics per layer.

- window.py: SpikingLayer, the window of a spiking layer (absolute or local time)
- neurons.py: the B1 layer as general neurons (alpha and threshold), the taps inside the image
- layers.py: the layers; sequential.py: TTFSSequential; stats.py: spike statistics and reports
"""
from ..robust import Robustness, fake_quantize, quantize_weight  # noqa: F401  (importable here before nn/)
from .layers import (TTFSAlphaConv2d, TTFSAlphaLinear, TTFSConv2d, TTFSEncoder, TTFSLinear, TTFSMaxPool2d,
                     TTFSReadout, explicit_padding)
from .neurons import alpha_and_threshold, inside_sum, integration_bias, width_below_threshold
from .sequential import TTFSSequential
from .stats import LayerReport, LayerStats, SpikeStats, TTFSReport, layer_stats, run_with_stats
from .window import SpikingLayer

__all__ = ["TTFSLinear", "TTFSConv2d", "TTFSAlphaLinear", "TTFSAlphaConv2d", "TTFSMaxPool2d", "TTFSReadout",
           "TTFSEncoder", "TTFSSequential", "LayerReport", "TTFSReport", "SpikingLayer", "LayerStats", "SpikeStats",
           "layer_stats", "run_with_stats", "alpha_and_threshold", "integration_bias", "inside_sum",
           "width_below_threshold", "explicit_padding"]
