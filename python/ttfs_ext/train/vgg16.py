"""VGG16 for Places365: the ReLU network in torchvision's layout, its checkpoints, its exact
TTFS conversion, and the models the training CLI builds by name.

    relu = vgg16_relu(num_classes=365)                     # torchvision.models.vgg16's keys
    load_relu_checkpoint("vgg16_places365.pth.tar", relu)  # plain, {"state_dict": ...}, "module."
    net = ttfs_vgg16(relu, calibration_images, input_range=normalized_input_range(MEAN, STD))
    net, relu = build_places365_model("vgg16", 365, 224, "ckpt.pth", calibration_images)

The recipe of Stanojevic et al. (2024): convert the trained ReLU network exactly
(ttfs_ext.convert, B1 mapping: same weights, windows sized on calibration data), then
fine-tune the TTFS network. Without a checkpoint, a network can also be trained from scratch:
as a B1 network it follows the ReLU network's trajectory.

Notes the training loop relies on:
- the converted network is float64 on the CPU (convert's output): call .float() / .to(device);
- TTFS networks have no dropout (a dropped spike time has no meaning): the conversion drops it,
  as the ReLU network does in eval mode, and so do the from-scratch builds;
- an AdaptiveAvgPool2d to the size it receives (VGG16 at 224 to 255 pixels: 7x7 to 7x7) is the
  identity and is left out of the TTFS network (else it would be one more spiking layer of
  25,088 neurons that only delays the spikes); a larger input is pooled exactly by a spiking
  depthwise convolution of weight 1/k^2 (as convert() does).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .. import nn as tnn
from .models import VGG_CIFAR, vgg

__all__ = ["VGG16_CONFIG", "VGG_SMALL_CONFIG", "VGG_PAPER", "PLACES365_MODELS", "ReLUVGG", "vgg16_relu",
           "vgg_small_relu", "vgg_paper", "load_relu_checkpoint", "CheckpointMismatch", "normalized_input_range",
           "ttfs_vgg16", "ttfs_vgg_scratch", "build_places365_model", "ttfs_skeleton", "load_ttfs_state"]

# torchvision's configuration "D" (VGG16): 13 3x3 convolutions, "M" = 2x2 max-pool, stride 2.
VGG16_CONFIG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
# A CPU-sized net of the same layout for tests: 2 convolutions, a 4x4 pool, 32-unit dense layers.
VGG_SMALL_CONFIG = [8, "M", 16, "M"]
VGG_PAPER = VGG_CIFAR  # the 15-layer VGG of the papers' reference code (its CIFAR net) on 224x224
PLACES365_MODELS = ("vgg16", "vgg16_bn", "vgg-paper", "vgg-small")


class ReLUVGG(nn.Module):
    """A VGG in torchvision's layout: `features` (Conv2d 3x3 pad 1 [+ BatchNorm2d] + ReLU, and
    MaxPool2d(2, 2)), `avgpool` (AdaptiveAvgPool2d(pool_size)), `classifier` (Linear, ReLU,
    Dropout, Linear, ReLU, Dropout, Linear), with torchvision's state_dict keys and its
    initialisation (kaiming_normal fan_out for convolutions, N(0, 0.01) for linear layers,
    zero biases, batch norms 1 and 0). forward as torchvision.models.VGG.forward."""

    def __init__(self, config: Sequence[Union[int, str]] = VGG16_CONFIG, num_classes: int = 365,
                 batch_norm: bool = False, dropout: float = 0.5, pool_size: int = 7, hidden: int = 4096,
                 in_channels: int = 3) -> None:
        super().__init__()
        if not (isinstance(num_classes, int) and num_classes >= 1):
            raise ValueError(f"ReLUVGG: num_classes must be a positive int, got {num_classes!r}")
        layers: list[nn.Module] = []
        channels = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers.append(nn.Conv2d(channels, int(v), kernel_size=3, padding=1))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(int(v)))
                layers.append(nn.ReLU(inplace=True))
                channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(channels * pool_size * pool_size, hidden), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes))
        for m in self.modules():
            _torchvision_init(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def _torchvision_init(m: nn.Module) -> None:
    """torchvision.models.VGG's initialisation of one module (TTFS layers are Conv2d/Linear subclasses)."""
    if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0, 0.01)
        nn.init.zeros_(m.bias)


def vgg16_relu(num_classes: int = 365, batch_norm: bool = False, dropout: float = 0.5) -> ReLUVGG:
    """VGG16 (batch_norm=True: VGG16-BN) with the state_dict keys and shapes of
    torchvision.models.vgg16 / vgg16_bn(num_classes=...), so their checkpoints load."""
    return ReLUVGG(VGG16_CONFIG, num_classes, batch_norm, dropout)


def vgg_small_relu(num_classes: int = 10, batch_norm: bool = False, dropout: float = 0.5) -> ReLUVGG:
    """A CPU-sized VGG of the same layout (8 and 16 channels, 4x4 pool, 32-unit dense layers)
    for tests of the VGG16 code paths: features of image size s are s/4 wide."""
    return ReLUVGG(VGG_SMALL_CONFIG, num_classes, batch_norm, dropout, pool_size=4, hidden=32)


def vgg_paper(num_classes: int = 365, image_size: int = 224, input_range: tuple[float, float] = (0.0, 1.0),
              width: float = 1.0) -> tnn.TTFSSequential:
    """The papers' 15-layer VGG (train.models.VGG_CIFAR) as a TTFS network for RGB images of
    image_size (224: a 7x7x512 flatten), trained from scratch (glorot init, as the reference code)."""
    net = vgg(VGG_PAPER, 3, image_size, num_classes, width=width)
    net[0] = tnn.TTFSEncoder(*input_range)
    return net


# --- checkpoints ------------------------------------------------------------------------------------

class CheckpointMismatch(ValueError):
    """A checkpoint's keys or shapes do not fit the model."""


_WRAPPERS = ("module", "_orig_mod")  # DataParallel/DDP (also CSAIL's features.module.N), torch.compile


def _strip_wrappers(key: str) -> str:
    return ".".join(part for part in key.split(".") if part not in _WRAPPERS)


def load_relu_checkpoint(path: Union[str, Path], model: nn.Module) -> nn.Module:
    """Load a ReLU checkpoint into `model` (a ReLUVGG or torchvision VGG) and return the model.

    The file (read with torch.load(weights_only=True), so never runs pickled code) holds a
    state_dict, or a dict with one under "state_dict" (CSAIL's .pth.tar) or "model"
    (torchvision's reference scripts). Wrapper names are removed from the keys: "module."
    (DataParallel/DDP, also CSAIL's `features.module.0.weight`) and "_orig_mod." (torch.compile).
    Raises FileNotFoundError, or CheckpointMismatch naming the keys and shapes that differ (the
    number of classes and a batch-norm/plain mismatch are named as such)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_relu_checkpoint: no checkpoint file {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors of every kind
        raise CheckpointMismatch(f"load_relu_checkpoint: {path} cannot be read as a state_dict with "
                                 f"weights_only=True ({type(err).__name__}: {err}); save model.state_dict() "
                                 "rather than the model object") from err
    if isinstance(data, dict):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointMismatch(f"load_relu_checkpoint: {path} holds no state_dict (a dict of tensors, itself or "
                                 "under 'state_dict' or 'model')")
    state = {_strip_wrappers(k): v for k, v in data.items()}
    _check_state(state, model.state_dict(), path)
    model.load_state_dict(state)
    return model


def _check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    # num_batches_tracked is no weight (and older files lack it: BatchNorm fills it in).
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    where = f"load_relu_checkpoint: {path}"
    has_bn = lambda keys: any(k.endswith("running_mean") for k in keys)  # noqa: E731
    if has_bn(state) != has_bn(expected):
        kind = "vgg16_bn (batch norms)" if has_bn(state) else "vgg16 (no batch norms)"
        raise CheckpointMismatch(f"{where} is a {kind} checkpoint and the model is not: build the model with "
                                 f"batch_norm={has_bn(state)}")
    if missing or unexpected:
        raise CheckpointMismatch(f"{where}: keys do not match the model: missing {_few(missing)}, unexpected "
                                 f"{_few(unexpected)}")
    last = list(expected)[-1]  # the output layer's bias
    if state[last].shape != expected[last].shape:
        raise CheckpointMismatch(f"{where} has {state[last].shape[0]} classes ({last}), the model "
                                 f"{expected[last].shape[0]}: build it with num_classes={state[last].shape[0]}")
    shapes = [f"{k}: {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if shapes:
        raise CheckpointMismatch(f"{where}: shapes do not match: {_few(shapes)}")


def _few(items: list[str], n: int = 5) -> str:
    if not items:
        return "none"
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# --- conversion and the TTFS builds -----------------------------------------------------------------

def normalized_input_range(mean: Any, std: Any = 1.0, scale: float = 1.0) -> tuple[float, float]:
    """The range of (x - mean) / std over pixels x in [0, scale] and every channel (or pixel)
    of mean and std: the input_range that encodes a preprocessing preset's images without
    clipping. torchvision's ImageNet mean/std: about (-2.118, 2.640); Caffe (BGR, 0-255,
    mean subtraction): normalized_input_range(means, 1.0, 255.0). A per-pixel mean array works too."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    std = torch.as_tensor(std, dtype=torch.float64)
    if not bool((std > 0).all()):
        raise ValueError("normalized_input_range: std must be positive")
    low, high = float(((0.0 - mean) / std).min()), float(((scale - mean) / std).max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("normalized_input_range: mean and std must be finite")
    return low, high


def _features_size(features: nn.Module, size: tuple[int, int]) -> Optional[tuple[int, int]]:
    """The spatial size the VGG's features give for inputs of `size` (None if a module is not
    one of Conv2d, MaxPool2d, BatchNorm2d, ReLU, Dropout, Identity)."""
    h, w = size
    for m in features.modules():
        if m is features or isinstance(m, (nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Identity, nn.Sequential)):
            continue
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)) and not isinstance(m.padding, str):
            pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
            k, s, p, d = (pair(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))
            if getattr(m, "ceil_mode", False):
                return None
            h, w = ((n + 2 * p[i] - d[i] * (k[i] - 1) - 1) // s[i] + 1 for i, n in enumerate((h, w)))
        else:
            return None
    return h, w


def _relu_chain(model: nn.Module, image_size: tuple[int, int]) -> nn.Sequential:
    """The model's forward as one chain sharing its modules: features, avgpool unless it is the
    identity at this image size, flatten, classifier."""
    for name in ("features", "avgpool", "classifier"):
        if not isinstance(getattr(model, name, None), nn.Module):
            raise TypeError(f"ttfs_vgg16: the model must be a VGG with features, avgpool and classifier "
                            f"(vgg16_relu or torchvision.models.vgg16), {type(model).__name__} has no {name!r}")
    pool = model.avgpool
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        out = pool.output_size
        out = (out, out) if isinstance(out, int) else tuple(out)
        if _features_size(model.features, image_size) == out:
            pool = nn.Identity()
    return nn.Sequential(model.features, pool, nn.Flatten(), model.classifier)


def ttfs_vgg16(relu_model: nn.Module, calibration_data: Any, input_range: Optional[tuple[float, float]] = None,
               zeta: float = 0.5, mapping: str = "b1", windows: str = "activation") -> tnn.TTFSSequential:
    """The exact TTFS network of a ReLU VGG (vgg16_relu, vgg_small_relu or torchvision's VGG16
    / VGG16-BN), by ttfs_ext.convert: batch norms and the input range folded into the weights,
    windows of width (1 + zeta) x each layer's largest activation on calibration_data (a
    tensor of images, or an iterable of them or of (images, ...) batches, read once; all of one
    image size). The ReLU model's eval function is converted (dropout off).

    input_range: the range of the inputs the network will see (normalized_input_range of the
    preset); default the calibration data's min and max, which later inputs may exceed (they
    are then clipped). Returns a float64 CPU TTFSSequential with the ConversionReport in
    `.conversion`. Converting VGG16 at 224x224 holds about four float64 copies of its 138M
    weights (about 4.5 GB) and runs each calibration image through both networks."""
    from ..convert import convert
    from ..convert.calibration import read

    held, _ = read(calibration_data)  # read once here: the image size picks the avgpool
    sizes = {tuple(x.shape[-2:]) for x in held}
    if len(sizes) != 1 or held[0].dim() != 4:
        raise ValueError(f"ttfs_vgg16: calibration_data must be (N, C, H, W) images of one size, got sizes {sizes}")
    chain = _relu_chain(relu_model, sizes.pop())
    return convert(chain, held, input_range=input_range, zeta=zeta, mapping=mapping, windows=windows,
                   dtype=torch.float64)


def ttfs_vgg_scratch(config: Sequence[Union[int, str]] = VGG16_CONFIG, num_classes: int = 365,
                     image_size: int = 224, input_range: tuple[float, float] = (0.0, 1.0), pool_size: int = 7,
                     hidden: int = 4096, width: float = 1.0) -> tnn.TTFSSequential:
    """A B1 TTFS VGG in the layout of ReLUVGG(config, ..., pool_size, hidden) without batch
    norms and dropout, for training from scratch, with torchvision's initialisation (what a
    B1 network trains with exactly as its ReLU twin, ttfs_ext.train.relu_twin, does). The
    adaptive pool is left out where the features are already pool_size wide, else it is a
    spiking depthwise convolution of weight 1/k^2 (trainable, as in a converted network)."""
    layers: list[nn.Module] = [tnn.TTFSEncoder(*input_range)]
    channels, size = 3, image_size
    for v in config:
        if v == "M":
            layers.append(tnn.TTFSMaxPool2d(2, 2))
            size //= 2
        else:
            layers.append(tnn.TTFSConv2d(channels, int(v), 3, padding=1))
            channels = int(v)
    pools = sum(v == "M" for v in config)
    if size < pool_size:
        raise ValueError(f"ttfs_vgg_scratch: image_size {image_size} is too small: its {pools} max-pools leave "
                         f"{size}x{size} features, fewer than the {pool_size}x{pool_size} the classifier reads; "
                         f"use at least {pool_size * 2 ** pools}")
    if size % pool_size:
        raise ValueError(f"ttfs_vgg_scratch: image_size {image_size} gives {size}x{size} features, which do not "
                         f"average-pool to {pool_size}x{pool_size} in equal windows")
    if size != pool_size:
        k = size // pool_size
        pool = tnn.TTFSConv2d(channels, channels, k, stride=k, groups=channels)
        layers.append(pool)
    layers.append(nn.Flatten())
    features = channels * pool_size * pool_size
    for units in (hidden, hidden):
        layers.append(tnn.TTFSLinear(features, units))
        features = units
    layers.append(tnn.TTFSReadout(features, num_classes))
    for m in layers:
        _torchvision_init(m)
    if size != pool_size:
        with torch.no_grad():
            pool.weight.fill_(1.0 / (k * k))
    return tnn.TTFSSequential(*layers, widths=width)


def build_places365_model(name: str, num_classes: int = 365, image_size: int = 224,
                          relu_checkpoint: Optional[Union[str, Path]] = None, calibration: Any = None, *,
                          input_range: Optional[tuple[float, float]] = None, zeta: float = 0.5, mapping: str = "b1",
                          windows: str = "activation") -> tuple[tnn.TTFSSequential, Optional[nn.Module]]:
    """The model the training CLI builds by name: (ttfs_net, relu_model or None).

    - "vgg16", "vgg16_bn", "vgg-small" (a CPU-sized VGG of the same layout, vgg_small_relu):
      with `calibration` (images, see ttfs_vgg16), the ReLU network (torchvision's init, or
      loaded from relu_checkpoint) converted exactly: the paper's convert-then-fine-tune
      recipe; returns (float64 CPU TTFS net, the ReLU network). Without calibration: a TTFS
      network for training from scratch (ttfs_vgg_scratch, widths 1, float32) and None;
      relu_checkpoint then is an error (windows need calibration), and so is vgg16_bn (a TTFS
      network has no batch norms to train).
    - "vgg-paper": the papers' VGG (vgg_paper), from scratch only.
    input_range: the inputs' value range (normalized_input_range of the preset); needed from
    scratch (default (0, 1) there), optional for conversion (default: the calibration data's).
    """
    if name not in PLACES365_MODELS:
        raise ValueError(f"build_places365_model: unknown model {name!r}; choose one of {', '.join(PLACES365_MODELS)}")
    if not (isinstance(image_size, int) and image_size >= 1):
        raise ValueError(f"build_places365_model: image_size must be a positive int, got {image_size!r}")
    scratch_range = input_range if input_range is not None else (0.0, 1.0)
    if name == "vgg-paper":
        if relu_checkpoint is not None or calibration is not None:
            raise ValueError("build_places365_model: 'vgg-paper' trains from scratch; relu_checkpoint and calibration "
                             "are for the converted models (vgg16, vgg16_bn, vgg-small)")
        return vgg_paper(num_classes, image_size, scratch_range), None
    small = name == "vgg-small"
    if calibration is None:
        if relu_checkpoint is not None:
            raise ValueError(f"build_places365_model: converting the checkpoint {relu_checkpoint} needs calibration "
                             "images (the windows are sized on them)")
        if name == "vgg16_bn":
            raise ValueError("build_places365_model: 'vgg16_bn' can only be converted (pass calibration images): a "
                             "TTFS network has no batch norms to train from scratch; use 'vgg16'")
        if small:
            return ttfs_vgg_scratch(VGG_SMALL_CONFIG, num_classes, image_size, scratch_range, 4, 32), None
        return ttfs_vgg_scratch(VGG16_CONFIG, num_classes, image_size, scratch_range), None
    relu = (vgg_small_relu if small else vgg16_relu)(num_classes, batch_norm=name == "vgg16_bn")
    if relu_checkpoint is not None:
        load_relu_checkpoint(relu_checkpoint, relu)
    relu.eval()
    return ttfs_vgg16(relu, calibration, input_range, zeta, mapping, windows), relu


def ttfs_skeleton(name: str, num_classes: int = 365, image_size: int = 224,
                  input_range: tuple[float, float] = (0.0, 1.0)) -> tnn.TTFSSequential:
    """The layer structure of build_places365_model(name, ...)'s TTFS network (B1 mapping, the
    default; alpha1 layers differ), without converting anything: for loading a TTFS checkpoint (load_ttfs_state) on resume, or on the
    ranks that do not convert (convert on one rank, save its state_dict, load it on the others).
    vgg16 and vgg16_bn give the same structure (B1 mapping: the batch norms are folded).
    input_range must be the one the network was built with: the encoder's range is no part of
    the state_dict."""
    if name not in PLACES365_MODELS:
        raise ValueError(f"ttfs_skeleton: unknown model {name!r}; choose one of {', '.join(PLACES365_MODELS)}")
    if name == "vgg-paper":
        return vgg_paper(num_classes, image_size, input_range)
    if name == "vgg-small":
        return ttfs_vgg_scratch(VGG_SMALL_CONFIG, num_classes, image_size, input_range, 4, 32)
    return ttfs_vgg_scratch(VGG16_CONFIG, num_classes, image_size, input_range)


def load_ttfs_state(net: tnn.TTFSSequential, state_dict: dict[str, torch.Tensor]) -> tnn.TTFSSequential:
    """Load a TTFS network's state_dict (weights, biases, windows) into `net` (ttfs_skeleton),
    taking the checkpoint's bias shapes: a converted network's first convolution has a bias per
    output position (C, H, W) where the input range's shift meets the zero padding."""
    for key, module in net.named_children():
        bias = state_dict.get(f"{key}.bias")
        if isinstance(module, tnn.TTFSConv2d) and bias is not None and module.bias is not None \
                and bias.shape != module.bias.shape:
            module.bias = nn.Parameter(torch.empty(bias.shape, dtype=module.bias.dtype, device=module.bias.device))
    net.load_state_dict(state_dict)
    return net
