"""ttfs_ext.train.vgg16: torchvision's VGG16 layout, ReLU checkpoints, the exact conversion of
VGG16 and VGG16-BN at 224x224, the models built by name, and what TTFS nets do with
channels_last inputs and CPU bfloat16 autocast."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import ttfs_ext
from ttfs_ext import nn as tnn
from ttfs_ext.train import relu_twin
from ttfs_ext.train.vgg16 import (PLACES365_MODELS, CheckpointMismatch, build_places365_model, load_relu_checkpoint,
                                  load_ttfs_state, normalized_input_range, ttfs_skeleton, ttfs_vgg16, vgg16_relu,
                                  vgg_small_relu)

F64 = torch.float64
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# torchvision.models.vgg16's state_dict, written out: (index in features, channels out, in).
CONVS = [(0, 64, 3), (2, 64, 64), (5, 128, 64), (7, 128, 128), (10, 256, 128), (12, 256, 256), (14, 256, 256),
         (17, 512, 256), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]
# vgg16_bn: conv, BatchNorm2d, ReLU per layer: the convolutions sit at these indices.
BN_CONV_INDEX = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


def expected_keys(batch_norm: bool, classes: int) -> dict[str, tuple]:
    keys: dict[str, tuple] = {}
    for n, (i, out, inp) in enumerate(CONVS):
        i = BN_CONV_INDEX[n] if batch_norm else i
        keys[f"features.{i}.weight"], keys[f"features.{i}.bias"] = (out, inp, 3, 3), (out,)
        if batch_norm:
            for name in ("weight", "bias", "running_mean", "running_var"):
                keys[f"features.{i + 1}.{name}"] = (out,)
            keys[f"features.{i + 1}.num_batches_tracked"] = ()
    for i, out, inp in ((0, 4096, 25088), (3, 4096, 4096), (6, classes, 4096)):
        keys[f"classifier.{i}.weight"], keys[f"classifier.{i}.bias"] = (out, inp), (out,)
    return keys


@pytest.mark.parametrize("batch_norm", [False, True])
def test_key_layout_is_torchvisions(batch_norm):
    with torch.device("meta"):  # shapes only: no 138M-parameter initialisation
        model = vgg16_relu(365, batch_norm=batch_norm)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(expected_keys(batch_norm, 365)) and got == expected_keys(batch_norm, 365)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == (7, 7)


@pytest.mark.skipif(not HAS_TORCHVISION, reason="torchvision is not installed (torch 2.13 CPU venv)")
@pytest.mark.parametrize("batch_norm", [False, True])
def test_key_layout_against_torchvision(batch_norm):
    import torchvision

    with torch.device("meta"):
        ours = vgg16_relu(365, batch_norm=batch_norm)
        theirs = (torchvision.models.vgg16_bn if batch_norm else torchvision.models.vgg16)(num_classes=365)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, v.shape) for k, v in theirs.state_dict().items()]
    assert str(ours.features) == str(theirs.features) and str(ours.classifier) == str(theirs.classifier)


def test_torchvision_init():
    torch.manual_seed(101)
    model = vgg_small_relu(7, batch_norm=True)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert bool((m.bias == 0).all())
        if isinstance(m, nn.BatchNorm2d):
            assert bool((m.weight == 1).all()) and bool((m.bias == 0).all())
    std = float(model.classifier[0].weight.detach().std())  # N(0, 0.01)
    assert 0.009 < std < 0.011
    conv = model.features[0].weight  # kaiming normal, fan_out = 8 x 3 x 3
    assert 0.8 < float(conv.detach().std()) / (2.0 / (8 * 9)) ** 0.5 < 1.2


# --- checkpoints -------------------------------------------------------------------------------

def small(seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return vgg_small_relu(**kw)


@pytest.mark.parametrize("form", ["plain", "state_dict", "model", "module", "features.module", "_orig_mod"])
def test_checkpoint_forms(tmp_path, form):
    source = small(202 + len(form), num_classes=5, batch_norm=True)
    state = source.state_dict()
    if form == "module":  # DataParallel / DDP
        state = {f"module.{k}": v for k, v in state.items()}
    elif form == "features.module":  # CSAIL: model.features = DataParallel(model.features)
        state = {k.replace("features.", "features.module.", 1): v for k, v in state.items()}
    elif form == "_orig_mod":  # torch.compile
        state = {f"_orig_mod.{k}": v for k, v in state.items()}
    data = {"state_dict": state, "epoch": 3, "best_prec1": 0.5} if form == "state_dict" else \
        {"model": state, "optimizer": {}} if form == "model" else state
    torch.save(data, tmp_path / "ckpt.pth.tar")
    target = small(303, num_classes=5, batch_norm=True)
    assert load_relu_checkpoint(tmp_path / "ckpt.pth.tar", target) is target
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_without_num_batches_tracked(tmp_path):
    source = small(404, num_classes=4, batch_norm=True)
    torch.save({k: v for k, v in source.state_dict().items() if "num_batches" not in k}, tmp_path / "old.pth")
    target = load_relu_checkpoint(tmp_path / "old.pth", small(405, num_classes=4, batch_norm=True))
    assert torch.equal(target.features[1].running_var, source.features[1].running_var)


def test_checkpoint_errors(tmp_path):
    target = small(505, num_classes=6)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_relu_checkpoint(tmp_path / "nope.pth", target)
    cases = {
        "classes": (small(506, num_classes=9).state_dict(), "9 classes .* num_classes=9"),
        "bn": (small(507, num_classes=6, batch_norm=True).state_dict(), "vgg16_bn .* batch_norm=True"),
        "missing": ({k: v for k, v in target.state_dict().items() if k != "classifier.3.bias"},
                    "missing classifier.3.bias, unexpected none"),
        "unexpected": ({**target.state_dict(), "features.9.weight": torch.zeros(1)}, "unexpected features.9.weight"),
        "shape": ({**target.state_dict(), "classifier.0.weight": torch.zeros(32, 99)},
                  r"classifier.0.weight: \(32, 99\) in the file, \(32, 256\) in the model"),
        "not a dict": ([torch.zeros(2)], "holds no state_dict"),
        "pickled model": (target, "weights_only=True"),
    }
    for name, (data, message) in cases.items():
        torch.save(data, tmp_path / f"{name}.pth")
        with pytest.raises(CheckpointMismatch, match=message):
            load_relu_checkpoint(tmp_path / f"{name}.pth", target)


# --- exact conversion --------------------------------------------------------------------------

def randomise_bn(model: nn.Module, g: torch.Generator) -> None:
    """Non-trivial batch-norm statistics and affine parameters, some scales negative."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(1.5 * torch.rand(n, generator=g) - 0.25)
            m.bias.data.copy_(0.2 * torch.rand(n, generator=g) - 0.1)


def images(n: int, size: int, seed: int, low: float, high: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (low + (high - low) * torch.rand(n, 3, size, size, generator=g, dtype=F64))


@pytest.mark.parametrize("batch_norm", [False, True])
def test_exact_conversion_vgg16_224(batch_norm):
    """The smallest size with VGG16's own 7x7 layout (224 / 2^5 = 7): the SNN's logits equal
    the ReLU network's in float64."""
    torch.manual_seed(606 + batch_norm)
    relu = vgg16_relu(365, batch_norm=batch_norm).eval()
    if batch_norm:
        randomise_bn(relu, torch.Generator().manual_seed(607))
    with torch.no_grad():  # logits of order 1 (torchvision's N(0, 0.01) output layer gives ~1e-2)
        relu.classifier[6].weight.mul_(30.0)
    low, high = normalized_input_range(IMAGENET_MEAN, IMAGENET_STD)
    x = images(2, 224, 608 + batch_norm, low, high)  # each 224x224 float64 pass of both nets costs seconds
    net = ttfs_vgg16(relu, x, input_range=(low, high))
    kinds = [type(m).__name__ for m in net if isinstance(m, (tnn.SpikingLayer, tnn.TTFSReadout))]
    assert kinds == ["TTFSConv2d"] * 13 + ["TTFSLinear"] * 2 + ["TTFSReadout"]  # the 7x7 avgpool is the identity
    with torch.no_grad():
        ref = relu.double()(x)
        out = net(x)
    scale = float(ref.abs().max())
    assert 0.1 < scale < 100.0
    assert float((out - ref).abs().max()) <= 1e-9 * scale
    assert net.conversion.calibration.agreement == 1.0


def test_exact_conversion_small_pooled():
    """vgg-small at 32x32: 8x8 features pooled to 4x4 by a spiking depthwise convolution."""
    torch.manual_seed(710)
    relu = vgg_small_relu(11, batch_norm=True).eval()
    randomise_bn(relu, torch.Generator().manual_seed(711))
    calib = images(16, 32, 712, 0.0, 1.0)
    net = ttfs_vgg16(relu, calib, input_range=(0.0, 1.0))
    convs = [m for m in net if isinstance(m, tnn.TTFSConv2d)]
    assert len(convs) == 3 and convs[-1].groups == 16 and convs[-1].kernel_size == (2, 2)
    test = images(8, 32, 713, 0.0, 1.0)
    with torch.no_grad():
        ref, out = relu.double()(test), net(test)
    assert float((out - ref).abs().max()) <= 1e-9 * float(ref.abs().max())


def test_conversion_rejects_mixed_sizes():
    relu = small(714, num_classes=3).eval()
    with pytest.raises(ValueError, match="one size"):
        ttfs_vgg16(relu, [images(2, 32, 715, 0, 1), images(2, 16, 716, 0, 1)])
    with pytest.raises(TypeError, match="no 'features'"):
        ttfs_vgg16(nn.Sequential(nn.Flatten(), nn.Linear(3, 2)), images(2, 8, 717, 0, 1))


# --- models by name ------------------------------------------------------------------------------

def test_build_by_name(tmp_path):
    relu = small(818, num_classes=4)
    torch.save({"state_dict": {f"module.{k}": v for k, v in relu.state_dict().items()}}, tmp_path / "r.pth.tar")
    calib = images(8, 16, 819, 0.0, 1.0)
    net, loaded = build_places365_model("vgg-small", 4, 16, tmp_path / "r.pth.tar", calib, input_range=(0.0, 1.0))
    assert loaded is not None and torch.equal(loaded.classifier[6].weight, relu.classifier[6].weight)
    with torch.no_grad():
        assert float((net(calib) - relu.eval().double()(calib)).abs().max()) <= 1e-9

    torch.manual_seed(820)
    scratch, none = build_places365_model("vgg-small", 4, 32, input_range=(-2.0, 2.5))
    assert none is None and scratch[0].low == -2.0 and scratch[0].high == 2.5
    x = images(3, 32, 821, -2.0, 2.5).float()
    assert scratch(x).shape == (3, 4)
    twin = relu_twin(scratch)  # from scratch: a B1 net and its ReLU twin compute the same function
    torch.testing.assert_close(scratch(x), twin(x), rtol=1e-5, atol=1e-5)
    pool = [m for m in scratch if isinstance(m, tnn.TTFSConv2d)][-1]
    assert pool.groups == 16 and bool((pool.weight == 0.25).all())

    paper, none = build_places365_model("vgg-paper", 5, 32)
    assert none is None and paper(x.clamp(0, 1)).shape == (3, 5)
    assert set(PLACES365_MODELS) == {"vgg16", "vgg16_bn", "vgg-paper", "vgg-small"}


def test_skeleton_loads_a_converted_state():
    """Resume / other ranks: the structure without converting, then the converted state."""
    torch.manual_seed(830)
    relu = vgg_small_relu(6, batch_norm=True).eval()
    randomise_bn(relu, torch.Generator().manual_seed(831))
    calib = images(8, 32, 832, -1.0, 2.0)
    net = ttfs_vgg16(relu, calib, input_range=(-1.0, 2.0))
    assert net[1].bias.dim() == 3  # the input range's shift meets the zero padding
    other = load_ttfs_state(ttfs_skeleton("vgg-small", 6, 32, (-1.0, 2.0)).double(), net.state_dict())
    assert other.widths == net.widths
    with torch.no_grad():
        assert torch.equal(other(calib), net(calib))
        # Its ReLU twin (agreement reports) has the per-position bias as a layer of its own.
        torch.testing.assert_close(relu_twin(net)(calib), net(calib), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(relu_twin(net)(calib), relu.double()(calib), rtol=1e-9, atol=1e-9)


def test_build_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'resnet50'"):
        build_places365_model("resnet50")
    with pytest.raises(ValueError, match="needs calibration"):
        build_places365_model("vgg-small", 4, 16, relu_checkpoint=tmp_path / "x.pth")
    with pytest.raises(ValueError, match="no batch norms"):
        build_places365_model("vgg16_bn")
    with pytest.raises(ValueError, match="from scratch"):
        build_places365_model("vgg-paper", calibration=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="equal windows"):
        build_places365_model("vgg-small", 4, 24)  # 6x6 features to 4x4


def test_normalized_input_range():
    low, high = normalized_input_range(IMAGENET_MEAN, IMAGENET_STD)
    assert low == min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    assert high == max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
    g = torch.Generator().manual_seed(901)
    per_pixel = 255 * torch.rand(3, 4, 4, generator=g, dtype=F64)  # a Caffe mean image
    assert normalized_input_range(per_pixel, 1.0, 255.0) == (float(-per_pixel.max()), float(255 - per_pixel.min()))
    with pytest.raises(ValueError, match="std must be positive"):
        normalized_input_range(0.5, (1.0, 0.0))


# --- channels_last and CPU bfloat16 autocast -------------------------------------------------------

def test_channels_last_inputs():
    """channels_last inputs (and weights) give the same spike times and gradients: the ops
    compute on a contiguous (NCHW) copy, so channels_last changes no result and speeds up no
    TTFS layer."""
    torch.manual_seed(1001)
    net, _ = build_places365_model("vgg-small", 3, 16, input_range=(0.0, 1.0))
    x = images(4, 16, 1002, 0.0, 1.0).float()
    out = net(x)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    out_cl = net(x.contiguous(memory_format=torch.channels_last))
    out_cl.square().sum().backward()
    torch.testing.assert_close(out_cl, out, rtol=1e-6, atol=1e-6)
    for g, p in zip(grads, net.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)
    net_cl = net.to(memory_format=torch.channels_last)  # channels_last weights too
    torch.testing.assert_close(net_cl(x.contiguous(memory_format=torch.channels_last)), out, rtol=1e-6, atol=1e-6)


def test_cpu_bfloat16_autocast_is_as_precise_as_the_relu_twin():
    """Under CPU autocast the TTFS network's convolutions and GEMMs run in bfloat16, as its ReLU
    twin's do; spike times and gradients stay float32; its logits and weight gradients are as
    close to its float64 run as the twin's bfloat16 ones are to the twin's float64 run (2x, plus
    one bfloat16 rounding of the result)."""
    import copy
    torch.manual_seed(1003)
    net, _ = build_places365_model("vgg-small", 3, 16, input_range=(0.0, 1.0))
    x = images(2, 16, 1004, 0.0, 1.0)
    errors = {}
    for name, model in (("ttfs", net), ("twin", relu_twin(net))):
        exact = copy.deepcopy(model).double()
        ref = exact(x.double())
        ref.square().sum().backward()
        low = copy.deepcopy(model).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = low(x.float())
        out.float().square().sum().backward()
        if name == "ttfs":
            assert out.dtype == torch.float32
            assert all(p.grad.dtype == torch.float32 for p in low.parameters())
        grads = torch.cat([p.grad.flatten().double() for p in low.parameters()])
        ref_grads = torch.cat([p.grad.flatten() for p in exact.parameters()])
        out, ref = out.detach().double(), ref.detach()
        errors[name] = (float((out - ref).norm() / ref.norm()),
                        float((grads - ref_grads).norm() / ref_grads.norm()))
    eps = torch.finfo(torch.bfloat16).eps
    for i, what in enumerate(("logits", "weight gradients")):
        assert errors["ttfs"][i] <= 2 * errors["twin"][i] + eps, (what, errors)


# --- the throughput benchmark ----------------------------------------------------------------------

def test_throughput_benchmark_smoke(tmp_path, capsys):
    """benchmarks/bench_places365_train.py on vgg-small: a JSON with both sides, paired ratios
    and the conversion, and its markdown table."""
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_places365_train.py"
    spec = importlib.util.spec_from_file_location("bench_places365_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "train.json"
    assert bench.main(["--model", "vgg-small", "--image-size", "16", "--batch", "2", "--num-classes", "3",
                       "--steps", "1", "--repeats", "2", "--seed", "1101", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    (r,) = report["results"]
    assert r["precision"] == "fp32" and len(r["ttfs_over_relu_images_per_s"]["per_repeat"]) == 2
    assert r["ttfs"]["images_per_s"] > 0 and r["relu"]["images_per_s"] > 0
    assert report["conversion"]["max_logit_diff"] <= 1e-9 and "git_commit" in report
    assert bench.main(["--table", str(out)]) == 0
    assert "| fp32 | NCHW |" in capsys.readouterr().out


@pytest.mark.parametrize("name,size", [("vgg-small", 1), ("vgg-small", 2), ("vgg16", 8)])
def test_too_small_image_size_is_one_clear_error(name, size):
    """An image size the model's max-pools reduce below its classifier's input is a ValueError
    saying the smallest size (ttfs train turns it into one line naming --image-size), not a
    ZeroDivisionError from the average pool's weights."""
    from ttfs_ext.train import vgg16 as V
    with torch.device("meta"), pytest.raises(ValueError, match=f"image_size {size} is too small.*use at least"):
        V.ttfs_skeleton(name, 10, size, (0.0, 1.0))
