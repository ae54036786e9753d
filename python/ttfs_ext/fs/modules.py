"""FSActivation: an activation function replaced by few-spikes neurons, as an nn.Module."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import nn

from .functional import fs_activation

__all__ = ["FSActivation", "relu_table"]

Table = Union[torch.Tensor, Sequence[float]]


def relu_table(K: int = 10, alpha: float = 25.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The analytic FS-ReLU: h = d = T = alpha 2^-t, t = 1..K, a greedy binary expansion:
    y = alpha 2^-K floor(x 2^K / alpha) on [0, alpha) (to one LSB), alpha (1 - 2^-K) above, 0
    for x <= 0."""
    if not isinstance(K, int) or isinstance(K, bool) or not 1 <= K <= 32:
        raise ValueError(f"FSActivation.relu: K must be an int in 1..32, got {K!r}")
    if not (isinstance(alpha, (int, float)) and alpha > 0 and alpha < float("inf")):
        raise ValueError(f"FSActivation.relu: alpha must be a positive finite number, got {alpha!r}")
    t = torch.arange(1, K + 1, dtype=torch.float64)
    p = float(alpha) * torch.pow(2.0, -t)
    return p.clone(), p.clone(), p.clone()


class FSActivation(nn.Module):
    """Few-spikes neurons with the per-step parameters h (reset), d (output weight) and T
    (threshold), K values each (ttfs_ext.fs.fs_activation). The parameters are buffers (float64,
    cast to the input's dtype at each call), or nn.Parameters with trainable=True (FS-aware
    fine-tuning through the surrogate gradient).

    While `count_spikes` is on (ttfs_ext.fs.convert turns it on), each call adds its spikes
    and neurons to `spike_total` and `neuron_total` (int64 tensors), and the neurons per image
    (elements per batch item) to `neurons_per_image`."""

    def __init__(self, h: Table, d: Table, T: Table, name: str = "custom", trainable: bool = False):
        super().__init__()
        if any(torch.as_tensor(p).is_complex() for p in (h, d, T)):
            raise TypeError("FSActivation: h, d and T must be real, got a complex table")
        tensors = [torch.as_tensor(p, dtype=torch.float64).detach().clone() for p in (h, d, T)]
        if any(t.dim() != 1 for t in tensors) or len({t.numel() for t in tensors}) != 1:
            raise ValueError(f"FSActivation: h, d and T must be 1-D of one length K, got shapes "
                             f"{[tuple(t.shape) for t in tensors]}")
        if not 1 <= tensors[0].numel() <= 32:
            raise ValueError(f"FSActivation: K (the length of h, d, T) must be in 1..32, got {tensors[0].numel()}")
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            raise ValueError("FSActivation: h, d and T must be finite")
        for key, t in zip(("h", "d", "T"), tensors):
            if trainable:
                setattr(self, key, nn.Parameter(t))
            else:
                self.register_buffer(key, t)
        self.name = name
        self.count_spikes = False
        self.register_buffer("spike_total", torch.zeros((), dtype=torch.int64), persistent=False)
        self.register_buffer("neuron_total", torch.zeros((), dtype=torch.int64), persistent=False)
        self.neurons_per_image = 0

    @property
    def K(self) -> int:
        return int(self.h.shape[0])

    @classmethod
    def relu(cls, K: int = 10, alpha: float = 25.0) -> "FSActivation":
        """The analytic FS-ReLU table (relu_table), K = 10 and alpha = 25 as in the paper."""
        return cls(*relu_table(K, alpha), name=f"relu(K={K}, alpha={alpha:g})")

    @classmethod
    def sigmoid(cls, fit: str = "normal") -> "FSActivation":
        """FS-sigmoid, K = 12, with a table fitted by benchmarks/fit_fs_tables.py on [-10, 10]:
        fit="normal" (default), the error weighted by where a network's inputs live (x ~ N(0, 1.5^2),
        with 15 % of the weight spread over the range), lower there and over the range than the FS
        paper's table; "interval", the plain MSE over the range (the earlier default)."""
        return cls._fitted("SIGMOID_K12", fit, "sigmoid(K=12)")

    @classmethod
    def silu(cls, fit: str = "normal") -> "FSActivation":
        """FS-SiLU (swish), K = 16, with a table fitted by benchmarks/fit_fs_tables.py on [-8, 12];
        fit as sigmoid's (benchmarks/results/fs_tables.json: the MSE of each table and of the FS paper's)."""
        return cls._fitted("SILU_K16", fit, "silu(K=16)")

    @classmethod
    def _fitted(cls, key: str, fit: str, name: str) -> "FSActivation":
        from . import tables
        if fit not in ("normal", "interval"):
            raise ValueError(f"ttfs_ext.fs: fit must be 'normal' or 'interval', got {fit!r}")
        t = getattr(tables, key + ("_NORMAL" if fit == "normal" else ""))
        return cls(t["h"], t["d"], t["T"], name=name if fit == "normal" else name[:-1] + ", interval fit)")

    def reset_spike_counts(self) -> None:
        self.spike_total.zero_()
        self.neuron_total.zero_()
        self.neurons_per_image = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.count_spikes:
            return fs_activation(x, self.h, self.d, self.T)
        y, spikes = fs_activation(x, self.h, self.d, self.T, return_spikes=True)
        with torch.no_grad():
            self.spike_total += spikes.sum(dtype=torch.int64)
            self.neuron_total += spikes.numel()
            if spikes.dim() == 0:
                self.neurons_per_image = 1
            elif len(spikes):  # an empty batch says nothing about the image size
                self.neurons_per_image = spikes[0].numel()
        return y

    def extra_repr(self) -> str:
        return f"{self.name}, K={self.K}"
