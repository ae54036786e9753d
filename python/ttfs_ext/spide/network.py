"""FeedbackSNN: the feedback spiking networks of IDE and SPIDE (Xiao et al. 2021, 2023).

Populations 1..N of IF/LIF neurons; an input connection F into population 1, feed-forward
connections l -> l+1, one feedback connection N -> 1 (or none), and a readout on the average
firing rate a^N. The forward pass runs T steps without a graph (memory O(neurons), not
O(T)); the gradient comes from the equilibrium of the rates,

    a^1 = s((d_fb W_fb a^N + d_F (F x + b)) / q),  a^{l+1} = s(d^{l+1} (W^l a^l + b^{l+1}) / q),
    s(z) = clamp(z, 0, 1),  a^N = f(a^N)

(d: the variational-dropout masks of the connections, q = V_th - u_rest), as the implicit-function theorem
gives it: dL/dtheta = beta^T df/dtheta with beta = g + J_f^T beta, g = dL/da^N. Two ways:
  backward="spide": beta from SPIDE's ternary spiking neurons run T_b steps on the transposed
      network, and the weight gradients from the two-stage rates (1/q) (m beta) a^T, returned
      as the parameters' ordinary gradients by an autograd.Function;
  backward="ide": the same forward, then beta by a fixed-point solver (Anderson or Broyden) on
      autograd VJPs of one evaluation of f at the spiking rates, and autograd to the parameters.
On the CPU the connections multiply the spikes event-driven while they are sparse (products).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .. import _backend
from .. import functional as TF
from .solvers import solve

__all__ = ["FeedbackSNN", "Connection", "FrobeniusLimit", "sigma", "SaturationWarning"]


class SaturationWarning(RuntimeWarning):
    """SPIDE's backward rates saturated at the spike amplitude: the gradient is clipped
    (lower loss_scale)."""


def sigma(z: torch.Tensor) -> torch.Tensor:
    """clamp(z, 0, 1) whose derivative is the forward mask [0 < z < 1] (strict, as SPIDE's)."""
    inside = (z > 0) & (z < 1)
    return torch.where(inside, z, z.detach().clamp(0, 1))


class FrobeniusLimit(nn.Module):
    """SPIDE's restriction of the feedback weight as a parametrisation: W = W_w min(1, r / ||W_w||_F),
    the factor without gradient, recomputed at every forward (SPIDE-FSNN
    modules/optimizations.py:96-110, which estimates ||W_w||_F from 64 random projections; here it
    is computed exactly). Weight decay and the optimiser act on W_w."""

    def __init__(self, limit: float):
        super().__init__()
        self.limit = float(limit)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            scale = (self.limit / torch.linalg.vector_norm(w).clamp_min(1e-30)).clamp(max=1.0)
        return w * scale


class Connection(nn.Module):
    """One connection between populations: a Linear (input flattened), Conv2d, ConvTranspose2d
    or AvgPool2d. forward(x) is the module's; adjoint(y, in_shape) the transpose of its linear
    part (no bias): SPIDE's back_compute."""

    def __init__(self, module: nn.Module, input: bool = False):
        super().__init__()
        # the input connection F is only evaluated densely and differentiated by autograd (again for
        # the weight gradients and IDE's map: it must be deterministic, no dropout inside): any
        # nn.Sequential of modules too (IDE's F400: Flatten, Linear, BatchNorm1d)
        if not isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.AvgPool2d)) and not (
                input and isinstance(module, nn.Sequential)):
            raise TypeError(f"ttfs_ext.spide: a connection must be nn.Linear, nn.Conv2d, nn.ConvTranspose2d or "
                            f"nn.AvgPool2d{' (the input: or an nn.Sequential)' if input else ''}, "
                            f"got {type(module).__name__}")
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.module, nn.Linear) and x.dim() > 2:
            x = x.flatten(1)
        return self.module(x)

    def linear_part(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return F.linear(x.flatten(1) if x.dim() > 2 else x, m.weight)
        if isinstance(m, nn.Conv2d):
            return F.conv2d(x, m.weight, None, m.stride, m.padding, m.dilation, m.groups)
        if isinstance(m, nn.ConvTranspose2d):
            return F.conv_transpose2d(x, m.weight, None, m.stride, m.padding, m.output_padding, m.groups,
                                      m.dilation)
        return m(x)

    def adjoint(self, y: torch.Tensor, in_shape: Sequence[int]) -> torch.Tensor:
        m = self.module
        if isinstance(m, nn.Linear):
            return (y @ m.weight).reshape(in_shape)
        if isinstance(m, nn.Conv2d):
            size = [(y.shape[2 + i] - 1) * m.stride[i] - 2 * m.padding[i] + m.dilation[i] * (m.kernel_size[i] - 1) + 1
                    for i in range(2)]
            pad = [in_shape[2 + i] - size[i] for i in range(2)]
            return F.conv_transpose2d(y, m.weight, None, m.stride, m.padding, pad, m.groups, m.dilation)
        if isinstance(m, nn.ConvTranspose2d):
            return F.conv2d(y, m.weight, None, m.stride, m.padding, m.dilation, m.groups)
        k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
        if k == s and _pair(m.padding) == (0, 0) and not m.ceil_mode and tuple(in_shape[2:]) == (
                y.shape[2] * k[0], y.shape[3] * k[1]):
            return y.repeat_interleave(k[0], 2).repeat_interleave(k[1], 3) / (k[0] * k[1])
        with torch.enable_grad():  # any other pooling: the VJP of the (linear) pooling
            x = torch.zeros(in_shape, dtype=y.dtype, device=y.device, requires_grad=True)
            (g,) = torch.autograd.grad(m(x), x, y)
        return g

    def spike_product(self, adjoint: bool, in_shape: Sequence[int], out_shape: Sequence[int], events: bool,
                      max_density: Optional[float], backend: Optional[str]) -> "_SpikeProduct":
        """forward (adjoint False: the module, bias included) or adjoint (out_shape, in_shape:
        its output's and input's population shapes) as a product with the spike tensors of one
        simulation: event-driven if `events` (while at most max_density of the inputs are
        nonzero; None: always), else dense."""
        return _SpikeProduct(self, adjoint, in_shape, out_shape, events, max_density, backend)

    def event_form(self, adjoint: bool) -> Optional[tuple]:
        """The forward (with bias) or adjoint product as ttfs_ext.functional.spike_conv2d's
        (packed weight, bias, stride, padding, dilation, transposed), or None where it has no
        such form (pooling, groups, padding modes)."""
        m = self.module
        if isinstance(m, nn.Linear):
            if adjoint:  # y @ W: the (out, in) weight is already (C_in = out, 1, 1, C_out = in)
                return m.weight.detach()[:, None, None, :], None, (1, 1), (0, 0), (1, 1), False
            return m.weight.detach().t()[:, None, None, :].contiguous(), _detached(m.bias), (1, 1), (0, 0), (1, 1), False
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or m.groups != 1 or isinstance(m.padding, str) \
                or m.padding_mode != "zeros":
            return None
        w = m.weight.detach()
        geometry = (tuple(m.stride), tuple(m.padding), tuple(m.dilation))
        transposed = isinstance(m, nn.ConvTranspose2d) != adjoint  # the adjoint of a conv2d is a conv_transpose2d
        # conv2d's weight is (out, in, ...), conv_transpose2d's (in, out, ...): the adjoint reads
        # the module's weight as the other kind
        packed = TF.spike_conv_weight(w, transposed=isinstance(m, nn.ConvTranspose2d) == (not adjoint))
        return (packed, None if adjoint else _detached(m.bias), *geometry, transposed)


# fb_norm kinds: "frobenius", SPIDE's ||W||_F as a parametrisation (FrobeniusLimit); "rms-gain", the
# operator's RMS gain, projected in place (this library's earlier "frobenius"); "spectral", IDE's
# largest singular value, projected in place
FB_NORMS = ("frobenius", "rms-gain", "spectral")


def _load_unrestricted_feedback(module: "FeedbackSNN", state_dict, prefix, *args) -> None:
    """A state dict saved without the frobenius parametrisation (a plain feedback.module.weight,
    as before it existed) loads into a network with it, as the unrestricted weight W_w."""
    plain, original = prefix + "feedback.module.weight", prefix + "feedback.module.parametrizations.weight.original"
    if module.feedback is not None and parametrize.is_parametrized(module.feedback.module, "weight") \
            and plain in state_dict and original not in state_dict:
        norm, limit = float(torch.linalg.vector_norm(state_dict[plain])), module.fb_norm[1]
        if norm > limit:  # saved under the earlier "frobenius" (the RMS gain), most likely
            warnings.warn(f"ttfs_ext.spide: the feedback weight loaded has ||W||_F = {norm:.4g} > {limit:g}, so "
                          f"fb_norm=('frobenius', {limit:g}) scales it down by {limit / norm:.3g}; a state dict "
                          f"saved under the earlier 'frobenius' (the RMS gain) runs as it did with "
                          f"fb_norm=('rms-gain', {limit:g})", stacklevel=4)
        state_dict[original] = state_dict.pop(plain)


def _detached(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return t.detach() if t is not None else None


# Up to this fraction of nonzero inputs the event-driven products are used ("auto"): the
# products sweep of benchmarks/bench_spide.py (ConvNet-F, AlexNet-F, one AVX-512 core) has them
# 1.4-2.2x faster than the dense convolutions at 20 % (one connection: 1.0x) and 0.5-1.6x at 30 %.
EVENT_DENSITY = 0.25


def _density(s: torch.Tensor) -> float:
    """The fraction of nonzeros, from every 16th element of a large tensor (a decision of
    speed, not of value: cheaper than counting them all)."""
    flat = (s.permute(0, 2, 3, 1) if s.dim() == 4 and not s.is_contiguous() else s).reshape(-1)  # a view
    if flat.numel() >= 1 << 14:
        flat = flat[::16]
    return int(torch.count_nonzero(flat)) / max(flat.numel(), 1)


class _SpikeProduct:
    """One connection's forward or adjoint product with the spike tensors of one simulation:
    event-driven (spike_conv2d, the weight packed once here) where `events` and the
    connection has that form, while at most max_density of the inputs are nonzero (None:
    always); else the dense module."""

    def __init__(self, conn: Connection, adjoint: bool, in_shape, out_shape, events: bool,
                 max_density: Optional[float], backend: Optional[str]):
        self.conn, self.adjoint, self.in_shape, self.out_shape = conn, adjoint, tuple(in_shape), tuple(out_shape)
        self.backend, self.max_density = backend, max_density
        self.form = conn.event_form(adjoint) if events else None

    def dense(self, s: torch.Tensor) -> torch.Tensor:
        return self.conn.adjoint(s, self.in_shape) if self.adjoint else self.conn(s)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        if self.form is None or (self.max_density is not None and _density(s) > self.max_density):
            return self.dense(s)
        weight, bias, stride, padding, dilation, transposed = self.form
        dst = self.in_shape if self.adjoint else self.out_shape
        linear = isinstance(self.conn.module, nn.Linear)  # as a 1 x 1 convolution
        out = TF.spike_conv2d(s.reshape(s.shape[0], -1, 1, 1) if linear else s, weight, bias, stride, padding,
                              dilation, transposed=transposed, output_size=(1, 1) if linear else dst[2:],
                              backend=self.backend)
        return out.reshape(s.shape[0], *dst[1:]) if linear else out


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


class _Spide(torch.autograd.Function):
    """Forward: the T-step simulation. Backward: the T_b-step ternary simulation; returns the
    gradients of x and of the network's parameters (as the inputs of this function)."""

    @staticmethod
    def forward(ctx, net: "FeedbackSNN", x: torch.Tensor, drops, *params):
        with torch.no_grad():
            rates = net._simulate(x, drops)
        net.last_stats["forward_rate"] = net._mean_rate(rates)
        ctx.net, ctx.drops = net, drops
        ctx.save_for_backward(x, *rates)
        return rates[-1].clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        net = ctx.net
        x, *rates = ctx.saved_tensors
        with torch.no_grad():
            betas, masks = net._spide_backward(g, rates, ctx.drops)
        grads = net._weight_grads(x, rates, masks, betas, ctx.drops, need_x=ctx.needs_input_grad[1])
        return (None, grads[0], None, *grads[1:])


class FeedbackSNN(nn.Module):
    """A feedback SNN trained by SPIDE or IDE (see the module docstring).

    input: the connection F from the input into population 1; layers: the connections l -> l+1
    (N - 1 of them, possibly none); feedback: N -> 1 (None: a feed-forward chain run as an
    equilibrium net, as SPIDE's LeNet); readout: an nn.Module on a^N (flattened), or None to
    return a^N. Connections: nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.AvgPool2d.

    Neurons: T steps; leak 1 (IF) or < 1 (LIF); v_th; reset="modified" (u_rest = -v_th, SPIDE:
    q = 2 v_th) or "zero" (u_rest = 0, IDE: q = v_th). Backward neurons (SPIDE): T_b steps,
    v_th_b = 0.5 with the modified reset (quantum 2 v_th_b) and amplitude 1. loss_scale
    multiplies the gradient injected into the backward neurons (their rates are bounded by
    the amplitude and resolve about 1/T_b) and divides the returned gradients, so that they are
    the loss's own (the reference scales the loss and divides the learning rate instead: do
    that outside with loss_scale=1). dropout: variational, as the authors': one mask per
    connection on its output current (F x + b included), per sample and neuron, reused over all
    steps and in the backward pass (training only); one rate, or one per connection (F, the
    layers, the feedback), as LeNet-5-F's 0.5 on its FC alone.
    fb_norm: None; ("frobenius", r), SPIDE's: ||W_fb||_F <= r as a parametrisation of the
    feedback weight (FrobeniusLimit, at every forward, train and eval); ("rms-gain", r): the
    feedback operator's RMS gain from 64 random projections (this library's earlier "frobenius")
    or ("spectral", r), IDE's: its largest singular value by power iteration, each kept
    <= r by scaling the weight in place at each training forward.
    backend: the neuron steps' ('cpu', 'cuda', 'reference' or None: automatic).
    products: how the connections multiply spike tensors inside the simulations: "auto"
    (event-driven, ttfs_ext.functional.spike_conv2d, on the CPU while at most EVENT_DENSITY of
    a step's spikes are nonzero, else the dense module; dense on CUDA and with the reference
    backend), "events" (always event-driven; CPU only) or "dense". Linear, Conv2d and
    ConvTranspose2d connections have the event-driven form; pooling stays dense.
    forward_mode: "spiking" (the simulation) or "equilibrium" (the continuous map's fixed point,
    solved to solver_tol: an oracle for tests).

    last_stats after a pass: forward_rate and backward_rate, spikes per neuron per step over all
    populations, counted as the papers count them (every spike; in the backward both signs);
    backward_net_rate, the net count |sum s| per neuron per step; backward_saturated. Counting
    the backward spikes costs a copy per step and population (element-wise passes that are a
    large share of a CPU iteration): set count_backward_spikes = False to skip it (backward_rate is then absent);
    spide.fit counts every rate_every-th iteration.
    """

    def __init__(self, input: nn.Module, layers: Sequence[nn.Module] = (), feedback: Optional[nn.Module] = None,
                 readout: Optional[nn.Module] = None, *, T: int = 30, T_b: int = 100, backward: str = "spide",
                 leak: float = 1.0, v_th: float = 1.0, reset: str = "modified", v_th_b: float = 0.5,
                 loss_scale: float = 100.0, dropout=0.0, fb_norm: Optional[tuple] = None,
                 solver: str = "anderson", solver_tol: float = 1e-6, solver_max_iter: int = 50,
                 strict: bool = False, backend: Optional[str] = None, forward_mode: str = "spiking",
                 products: str = "auto"):
        super().__init__()
        if backward not in ("spide", "ide"):
            raise ValueError(f"ttfs_ext.spide.FeedbackSNN: backward must be 'spide' or 'ide', got {backward!r}")
        if reset not in ("modified", "zero"):
            raise ValueError(f"ttfs_ext.spide.FeedbackSNN: reset must be 'modified' or 'zero', got {reset!r}")
        if products not in ("auto", "events", "dense"):
            raise ValueError(f"ttfs_ext.spide.FeedbackSNN: products must be 'auto', 'events' or 'dense', got {products!r}")
        if forward_mode not in ("spiking", "equilibrium"):
            raise ValueError(f"ttfs_ext.spide.FeedbackSNN: forward_mode must be 'spiking' or 'equilibrium', "
                             f"got {forward_mode!r}")
        for name, value in (("T", T), ("T_b", T_b)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ttfs_ext.spide.FeedbackSNN: {name} must be a positive int, got {value!r}")
        if not 0 < leak <= 1:
            raise ValueError(f"ttfs_ext.spide.FeedbackSNN: leak must lie in (0, 1], got {leak}")
        if not (v_th > 0 and v_th_b > 0 and loss_scale > 0):
            raise ValueError("ttfs_ext.spide.FeedbackSNN: v_th, v_th_b and loss_scale must be positive")
        if fb_norm is not None and (len(fb_norm) != 2 or fb_norm[0] not in FB_NORMS or not fb_norm[1] > 0):
            raise ValueError(f"ttfs_ext.spide.FeedbackSNN: fb_norm must be None or (kind, r) with kind one of "
                             f"{', '.join(FB_NORMS)} and r > 0, got {fb_norm!r}")
        self.input = Connection(input, input=True)
        self.layers = nn.ModuleList(Connection(m) for m in layers)
        self.feedback = Connection(feedback) if feedback is not None else None
        self.readout = readout
        self.T, self.T_b, self.backward_mode, self.leak, self.v_th = T, T_b, backward, float(leak), float(v_th)
        self.reset = reset
        self.q = self.v_th * (2.0 if reset == "modified" else 1.0)
        self.v_th_b = float(v_th_b)
        self.q_b = 2.0 * self.v_th_b  # the modified reset of the backward neurons; amplitude 1
        self.loss_scale, self.fb_norm = float(loss_scale), fb_norm
        self._connections = 1 + len(self.layers) + (self.feedback is not None)  # F, the layers, the feedback
        self.dropout = dropout
        self.solver, self.solver_tol, self.solver_max_iter, self.strict = solver, solver_tol, solver_max_iter, strict
        self.backend, self.forward_mode, self.products = backend, forward_mode, products
        self._sync_feedback_norm()
        self._register_load_state_dict_pre_hook(_load_unrestricted_feedback, with_module=True)
        self.last_stats: dict = {}
        self.count_backward_spikes = True  # backward_rate: a copy per step and population (fit: some steps)
        self._shapes: Optional[tuple] = None  # (input shape, the populations' shapes at batch 1)

    def extra_repr(self) -> str:
        return (f"backward={self.backward_mode!r}, T={self.T}, T_b={self.T_b}, leak={self.leak}, v_th={self.v_th}, "
                f"reset={self.reset!r}, q={self.q}, v_th_b={self.v_th_b}, loss_scale={self.loss_scale}, "
                f"dropout={self.dropout}, fb_norm={self.fb_norm}, products={self.products!r}")

    @property
    def dropout(self):
        """The dropout rate, or one per connection (F, the layers, the feedback)."""
        return self._dropout

    @dropout.setter
    def dropout(self, value) -> None:
        rates = [value] * self._connections if isinstance(value, (int, float)) else list(value)
        if len(rates) != self._connections or not all(isinstance(r, (int, float)) and 0 <= r < 1 for r in rates):
            raise ValueError(f"ttfs_ext.spide.FeedbackSNN: dropout must be a rate in [0, 1) or one per connection "
                             f"(F, the layers, the feedback: {self._connections}), got {value!r}")
        self._dropout = float(value) if isinstance(value, (int, float)) else tuple(float(r) for r in rates)
        self._dropout_rates = [float(r) for r in rates]

    # --- structure ---------------------------------------------------------------------------

    @property
    def num_populations(self) -> int:
        return len(self.layers) + 1

    def snn_parameters(self) -> list[nn.Parameter]:
        """The parameters of F, the layers and the feedback (not the readout's), in the order
        the SPIDE function takes them."""
        mods = [self.input, *self.layers] + ([self.feedback] if self.feedback is not None else [])
        return [p for m in mods for p in m.parameters()]

    def _mean_rate(self, rates: list) -> float:
        """The forward firing rate as the papers count it: spikes per neuron per time step, over
        every neuron of every population (LIF: the spikes themselves, not the leak-weighted
        rates)."""
        neurons = max(sum(r.numel() for r in rates), 1)
        if self.leak != 1.0 and getattr(self, "_forward_spikes", None) is not None:
            return float(self._forward_spikes) / (neurons * self.T)
        return sum(float(r.sum()) for r in rates) / neurons

    def _rate_norm(self, steps: int) -> float:
        return 1.0 / steps if self.leak == 1.0 else (1 - self.leak) / (1 - self.leak ** steps)

    def _drops(self, x: torch.Tensor) -> Optional[list]:
        """The variational dropout masks, one per connection on its output current (the authors':
        SPIDE-FSNN modules/snn_modules.py:462-466, optimizations.py:21-31), in the shape of the
        population it feeds: [F, layer 1, ..., layer N-1, feedback]; drawn once per forward,
        reused over all steps and in the backward pass."""
        if not (self.training and any(self._dropout_rates)):
            return None
        shapes = self._batch_shapes(x)
        targets = shapes + ([shapes[0]] if self.feedback is not None else [])

        def mask(shape, rate):  # drawn in NCHW order whatever the layout: the same seed, the same masks
            if rate == 0:
                return None  # a connection without dropout: nothing to multiply
            m = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1 - rate).div_(1 - rate)
            return m.contiguous(memory_format=self._layout(x, shape))
        return [mask(t, r) for t, r in zip(targets, self._dropout_rates)]

    def _events(self, device: torch.device) -> bool:
        """Whether the simulations multiply spikes event-driven (see products)."""
        if self.products == "events":
            if device.type != "cpu":
                raise ValueError(f"ttfs_ext.spide: products='events' runs on the CPU only, the input is on {device}")
            return True
        return (self.products == "auto" and self.backend != "reference" and device.type == "cpu"
                and "cpu" in _backend.kernel_devices())

    def _products(self, x: torch.Tensor, shapes: list, adjoint: bool) -> tuple:
        """The layers' and the feedback's products of one simulation (forward or adjoint)."""
        events = self._events(x.device)
        limit = None if self.products == "events" else EVENT_DENSITY
        layers = [conn.spike_product(adjoint, shapes[l], shapes[l + 1], events, limit, self.backend)
                  for l, conn in enumerate(self.layers)]
        feedback = (self.feedback.spike_product(adjoint, shapes[-1], shapes[0], events, limit, self.backend)
                    if self.feedback is not None else None)
        return layers, feedback

    def _layout(self, x: torch.Tensor, shape) -> torch.memory_format:
        """A population's memory layout: channels last where the event-driven products run
        (they read and write it: no copies between them and the neuron steps), else contiguous."""
        return torch.channels_last if len(shape) == 4 and self._events(x.device) else torch.contiguous_format

    @contextlib.contextmanager
    def _input_stats_kept(self):
        """Evaluations of the input connection beyond the forward's own (the weight gradients, IDE's
        map) leave its batch norms' running statistics as the forward left them: momentum 0 for
        them (the values stay; restoring them afterwards would change tensors autograd saved)."""
        norms = [m for m in self.input.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 and m.track_running_stats and m.training]
        saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
        for m in norms:
            m.momentum = 0.0
        try:
            yield
        finally:
            for m, (momentum, tracked) in zip(norms, saved):
                m.momentum = momentum
                m.num_batches_tracked.copy_(tracked)

    def _population_shapes(self, x: torch.Tensor) -> list:
        """The populations' shapes (batch 1), and the check that the feedback maps the last
        population onto the first, on every path (the event-driven products would not notice)."""
        probe = x[:1] if x.shape[0] else x.new_zeros((1, *x.shape[1:]))
        modes = [(m, m.training) for m in self.input.modules()]
        try:
            with torch.no_grad():
                h = self.input.eval()(probe)  # eval: a batch norm takes no statistics from the probe
        finally:
            for m, training in modes:
                m.training = training
            shapes = [tuple(h.shape)]
            for conn in self.layers:
                h = conn(h)
                shapes.append(tuple(h.shape))
            if self.feedback is not None:
                fed_back = tuple(self.feedback(h).shape)
                if fed_back != shapes[0]:
                    raise ValueError(f"ttfs_ext.spide.FeedbackSNN: the feedback maps the last population "
                                     f"{shapes[-1][1:]} to {fed_back[1:]}, but population 1 has shape {shapes[0][1:]}")
        return shapes

    # --- forward -----------------------------------------------------------------------------

    def _simulate(self, x: torch.Tensor, drops: Optional[list]) -> list[torch.Tensor]:
        """The T-step simulation; the populations' average firing rates a^1..a^N."""
        with parametrize.cached():  # a restricted feedback weight: computed once, not at every step
            return self._simulate_loop(x, drops)

    def _simulate_loop(self, x: torch.Tensor, drops: Optional[list]) -> list[torch.Tensor]:
        n, T = self.num_populations, self.T
        shapes = self._batch_shapes(x)
        c = self.input(x).contiguous(memory_format=self._layout(x, shapes[0]))
        if drops is not None and drops[0] is not None:
            c = c * drops[0]  # not in place: a Sequential F may return a view of x
        layers, feedback = self._products(x, shapes, adjoint=False)
        u: list = [None] * n
        rate: list = [None] * n
        s_last = None
        count = self.leak != 1.0  # IF: the rates are the counts / T; LIF weights them by the leak
        self._forward_spikes = None
        step = TF.spide_forward_step
        kw = dict(v_th=self.v_th, reset=self.q, leak=self.leak, backend=self.backend)
        for t in range(T):
            s = None
            for l in range(n):
                if l == 0:
                    if t == 0 or feedback is None:
                        cur, extra = c, None
                    else:
                        cur, extra = feedback(s_last), c
                        if drops is not None and drops[-1] is not None:
                            cur.mul_(drops[-1])
                else:
                    cur, extra = layers[l - 1](s), None
                    if drops is not None and drops[l] is not None:
                        cur.mul_(drops[l])
                if t == 0:
                    u[l] = torch.empty(shapes[l], dtype=c.dtype, device=c.device,
                                       memory_format=self._layout(x, shapes[l])).zero_()
                    rate[l] = torch.zeros_like(u[l])
                s = step(u[l], rate[l], cur, extra, None, **kw)
                if count:
                    self._forward_spikes = self._count_spikes(self._forward_spikes, s)
            s_last = s
        norm = self._rate_norm(T)
        return [r.mul_(norm) for r in rate]

    def _count_spikes(self, spikes: Optional[torch.Tensor], s: torch.Tensor) -> torch.Tensor:
        """spikes + sum |s| (the spikes of every sign, as the papers count firing rates), without
        a synchronisation (the loops may be captured in a CUDA graph)."""
        n = torch.linalg.vector_norm(s, 1, dtype=torch.float64)
        return n if spikes is None else spikes.add_(n)

    def _batch_shapes(self, x: torch.Tensor) -> list:
        """The populations' shapes at x's batch size."""
        if self._shapes is None or self._shapes[0] != tuple(x.shape[1:]):
            self._shapes = (tuple(x.shape[1:]), self._population_shapes(x))
        return [(x.shape[0], *s[1:]) for s in self._shapes[1]]

    def equilibrium_map(self, x: torch.Tensor, a_last: torch.Tensor, drops: Optional[list] = None,
                        c: Optional[torch.Tensor] = None) -> list[torch.Tensor]:
        """One evaluation of the continuous map: [a^1, ..., a^N] from a^N (differentiable)."""
        if c is None:
            with self._input_stats_kept():
                c = self.input(x)
        d = drops if drops else [None] * self._connections
        if d[0] is not None:
            c = c * d[0]
        if self.feedback is not None:
            fed = self.feedback(a_last)
            c = c + (fed if d[-1] is None else fed * d[-1])
        out = [sigma(c / self.q)]
        for l, conn in enumerate(self.layers):
            z = conn(out[-1])
            out.append(sigma((z if d[l + 1] is None else z * d[l + 1]) / self.q))
        return out

    def _equilibrium(self, x: torch.Tensor, drops: Optional[list]) -> list[torch.Tensor]:
        with torch.no_grad():
            c = self.input(x)
            a0 = self.equilibrium_map(x, torch.zeros(self._last_shape(x), dtype=x.dtype, device=x.device), drops,
                                      c)[-1]
            res = solve(lambda a: self.equilibrium_map(x, a, drops, c)[-1], a0, method=self.solver,
                        tol=self.solver_tol, max_iter=self.solver_max_iter, strict=self.strict,
                        what="forward equilibrium")
            return self.equilibrium_map(x, res.x, drops, c)

    def _last_shape(self, x):
        shapes = self._population_shapes(x)
        return (x.shape[0], *shapes[-1][1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _backend.input_checks_enabled(x.device) and x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError("ttfs_ext.spide.FeedbackSNN: x contains NaN or inf")
        if x.shape[0] == 0:  # an empty batch: an empty output, as nn modules give
            a_last = x.new_zeros(self._batch_shapes(x)[-1])
            out = a_last.flatten(1) if self.readout is not None and a_last.dim() > 2 else a_last
            return self.readout(out) if self.readout is not None else out
        self._forward_spikes = None
        self._sync_feedback_norm()
        if self.training and self.fb_norm is not None and self.fb_norm[0] != "frobenius" and self.feedback is not None:
            self.restrict_feedback_norm(x)
        drops = self._drops(x)
        grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.snn_parameters())
        if self.backward_mode == "spide" and grad and self.forward_mode == "spiking":
            a_last = _Spide.apply(self, x, drops, *self.snn_parameters())
        else:
            rates = self._equilibrium(x, drops) if self.forward_mode == "equilibrium" else None
            if rates is None:
                with torch.no_grad():
                    rates = self._simulate(x, drops)
            self.last_stats["forward_rate"] = self._mean_rate(rates)
            a_last = rates[-1]
            if grad or (torch.is_grad_enabled() and x.requires_grad):
                if self.backward_mode == "ide":
                    a_last = self._ide(x, a_last.detach(), drops)
                else:  # SPIDE on the continuous equilibrium (forward_mode="equilibrium")
                    a_last = _SpideAt.apply(self, x, drops, a_last.detach(), *self.snn_parameters())
        out = a_last.flatten(1) if self.readout is not None and a_last.dim() > 2 else a_last
        return self.readout(out) if self.readout is not None else out

    # --- IDE ---------------------------------------------------------------------------------

    def _ide(self, x: torch.Tensor, a_star: torch.Tensor, drops: Optional[list]) -> torch.Tensor:
        a0 = a_star.clone().requires_grad_()
        fa = self.equilibrium_map(x, a0, drops)[-1]
        net = self
        handle = None

        def hook(g: torch.Tensor) -> torch.Tensor:
            handle.remove()  # the VJPs below run backward through fa: no second solve there

            def fn(beta):
                (vjp,) = torch.autograd.grad(fa, a0, beta, retain_graph=True)
                return vjp + g
            with torch.no_grad():
                res = solve(fn, g, method=net.solver, tol=net.solver_tol, max_iter=net.solver_max_iter,
                            strict=net.strict, what="IDE backward")
            net.last_stats.update(backward_residual=res.residual, backward_iterations=res.iterations)
            net.last_beta = res.x.detach()
            return res.x

        handle = fa.register_hook(hook)
        return fa + (a_star - fa).detach()  # the value: the spiking rates; the gradient: through f

    # --- SPIDE -------------------------------------------------------------------------------

    def _spide_backward(self, g: torch.Tensor, rates: list, drops: Optional[list]):
        """The T_b-step ternary simulation on the transposed network: beta^1..beta^N and the
        forward masks m^l = [0 < a^l < 1]; the backward rates in last_stats."""
        beta, masks = self._spide_loop(g, rates, drops)
        T_b = self.T_b
        norm = self._rate_norm(T_b) / self.loss_scale
        neurons = sum(b.numel() for b in beta)
        # the papers' rate: every spike, either sign (SPIDE-FSNN modules/snn_modules.py:139,158-169);
        # the net count |sum s| (a +1 and a -1 cancel) is kept as backward_net_rate
        net_rate = sum(float(b.abs().sum()) for b in beta) * self._rate_norm(T_b) / neurons
        saturated = max(float((b.abs() * self._rate_norm(T_b) >= 1 - 1.0 / T_b).float().mean()) for b in beta)
        self.last_stats.update(backward_net_rate=net_rate, backward_saturated=saturated)
        self.last_stats.pop("backward_rate", None)
        if self._backward_spikes is not None:
            self.last_stats["backward_rate"] = float(self._backward_spikes) / (neurons * T_b)
        if saturated > 0.01:
            warnings.warn(f"ttfs_ext.spide: {saturated:.1%} of the backward neurons of a population saturated at "
                          f"the spike amplitude: the gradient is clipped (lower loss_scale={self.loss_scale:g})",
                          SaturationWarning, stacklevel=4)
        return [b.mul_(norm) for b in beta], masks

    def _spide_loop(self, g: torch.Tensor, rates: list, drops: Optional[list]):
        """The loop itself, without a synchronisation (a CUDA graph can capture it): the
        populations' ternary spike sums and the forward masks."""
        with parametrize.cached():
            return self._spide_steps(g, rates, drops)

    def _spide_steps(self, g: torch.Tensor, rates: list, drops: Optional[list]):
        n, T_b = self.num_populations, self.T_b
        shapes = [r.shape for r in rates]
        masks = [((r > 0) & (r < 1)).to(r.dtype) for r in rates]
        gates = [m / self.q for m in masks]  # the 1/q of the transposed products, folded in
        if drops is not None:  # and the dropout mask of the connection whose transpose reads them
            reads = [drops[-1] if self.feedback is not None else None] + drops[1:self.num_populations]
            gates = [g if d is None else g * d for g, d in zip(gates, reads)]
        inject = torch.empty_like(rates[-1]).copy_(g).mul_(self.loss_scale)  # in the populations' layout
        u = [torch.zeros_like(r) for r in rates]
        beta = [torch.zeros_like(r) for r in rates]
        out: list = [None] * n
        layers, feedback = self._products(rates[-1], shapes, adjoint=True)
        step = TF.spide_backward_step
        kw = dict(v_th=self.v_th_b, reset=self.q_b, amplitude=1.0, leak=self.leak, backend=self.backend)
        self._backward_spikes = None
        count = self.count_backward_spikes
        for t in range(T_b):
            for l in reversed(range(n)):
                if l == n - 1:
                    if t == 0 or feedback is None:
                        cur, inj = inject, None
                    else:
                        cur, inj = feedback(out[0]), inject
                else:
                    cur, inj = layers[l](out[l + 1]), None
                before = beta[l].clone() if count else None
                out[l] = step(u[l], beta[l], cur, None, inj, gates[l], **kw)
                if count:  # the step returns the gated spikes; the neuron's own: beta - leak beta_before
                    k = before.mul_(-self.leak).add_(beta[l]).round_()
                    self._backward_spikes = self._count_spikes(self._backward_spikes, k)
        return beta, masks

    def _weight_grads(self, x: torch.Tensor, rates: list, masks: list, betas: list, drops: Optional[list],
                      need_x: bool) -> list:
        """(1/q) (d m^{l+1} beta^{l+1}) (a^l)^T for every connection (d: its dropout mask; the
        authors' set_grad leaves it out, SPIDE-FSNN modules/snn_modules.py:482-486, though their
        forward and backward currents have it), by the connections' own weight-gradient kernels
        (autograd through one evaluation each); [grad_x, *param grads]."""
        params = self.snn_parameters()
        grads = {id(p): None for p in params}
        pairs = [(self.input, x, 0, 0)]
        for l, conn in enumerate(self.layers):
            pairs.append((conn, rates[l], l + 1, l + 1))
        if self.feedback is not None:
            pairs.append((self.feedback, rates[-1], 0, -1))
        grad_x = None
        with torch.enable_grad():
            for conn, inp, target, drop in pairs:
                ps = [p for p in conn.parameters() if p.requires_grad]
                want_x = need_x and conn is self.input
                inp = inp.detach().requires_grad_(want_x)
                if not ps and not want_x:
                    continue
                with self._input_stats_kept() if conn is self.input else contextlib.nullcontext():
                    y = conn(inp)
                og = masks[target] * betas[target] / self.q
                og = (og * drops[drop] if drops and drops[drop] is not None else og).reshape(y.shape)
                gs = torch.autograd.grad(y, ps + ([inp] if want_x else []), og, allow_unused=True)
                for p, gp in zip(ps, gs):
                    grads[id(p)] = gp if grads[id(p)] is None else grads[id(p)] + gp
                if want_x:
                    grad_x = gs[-1]
        return [grad_x] + [grads[id(p)] for p in params]

    # --- feedback-weight norm restriction ----------------------------------------------------

    def _sync_feedback_norm(self) -> None:
        """fb_norm ("frobenius", r) as a parametrisation of the feedback weight (FrobeniusLimit),
        registered, updated or removed to match fb_norm (which may be reassigned)."""
        if self.feedback is None:
            return
        m = self.feedback.module
        want = self.fb_norm is not None and self.fb_norm[0] == "frobenius"
        has = parametrize.is_parametrized(m, "weight")
        if want and not has:
            parametrize.register_parametrization(m, "weight", FrobeniusLimit(self.fb_norm[1]))
        elif has and not want:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)  # the weight in use
        elif want:
            m.parametrizations.weight[0].limit = float(self.fb_norm[1])

    @torch.no_grad()
    def feedback_norm(self, x: torch.Tensor, kind: str = "frobenius", samples: int = 64,
                      iterations: int = 20) -> float:
        """The feedback weight's norm as fb_norm measures it: "frobenius", ||W||_F of the weight
        (SPIDE); "rms-gain", the operator's RMS gain ||A||_F / sqrt(dim) from `samples` random
        projections (this library's earlier "frobenius"); "spectral", the operator's largest
        singular value by power iteration (IDE)."""
        if self.feedback is None:
            return 0.0
        shape = self._last_shape(x[:1])
        A = self.feedback.linear_part
        w = self.feedback.module.weight
        if kind == "frobenius":
            return float(torch.linalg.vector_norm(w))
        if kind == "rms-gain":
            v = torch.randn((samples, *shape[1:]), dtype=w.dtype, device=w.device)
            return float((A(v).pow(2).sum() / v.pow(2).sum()).sqrt())
        v = torch.randn(shape, dtype=w.dtype, device=w.device)
        sigma_ = 0.0
        for _ in range(iterations):
            v = v / v.norm().clamp_min(1e-30)
            y = A(v)
            sigma_ = float(y.norm())
            v = self.feedback.adjoint(y, shape)
        return sigma_

    @torch.no_grad()
    def restrict_feedback_norm(self, x: torch.Tensor) -> float:
        """fb_norm "rms-gain" or "spectral": scales the feedback weight down in place so that its
        norm is at most the limit (called at each training forward); returns the norm before.
        ("frobenius" is a parametrisation, applied at every forward: nothing to do here.)"""
        kind, limit = self.fb_norm
        norm = self.feedback_norm(x, kind, iterations=5)
        if kind != "frobenius" and norm > limit:
            self.feedback.module.weight.mul_(limit / norm)
        return norm


class _SpideAt(torch.autograd.Function):
    """SPIDE's backward at given rates (the continuous equilibrium): for tests."""

    @staticmethod
    def forward(ctx, net, x, drops, a_last, *params):
        rates = net.equilibrium_map(x, a_last, drops)
        ctx.net, ctx.drops = net, drops
        ctx.save_for_backward(x, *rates)
        return rates[-1].clone()

    @staticmethod
    def backward(ctx, g):
        net = ctx.net
        x, *rates = ctx.saved_tensors
        with torch.no_grad():
            betas, masks = net._spide_backward(g, rates, ctx.drops)
        grads = net._weight_grads(x, rates, masks, betas, ctx.drops, need_x=ctx.needs_input_grad[1])
        return (None, grads[0], None, None, *grads[1:])

