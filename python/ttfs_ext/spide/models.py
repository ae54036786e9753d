"""The papers' architectures (Xiao et al.; ../shared/docs/fs_spide.md B5) as builders of
FeedbackSNN, with the authors' defaults: each setting cites its line of the authors' code
(SPIDE-FSNN at ad02bc4, IDE-FSNN at 7da5907). Sizes follow the input: `in_channels`, `size`
(square images) and `classes`; `init` "authors" (their initialisation) or "torch" (PyTorch's
defaults, this library's earlier default); every other keyword goes to FeedbackSNN (T, T_b,
backward, leak, dropout, fb_norm, ...).

Not yet as the authors': CIFAR's input normalisation and augmentation; IDE's spectral norm as a
learnable reparametrisation (a projection here)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .network import FeedbackSNN

__all__ = ["convnet_f", "lenet5_f", "f400", "alexnet_f", "cifarnet_f", "build", "MODELS"]


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


INITS = ("authors", "torch")


def _init(modules: list, feedback: Optional[nn.Module], scheme: str, feedback_scale: float) -> None:
    """The authors' initialisation of the SNN connections (not the readout, which keeps
    nn.Linear's): "kaiming", kaiming_normal_(a=0, mode="fan_in") (SPIDE-FSNN
    modules/snn_modules.py:409-412, 503-506, 563-566); "unit", uniform(-1, 1) with every output
    unit's weights scaled to norm 1 (499-502, 559-562; IDE-FSNN modules/snn_modules.py:509-520);
    biases 0; the feedback weight times feedback_scale (SPIDE's ConvT: 0.1, line 567)."""
    with torch.no_grad():
        for m in modules + ([feedback] if feedback is not None else []):
            if not hasattr(m, "weight"):
                continue  # pooling
            w = m.weight
            if scheme == "kaiming":
                nn.init.kaiming_normal_(w, a=0, mode="fan_in")
            else:
                w.uniform_(-1, 1)
                out_dim = 1 if isinstance(m, nn.ConvTranspose2d) else 0
                w.div_(torch.linalg.vector_norm(w, dim=[d for d in range(w.dim()) if d != out_dim], keepdim=True))
            if m.bias is not None:
                m.bias.zero_()
            if m is feedback:
                w.mul_(feedback_scale)


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"ttfs_ext.spide: init must be one of {', '.join(INITS)}, got {init!r}")


def convnet_f(in_channels: int = 1, size: int = 28, classes: int = 10, channels: int = 64, feedback_kernel: int = 3,
              init: str = "authors", **kw) -> FeedbackSNN:
    """SPIDE's MNIST ConvNet-F (SPIDE-FSNN models/snn_spide_mnist.py:28-44): F 1->64 c5 s2 p2;
    64->64 c5 s2 p2; 64->64 c5 p2; feedback ConvT 64->64 c3 s2 p1 (output padding to population
    1's size; feedback_kernel=5: this library's earlier default, p2) into population 1, no bias;
    readout Linear; ||W_fb||_F <= 2 (line 40); kaiming init, feedback x 0.1; dropout 0.2."""
    _check_init(init)
    s1 = _conv_out(size, 5, 2, 2)
    s2 = _conv_out(s1, 5, 2, 2)
    k, p = feedback_kernel, (feedback_kernel - 1) // 2
    out_pad = s1 - ((s2 - 1) * 2 - 2 * p + k)
    kw.setdefault("fb_norm", ("frobenius", 2.0))
    kw.setdefault("dropout", 0.2)  # on every connection's current (mnist_convnetf.py:48, 139)
    input, layers = nn.Conv2d(in_channels, channels, 5, 2, 2), [nn.Conv2d(channels, channels, 5, 2, 2),
                                                                nn.Conv2d(channels, channels, 5, 1, 2)]
    feedback = nn.ConvTranspose2d(channels, channels, k, 2, p, output_padding=out_pad, bias=False)
    if init == "authors":
        _init([input, *layers], feedback, "kaiming", 0.1)
    return FeedbackSNN(input, layers, feedback, nn.Linear(channels * s2 * s2, classes), **kw)


def lenet5_f(in_channels: int = 1, size: int = 28, classes: int = 10, padding: int = 2, init: str = "authors",
             **kw) -> FeedbackSNN:
    """SPIDE's LeNet-5-like net (SPIDE-FSNN models/snn_spide_mnist_lenet.py:28-33): F 1->15 c5
    p2; avgpool 2; 15->40 c5 p2; avgpool 2; FC 300 (1960 inputs at 28 x 28); no feedback (a
    feed-forward chain run as an equilibrium net); each pooling is a population; kaiming init.
    padding=0 for 28-pixel images was this library's earlier default. Dropout 0.5 on the FC's
    current alone, none on the convolutions' (the authors' model file, lines 28-33)."""
    _check_init(init)
    s1 = _conv_out(size, 5, 1, padding)
    s2 = s1 // 2
    s3 = _conv_out(s2, 5, 1, padding)
    s4 = s3 // 2
    kw.setdefault("fb_norm", None)
    kw.setdefault("dropout", (0.0, 0.0, 0.0, 0.0, 0.5))  # F, pool, conv, pool, FC
    input = nn.Conv2d(in_channels, 15, 5, 1, padding)
    layers = [nn.AvgPool2d(2), nn.Conv2d(15, 40, 5, 1, padding), nn.AvgPool2d(2), nn.Linear(40 * s4 * s4, 300)]
    if init == "authors":
        _init([input, *layers], None, "kaiming", 1.0)
    return FeedbackSNN(input, layers, None, nn.Linear(300, classes), **kw)


def f400(in_channels: int = 1, size: int = 28, classes: int = 10, hidden: int = 400, init: str = "authors",
         batch_norm: bool = True, **kw) -> FeedbackSNN:
    """IDE's Fashion-MNIST net "400 (F400)" (IDE-FSNN models/snn_ide_fc.py:28-37): one population
    of 400 neurons, F = Linear(784, 400) then BatchNorm1d (batch_norm=False: without, this
    library's earlier F400), feedback Linear(400, 400) onto itself, no bias; readout Linear; T = 5
    (fashionmnist_fc.py:31); the feedback's spectral norm <= 1 (IDE's restriction; projected here,
    a learnable reparametrisation there); unit-norm rows init; dropout 0.2."""
    _check_init(init)
    kw.setdefault("T", 5)
    # IDE's neuron: threshold 2, reset by subtracting it (u_rest 0) (fashionmnist_fc.py:32; IDE-FSNN
    # modules/snn_modules.py:84-86); the paper's headline figure is IF (the script's default is LIF 0.95)
    kw.setdefault("v_th", 2.0)
    kw.setdefault("reset", "zero")
    kw.setdefault("fb_norm", ("spectral", 1.0))
    kw.setdefault("dropout", 0.2)  # on F and the feedback (fashionmnist_fc.py:45)
    linear, feedback = nn.Linear(in_channels * size * size, hidden), nn.Linear(hidden, hidden, bias=False)
    if init == "authors":
        _init([linear], feedback, "unit", 1.0)
    input = nn.Sequential(nn.Flatten(), linear, nn.BatchNorm1d(hidden)) if batch_norm else linear
    return FeedbackSNN(input, [], feedback, nn.Linear(hidden, classes), **kw)


def _cifar_f(c: tuple, in_channels: int, size: int, classes: int, init: str, kw: dict) -> FeedbackSNN:
    """SPIDE-FSNN models/snn_spide_cifar.py:28-46: the convolutions k3 p1 with bias, the feedback
    ConvT k3 s2 p1 op1 without, ||W_fb||_F <= 2 (line 42), T_b 250 (cifar_alexnetf.py:32); the
    authors' "default" init (no init argument there): unit-norm output channels, feedback x 0.1."""
    _check_init(init)
    s1 = _conv_out(size, 3, 2, 1)
    s3 = _conv_out(s1, 3, 2, 1)
    out_pad = s1 - ((s3 - 1) * 2 - 2 + 3)
    kw.setdefault("fb_norm", ("frobenius", 2.0))
    kw.setdefault("T_b", 250)
    input = nn.Conv2d(in_channels, c[0], 3, 2, 1)
    layers = [nn.Conv2d(c[0], c[1], 3, 1, 1), nn.Conv2d(c[1], c[2], 3, 2, 1), nn.Conv2d(c[2], c[3], 3, 1, 1),
              nn.Conv2d(c[3], c[4], 3, 1, 1)]
    feedback = nn.ConvTranspose2d(c[4], c[0], 3, 2, 1, output_padding=out_pad, bias=False)
    if init == "authors":
        _init([input, *layers], feedback, "unit", 0.1)
    return FeedbackSNN(input, layers, feedback, nn.Linear(c[4] * s3 * s3, classes), **kw)


def alexnet_f(in_channels: int = 3, size: int = 32, classes: int = 10, init: str = "authors", **kw) -> FeedbackSNN:
    """AlexNet-F (CIFAR): F 3->96 c3 s2; 96->256 c3; 256->384 c3 s2; 384->384 c3; 384->256 c3;
    feedback ConvT 256->96 s2 into population 1; readout Linear(256*8*8); dropout 0.2
    (cifar_alexnetf.py:51)."""
    kw.setdefault("dropout", 0.2)
    return _cifar_f((96, 256, 384, 384, 256), in_channels, size, classes, init, kw)


def cifarnet_f(in_channels: int = 3, size: int = 32, classes: int = 10, init: str = "authors", **kw) -> FeedbackSNN:
    """CIFARNet-F: AlexNet-F's pattern with 128 / 256 / 512 (s2) / 1024 / 512 channels; dropout
    0.25 (cifar_cifarnetf.py:51)."""
    kw.setdefault("dropout", 0.25)
    return _cifar_f((128, 256, 512, 1024, 512), in_channels, size, classes, init, kw)


MODELS = {"convnet_f": convnet_f, "lenet5_f": lenet5_f, "f400": f400, "alexnet_f": alexnet_f,
          "cifarnet_f": cifarnet_f}


def build(name: str, **kw) -> FeedbackSNN:
    """One of MODELS by name."""
    if name not in MODELS:
        raise ValueError(f"ttfs_ext.spide: unknown model {name!r}; one of {', '.join(MODELS)}")
    return MODELS[name](**kw)
