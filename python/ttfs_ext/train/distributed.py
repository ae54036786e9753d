"""Training at scale: data-parallel TTFS training through torch.distributed (torchrun), with
bfloat16 autocast, gradient accumulation and checkpoints that resume mid-epoch, exactly.

    ctx = init_distributed("cuda")          # torchrun's environment: one process per GPU (nccl);
                                            # without it: one process, world size 1
    result = fit_distributed(net, train_set, val_set, ctx, epochs=90, global_batch=256,
                             checkpoint="runs/p365/checkpoint.pt")

What makes a data-parallel run the same network as a one-process run with the same global batch:
- GlobalBatchSampler: step s of epoch e is the slice [s G, (s + 1) G) of one permutation seeded by
  (seed, e); each of the W ranks takes every W-th sample of each of its A micro-batches, so the
  union over ranks and micro-batches is the one-process batch. Its items are keys (index, seed):
  a sample's augmentation draws only from its own seed (the datasets' contract), so it is the
  same on any rank, worker count or after a resume.
- The loss of each micro-batch is its summed cross-entropy over the global number of readable
  samples of the step (all-reduced before the first backward; DDP averages over W, so each rank
  scales by W): the gradient is that of the global mean, whatever ranks or micro-batches hold.
- Windows: the calibrated rule sees the largest activation of the whole global step (all_reduce
  max over micro-batches and ranks), so every replica sets the same widths; widths are checked
  equal across ranks every epoch.
- Checkpoints (rank 0, atomic, every N steps and every epoch) hold the model, optimizer,
  scheduler, window rule, the position in the epoch, the epoch's running sums and every rank's
  RNG states: a resumed run continues bit for bit (same world size). Under torchrun with
  --max-restarts, a restarted worker group resumes from the latest checkpoint by itself.
The model is replicated (DDP), so one file from rank 0 suffices; torch.distributed.checkpoint
would pay off for sharded models (FSDP), which these are not.
"""
from __future__ import annotations

import contextlib
import datetime
import math
import os
import sys
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .. import nn as tnn
from .checkpoints import load_checkpoint, save_checkpoint
from .twin import relu_twin
from .windows import FixedWindows

__all__ = ["Context", "in_torchrun", "restart_count", "init_distributed", "GlobalBatchSampler", "ShardSampler",
           "KeyedTensorDataset", "make_schedule", "fit_distributed", "evaluate_distributed", "sample_seed"]


# --- the process group ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    """Where this process stands: rank, world size, local rank and its device."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def in_torchrun() -> bool:
    """True in a process that torchrun (torch.distributed.run) started."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def restart_count() -> int:
    """How often torchrun has restarted this worker group (0 on the first attempt)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def init_distributed(device: Union[str, torch.device] = "cpu", timeout_s: float = 1800.0) -> Context:
    """Join torchrun's process group (nccl for CUDA, gloo for the CPU), one GPU per local rank;
    outside torchrun, a one-process Context on `device`."""
    device = torch.device(device)
    if not in_torchrun():
        return Context(device=device)
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(f"local rank {local} has no GPU: this node has {torch.cuda.device_count()}; start "
                               f"torchrun with --nproc-per-node {torch.cuda.device_count()} or fewer")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        dist.init_process_group(backend, store=_attempt_store(rank, world, timeout), rank=rank, world_size=world,
                                timeout=timeout)
    return Context(rank, world, local, device, backend)


def shutdown() -> None:
    """Ends the process group (call it in a `finally`). On the way out of a run that succeeded,
    every rank first waits for the others: a rank that destroyed its gloo group while another
    still closed its connections was seen to abort ('terminate called without an active
    exception', SIGABRT) now and then. After an error, no barrier: the others may never come."""
    if not dist.is_initialized():
        return
    if sys.exc_info()[0] is None:
        dist.barrier()
    dist.destroy_process_group()


def _attempt_store(rank: int, world: int, timeout: datetime.timedelta) -> dist.Store:
    """torchrun's store, with keys of this attempt only. The process group's keys (the ranks'
    addresses) are the same names on every attempt; with env:// a restarted worker group could
    read the dead group's addresses before the new ones were written (seen with gloo on torch
    2.13: 'connectFullMesh failed ... Connection refused' on the restart, now and then)."""
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_hosts_it and rank == 0, timeout=timeout)
    return dist.PrefixStore(f"/ttfs_ext/attempt_{restart_count()}", store)


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def _broadcast_object(obj: Any) -> Any:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_gather_object(obj: Any) -> list:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


# --- samplers ------------------------------------------------------------------------------------------

_MASK63 = (1 << 63) - 1


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation in one epoch: a function of nothing else."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & _MASK63
    return x ^ (x >> 29)


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Batches of keys (index, sample_seed) for one rank: per epoch, steps_per_epoch global steps
    of global_batch samples (the rest of the epoch is dropped), each split into `accumulation`
    micro-batches, of which this rank takes every world_size-th sample. set_epoch(e, start_step)
    starts epoch e at a step (resume)."""

    def __init__(self, size: int, global_batch: int, rank: int = 0, world_size: int = 1, accumulation: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        if global_batch % (world_size * accumulation):
            raise ValueError(f"the global batch {global_batch} must be a multiple of world size x accumulation "
                             f"({world_size} x {accumulation})")
        if size < global_batch:
            raise ValueError(f"the dataset has {size} samples, fewer than one global batch ({global_batch})")
        self.size, self.global_batch, self.rank, self.world_size = size, global_batch, rank, world_size
        self.accumulation, self.seed, self.shuffle = accumulation, seed, shuffle
        self.micro = global_batch // (world_size * accumulation)  # samples per rank and micro-batch
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.size // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        if not 0 <= start_step <= self.steps_per_epoch:
            raise ValueError(f"start_step {start_step} outside the epoch's {self.steps_per_epoch} steps")
        self.epoch, self.start_step = epoch, start_step

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(sample_seed(self.seed, epoch, 0)))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        order = self.order(self.epoch).tolist()
        span = self.world_size * self.micro  # one micro-batch of every rank
        for step in range(self.start_step, self.steps_per_epoch):
            for a in range(self.accumulation):
                base = step * self.global_batch + a * span
                yield [(order[i], sample_seed(self.seed, self.epoch, order[i]))
                       for i in range(base + self.rank, base + span, self.world_size)]

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accumulation


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation: rank r takes samples r, r + W, ... (every sample once over all ranks, no padding),
    in batches of batch_size."""

    def __init__(self, size: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, size, world_size))
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for i in range(0, len(self.indices), self.batch_size):
            yield self.indices[i:i + self.batch_size]

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)


class KeyedTensorDataset(torch.utils.data.Dataset):
    """In-memory tensors behind the key protocol of the samplers (no augmentation: the seed is unused)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        i = key[0] if isinstance(key, tuple) else key
        return self.x[i], self.y[i]


def _collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the readable samples (an unreadable image arrives as None) and count the others."""
    good = [b for b in batch if b is not None]
    if not good:
        raise RuntimeError("a batch in which no image could be read")
    x = torch.stack([torch.as_tensor(b[0]) for b in good])
    y = torch.as_tensor([int(b[1]) for b in good], dtype=torch.long)
    return x, y, len(batch) - len(good)


# --- learning-rate schedule ----------------------------------------------------------------------------

def make_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  kind: str = "cosine", milestones: Sequence[int] = (), gamma: float = 0.1
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Per optimizer step: linear warm-up from 0, then cosine to 0, steps x gamma at milestones
    (in steps), or constant."""
    if kind not in ("cosine", "step", "constant"):
        raise ValueError(f"unknown schedule {kind!r} (cosine, step, constant)")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "cosine":
            done = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))
        if kind == "step":
            return gamma ** sum(step >= m for m in milestones)
        return 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- the model as DDP sees it --------------------------------------------------------------------------

class _WithStats(nn.Module):
    """net(x) and, per spiking layer, its largest activation, its spikes and its margin as tensors
    (DDP hooks fire only through a module's forward; TTFSSequential's statistics are floats)."""

    def __init__(self, net: tnn.TTFSSequential) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out, stats = tnn.run_with_stats(self.net, x)
        self.last_neurons = stats.neurons
        as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return out, as_tensor(stats.activation_max), as_tensor(stats.spikes), as_tensor(stats.margin)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """bfloat16 logits (autocast) in float32 for the loss; float32 and float64 as they are."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _top5(out: torch.Tensor, y: torch.Tensor) -> int:
    k = min(5, out.shape[1])
    return int((out.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum())


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --- evaluation ----------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_distributed(net: tnn.TTFSSequential, loader, ctx: Context, *, precision: str = "fp32",
                         channels_last: bool = False, twin: Optional[nn.Module] = None, progress: bool = False
                         ) -> dict[str, Any]:
    """The agreement report on a (sharded) split: SNN and ReLU-twin loss, top-1 and top-5, their
    agreement (same top-1 class), spikes per neuron (per layer and overall), the smallest margin
    and the latency, summed over all ranks. `loader` yields (x, y, unreadable)."""
    was_training = net.training
    net.eval()
    twin = relu_twin(net) if twin is None else twin
    twin.eval()
    layers = len(net.spiking_layers())
    # images, unreadable, SNN loss, top-1, top-5, ReLU loss, top-1, top-5, agreement; then spikes per layer
    sums = torch.zeros(9 + layers, dtype=torch.float64)
    margin = torch.full((1,), math.inf, dtype=torch.float64)
    neurons = torch.zeros(layers, dtype=torch.float64)  # per sample; a rank without samples keeps zeros
    param = next(net.parameters())
    for x, y, bad in _progress_bar(loader, "validation", progress and ctx.is_main):
        x, y = _to_device(x, param, ctx.device, channels_last), y.to(ctx.device)
        with _autocast(ctx.device, precision):
            out, st = tnn.run_with_stats(net, x)
            ref = twin(x)
        out, ref = _at_least_float32(out), _at_least_float32(ref)
        pred, ref_pred = out.argmax(1), ref.argmax(1)
        sums += torch.tensor([len(y), bad, float(F.cross_entropy(out, y, reduction="sum")), int((pred == y).sum()),
                              _top5(out, y), float(F.cross_entropy(ref, y, reduction="sum")),
                              int((ref_pred == y).sum()), _top5(ref, y), int((pred == ref_pred).sum())]
                             + st.spikes, dtype=torch.float64)
        neurons = torch.tensor(st.neurons, dtype=torch.float64)
        margin = torch.minimum(margin, torch.tensor([min(st.margin)], dtype=torch.float64))
    _all_reduce(sums)
    _all_reduce(margin, dist.ReduceOp.MIN)
    _all_reduce(neurons, dist.ReduceOp.MAX)
    net.train(was_training)
    n = max(sums[0].item(), 1.0)
    result = {"images": int(sums[0]), "unreadable": int(sums[1])}
    result.update({k: sums[i].item() / n for i, k in enumerate(
        ("loss", "top1", "top5", "relu_loss", "relu_top1", "relu_top5", "agreement"), start=2)})
    result.update(_spike_rates(sums[9:], neurons, n), min_margin=margin.item(), latency=net.latency)
    return result


def _spike_rates(spikes: torch.Tensor, neurons: torch.Tensor, samples: float) -> dict[str, Any]:
    """Spikes per neuron, per layer and overall, from spike counts summed over `samples` samples."""
    if samples == 0 or neurons.sum() == 0:
        return {"spikes_per_neuron": None, "spikes_per_neuron_layers": None}
    return {"spikes_per_neuron": (spikes.sum() / (neurons.sum() * samples)).item(),
            "spikes_per_neuron_layers": (spikes / (neurons.clamp(min=1) * samples)).tolist()}


def _to_device(x: torch.Tensor, param: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, param.dtype, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _progress_bar(iterable, desc: str, enabled: bool, total: Optional[int] = None, initial: int = 0):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, desc=desc, total=total, initial=initial, leave=False, dynamic_ncols=True)


# --- training ------------------------------------------------------------------------------------------

_SUMS = ("images", "unreadable", "loss", "top1", "top5")  # an epoch's running sums over all ranks, then the
                                                          # spikes of each layer


def fit_distributed(net: tnn.TTFSSequential, train_set, val_set, ctx: Context, *, epochs: int, global_batch: int,
                    optimizer: torch.optim.Optimizer, scheduler=None, windows: Optional[FixedWindows] = None,
                    accumulation: int = 1, seed: int = 0, workers: int = 0, precision: str = "fp32",
                    channels_last: bool = False, compile: bool = False, checkpoint: Optional[Union[str, Path]] = None,
                    checkpoint_every: int = 0, resume_state: Optional[dict] = None, eval_batch: int = 64,
                    max_steps_per_epoch: Optional[int] = None, progress: bool = True,
                    on_epoch: Optional[Callable[[dict, list[dict]], None]] = None, on_step: Optional[Callable[[int], None]] = None,
                    checkpoint_extra: Optional[dict] = None, collate: Callable = _collate) -> list[dict]:
    """Data-parallel training of `net` (already on ctx.device) on a keyed dataset (see the module's
    docstring) with cross-entropy on the readout's potentials, evaluating on `val_set` after every
    epoch (evaluate_distributed). `optimizer`/`scheduler` act on net's parameters (the scheduler
    steps once per optimizer step). checkpoint: written by rank 0 every `checkpoint_every` optimizer
    steps and after every epoch. resume_state: such a checkpoint, loaded by the caller (the world
    size may differ: the data order stays exact, dropout draws do not). on_step(global_step) runs
    after every optimizer step, on_epoch(record, history) on rank 0 after every epoch. Returns the epoch
    records (also in the checkpoint)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    windows = windows or FixedWindows()
    sampler = GlobalBatchSampler(len(train_set), global_batch, ctx.rank, ctx.world_size, accumulation, seed)
    steps = sampler.steps_per_epoch if max_steps_per_epoch is None else min(max_steps_per_epoch,
                                                                              sampler.steps_per_epoch)
    options = dict(num_workers=workers, collate_fn=collate, pin_memory=ctx.device.type == "cuda")
    if workers:
        options["prefetch_factor"] = 4
    train_loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, **options)
    val_loader = None
    if val_set is not None and len(val_set):
        val_loader = torch.utils.data.DataLoader(
            val_set, batch_sampler=ShardSampler(len(val_set), eval_batch, ctx.rank, ctx.world_size), **options)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    with_stats = _WithStats(net)
    model: nn.Module = with_stats
    ddp = ctx.distributed
    if ddp:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
    if compile:
        model = torch.compile(model)
    param = next(net.parameters())
    layers = len(net.spiking_layers())
    history: list[dict] = []
    start_epoch = start_step = global_step = 0
    running = torch.zeros(len(_SUMS) + layers, dtype=torch.float64)
    neurons = torch.zeros(layers, dtype=torch.float64)
    seconds = 0.0
    resumes: list[dict] = []  # where this run was resumed, kept in the checkpoint
    if resume_state is not None:
        net.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(resume_state["scheduler"])
        windows.load_state_dict(resume_state["windows"])
        history = list(resume_state["history"])
        start_epoch, start_step, global_step = (int(resume_state[k]) for k in ("epoch", "step", "global_step"))
        running, neurons = resume_state["running"].clone(), resume_state["neurons"].clone()
        seconds = float(resume_state["seconds"])
        resumes = list(resume_state.get("resumes", [])) + [
            {"epoch": start_epoch, "step": start_step, "global_step": global_step, "restart_count": restart_count()}]
        states = resume_state["rng"]
        if len(states) == ctx.world_size:
            _set_rng_state(states[ctx.rank])
        else:
            torch.manual_seed(sample_seed(seed, global_step, ctx.rank))

    def save(epoch: int, step: int) -> None:
        rng = _all_gather_object(_rng_state())
        if ctx.is_main and checkpoint is not None:
            save_checkpoint(checkpoint, {
                "epoch": epoch, "step": step, "global_step": global_step, "model": net.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                "windows": windows.state_dict(), "running": running.clone(), "neurons": neurons.clone(),
                "seconds": seconds, "rng": rng, "history": history, "resumes": resumes, "world_size": ctx.world_size,
                "global_batch": global_batch, "extra": checkpoint_extra})
        if ddp:
            dist.barrier()  # a restart finds the checkpoint of a step whole, or the one before it

    for epoch in range(start_epoch, epochs):
        net.train()
        first = start_step if epoch == start_epoch else 0
        if first == 0:
            running.zero_()
            seconds = 0.0
        sampler.set_epoch(epoch, first)
        micro_batches = iter(train_loader)
        bar = _progress_bar(range(first, steps), f"epoch {epoch + 1}/{epochs}", progress and ctx.is_main,
                            total=steps, initial=first)
        t0 = time.perf_counter()
        for step in bar:
            batch = [next(micro_batches) for _ in range(accumulation)]
            counts = _all_reduce(torch.tensor([sum(len(b[1]) for b in batch), sum(b[2] for b in batch)],
                                              dtype=torch.float64))
            if counts[0] == 0:
                raise RuntimeError(f"epoch {epoch + 1}, step {step + 1}: no image of the global batch could be read")
            scale = ctx.world_size / counts[0].item()  # DDP averages over ranks: the global mean's gradient
            optimizer.zero_grad(set_to_none=True)
            step_sums = torch.zeros_like(running)
            amax = torch.zeros(layers, dtype=torch.float64)
            for a, (x, y, _) in enumerate(batch):
                x, y = _to_device(x, param, ctx.device, channels_last), y.to(ctx.device, non_blocking=True)
                no_sync = model.no_sync() if ddp and a < accumulation - 1 else contextlib.nullcontext()
                with no_sync:
                    with _autocast(ctx.device, precision):
                        out, act_max, spikes, _ = model(x)
                        out = _at_least_float32(out)
                        loss_sum = F.cross_entropy(out, y, reduction="sum")
                    (loss_sum * scale).backward()
                out = out.detach()
                amax = torch.maximum(amax, act_max)
                step_sums += torch.tensor([len(y), 0, float(loss_sum.detach()), int((out.argmax(1) == y).sum()),
                                           _top5(out, y)] + spikes.tolist(), dtype=torch.float64)
            neurons = torch.tensor(with_stats.last_neurons, dtype=torch.float64)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            windows.update(net, _all_reduce(amax, dist.ReduceOp.MAX).tolist())
            _all_reduce(step_sums)
            step_sums[1] = counts[1]
            running += step_sums
            global_step += 1
            seconds += time.perf_counter() - t0
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{running[2] / max(running[0], 1):.4f}",
                                top1=f"{running[3] / max(running[0], 1):.3f}", refresh=False)
            if on_step is not None:
                on_step(global_step)
            if checkpoint_every and global_step % checkpoint_every == 0 and step + 1 < steps:
                save(epoch, step + 1)
            t0 = time.perf_counter()
        record = _epoch_record(epoch, running, neurons, seconds, ctx, net)
        if val_loader is not None:
            record["val"] = evaluate_distributed(net, val_loader, ctx, precision=precision,
                                                 channels_last=channels_last, progress=progress)
        _check_same_windows(net)
        history.append(record)
        save(epoch + 1, 0)
        if on_epoch is not None and ctx.is_main:
            on_epoch(record, history)
    return history


def _epoch_record(epoch: int, running: torch.Tensor, neurons: torch.Tensor, seconds: float, ctx: Context,
                  net: tnn.TTFSSequential) -> dict:
    n = running[0].item()
    rate = n / seconds if seconds > 0 else None
    record = {"epoch": epoch + 1, "images": int(n), "unreadable": int(running[1]),
              "loss": running[2].item() / max(n, 1), "top1": running[3].item() / max(n, 1),
              "top5": running[4].item() / max(n, 1), "seconds": seconds, "images_per_s": rate,
              "images_per_s_per_process": rate / ctx.world_size if rate else None, "world_size": ctx.world_size,
              "latency": net.latency, "widths": list(net.widths)}
    record.update(_spike_rates(running[len(_SUMS):], neurons, n))
    return record


def _check_same_windows(net: tnn.TTFSSequential) -> None:
    widths = _all_gather_object(list(net.widths))
    if any(w != widths[0] for w in widths):
        raise RuntimeError(f"the ranks' windows differ ({widths}): the replicas are no longer the same network")
