"""Training TTFS networks (Stanojevic et al. 2024): a B1 network trains exactly like its
ReLU twin.

    net = fc2()                                   # 784-340-10, windows chained
    twin = relu_twin(copy.deepcopy(net))          # nn.Sequential with the same function
    history = fit(net, data, epochs=5, twin=twin, windows=CalibratedWindows())

- Models: fc2() and vgg() (the papers' VGG-like nets), or any TTFSSequential.
- relu_twin(net): the ReLU network that computes the same function with the same parameter
  objects (Linear/Conv2d + ReLU, max-pool, flatten).
- Windows: PaperWindows (the reference code: after each step, width = max(width, 10 x the
  largest activation of the batch); only grows) or CalibratedWindows ((1 + zeta) x a running
  maximum, or quantile, of the activations: small windows, small latency).
- fit(): per-epoch loss, accuracy, spikes per neuron (per layer and overall), latency and
  margins for the SNN and, side by side, the ReLU twin; atomic checkpoints every epoch,
  exact resume, seeded data order, progress bars (tqdm when installed).
"""
from __future__ import annotations

import contextlib
import copy
import glob
import math
import os
import pickle
import random
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import nn as tnn
from . import reference

__all__ = ["fc2", "vgg", "relu_twin", "PaperWindows", "CalibratedWindows", "FixedWindows", "forward_with_stats",
           "evaluate", "fit", "EpochMetrics", "History", "save_checkpoint", "load_checkpoint", "CheckpointError", "VGG_MNIST",
           "VGG_CIFAR"]

# The VGG-like nets of the reference code (main.py): 3x3 'same' convolutions, "P" = 2x2 max-pool.
VGG_MNIST = ([64, 64, 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"], [512, 512])
VGG_CIFAR = ([64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P", 512, 512, 512, "P"], [512])


# --- models --------------------------------------------------------------------------------------

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


class _InputActivation(nn.Module):
    """The activation of the input layer, 1 - t = clamp((x - low) / (high - low), 0, 1)."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.input_activation(x, self.low, self.high)


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
            if m.bias is not None and m.bias.dim() == 3:
                raise ValueError("relu_twin: per-position biases have no nn.Conv2d twin")
            twin = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m._padding_pair(), m.dilation,
                             m.groups, bias=m.bias is not None, device="meta")
            twin.weight, twin.bias = m.weight, m.bias
            layers += [twin, nn.ReLU()]
        elif isinstance(m, tnn.TTFSMaxPool2d):
            layers.append(_SignedMaxPool(m) if m.channel_sign is not None else
                          nn.MaxPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, (nn.Flatten, nn.Identity, nn.Dropout)):
            layers.append(copy.deepcopy(m))
        else:
            raise TypeError(f"relu_twin: {type(m).__name__} has no ReLU twin (B1 layers only)")
    return nn.Sequential(*layers)


# --- windows ---------------------------------------------------------------------------------------

class FixedWindows:
    """Keep the windows as they are."""

    def update(self, net: tnn.TTFSSequential, activation_max: Sequence[float]) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class PaperWindows(FixedWindows):
    """The reference code's rule, after each step: width = max(width, factor x the largest
    activation of the batch) (factor 10). Windows only grow."""

    def __init__(self, factor: float = 10.0) -> None:
        self.factor = factor

    def update(self, net: tnn.TTFSSequential, activation_max: Sequence[float]) -> None:
        net.set_widths([max(w, self.factor * a) for w, a in zip(net.widths, activation_max)])


class CalibratedWindows(FixedWindows):
    """width = (1 + zeta) x a running maximum of each layer's largest batch activation,
    m <- max(batch max, decay x m) (decay 1: the maximum seen so far). Windows follow the
    activations, so latency stays small; a margin check warns when a spike would precede its
    window (raise zeta or decay)."""

    def __init__(self, zeta: float = 0.5, decay: float = 1.0) -> None:
        if not (zeta > -1 and 0 < decay <= 1):
            raise ValueError(f"CalibratedWindows: need zeta > -1 and 0 < decay <= 1, got {zeta}, {decay}")
        self.zeta, self.decay = zeta, decay
        self.running: Optional[list[float]] = None

    def update(self, net: tnn.TTFSSequential, activation_max: Sequence[float]) -> None:
        if self.running is None:
            self.running = list(activation_max)
        else:
            self.running = [max(a, self.decay * r) for a, r in zip(activation_max, self.running)]
        net.set_widths([(1 + self.zeta) * r if r > 0 else w for r, w in zip(self.running, net.widths)])

    def state_dict(self) -> dict:
        return {"running": self.running}

    def load_state_dict(self, state: dict) -> None:
        self.running = state.get("running")


WINDOW_RULES = {"paper": PaperWindows, "calibrated": CalibratedWindows, "fixed": FixedWindows}


# --- forward with statistics -------------------------------------------------------------------------

@dataclass
class _Stats:
    activation_max: list[float]      # per spiking layer: t_max - min t (the largest activation)
    spikes: list[float]              # per spiking layer: neurons that fired (t < t_max), summed
    neurons: list[int]               # per spiking layer: neurons per sample
    margin: list[float]              # per spiking layer: min t - t_min


def forward_with_stats(net: Sequence[nn.Module], x: torch.Tensor) -> tuple[torch.Tensor, _Stats]:
    """net(x) (with gradients), plus per spiking layer the largest activation, the number of
    spikes and the margin to the window start, read from the spike times on the way."""
    stats = _Stats([], [], [], [])
    robust = getattr(net, "robustness", None)
    if robust is not None and robust.active:
        # The perturbed forward is the network's own; statistics come from a clean pass.
        with torch.no_grad():
            _, stats = forward_with_stats(list(net), x)
        return net(x), stats
    out = x
    for m in net:
        out = m(out)
        if isinstance(m, tnn._Windowed):
            t = out.detach()
            lo, hi = m.output_window()  # (0, width) in local time
            t_first = float(t.min()) if t.numel() else math.inf
            stats.activation_max.append(hi - t_first if t.numel() else 0.0)
            stats.spikes.append(float((t < hi).sum()))
            stats.neurons.append(t[0].numel() if t.dim() > 1 else t.numel())
            stats.margin.append(t_first - lo)
    return out, stats


# --- metrics ------------------------------------------------------------------------------------------

@dataclass
class EpochMetrics:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: Optional[float] = None
    test_accuracy: Optional[float] = None
    spikes_per_neuron: Optional[float] = None           # overall, on the evaluation data
    spikes_per_neuron_layers: Optional[list[float]] = None
    latency: Optional[float] = None                     # t_min of the readout
    widths: Optional[list[float]] = None
    min_margin: Optional[float] = None                  # min over layers of min t - t_min (evaluation)
    margins: Optional[list[float]] = None               # per spiking layer: min t - t_min (evaluation)
    twin_train_loss: Optional[float] = None
    twin_train_accuracy: Optional[float] = None
    twin_test_loss: Optional[float] = None
    twin_test_accuracy: Optional[float] = None
    seconds: float = 0.0


@dataclass
class History:
    epochs: list[EpochMetrics] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)        # SNN, every step
    twin_step_losses: list[float] = field(default_factory=list)   # ReLU twin, every step

    def as_dict(self) -> dict:
        return {"epochs": [asdict(e) for e in self.epochs], "step_losses": self.step_losses,
                "twin_step_losses": self.twin_step_losses}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls([EpochMetrics(**e) for e in d["epochs"]], list(d["step_losses"]), list(d["twin_step_losses"]))


@torch.no_grad()
def evaluate(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> dict[str, Any]:
    """Loss, accuracy and (for a TTFS network) spikes per neuron per layer and overall, and
    the smallest margin, on (x, y)."""
    was_training = net.training
    net.eval()
    loss, correct, spikes, neurons, margins = 0.0, 0, None, None, None
    dtype = next(net.parameters()).dtype
    device = next(net.parameters()).device
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size].to(device, dtype), y[start:start + batch_size].to(device)
        if isinstance(net, tnn.TTFSSequential):
            out, st = forward_with_stats(net, xb)
            spikes = st.spikes if spikes is None else [a + b for a, b in zip(spikes, st.spikes)]
            neurons = st.neurons
            margins = st.margin if margins is None else [min(a, b) for a, b in zip(margins, st.margin)]
        else:
            out = net(xb)
        loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(dim=1) == yb).sum())
    net.train(was_training)
    result: dict[str, Any] = {"loss": loss / len(x), "accuracy": correct / len(x)}
    if spikes is not None:
        per_layer = [s / (n * len(x)) for s, n in zip(spikes, neurons)]
        result.update(spikes_per_neuron_layers=per_layer,
                      spikes_per_neuron=sum(spikes) / (sum(neurons) * len(x)), margins=margins,
                      min_margin=min(margins) if margins else math.inf)
    return result


# --- checkpoints ---------------------------------------------------------------------------------------

def save_checkpoint(path: Union[str, Path], state: dict) -> None:
    """torch.save to a temporary file in the same folder, then an atomic rename: a crash never
    leaves a half-written checkpoint. The temporary files of saves that were killed before
    their rename (path.name + ".*.tmp") are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class CheckpointError(ValueError):
    """A file that is not a checkpoint this library can load safely."""


def load_checkpoint(path: Union[str, Path]) -> dict:
    """A checkpoint written by save_checkpoint (fit, ttfs train), on the CPU. It is read with
    torch.load(weights_only=True): tensors, numbers, strings and containers only, so a file
    from an untrusted source cannot run code; anything else raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist" if not path.exists()
                                else f"checkpoint {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if lines and lines[0].lower().startswith("weights only load failed"):
            # torch names what the file asks for ("unsupported GLOBAL posix.system ...").
            why = next((line for line in lines[1:] if "GLOBAL" in line or "global" in line), "")
            raise CheckpointError(f"{path}: refused: it holds more than tensors and plain data, and loading it "
                                  f"could run code (checkpoints load with weights_only=True){': ' + why if why else ''}"
                                  ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint (UnpicklingError: {lines[0] if lines else ''})") \
            from None
    except Exception as err:  # noqa: BLE001  (a truncated or foreign file fails in many ways)
        lines = str(err).strip().splitlines()
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                              f"{lines[0] if lines else 'no message'})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint (it holds a {type(state).__name__}, not a dict)")
    return state


# --- training ------------------------------------------------------------------------------------------

def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=generator).split(batch_size))


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r} (adam, sgd)")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def fit(net: tnn.TTFSSequential, data, epochs: int, *, batch_size: int = 32, lr: float = 5e-4,
        optimizer: str = "adam", windows: Optional[FixedWindows] = None, twin: Optional[nn.Module] = None,
        seed: int = 0, checkpoint: Optional[Union[str, Path]] = None, resume: bool = False,
        overwrite: bool = False, progress: bool = True, on_epoch: Optional[Callable[[EpochMetrics], None]] = None,
        eval_batch_size: int = 1000, max_steps_per_epoch: Optional[int] = None,
        checkpoint_extra: Optional[dict] = None) -> History:
    """Train `net` (and, if given, its ReLU twin `twin`, side by side on the same batches with
    its own optimizer) with cross-entropy on the readout's potentials.

    data: an object with x_train, y_train, x_test, y_test (ttfs_ext.data.Dataset) or a tuple
    (x_train, y_train, x_test, y_test); inputs are cast to the network's dtype. windows: a
    window rule applied after every step (default FixedWindows). checkpoint: a file written
    atomically after every epoch (model, twin, optimizers, window rule, RNG, history);
    resume=True continues from it exactly (it must exist); an existing checkpoint is never
    replaced by a new run unless overwrite=True (FileExistsError). checkpoint_extra is stored
    with it (run configuration). Returns the History (also in the checkpoint)."""
    if epochs < 1 or int(epochs) != epochs:
        raise ValueError(f"fit: epochs must be a positive int, got {epochs!r}")
    if batch_size < 1 or int(batch_size) != batch_size:
        raise ValueError(f"fit: batch_size must be a positive int, got {batch_size!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"fit: lr must be positive and finite, got {lr!r}")
    if checkpoint is not None:
        if resume and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"fit: resume=True, but there is no checkpoint {checkpoint} to continue")
        if not resume and not overwrite and Path(checkpoint).exists():
            raise FileExistsError(f"fit: {checkpoint} exists: resume=True continues it, overwrite=True replaces it")
    elif resume:
        raise ValueError("fit: resume=True needs the checkpoint to continue")
    x_train, y_train, x_test, y_test = (data if isinstance(data, tuple) else
                                        (data.x_train, data.y_train, data.x_test, data.y_test))
    windows = windows or FixedWindows()
    param = next(net.parameters())
    dtype, device = param.dtype, param.device
    opt = make_optimizer(optimizer, net.parameters(), lr)
    twin_opt = make_optimizer(optimizer, twin.parameters(), lr) if twin is not None else None
    order = torch.Generator().manual_seed(seed)
    history, start_epoch = History(), 0

    if resume:
        state = load_checkpoint(checkpoint)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if twin is not None:
            twin.load_state_dict(state["twin"])
            twin_opt.load_state_dict(state["twin_optimizer"])
        windows.load_state_dict(state["windows"])
        order.set_state(state["order_rng"])
        torch.set_rng_state(state["torch_rng"])
        history, start_epoch = History.from_dict(state["history"]), state["epoch"]

    import time
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        net.train()
        if twin is not None:
            twin.train()
        batches = _batches(len(x_train), batch_size, order)
        if max_steps_per_epoch is not None:
            batches = batches[:max_steps_per_epoch]
        loss_sum = correct = seen = 0
        twin_loss_sum = twin_correct = 0
        bar = _progress(batches, len(batches), f"epoch {epoch + 1}/{epochs}", progress)
        for idx in bar:
            xb = x_train[idx].to(device, dtype)
            yb = y_train[idx].to(device)
            opt.zero_grad(set_to_none=True)
            out, stats = forward_with_stats(net, xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            opt.step()
            windows.update(net, stats.activation_max)
            history.step_losses.append(float(loss.detach()))
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.detach().argmax(1) == yb).sum())
            seen += len(idx)
            if twin is not None:
                twin_opt.zero_grad(set_to_none=True)
                twin_out = twin(xb)
                twin_loss = F.cross_entropy(twin_out, yb)
                twin_loss.backward()
                twin_opt.step()
                history.twin_step_losses.append(float(twin_loss.detach()))
                twin_loss_sum += float(twin_loss.detach()) * len(idx)
                twin_correct += int((twin_out.detach().argmax(1) == yb).sum())
            if progress and hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
        ev = evaluate(net, x_test, y_test, eval_batch_size) if len(x_test) else {}
        metrics = EpochMetrics(
            epoch + 1, loss_sum / max(seen, 1), correct / max(seen, 1), ev.get("loss"), ev.get("accuracy"),
            ev.get("spikes_per_neuron"), ev.get("spikes_per_neuron_layers"), net.latency, net.widths,
            ev.get("min_margin"), ev.get("margins"))
        if twin is not None:
            tev = evaluate(twin, x_test, y_test, eval_batch_size) if len(x_test) else {}
            metrics.twin_train_loss, metrics.twin_train_accuracy = twin_loss_sum / max(seen, 1), twin_correct / max(seen, 1)
            metrics.twin_test_loss, metrics.twin_test_accuracy = tev.get("loss"), tev.get("accuracy")
        metrics.seconds = time.perf_counter() - t0
        closed_form = any(getattr(m, "mode", "closed") == "closed" for m in net.spiking_layers())
        if closed_form and metrics.min_margin is not None and metrics.min_margin < 0:
            warnings.warn(f"epoch {epoch + 1}: a spike precedes its window (margin {metrics.min_margin:.4g}): the "
                          "closed form is not the network's true dynamics there; widen the windows (zeta)",
                          RuntimeWarning, stacklevel=2)
        history.epochs.append(metrics)
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "epoch": epoch + 1, "model": net.state_dict(), "optimizer": opt.state_dict(),
                "twin": twin.state_dict() if twin is not None else None,
                "twin_optimizer": twin_opt.state_dict() if twin_opt is not None else None,
                "windows": windows.state_dict(), "order_rng": order.get_state(), "torch_rng": torch.get_rng_state(),
                "history": history.as_dict(), "extra": checkpoint_extra})
        if on_epoch is not None:
            on_epoch(metrics)
    return history
