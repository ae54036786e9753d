"""Places365 input pipeline throughput: images/s of decode + augment (the training presets) on
256x256 JPEGs, in the process (num_workers=0: one worker's rate) and with DataLoader workers.

    python benchmarks/bench_data_pipeline.py              # ~3 min on 2 cores
    python benchmarks/bench_data_pipeline.py --quick      # seconds: checks the script
    python benchmarks/bench_data_pipeline.py --data-dir /data/places365   # real files (--images random ones)
    python benchmarks/bench_data_pipeline.py --gpu-decode # also torchvision.io.decode_jpeg on the GPU

The images are synthetic (ttfs_ext.data.places365.make_synthetic_places365: smooth random
content, JPEG quality 90, one corrupt file) unless --data-dir names a Places365 folder. Every
case runs the same keys (index, seed) through Places365 + DataLoader + collate_skipping, whose
unreadable-image count is checked on every pass before a time counts. The cases take turns in
one run, in an order reversed from round to round, so that other load on the machine falls on
all of them alike; a ratio is the median over rounds of the per-round ratio (ttfs_ext.bench
paired_ratio). Case names: <preset>/<decoder>/w<workers>; decode/<decoder>/w0 decodes only (no
transform, no collate); gpu/<preset>/b<batch> reads the files on the CPU and decodes and augments
on the GPU (decode_batch_cuda). In the process the torch thread count is 1 (as in a worker).
Besides images/s (wall), every case reports its CPU time per image (the process's and its
workers'): on a machine shared with other jobs, extra workers only help where the scheduler
gives them extra CPU (Linux's autogroup gives a session one share, however many processes).
Writes benchmarks/results/data_pipeline_cpu.json (data_pipeline_gpu.json with --gpu-decode).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ttfs_ext.bench import environment
from ttfs_ext.bench.timing import paired_ratio
from ttfs_ext.data import places365 as p365
from suite.host import git_state  # benchmarks/suite: this script's folder is on sys.path

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 32


def _have_torchvision() -> bool:
    try:
        import torchvision.io  # noqa: F401
    except ImportError:
        return False
    return True


def loader_pass(ds: p365.Places365, keys: list, workers: int) -> Callable[[], tuple[int, int]]:
    """One pass over keys through a DataLoader (persistent workers): returns (good, bad)."""
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, sampler=keys, num_workers=workers,
                                         collate_fn=ds.collate, persistent_workers=workers > 0,
                                         prefetch_factor=4 if workers else None)

    def run() -> tuple[int, int]:
        good = bad = 0
        for x, _, n_bad in loader:
            good, bad = good + len(x), bad + n_bad
        return good, bad
    return run


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds() -> float:
    """CPU time, user + system, of this process and of its live children (the DataLoader
    workers), the children's read from /proc/<pid>/stat (Linux; elsewhere this process's only)."""
    t = os.times()
    total = t.user + t.system
    for children in Path("/proc/self/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
    return total


def decode_pass(ds: p365.Places365, keys: list) -> Callable[[], tuple[int, int]]:
    def run() -> tuple[int, int]:
        out = [ds[k] for k in keys]
        return sum(s is not None for s in out), sum(s is None for s in out)
    return run


def gpu_pass(ds: p365.Places365, keys: list, transform, batch: int) -> Callable[[], tuple[int, int]]:
    import torchvision.io

    def run() -> tuple[int, int]:
        good = bad = 0
        for start in range(0, len(keys), batch):
            chunk = keys[start:start + batch]
            encoded = [torchvision.io.read_file(str(ds.path(i))) for i, _ in chunk]
            gens = [torch.Generator().manual_seed(seed) for _, seed in chunk]
            x, _, n_bad = p365.decode_batch_cuda(encoded, [int(ds.targets[i]) for i, _ in chunk], transform, gens)
            good, bad = good + len(x), bad + n_bad
        torch.cuda.synchronize()
        return good, bad
    return run


def make_cases(root: Path, split: str, n: int, presets: list[str], decoders: list[str], workers: list[int],
               gpu_batch: Optional[int]) -> tuple[dict[str, Callable[[], tuple[int, int]]], list]:
    g = torch.Generator().manual_seed(0)
    plain = p365.Places365(root, split)
    order = torch.randperm(len(plain), generator=g)[:n].tolist()
    keys = [(i, int(s)) for i, s in zip(order, torch.randint(0, 2**62, (len(order),), generator=g))]
    cases: dict[str, Callable[[], tuple[int, int]]] = {}
    for name in presets:
        t = p365.preset(name, train=True)
        for decoder in decoders:
            ds = p365.Places365(root, split, transform=t, decoder=decoder)
            for w in workers if decoder == "pil" else [0]:
                cases[f"{name}/{decoder}/w{w}"] = loader_pass(ds, keys, w)
        if gpu_batch:
            cases[f"gpu/{name}/b{gpu_batch}"] = gpu_pass(p365.Places365(root, split), keys, t, gpu_batch)
    for decoder in decoders:
        cases[f"decode/{decoder}/w0"] = decode_pass(p365.Places365(root, split, decoder=decoder), keys)
    return cases, keys


def measure(cases: dict[str, Callable[[], tuple[int, int]]], expected: tuple[int, int], rounds: int,
            log: Callable[[str], None] = print) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per pass of every case, one sample per round, after one warm-up pass each."""
    for name, run in cases.items():
        counts = run()
        if counts != expected:
            raise AssertionError(f"{name}: (good, unreadable) images per pass {counts}, expected {expected}")
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            c0, t0 = cpu_seconds(), time.perf_counter()
            counts = cases[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(cpu_seconds() - c0)
            if counts != expected:
                raise AssertionError(f"{name}: (good, unreadable) images per pass {counts}, expected {expected}")
        log(f"round {r + 1}/{rounds}: " + ", ".join(f"{k} {sum(expected) / v[-1]:.0f}/s" for k, v in wall.items()))
    return wall, cpu


def ratios(samples: dict[str, list[float]], presets: list[str], decoders: list[str], workers: list[int],
           gpu_batch: Optional[int]) -> dict[str, Optional[float]]:
    """Throughput ratios (> 1: the first named is faster), paired per round."""
    out: dict[str, Optional[float]] = {}
    for name in presets:
        for w in workers:
            if w:
                out[f"{name}/pil/w{w} vs w0"] = paired_ratio(samples, [f"{name}/pil/w0"], [f"{name}/pil/w{w}"])
        if "torchvision" in decoders:
            out[f"{name}: torchvision vs pil decoder (w0)"] = paired_ratio(samples, [f"{name}/pil/w0"],
                                                                          [f"{name}/torchvision/w0"])
        if gpu_batch:
            best = f"{name}/pil/w{max(workers)}"
            out[f"gpu/{name}/b{gpu_batch} vs {best}"] = paired_ratio(samples, [best], [f"gpu/{name}/b{gpu_batch}"])
    if len(presets) == 2:
        out["caffe vs torchvision preset (pil, w0)"] = paired_ratio(samples, ["torchvision/pil/w0"], ["caffe/pil/w0"])
    if "torchvision" in decoders:
        out["decode only: torchvision vs pil"] = paired_ratio(samples, ["decode/pil/w0"], ["decode/torchvision/w0"])
    return out


def list_reading(tmp: Path, lines: int, repeats: int = 3) -> dict[str, Any]:
    """Seconds to construct a Places365 over a train list of ``lines`` lines (Places365-Standard:
    1,803,460) and the bytes its paths take; only the first image exists (the spot check)."""
    root = Path(tmp) / "list"
    classes = [f"/{chr(97 + k % 26)}/class{k}" for k in range(365)]
    p365.make_synthetic_places365(root, classes=classes, train_per_class=1, val_per_class=0, test_count=0,
                                  size=(8, 8), corrupt=0)
    with open(root / p365.LIST_FILES["train-standard"], "w") as fh:
        fh.writelines(f"{classes[k * 365 // lines]}/{k % 5000 + 1:08d}.jpg {k * 365 // lines}\n" for k in range(lines))
    secs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ds = p365.Places365(root)
        secs.append(time.perf_counter() - t0)
    assert len(ds) == lines
    return {"lines": lines, "median_s": statistics.median(secs), "samples_s": secs, "path_bytes": int(ds._paths.nbytes)}


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few images and rounds: checks the script")
    ap.add_argument("--data-dir", type=Path, help="a Places365 folder (default: synthetic 256x256 JPEGs)")
    ap.add_argument("--split", default="train-standard", choices=p365.SPLITS)
    ap.add_argument("--images", type=int, default=512, help="images per pass")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--presets", nargs="+", default=["torchvision", "caffe"], choices=["torchvision", "caffe"])
    ap.add_argument("--gpu-decode", action="store_true", help="also decode and augment on the GPU (CUDA + torchvision)")
    ap.add_argument("--gpu-batch", type=int, default=64)
    ap.add_argument("--list-lines", type=int, default=1803460, help="lines of the list whose reading is timed")
    ap.add_argument("--out", type=Path, help="the JSON file (default benchmarks/results/data_pipeline_{cpu,gpu}.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.rounds, args.workers, args.list_lines = 48, 2, [0, 1], 20000
    if 0 not in args.workers:
        args.workers = [0, *args.workers]
    if args.gpu_decode and not (torch.cuda.is_available() and _have_torchvision()):
        ap.error("--gpu-decode needs a CUDA device and torchvision")
    torch.set_num_threads(1)
    device = "cuda" if args.gpu_decode else "cpu"
    env = {**environment(device, "quick" if args.quick else "data_pipeline", torch.get_num_threads()), **git_state()}
    # the corrupt file is logged on every pass; its count is checked instead (workers inherit this)
    logging.getLogger(p365.__name__).setLevel(logging.ERROR)
    decoders = ["pil", "torchvision"] if _have_torchvision() else ["pil"]
    gpu_batch = args.gpu_batch if args.gpu_decode else None

    with tempfile.TemporaryDirectory(prefix="places365-bench-") as tmp:
        if args.data_dir is None:
            classes = [f"/{c}/{c}class{k}" for k, c in enumerate("abcdefgh")]
            per_class = -(-args.images // len(classes))  # every image in a pass, the corrupt one too
            root = p365.make_synthetic_places365(tmp, classes=classes, train_per_class=per_class, val_per_class=1,
                                                 test_count=1, size=(256, 256), corrupt=1, seed=1)
        else:
            root = args.data_dir
        cases, keys = make_cases(root, args.split, args.images, args.presets, decoders, args.workers, gpu_batch)
        listed = p365.Places365(root, args.split)
        n_bad = sum(listed[i] is None for i, _ in keys)
        expected = (len(keys) - n_bad, n_bad)
        jpeg_bytes = statistics.mean(listed.path(i).stat().st_size for i, _ in keys)
        print(f"{len(cases)} cases, {len(keys)} images per pass ({n_bad} unreadable), mean JPEG {jpeg_bytes / 1024:.1f} KiB, "
              f"decoders {decoders}")
        samples, cpu = measure(cases, expected, args.rounds)
        lists = list_reading(Path(tmp), args.list_lines)
        print(f"reading a list of {lists['lines']} lines: {lists['median_s']:.2f} s, paths {lists['path_bytes'] / 1e6:.1f} MB")

    results = []
    for name, secs in samples.items():
        med, cpu_med = statistics.median(secs), statistics.median(cpu[name])
        results.append({"case": name, "images_per_pass": len(keys), "median_s": med, "images_per_s": len(keys) / med,
                        "cpu_ms_per_image": 1e3 * cpu_med / len(keys), "cpu_share": cpu_med / med,
                        "samples_s": secs, "cpu_samples_s": cpu[name]})
    table = ratios(samples, args.presets, decoders, args.workers, gpu_batch)
    for r in results:
        print(f"{r['case']:>32} {r['images_per_s']:8.1f} images/s {r['cpu_ms_per_image']:6.2f} CPU ms/image "
              f"(CPU share {r['cpu_share']:.2f})")
    for k, v in table.items():
        print(f"{k:>48} {v:.3f}x" if v is not None else f"{k:>48} -")
    report: dict[str, Any] = {
        "environment": env,
        "data": {"source": str(args.data_dir) if args.data_dir else "synthetic (make_synthetic_places365, 256x256, "
                 "quality 90)", "split": args.split, "mean_jpeg_bytes": jpeg_bytes, "unreadable_per_pass": n_bad},
        "batch_size": BATCH, "rounds": args.rounds, "workers": args.workers, "decoders": decoders,
        "torchvision": _torchvision_version(), "pillow": _pillow_version(),
        "loadavg_1min_after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "results": results, "throughput_ratios": table, "list_reading": lists,
        "notes": "images/s (wall) of decode + training augmentation + collate (float32 3x224x224); w0 = in the "
                 "process (one worker's rate, 1 torch thread); wN = N persistent DataLoader workers; "
                 "cpu_ms_per_image = CPU time of the process and its workers per image (load-independent cost); "
                 "cpu_share = CPU seconds per wall second the case got; ratios: median over rounds of the "
                 "per-round wall-time ratio",
    }
    out = args.out or RESULTS / f"data_pipeline_{device}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


def _torchvision_version() -> Optional[str]:
    try:
        import torchvision
    except ImportError:
        return None
    return torchvision.__version__


def _pillow_version() -> str:
    import PIL
    return PIL.__version__


if __name__ == "__main__":
    sys.exit(main())
