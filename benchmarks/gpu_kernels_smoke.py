"""Call every kernel of ttfs_ext once on small tensors, forward and backward, so that
compute-sanitizer (memcheck, racecheck) sees each of them launched: linear, readout, conv2d,
first_spike_linear, first_spike_conv2d (per-channel and per-position neurons), fs_activation
(float32 and bfloat16 x, spike counts, masks and the regulariser) and the SPIDE neuron steps
(contiguous and channels_last, with and without the optional tensors), each layer op in float32
and float64 and, where autocast applies, under bfloat16 autocast; backward ops through autograd.
spike_conv2d is left out: it has no CUDA kernel (on CUDA it is the dense convolution).

    python benchmarks/gpu_kernels_smoke.py --device cuda     # under compute-sanitizer: gpu_verify.py
    python benchmarks/gpu_kernels_smoke.py --device cpu      # the same calls on the CPU kernels

Every ttfs_ext op that reaches the dispatcher is recorded (a TorchDispatchMode sees the calls
below autograd, the backward ops included); the script exits 1 if one of EXPECTED was not
called or an output is not finite, and prints one line per call and a summary line.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ttfs_ext  # noqa: F401  (registers torch.ops.ttfs_ext)

ops = torch.ops.ttfs_ext

# The ops whose kernels this script must reach (forward ops and the backward ops of autograd).
EXPECTED = ("linear", "_linear_backward", "readout", "_readout_backward", "conv2d", "_conv2d_backward",
            "first_spike_linear", "_first_spike_linear_backward", "first_spike_conv2d",
            "_first_spike_conv2d_backward", "fs_activation", "_fs_activation_backward", "spide_forward_step",
            "spide_backward_step")


class OpRecorder(TorchDispatchMode):
    """Records the name of every ttfs_ext op dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.called: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        namespace, _, name = func._schema.name.partition("::")
        if namespace == "ttfs_ext":
            self.called[name] = self.called.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


class Smoke:
    def __init__(self, device: str) -> None:
        self.device = device
        self.gen = torch.Generator().manual_seed(0)
        self.failures: list[str] = []

    def rand(self, *shape, dtype=torch.float32, scale=1.0, offset=0.0, grad=False) -> torch.Tensor:
        x = (offset + scale * torch.rand(shape, generator=self.gen, dtype=torch.float64)).to(self.device, dtype)
        return x.requires_grad_(grad)

    def randn(self, *shape, dtype=torch.float32, scale=1.0, offset=0.0, grad=False) -> torch.Tensor:
        x = (offset + scale * torch.randn(shape, generator=self.gen, dtype=torch.float64)).to(self.device, dtype)
        return x.requires_grad_(grad)

    def autocast(self, enabled: bool):
        return torch.autocast(self.device, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

    def run(self, label: str, forward: Callable[[], torch.Tensor], leaves: list[torch.Tensor],
            low_precision: bool = False) -> None:
        """forward() (under bfloat16 autocast if low_precision), then backward through autograd
        into the leaves that require a gradient; records a failure instead of raising."""
        try:
            with self.autocast(low_precision):
                out = forward()
            grads = []
            needs = [x for x in leaves if x.requires_grad]
            if needs:
                g = torch.randn(out.shape, generator=self.gen, dtype=torch.float64).to(out)
                grads = torch.autograd.grad(out, needs, g, allow_unused=True)
            if self.device == "cuda":
                torch.cuda.synchronize()  # a kernel's error surfaces here, under this label
            finite = all(bool(torch.isfinite(t.float()).all()) for t in (out, *grads) if t is not None)
            print(f"  {label}: {'ok' if finite else 'NOT FINITE'}", flush=True)
            if not finite:
                self.failures.append(f"{label}: non-finite output or gradient")
        except Exception as err:  # noqa: BLE001  (every call runs; the summary fails the script)
            print(f"  {label}: FAILED {type(err).__name__}: {str(err).splitlines()[0]}", flush=True)
            self.failures.append(f"{label}: {type(err).__name__}")

    # --- the ops ---------------------------------------------------------------------------------

    def dense(self, dtype: torch.dtype, low_precision: bool) -> None:
        t = self.rand(6, 20, dtype=dtype, grad=True)
        w = self.randn(12, 20, dtype=dtype, scale=20 ** -0.5, grad=True)
        b = self.randn(12, dtype=dtype, scale=0.3, grad=True)
        tag = f"{str(dtype)[6:]}{' bf16-autocast' if low_precision else ''}"
        self.run(f"linear {tag}", lambda: ops.linear(t, w, b, 1.0, 3.0), [t, w, b], low_precision)
        self.run(f"linear {tag} no bias", lambda: ops.linear(t, w, None, 1.0, 3.0), [t, w], low_precision)
        self.run(f"readout {tag}", lambda: ops.readout(t, w, b, 1.0), [t, w, b], low_precision)

    def conv(self, dtype: torch.dtype, low_precision: bool) -> None:
        tag = f"{str(dtype)[6:]}{' bf16-autocast' if low_precision else ''}"
        t = self.rand(2, 4, 7, 7, dtype=dtype, grad=True)
        w = self.randn(6, 4, 3, 3, dtype=dtype, scale=36 ** -0.5, grad=True)
        b = self.randn(6, dtype=dtype, scale=0.3, grad=True)
        self.run(f"conv2d {tag} 3x3 same", lambda: ops.conv2d(t, w, b, 1.0, 3.0, [1, 1], [1, 1], [1, 1], 1),
                 [t, w, b], low_precision)
        # strided, grouped, with a bias per output position (4x4 outputs)
        wg = self.randn(6, 2, 3, 3, dtype=dtype, scale=18 ** -0.5, grad=True)
        bp = self.randn(6, 4, 4, dtype=dtype, scale=0.3, grad=True)
        self.run(f"conv2d {tag} stride 2 groups 2 bias per position",
                 lambda: ops.conv2d(t, wg, bp, 1.0, 3.0, [2, 2], [1, 1], [1, 1], 2), [t, wg, bp], low_precision)

    def first_spike(self, dtype: torch.dtype) -> None:
        tag = str(dtype)[6:]
        t = self.rand(8, 30, dtype=dtype, scale=1.2, grad=True)
        w = self.randn(20, 30, dtype=dtype, scale=1.5 / 30 ** 0.5, grad=True)
        alpha = self.randn(20, dtype=dtype, grad=True)
        theta = self.rand(20, dtype=dtype, offset=0.2, grad=True)
        self.run(f"first_spike_linear {tag}", lambda: ops.first_spike_linear(t, w, alpha, theta, 0.0, 2.5, 0.0)[0],
                 [t, w, alpha, theta])
        tc = self.rand(2, 4, 7, 6, dtype=dtype, scale=1.2, grad=True)
        wc = self.randn(6, 2, 3, 3, dtype=dtype, scale=1 / 3, grad=True)
        theta_c = self.rand(6, dtype=dtype, offset=0.2, grad=True)
        alpha_c = self.randn(6, dtype=dtype, grad=True)
        alpha_p = self.randn(6, 4, 3, dtype=dtype, grad=True)  # per output position
        for what, a in (("per channel", alpha_c), ("per position", alpha_p)):
            self.run(f"first_spike_conv2d {tag} {what}",
                     lambda a=a: ops.first_spike_conv2d(tc, wc, a, theta_c, 0.0, 2.5, [2, 2], [1, 1], [1, 1], 2,
                                                        1 << 23, 0.0)[0], [tc, wc, a, theta_c])

    def fs(self, x_dtype: torch.dtype, spike_mode: int) -> None:
        """fs_activation with the regulariser; bfloat16 x runs float32 steps (on the CPU through
        autocast, whose kernel casts x, as the CPU kernels have no bfloat16 code)."""
        low = x_dtype == torch.bfloat16
        p_dtype = torch.float32 if low else x_dtype
        x = self.randn(3, 1000, dtype=x_dtype, scale=2.0, grad=True)
        h, d, T = (self.randn(12, dtype=p_dtype, scale=s, grad=True) for s in (1.0, 1.0, 1.5))
        autocast = low and self.device == "cpu"

        def forward() -> torch.Tensor:
            y, spikes, reg = ops.fs_activation(x, h, d, T, spike_mode, True)
            assert spikes.shape == x.shape and reg.shape == (12,)
            return y.float().sum() + reg.sum()  # both outputs get a gradient
        self.run(f"fs_activation x {str(x_dtype)[6:]} spike_mode {spike_mode} with_reg", forward, [x, h, d, T],
                 autocast)

    def spide(self, dtype: torch.dtype, channels_last: bool) -> None:
        """The neuron steps in place (not differentiable): bare and with every optional tensor."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        tag = f"{str(dtype)[6:]}{' channels_last' if channels_last else ''}"

        def state():
            return [self.randn(2, 3, 5, 4, dtype=dtype).contiguous(memory_format=fmt) for _ in range(6)]
        u, rate, current, extra, gate, inject = state()
        self.run(f"spide_forward_step {tag}",
                 lambda: ops.spide_forward_step(u, rate, current, None, None, 1.0, 2.0, 1.0), [])
        self.run(f"spide_forward_step {tag} extra gate leak",
                 lambda: ops.spide_forward_step(u, rate, current, extra, gate, 1.0, 2.0, 0.9), [])
        u, rate, current, cgate, inject, gate = state()
        self.run(f"spide_backward_step {tag}",
                 lambda: ops.spide_backward_step(u, rate, current, None, None, None, 0.5, 1.0, 1.0, 1.0), [])
        self.run(f"spide_backward_step {tag} gates inject leak",
                 lambda: ops.spide_backward_step(u, rate, current, cgate, inject, gate, 0.5, 1.0, 1.0, 0.95), [])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_kernels_smoke: --device cuda but no CUDA device", file=sys.stderr)
        return 2
    if args.device not in ttfs_ext.kernel_devices():
        print(f"gpu_kernels_smoke: no compiled {args.device} kernels ({ttfs_ext.status()})", file=sys.stderr)
        return 2
    try:  # the data checks (NaN/inf reads) on, on CUDA too (off there by default): their code runs as well
        ttfs_ext.set_input_checks(True, cuda=True)
    except TypeError:  # a build with one switch for every device
        ttfs_ext.set_input_checks(True)
    smoke = Smoke(args.device)
    print(f"gpu_kernels_smoke on {args.device}: torch {torch.__version__}, ttfs_ext {ttfs_ext.__version__}",
          flush=True)
    with OpRecorder() as recorder:
        for dtype in (torch.float32, torch.float64):
            smoke.dense(dtype, False)
            smoke.conv(dtype, False)
            smoke.first_spike(dtype)
            for channels_last in (False, True):
                smoke.spide(dtype, channels_last)
        smoke.dense(torch.float32, True)   # bfloat16 matrices with float32 spike times
        smoke.conv(torch.float32, True)
        smoke.fs(torch.float32, 1)          # spike counts
        smoke.fs(torch.float64, 2)          # bit masks
        smoke.fs(torch.bfloat16, 1)
    missing = [op for op in EXPECTED if op not in recorder.called]
    print(f"smoke: ops called {dict(sorted(recorder.called.items()))}")
    if missing:
        print(f"smoke: NOT CALLED {missing}")
    for failure in smoke.failures:
        print(f"smoke: FAILED {failure}")
    ok = not missing and not smoke.failures
    print(f"smoke: {'PASS' if ok else 'FAIL'} ({len(EXPECTED) - len(missing)}/{len(EXPECTED)} ops called, "
          f"{len(smoke.failures)} failures)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
