"""Training throughput of the TTFS VGG16 (converted exactly from a ReLU VGG16) against the same
VGG16 as a plain ReLU network: forward + backward + SGD step, same batch, device and
precision, random images and labels (no data loading: benchmarks/bench_data_pipeline.py
measures that).

    python benchmarks/bench_places365_train.py --batch 2 --steps 2 --repeats 3
    python benchmarks/bench_places365_train.py --device cuda --precision bf16 --channels-last --batch 64
    python benchmarks/bench_places365_train.py --sweep            # fp32/bf16 x NCHW/channels_last
    python benchmarks/bench_places365_train.py --table benchmarks/results/places365_train_cpu.json
    python benchmarks/bench_places365_train.py --sweep --image-size 112 --batch 8   # classifier on 3x3

At an image size other than 224 the VGG16's adaptive pool is left out and its first classifier
layer takes the (size // 32)^2 x 512 feature map (the same for both networks).

The ReLU VGG16 (torchvision's layout and init, seeded) is converted once on the CPU in
float64 (ttfs_ext.train.ttfs_vgg16; its time and the process's peak memory are reported),
then both networks run in float32 with bfloat16 autocast for --precision bf16. Timing: paired
repeats, alternated (ABBA: TTFS first in even repeats, ReLU first in odd ones) after warm-up
steps, so load from other processes affects both sides; per repeat each network runs --steps
steps. Reported: seconds per step (median over repeats), images/s, and the median of the
per-repeat ratios TTFS images/s / ReLU images/s (below 1: the TTFS network is slower). The
TTFS network trains with fixed windows (a window rule adds its statistics pass on top). A side
that fails is recorded with its error. Under bfloat16 autocast both networks' convolutions and
GEMMs run in bfloat16 (the TTFS spike times stay float32), on the CPU as on CUDA. Memory: the
bytes autograd saves for backward in one forward of each network (saved_for_backward_mib, on
every device) and, on CUDA, each network's peak allocation over one step alone.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/suite

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ttfs_ext.bench.report import environment  # noqa: E402
from ttfs_ext.train.vgg16 import normalized_input_range, ttfs_vgg16, vgg16_relu, vgg_small_relu  # noqa: E402

from suite.host import ROOT, git_state, replace_between_markers  # noqa: E402

JSON_VERSION = 1
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the torchvision preset
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "places365_train_cpu.json"


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def make_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
              device: str) -> Callable[[], float]:
    """One training step (forward, cross-entropy, backward, SGD with momentum); returns the loss."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9)

    def step() -> float:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())  # also waits for the device

    return step


def saved_for_backward_mib(model: torch.nn.Module, x: torch.Tensor, precision: str, device: str) -> float:
    """MiB of the distinct storages autograd keeps for the backward of one training forward, the
    parameters excluded: a step's activation memory, measured the same way on every device (the
    C++ autograd kernels of the TTFS ops save through the same SavedVariable hooks)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = model(x)
    del out
    return sum(n for ptr, n in storages.items() if ptr not in params) / 2**20


def time_steps(step: Callable[[], float], steps: int, device: str) -> float:
    """Seconds per step over `steps` steps."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def run_config(models: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor, precision: str,
               channels_last: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Warm-up, then alternated paired repeats of both networks for one precision and layout."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt)
    steps, errors = {}, {}
    for name, model in models.items():
        model.to(memory_format=fmt)
        steps[name] = make_step(model, x, y, precision, args.device)
        try:
            for _ in range(args.warmup):
                steps[name]()
        except RuntimeError as err:  # an unsupported combination: recorded, the other side still runs
            errors[name] = f"{type(err).__name__}: {err}".splitlines()[0][:500]
    names = [n for n in models if n not in errors]
    memory: dict[str, dict[str, float]] = {}
    for name in names:
        memory[name] = {"saved_for_backward_mib": saved_for_backward_mib(models[name], x, precision, args.device)}
        if args.device == "cuda":  # one step of this network alone
            torch.cuda.reset_peak_memory_stats()
            steps[name]()
            memory[name]["peak_cuda_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    per_step: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            per_step[name].append(time_steps(steps[name], args.steps, args.device))
    result: dict[str, Any] = {"precision": precision, "channels_last": channels_last, "batch": args.batch}
    for name in models:
        if name in errors:
            result[name] = {"error": errors[name]}
            continue
        t = statistics.median(per_step[name])
        result[name] = {"seconds_per_step": per_step[name], "median_seconds_per_step": t,
                        "images_per_s": args.batch / t, **memory[name]}
    if not errors:
        ratios = [r_t / t_t for t_t, r_t in zip(per_step["ttfs"], per_step["relu"])]
        result["ttfs_over_relu_images_per_s"] = {"per_repeat": ratios, "median": statistics.median(ratios)}
    for model in models.values():
        model.to(memory_format=torch.contiguous_format)
    return result


def markdown_table(report: dict[str, Any]) -> str:
    """The results of a report as a markdown table (for PLACES365_MODELS.md / the README)."""
    env, conv = report["environment"], report["conversion"]
    rows = [f"{report['config']['model']} at {report['config']['image_size']}x{report['config']['image_size']}, "
            f"batch {report['config']['batch']}, {env['device_name']} ({env['threads']} threads), torch "
            f"{env['torch_version']}, commit {str(report.get('git_commit'))[:7]}; {report['config']['repeats']} "
            f"paired repeats of {report['config']['steps']} steps; conversion {conv['seconds']:.1f} s on "
            f"{conv['calibration_images']} images, peak RSS {report['peak_rss_gib']:.2f} GiB", "",
            "| precision | layout | TTFS images/s | ReLU images/s | TTFS/ReLU (median of paired ratios) "
            "| saved for backward, TTFS / ReLU (MiB) |",
            "|---|---|---|---|---|---|"]
    for r in report["results"]:
        cells = [r["precision"], "channels_last" if r["channels_last"] else "NCHW"]
        for name in ("ttfs", "relu"):
            cells.append(f"{r[name]['images_per_s']:.3g}" if "images_per_s" in r[name] else "fails (see JSON)")
        ratio = r.get("ttfs_over_relu_images_per_s")
        cells.append(f"{ratio['median']:.3f}" if ratio else "-")
        mib = [r[n].get("saved_for_backward_mib") for n in ("ttfs", "relu")]
        cells.append(f"{mib[0]:.0f} / {mib[1]:.0f} ({mib[0] / mib[1]:.2f}x)" if None not in mib else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="bf16: bfloat16 autocast (spike times stay float32)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last inputs and weights")
    parser.add_argument("--sweep", action="store_true", help="every precision x layout (one conversion)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--model", default="vgg16", choices=["vgg16", "vgg16_bn", "vgg-small"])
    parser.add_argument("--num-classes", type=int, default=365)
    parser.add_argument("--calibration-images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="steps per network per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="paired, alternated repeats")
    parser.add_argument("--warmup", type=int, default=1, help="warm-up steps per network and configuration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--table", type=Path, metavar="JSON", help="print a report's markdown table and exit")
    parser.add_argument("--readme", action="store_true",
                        help="write the tables of results/places365_train_cpu*.json into README.md and exit")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(markdown_table(json.loads(args.table.read_text())))
        return 0
    if args.readme:
        reports = sorted((json.loads(p.read_text()) for p in DEFAULT_OUT.parent.glob("places365_train_cpu*.json")),
                         key=lambda r: (r["config"]["image_size"], r["config"]["batch"]))
        tables = "\n\n".join(markdown_table(r) for r in reports)
        ok = replace_between_markers(ROOT / "README.md", "<!-- places365-train:begin -->",
                                     "<!-- places365-train:end -->", tables)
        print("README table updated:", ok)
        return 0
    for name in ("batch", "steps", "repeats", "calibration_images", "image_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True  # both networks alike

    torch.manual_seed(args.seed)
    build = vgg_small_relu if args.model == "vgg-small" else vgg16_relu
    relu = build(args.num_classes, batch_norm=args.model == "vgg16_bn")
    side = args.image_size // 32  # VGG16's feature map: five 2x2 max-pools
    if args.model != "vgg-small" and side != 7:
        # Another image size: the 7x7 adaptive pool would repeat or average unequal windows (no
        # exact conversion); the classifier takes the side x side map instead (torchvision's init).
        relu.avgpool = torch.nn.Identity()
        first = torch.nn.Linear(512 * side * side, relu.classifier[0].out_features)
        torch.nn.init.normal_(first.weight, 0, 0.01), torch.nn.init.zeros_(first.bias)
        relu.classifier[0] = first
    low, high = normalized_input_range(IMAGENET_MEAN, IMAGENET_STD)
    g = torch.Generator().manual_seed(args.seed + 1)
    shape = (3, args.image_size, args.image_size)
    calib = low + (high - low) * torch.rand(args.calibration_images, *shape, generator=g, dtype=torch.float64)
    start = time.perf_counter()
    net = ttfs_vgg16(relu.eval(), calib, input_range=(low, high))
    conversion = {"seconds": time.perf_counter() - start, "calibration_images": args.calibration_images,
                  "peak_rss_gib_after": peak_rss_gib(), "latency": net.latency,
                  "max_logit_diff": net.conversion.calibration.max_logit_diff,
                  "max_abs_logit": net.conversion.calibration.max_abs_logit,
                  "spiking_layers": len(net.spiking_layers())}
    print(f"conversion: {conversion['seconds']:.1f} s, peak RSS {conversion['peak_rss_gib_after']:.2f} GiB, "
          f"max |logit diff| {conversion['max_logit_diff']:.3g}", flush=True)
    models = {"ttfs": net.float().to(args.device).train(), "relu": relu.float().to(args.device).train()}
    x = (low + (high - low) * torch.rand(args.batch, *shape, generator=g)).to(args.device)
    y = torch.randint(0, args.num_classes, (args.batch,), generator=g).to(args.device)

    configs = [(p, cl) for p in ("fp32", "bf16") for cl in (False, True)] if args.sweep else \
        [(args.precision, args.channels_last)]
    results = []
    for precision, channels_last in configs:
        r = run_config(models, x, y, precision, channels_last, args)
        results.append(r)
        line = ", ".join(f"{n} {r[n]['images_per_s']:.3g} img/s" if "images_per_s" in r[n] else f"{n} failed"
                         for n in models)
        ratio = r.get("ttfs_over_relu_images_per_s", {}).get("median")
        print(f"{precision} {'channels_last' if channels_last else 'NCHW'}: {line}"
              + (f", TTFS/ReLU {ratio:.3f}" if ratio is not None else ""), flush=True)
        for n in models:
            if "error" in r[n]:
                print(f"  {n}: {r[n]['error']}", flush=True)

    report = {"benchmark": "places365_train", "json_version": JSON_VERSION,
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "input_range": [low, high], "environment": environment(args.device, "places365_train",
                                                                      torch.get_num_threads()),
              **git_state(), "peak_rss_gib": peak_rss_gib(), "conversion": conversion, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=lambda v: None if isinstance(v, float) and
                                   not math.isfinite(v) else str(v)) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
