"""Training of feedback SNNs with the papers' recipe (Xiao et al.): SGD with momentum, a linear
warm-up, a step schedule, cross-entropy on the readout, per-epoch forward and backward firing
rates, checkpoints (atomic, loaded with weights_only) and exact resume."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..train.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from ..train.loop import _progress
from .network import FeedbackSNN

__all__ = ["fit", "evaluate", "DEFAULTS"]

# The papers' settings per dataset (fs_spide.md B3, B4): model, epochs, lr steps, warm-up
# iterations, loss scale, T_b. T and dropout are the models' own defaults. MNIST: SPIDE-FSNN
# mnist_convnetf.py:31-58; CIFAR: cifar_alexnetf.py:31-61 (CIFAR-100: scale 500, as the authors' instructions give it).
DEFAULTS = {
    "digits": dict(model="f400", epochs=20, milestones=(10, 15), warmup=0, loss_scale=100.0, T_b=100, lr=0.05),
    "mnist": dict(model="convnet_f", epochs=100, milestones=(30, 60, 90), warmup=0, loss_scale=100.0, T_b=100,
                  lr=0.05),
    # IDE-FSNN fashionmnist_fc.py:31-54: 100 epochs, lr 0.05 dropping x0.1 at 30, 60, 90
    "fashion-mnist": dict(model="f400", epochs=100, milestones=(30, 60, 90), warmup=0, loss_scale=100.0, T_b=100,
                          lr=0.05),
    "cifar10": dict(model="alexnet_f", epochs=100, milestones=(50, 75), warmup=400, loss_scale=400.0, T_b=250,
                    lr=0.05),
    "cifar100": dict(model="alexnet_f", epochs=100, milestones=(50, 75), warmup=400, loss_scale=500.0, T_b=250,
                     lr=0.05),
}


def _has_batch_norm(net: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


@torch.no_grad()
def evaluate(net: FeedbackSNN, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500,
             device: Union[str, torch.device] = "cpu") -> tuple[float, float]:
    """(accuracy, mean forward firing rate) on (x, y), in eval mode (no dropout)."""
    was = net.training
    net.eval()
    correct, rate, n = 0, 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        correct += int((net(xb).argmax(1) == yb).sum())
        rate += net.last_stats["forward_rate"] * len(xb)
        n += len(xb)
    net.train(was)
    return correct / max(n, 1), rate / max(n, 1)


def _lr_at(base: float, it: int, epoch: int, warmup: int, milestones: Sequence[int], gamma: float) -> float:
    lr = base * gamma ** sum(epoch >= m for m in milestones)
    return lr * min(1.0, (it + 1) / warmup) if warmup > 0 else lr


def fit(net: FeedbackSNN, data, epochs: int, *, batch_size: int = 128, lr: float = 0.05, momentum: float = 0.9,
        weight_decay: float = 5e-4, warmup: int = 0, milestones: Sequence[int] = (), gamma: float = 0.1,
        reference_scaling: bool = False, seed: int = 0, checkpoint: Optional[Union[str, Path]] = None,
        resume: bool = False, device: Union[str, torch.device] = "cpu", max_steps_per_epoch: Optional[int] = None,
        eval_batch_size: int = 500, on_epoch: Optional[Callable[[dict], None]] = None, progress: bool = False,
        rate_every: int = 10,
        config: Optional[dict] = None) -> list[dict]:
    """Trains `net` on `data` (a ttfs_ext.data.Dataset); returns the per-epoch history.

    reference_scaling: the reference's form of the loss scale: the loss is multiplied by
    net.loss_scale, the learning rate divided by it and the network's own scaling switched off
    (so weight decay acts as wd / scale, as there). Otherwise the network scales the injected
    gradient itself and returns the loss's own gradients.
    checkpoint: a file written after every epoch (atomically); resume=True continues from it
    exactly (model, optimizer, data order, history); a foreign or unsafe file is refused.
    progress: a tqdm bar over each epoch's steps (where tqdm is installed).
    rate_every: the backward firing rate (every spike counted, as the papers do; FeedbackSNN's
    count_backward_spikes) is counted on every rate_every-th iteration and averaged over those."""
    if not isinstance(rate_every, int) or rate_every < 1:
        raise ValueError(f"ttfs_ext.spide.fit: rate_every must be a positive int, got {rate_every!r}")
    scale = net.loss_scale if reference_scaling else 1.0
    if reference_scaling:
        net.loss_scale = 1.0
    net.to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout masks
    history: list[dict] = []
    start, it = 0, 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint)
        if state.get("kind") != "ttfs_ext.spide":
            raise CheckpointError(f"{checkpoint}: not a `ttfs spide` checkpoint")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history, start, it = list(state["history"]), int(state["epoch"]), int(state["iteration"])
    x_train, y_train = data.x_train, data.y_train
    for epoch in range(start, epochs):
        net.train()
        t0 = time.perf_counter()
        order = torch.randperm(len(x_train), generator=gen)
        loss_sum = correct = seen = 0
        f_rates, b_rates = [], []
        batches = order.split(batch_size)[:max_steps_per_epoch]
        if len(batches) > 1 and len(batches[-1]) == 1 and _has_batch_norm(net):
            batches = batches[:-1]  # a batch norm cannot train on one sample (F400's F)
        for step, idx in enumerate(_progress(batches, len(batches), f"epoch {epoch + 1}/{epochs}", progress)):
            for group in opt.param_groups:
                group["lr"] = _lr_at(lr, it, epoch, warmup, milestones, gamma) / scale
            xb, yb = x_train[idx].to(device), y_train[idx].to(device)
            net.count_backward_spikes = step % rate_every == 0  # the copies it costs: on a sample of steps
            out = net(xb)
            loss = F.cross_entropy(out, yb)
            opt.zero_grad(set_to_none=True)
            (loss * scale).backward()
            opt.step()
            it += 1
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            seen += len(idx)
            f_rates.append(net.last_stats.get("forward_rate", math.nan))
            if "backward_rate" in net.last_stats and net.backward_mode == "spide":
                b_rates.append(net.last_stats["backward_rate"])
        train_time = time.perf_counter() - t0
        test_acc, test_rate = evaluate(net, data.x_test, data.y_test, eval_batch_size, device)
        row = dict(epoch=epoch + 1, train_loss=loss_sum / max(seen, 1), train_accuracy=correct / max(seen, 1),
                   test_accuracy=test_acc, forward_rate=sum(f_rates) / max(len(f_rates), 1),
                   backward_rate=(sum(b_rates) / len(b_rates)) if b_rates else None, test_forward_rate=test_rate,
                   lr=_lr_at(lr, max(it - 1, 0), epoch, warmup, milestones, gamma), seconds=train_time)
        history.append(row)
        net.count_backward_spikes = True
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"kind": "ttfs_ext.spide", "model": net.state_dict(),
                                         "optimizer": opt.state_dict(), "generator": gen.get_state(),
                                         "torch_rng": torch.get_rng_state(), "history": history,
                                         "epoch": epoch + 1, "iteration": it, "config": dict(config or {})})
        if on_epoch is not None:
            on_epoch(row)
    if reference_scaling:
        net.loss_scale = scale
    return history
