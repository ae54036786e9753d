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


def _running_mean(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_curves(history, path: PathLike) -> Path:
    """Loss and accuracy of the SNN (lines) and, where trained, its ReLU twin (open markers, so
    that both show where they coincide, as B1 training makes them), per epoch, with the training
    loss of every step (a running mean) behind; the titles give the largest SNN-twin difference."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    epochs = history.epochs
    x = [e.epoch for e in epochs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    per_step = {"step_losses": ("SNN", "tab:blue"), "twin_step_losses": ("ReLU twin", "black")}
    for key, (who, color) in per_step.items():
        steps = getattr(history, key)
        if steps and epochs:
            window = max(1, len(steps) // (50 * len(epochs)))
            per_epoch = len(steps) / len(epochs)
            axes[0].plot([x[0] - 1 + (i + 1) / per_epoch for i in range(len(steps))], _running_mean(steps, window),
                         color=color, lw=0.7, alpha=0.35 if who == "SNN" else 0.6, ls="-" if who == "SNN" else ":",
                         label=f"{who} train, per step (mean of {window})")
    for ax, quantity in zip(axes, ("loss", "accuracy")):
        gaps = []
        for split, color in (("train", "tab:blue"), ("test", "tab:red")):
            snn = [getattr(e, f"{split}_{quantity}") for e in epochs]
            twin = [getattr(e, f"twin_{split}_{quantity}") for e in epochs]
            # training figures are means over an epoch's steps: drawn at its middle; test ones at its end
            at = [e - 0.5 for e in x] if split == "train" else x
            what = f"{split} (epoch mean)" if split == "train" else split
            if all(v is not None for v in snn):
                ax.plot(at, snn, "-", marker=".", color=color, label=f"SNN {what}")
            if epochs and all(v is not None for v in twin):
                ax.plot(at, twin, "o", ms=8, mfc="none", color=color, label=f"ReLU twin {what}")
                if all(v is not None for v in snn):
                    gaps.append(max(abs(a - b) for a, b in zip(snn, twin)))
        epoch_values = [v for e in epochs for k in ("train", "test") for v in
                        (getattr(e, f"{k}_{quantity}"), getattr(e, f"twin_{k}_{quantity}")) if v is not None]
        if quantity == "loss" and epoch_values:  # the first steps' losses would flatten the rest
            ax.set_ylim(top=min(ax.get_ylim()[1], 1.5 * max(epoch_values)))
        title = "loss (cross-entropy)" if quantity == "loss" else "accuracy"
        if gaps:
            title += f"\nmax |SNN - ReLU twin| over epochs: {max(gaps):.2g}"
        ax.set(xlabel="epoch", ylabel=quantity, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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


def plot_raster(net: tnn.TTFSSequential, x: torch.Tensor, path: PathLike, max_neurons: int = 5000) -> Path:
    """Spike raster of one sample (x with a batch of one) through all layers: the input spikes,
    then every spiking layer in its own window (shaded), layers stacked and labelled on the
    y axis. A layer of more than max_neurons neurons shows every k-th neuron and says so."""
    plt = _pyplot()
    inputs = net[0](x) if isinstance(net[0], tnn.TTFSEncoder) else x
    layers = [("input", inputs.detach().flatten(1).cpu(), 0.0, 1.0)] + _spike_times(net, x)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    offset, ticks, labels, spikes, neurons = 0, [], [], 0, 0
    for k, (name, t, t_min, t_max) in enumerate(layers):
        row = t[0]
        step = -(-row.numel() // max_neurons)  # ceil: every step-th neuron is shown
        shown = row[::step]
        fired = (shown < t_max).nonzero().flatten()
        ax.scatter(shown[fired].numpy(), (offset + fired).numpy(), s=3, color=f"C{k}", linewidths=0)
        ax.axvspan(t_min, t_max, color=f"C{k}", alpha=0.07)
        if k:
            ax.axhline(offset - 0.5, color="grey", lw=0.6)
        ticks.append(offset + shown.numel() / 2)
        labels.append(f"{name}\n{int((row < t_max).sum())} of {row.numel()} spiked"
                      + ("" if step == 1 else f"\n(every {step}th shown)"))
        spikes, neurons = spikes + int((row < t_max).sum()), neurons + row.numel()
        offset += shown.numel()
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set(xlabel="time", ylim=(-0.5, offset - 0.5),
           title=f"spike raster of one sample: {spikes} spikes of {neurons} neurons (shaded: each layer's window)")
    return _save(fig, plt, path)


def plot_sweep(rows: Sequence[dict], path: PathLike) -> Path:
    """Accuracy against each swept quantity (rows with keys 'sweep', 'value', 'accuracy'; 'std'
    draws error bars, 'images' the sample size in the title; 'closed_form_accuracy' a second
    line on the same images)."""
    plt = _pyplot()
    kinds = list(dict.fromkeys(r["sweep"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.8), squeeze=False)
    labels = {"noise": "spike-time noise (std)", "time_bits": "spike-time bits", "weight_bits": "weight bits",
              "latency": "latency (fraction of the trained one)"}
    for ax, kind in zip(axes[0], kinds):
        points = sorted((r for r in rows if r["sweep"] == kind), key=lambda r: r["value"])
        values = [r["value"] for r in points]
        std = [r.get("std", 0.0) for r in points]
        repeats = max(r.get("repeats", 1) for r in points)
        label = "event-driven" if kind == "latency" else ("mean ± std of %d draws" % repeats if repeats > 1 else None)
        ax.errorbar(values, [r["accuracy"] for r in points], yerr=std if any(std) else None, marker="o",
                    capsize=3, label=label)
        if all("closed_form_accuracy" in r for r in points):
            ax.plot(values, [r["closed_form_accuracy"] for r in points], "s", mfc="none", ms=7,
                    label="closed form")
        images = {r.get("images") for r in points}
        title = kind.replace("_", " ") + (f" ({images.pop()} test images)" if len(images) == 1 and None not in images
                                          else "")
        ax.set(xlabel=labels.get(kind, kind), ylabel="test accuracy", title=title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _save(fig, plt, path)


def _save(fig, plt, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
