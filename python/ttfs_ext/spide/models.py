"""The papers' architectures (Xiao et al.; ../shared/docs/fs_spide.md B5) as builders of
FeedbackSNN. Sizes follow the input: `in_channels`, `size` (square images) and `classes`;
every other keyword goes to FeedbackSNN (T, T_b, backward, leak, dropout, fb_norm, ...)."""
from __future__ import annotations

from torch import nn

from .network import FeedbackSNN

__all__ = ["convnet_f", "lenet5_f", "f400", "alexnet_f", "cifarnet_f", "build", "MODELS"]


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def convnet_f(in_channels: int = 1, size: int = 28, classes: int = 10, channels: int = 64, **kw) -> FeedbackSNN:
    """MNIST ConvNet-F (IDE's 64C5s (F64C5)): F 1->64 c5 s2; 64->64 c5 s2; 64->64 c5; feedback
    ConvT 64->64 c5 s2 into population 1; readout Linear."""
    s1 = _conv_out(size, 5, 2, 2)
    s2 = _conv_out(s1, 5, 2, 2)
    out_pad = s1 - ((s2 - 1) * 2 - 4 + 5)
    kw.setdefault("fb_norm", ("frobenius", 2.0))
    return FeedbackSNN(
        nn.Conv2d(in_channels, channels, 5, 2, 2),
        [nn.Conv2d(channels, channels, 5, 2, 2), nn.Conv2d(channels, channels, 5, 1, 2)],
        nn.ConvTranspose2d(channels, channels, 5, 2, 2, output_padding=out_pad, bias=False),
        nn.Linear(channels * s2 * s2, classes), **kw)


def lenet5_f(in_channels: int = 1, size: int = 28, classes: int = 10, **kw) -> FeedbackSNN:
    """SPIDE's LeNet-5-like net: F 1->15 c5; avgpool 2; 15->40 c5; avgpool 2; FC 300; no
    feedback (a feed-forward chain run as an equilibrium net); each pooling is a population.
    Images smaller than 28 pixels get padding 2 (sklearn's 8x8 digits)."""
    p = 0 if size >= 28 else 2
    s1 = _conv_out(size, 5, 1, p)
    s2 = s1 // 2
    s3 = _conv_out(s2, 5, 1, p)
    s4 = s3 // 2
    kw.setdefault("fb_norm", None)
    return FeedbackSNN(
        nn.Conv2d(in_channels, 15, 5, 1, p),
        [nn.AvgPool2d(2), nn.Conv2d(15, 40, 5, 1, p), nn.AvgPool2d(2), nn.Linear(40 * s4 * s4, 300)],
        None, nn.Linear(300, classes), **kw)


def f400(in_channels: int = 1, size: int = 28, classes: int = 10, hidden: int = 400, **kw) -> FeedbackSNN:
    """IDE's Fashion-MNIST net "400 (F400)": one population of 400 neurons, F = Linear(784, 400),
    feedback Linear(400, 400) onto itself; readout Linear. The IDE paper's T = 5."""
    kw.setdefault("T", 5)
    kw.setdefault("fb_norm", ("frobenius", 1.0))
    return FeedbackSNN(nn.Linear(in_channels * size * size, hidden), [], nn.Linear(hidden, hidden, bias=False),
                       nn.Linear(hidden, classes), **kw)


def _cifar_f(c: tuple, in_channels: int, size: int, classes: int, kw: dict) -> FeedbackSNN:
    s1 = _conv_out(size, 3, 2, 1)
    s3 = _conv_out(s1, 3, 2, 1)
    out_pad = s1 - ((s3 - 1) * 2 - 2 + 3)
    kw.setdefault("fb_norm", ("frobenius", 2.0))
    kw.setdefault("T_b", 250)
    return FeedbackSNN(
        nn.Conv2d(in_channels, c[0], 3, 2, 1),
        [nn.Conv2d(c[0], c[1], 3, 1, 1), nn.Conv2d(c[1], c[2], 3, 2, 1), nn.Conv2d(c[2], c[3], 3, 1, 1),
         nn.Conv2d(c[3], c[4], 3, 1, 1)],
        nn.ConvTranspose2d(c[4], c[0], 3, 2, 1, output_padding=out_pad, bias=False),
        nn.Linear(c[4] * s3 * s3, classes), **kw)


def alexnet_f(in_channels: int = 3, size: int = 32, classes: int = 10, **kw) -> FeedbackSNN:
    """AlexNet-F (CIFAR): F 3->96 c3 s2; 96->256 c3; 256->384 c3 s2; 384->384 c3; 384->256 c3;
    feedback ConvT 256->96 s2 into population 1; readout Linear(256*8*8)."""
    kw.setdefault("dropout", 0.2)
    return _cifar_f((96, 256, 384, 384, 256), in_channels, size, classes, kw)


def cifarnet_f(in_channels: int = 3, size: int = 32, classes: int = 10, **kw) -> FeedbackSNN:
    """CIFARNet-F: AlexNet-F's pattern with 128 / 256 / 512 (s2) / 1024 / 512 channels."""
    kw.setdefault("dropout", 0.25)
    return _cifar_f((128, 256, 512, 1024, 512), in_channels, size, classes, kw)


MODELS = {"convnet_f": convnet_f, "lenet5_f": lenet5_f, "f400": f400, "alexnet_f": alexnet_f,
          "cifarnet_f": cifarnet_f}


def build(name: str, **kw) -> FeedbackSNN:
    """One of MODELS by name."""
    if name not in MODELS:
        raise ValueError(f"ttfs_ext.spide: unknown model {name!r}; one of {', '.join(MODELS)}")
    return MODELS[name](**kw)
