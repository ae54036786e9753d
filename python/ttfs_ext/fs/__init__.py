"""Few-spikes neurons and FS-conversion (Stöckl & Maass, "Optimized spiking neurons can classify
images with high accuracy through temporal coding with two spikes", Nature Machine
Intelligence 3, 2021; arXiv 2002.00860).

Every activation of a trained ANN becomes a neuron that encodes its value in K time steps
with an exponentially decreasing threshold, about two spikes per neuron:

- fs_activation(x, h, d, T): the fused K-step neuron (C++ CPU and CUDA kernels, surrogate
  backward); reference: the pure-PyTorch loop;
- FSActivation: the module, with FSActivation.relu(K, alpha) (analytic), .sigmoid() (K=12) and
  .silu() (K=16) (tables fitted by benchmarks/fit_fs_tables.py with fit_coefficients);
- fit_coefficients(f, K, x_range): the fitting procedure;
- convert(model): FS-conversion with spike counting, latency and throughput (FSNetwork.stats()).
"""
from . import reference  # noqa: F401
from .conversion import DEFAULT_ACTIVATIONS, FSNetwork, convert
from .fit import FitResult, fit_coefficients, quantize
from .functional import fs_activation, fs_activation_full
from .modules import FSActivation, relu_table

__all__ = ["fs_activation", "fs_activation_full", "FSActivation", "relu_table", "fit_coefficients", "FitResult",
           "quantize", "convert", "FSNetwork", "DEFAULT_ACTIVATIONS", "reference"]
