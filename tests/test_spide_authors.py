"""The papers' models with the authors' settings against a small pure-PyTorch port of the authors'
SPIDE forward and backward (SPIDE-FSNN modules/snn_modules.py, SNNIFFuncMultiLayer: snn_forward,
snn_backward, set_grad; modules/optimizations.py: the Frobenius reparametrisation), written here
from their semantics: T steps of IF neurons (threshold 1, reset by subtraction of 2), the average
rates, the masks 0 < a < 1; T_b steps of ternary neurons (threshold 0.5, reset 1) on the
transposed network, injected with the loss gradient times the loss scale at every step; weight
gradients (1/q) (beta m) a^T through each connection. Their norm estimate from 64 random
projections is replaced by its expectation, the exact ||W||_F. Dense products, float64, random
weights (the builders' own initialisation) and inputs: the spikes, logits and SPIDE gradients
agree to float rounding, with and without dropout: the authors' variational masks on every
connection's output current (F x + b included), drawn once per forward, reused in every step and
in the transposed products (their back_compute). Their set_grad leaves the mask out of the weight
gradients (modules/snn_modules.py:482-486) although their forward has it; the gradient of that
forward has it, here and in ttfs_ext."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ttfs_ext import spide

F64 = torch.float64


def _vjp(module, x_shape, y, dtype):
    """The adjoint of the linear part of module (or of a function) applied to y (autograd; the
    bias does not enter): SPIDE's back_compute."""
    with torch.enable_grad():
        x = torch.zeros(x_shape, dtype=dtype, requires_grad=True)
        out = module(x.flatten(1) if isinstance(module, nn.Linear) else x)
        (g,) = torch.autograd.grad(out, x, y.reshape(out.shape))
    return g


def _port(net: spide.FeedbackSNN, x: torch.Tensor, y: torch.Tensor, drops=None):
    """(rates, logits, {parameter: gradient}) by the authors' algorithm; drops: the masks of the
    connections [F, layer 1, ..., feedback] (None: no dropout)."""
    d = drops if drops is not None else [1.0] * (len(net.layers) + 2)
    conns = [net.input.module] + [c.module for c in net.layers]
    fb = None
    if net.feedback is not None:
        fbm = net.feedback.module
        restricted = spide.network.parametrize.is_parametrized(fbm, "weight")
        w_w = fbm.parametrizations.weight.original if restricted else fbm.weight
        if restricted:  # W = W_w / frob * min(frob, r), frob without gradient (optimizations.py:96-110)
            frob = torch.linalg.vector_norm(w_w).detach()
            w_fb = w_w / frob * torch.clamp(frob, max=net.fb_norm[1])
        else:
            w_fb = w_w
        if isinstance(fbm, nn.Linear):
            fb = lambda s, w=w_fb: F.linear(s.flatten(1), w)  # noqa: E731
        else:
            fb = lambda s, w=w_fb, g=fbm: F.conv_transpose2d(s, w, None, g.stride, g.padding, g.output_padding)  # noqa: E731
        fb.w_w = w_w
    # SPIDE's neuron: threshold 1, reset by 2 (u_rest -1); IDE's (F400): threshold 2, reset by 2 (u_rest 0)
    vth, q = (2.0, 2.0) if net.reset == "zero" else (1.0, 2.0)
    assert (net.v_th, net.q) == (vth, q)
    T, T_b, q_b, vth_b = net.T, net.T_b, 1.0, 0.5

    def layer(i, s):  # connection i feeds population i (0: the input F)
        m = conns[i]
        return m(s.flatten(1) if isinstance(m, nn.Linear) else s)

    with torch.no_grad():
        c = d[0] * layer(0, x)
        n = len(conns)
        u, s, a = [None] * n, [None] * n, [None] * n
        for t in range(T):
            for l in range(n):
                if l == 0:
                    cur = c if (t == 0 or fb is None) else c + d[-1] * fb(s[-1]).reshape(c.shape)
                else:
                    cur = d[l] * layer(l, s[l - 1])
                u[l] = cur if t == 0 else u[l] + cur
                s[l] = (u[l] >= vth).to(F64)
                u[l] = u[l] - q * s[l]
                a[l] = s[l] if t == 0 else a[l] + s[l]
        a = [r / T for r in a]
        m = [((r > 0) & (r < 1)).to(F64) for r in a]
    a_last = a[-1].clone().requires_grad_()
    logits = net.readout(a_last.flatten(1))
    (g,) = torch.autograd.grad(F.cross_entropy(logits, y), a_last)
    with torch.no_grad():
        g = g * net.loss_scale  # the authors scale the loss
        ub, sb, beta = [None] * n, [None] * n, [None] * n
        for t in range(T_b):
            for l in reversed(range(n)):
                if l == n - 1:
                    cur = g if (t == 0 or fb is None) else g + _vjp(fb, a[-1].shape, d[-1] * sb[0] * m[0], F64) / q
                else:
                    cur = _vjp(conns[l + 1], a[l].shape, d[l + 1] * sb[l + 1] * m[l + 1], F64) / q
                ub[l] = cur if t == 0 else ub[l] + cur
                sb[l] = ((ub[l] >= vth_b).to(F64) - (ub[l] <= -vth_b).to(F64))
                ub[l] = ub[l] - q_b * sb[l]
                beta[l] = sb[l] if t == 0 else beta[l] + sb[l]
        beta = [b / T_b / net.loss_scale for b in beta]  # and divide the result by it
    grads = {}
    pairs = [(conns[0], x, 0, d[0])] + [(conns[l], a[l - 1], l, d[l]) for l in range(1, n)]
    if fb is not None:
        pairs.append((fb, a[-1], 0, d[-1]))
    with torch.enable_grad():
        for module, inp, target, mask in pairs:
            if module is fb:
                out, params = fb(inp), [fb.w_w]  # through the reparametrisation
            else:
                out = module(inp.flatten(1) if isinstance(module, nn.Linear) else inp)
                params = [p for p in module.parameters()]
            if not params:
                continue  # pooling
            gs = torch.autograd.grad(out, params, (mask * beta[target] * m[target] / q).reshape(out.shape))
            grads.update({p: gp for p, gp in zip(params, gs)})
    return a, logits.detach(), grads


@pytest.mark.parametrize("build", [
    lambda: spide.convnet_f(size=12, channels=6, T=12, T_b=40),
    lambda: spide.convnet_f(size=12, channels=6, T=12, T_b=40, fb_norm=("frobenius", 0.2)),  # restriction active
    lambda: spide.lenet5_f(size=12, T=10, T_b=30, dropout=0.0),
    lambda: spide.f400(size=6, hidden=40, T=8, T_b=30, fb_norm=None, dropout=0.0),
    lambda: spide.alexnet_f(size=8, T=16, T_b=30, dropout=0.0),
    lambda: spide.convnet_f(size=12, channels=6, T=12, T_b=40, dropout=0.2),
    lambda: spide.lenet5_f(size=12, T=10, T_b=30),  # the authors' 0.5 on the FC's current alone
    lambda: spide.f400(size=6, hidden=40, T=8, T_b=30, fb_norm=None, dropout=0.2),
], ids=["convnet_f", "convnet_f-restricted", "lenet5_f", "f400", "alexnet_f", "convnet_f-dropout",
        "lenet5_f-dropout", "f400-dropout"])
def test_the_authors_spide_forward_and_backward(build, monkeypatch):
    torch.manual_seed(31)
    net = build().double()
    net.products = "dense"
    if len(net.layers) == 4 and net.feedback is not None:  # AlexNet-F: at its unit-norm init the deep
        with torch.no_grad():                             # populations are silent; random weights that
            for conn in net.layers:                       # reach them test more
                conn.module.weight.mul_(8)
    channels = getattr(net.input.module, "in_channels", 1)
    dense = isinstance(net.input.module, (nn.Linear, nn.Sequential))  # F400: F = Flatten, Linear, BatchNorm1d
    images = (4, 1, 6, 6) if dense else {1: (4, 1, 12, 12), 3: (4, 3, 8, 8)}[channels]
    x = (2 if channels == 1 else 8) * torch.rand(images, dtype=F64)
    y = torch.randint(0, 10, (4,))
    drops = None
    if any(net._dropout_rates):  # the masks, drawn here, for both (the port's order: F, layers, feedback)
        shapes = [tuple(r.shape) for r in net._simulate(x, None)]
        targets = shapes + ([shapes[0]] if net.feedback is not None else [])
        drops = [torch.bernoulli(torch.full(t, 1 - r, dtype=F64)) / (1 - r)
                 for t, r in zip(targets, net._dropout_rates)]
        monkeypatch.setattr(net, "_drops", lambda x_: [t.clone() for t in drops])
    rates, logits, grads = _port(net, x, y, drops)
    assert 0 < float(rates[-1].mean()) < 1, "a silent or saturated last population tests little"
    net.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", spide.SaturationWarning)
        out = net(x)
        F.cross_entropy(out, y).backward()
    ours = net._simulate(x, [t.clone() for t in drops] if drops else None)
    for a, b in zip(ours, rates):  # the same spike counts in every population (rates: count / T)
        assert torch.equal((a * net.T).round(), (b * net.T).round()) and torch.allclose(a, b, rtol=0, atol=1e-15)
    assert torch.allclose(out, logits, rtol=0, atol=1e-12)
    checked = 0
    for p in net.snn_parameters():
        assert p in grads
        assert torch.allclose(p.grad, grads[p], rtol=1e-9, atol=1e-13), float((p.grad - grads[p]).abs().max())
        checked += bool(grads[p].abs().sum() > 0)
    assert checked >= 2  # nonzero gradients were compared
