"""fit: the training loop (SNN and ReLU twin side by side), with exact resume."""
from __future__ import annotations

import math
import random
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import nn as tnn
from .checkpoints import load_checkpoint, save_checkpoint
from .metrics import EpochMetrics, History, evaluate, forward_with_stats
from .windows import FixedWindows

__all__ = ["fit", "make_optimizer", "seed_everything"]


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
            metrics.twin_train_loss = twin_loss_sum / max(seen, 1)
            metrics.twin_train_accuracy = twin_correct / max(seen, 1)
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
