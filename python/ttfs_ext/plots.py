"""PNG plots of training runs and TTFS networks (matplotlib, imported lazily, Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch

from . import nn as tnn

__all__ = ["plot_curves", "plot_spike_histograms", "plot_raster", "plot_sweep"]

PathLike = Union[str, Path]


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("ttfs_ext plots need matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history, path: PathLike) -> Path:
    """Loss and accuracy per epoch of the SNN and, where trained, its ReLU twin, overlaid."""
    plt = _pyplot()
    epochs = [e.epoch for e in history.epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label, style in (("train_loss", "SNN train", "-"), ("test_loss", "SNN test", "-"),
                              ("twin_train_loss", "ReLU twin train", "--"), ("twin_test_loss", "ReLU twin test", "--")):
        values = [getattr(e, key) for e in history.epochs]
        if all(v is not None for v in values):
            ax_loss.plot(epochs, values, style, marker="o", label=label)
    for key, label, style in (("train_accuracy", "SNN train", "-"), ("test_accuracy", "SNN test", "-"),
                              ("twin_train_accuracy", "ReLU twin train", "--"),
                              ("twin_test_accuracy", "ReLU twin test", "--")):
        values = [getattr(e, key) for e in history.epochs]
        if all(v is not None for v in values):
            ax_acc.plot(epochs, values, style, marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    title = "accuracy"
    pairs = [(e.test_accuracy, e.twin_test_accuracy) for e in history.epochs]
    if pairs and all(a is not None and b is not None for a, b in pairs):
        title += f" (max |SNN - ReLU twin| test: {max(abs(a - b) for a, b in pairs):.2g})"
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=title)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, plt, path)


@torch.no_grad()
def _spike_times(net: tnn.TTFSSequential, x: torch.Tensor) -> list[tuple[str, torch.Tensor, float, float]]:
    """(name, absolute spike times (float64), t_min, t_max) per spiking layer."""
    return [(f"{i}: {type(m).__name__}", t.flatten(1).cpu(), float(m.t_min), float(m.t_max))
            for i, m, t in net.spike_times(x)]


def plot_spike_histograms(net: tnn.TTFSSequential, x: torch.Tensor, path: PathLike, bins: int = 50) -> Path:
    """Per spiking layer, the histogram of the spike times of the neurons that fire, in
    their window [t_min, t_max] (silent neurons, t = t_max, are counted in the title)."""
    plt = _pyplot()
    layers = _spike_times(net, x)
    fig, axes = plt.subplots(1, len(layers), figsize=(4.5 * len(layers), 3.6), squeeze=False)
    for ax, (name, t, t_min, t_max) in zip(axes[0], layers):
        fired = t[t < t_max]
        ax.hist(fired.numpy(), bins=bins, range=(t_min, t_max), color="tab:blue")
        ax.set(xlabel="spike time", ylabel="spikes", xlim=(t_min, t_max),
               title=f"{name}\n{fired.numel() / max(t.numel(), 1):.3f} spikes/neuron")
    return _save(fig, plt, path)


def plot_raster(net: tnn.TTFSSequential, x: torch.Tensor, path: PathLike, max_neurons: int = 400) -> Path:
    """Spike raster of one sample (x with a batch of one) through all layers: input spikes,
    then every spiking layer in its own window (at most max_neurons per layer shown)."""
    plt = _pyplot()
    inputs = net[0](x) if isinstance(net[0], tnn.TTFSEncoder) else x
    layers = [("input", inputs.detach().flatten(1).cpu(), 0.0, 1.0)] + _spike_times(net, x)
    fig, ax = plt.subplots(figsize=(11, 5))
    offset = 0
    for k, (name, t, t_min, t_max) in enumerate(layers):
        row = t[0][:max_neurons]
        fired = (row < t_max).nonzero().flatten()
        ax.scatter(row[fired].numpy(), (offset + fired).numpy(), s=2, color=f"C{k}", label=name)
        ax.axvspan(t_min, t_max, ymin=0, ymax=1, color=f"C{k}", alpha=0.06)
        offset += row.numel() + 10
    ax.set(xlabel="time", ylabel="neuron (layers stacked)", title="spike raster of one sample")
    ax.legend(loc="upper right", markerscale=4)
    return _save(fig, plt, path)


def plot_sweep(rows: Sequence[dict], path: PathLike) -> Path:
    """Accuracy against each swept quantity (rows with keys 'sweep', 'value', 'accuracy')."""
    plt = _pyplot()
    kinds = sorted({r["sweep"] for r in rows})
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.6), squeeze=False)
    labels = {"noise": "spike-time noise (std)", "time_bits": "spike-time bits", "weight_bits": "weight bits",
              "latency": "latency (fraction of the trained one)"}
    for ax, kind in zip(axes[0], kinds):
        points = sorted((r["value"], r["accuracy"]) for r in rows if r["sweep"] == kind)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set(xlabel=labels.get(kind, kind), ylabel="test accuracy", title=kind)
        ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def _save(fig, plt, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
