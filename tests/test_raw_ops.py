"""Every raw op (torch.ops.ttfs_ext.*, forward and backward) called with each kind of wrong
argument: a wrong dtype, a foreign device, a wrong shape, a bad window or geometry. Each call
must raise an error that names the argument, never crash or return. The calls run in a
subprocess, so that a crash (an out-of-bounds read, say) fails the test instead of the suite.

Devices: a meta tensor among CPU tensors dispatches to the fake kernel (Meta outranks CPU),
so the fakes' device checks are tested by the plain call; the compiled kernel's own checks by
calling the CPU kernel directly with the same arguments (redispatch to the CPU key), as a CUDA
kernel would be called with a CPU tensor among CUDA ones.

Every case runs with the CPU kernels' own profile and with the CPU kernels driven as CUDA
drives its own (profile "cuda", CUDA's data checks on): one subprocess each.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import ttfs_ext

from _utils import has_kernel_profiles

pytestmark = pytest.mark.skipif("cpu" not in ttfs_ext.kernel_devices(), reason="no compiled CPU kernels")

# Runs in the subprocess: prints one JSON line per case, before ("start") and after the call.
_SCRIPT = textwrap.dedent(r'''
    import json, sys
    import torch
    import ttfs_ext  # noqa: F401  (registers the ops)

    if sys.argv[1:] == ["cuda"]:  # the CPU kernels driven as CUDA drives its own, CUDA's data checks on
        ttfs_ext._backend._C._set_cpu_kernel_profile("cuda")
        ttfs_ext.set_input_checks(True, cuda=True)
    ops = torch.ops.ttfs_ext
    F64 = torch.float64
    gen = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.rand(shape, generator=gen, dtype=F64)

    G = dict(stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1)
    M3, M4 = [True, True, True], [True, True, True, True]
    # op: (argument names, valid arguments)
    VALID = {
        "linear": ("t_in weight bias t_min t_max", [r(4, 5), r(3, 5), r(3), 1.0, 3.0]),
        "_linear_backward": ("grad_out t_in weight t_out t_min t_max output_mask",
                            [r(4, 3), r(4, 5), r(3, 5), r(4, 3), 1.0, 3.0, M3]),
        "readout": ("t_in weight bias t_min", [r(4, 5), r(3, 5), r(3), 1.0]),
        "_readout_backward": ("grad_out t_in weight t_min output_mask", [r(4, 3), r(4, 5), r(3, 5), 1.0, M3]),
        "conv2d": ("t_in weight bias t_min t_max stride padding dilation groups",
                   [r(2, 4, 6, 6), r(6, 4, 3, 3), r(6), 1.0, 3.0, *G.values()]),
        "_conv2d_backward": ("grad_out t_in weight t_out t_min t_max stride padding dilation groups "
                             "bias_per_position output_mask",
                             [r(2, 6, 6, 6), r(2, 4, 6, 6), r(6, 4, 3, 3), r(2, 6, 6, 6), 1.0, 3.0, *G.values(),
                              False, M3]),
        "first_spike_linear": ("t_in weight alpha threshold t_start t_max t_origin",
                              [r(4, 5), r(3, 5), r(3), r(3), 0.0, 3.0, 0.0]),
        "_first_spike_linear_backward": ("grad_out t_in weight t_out slope t_start t_origin output_mask",
                                        [r(4, 3), r(4, 5), r(3, 5), r(4, 3), r(4, 3), 0.0, 1.0, M4]),
        "first_spike_conv2d": ("t_in weight alpha threshold t_start t_max stride padding dilation groups workspace "
                               "t_origin", [r(2, 4, 6, 6), r(6, 4, 3, 3), r(6), r(6), 0.0, 3.0, *G.values(), 1 << 23, 0.0]),
        "_first_spike_conv2d_backward": ("grad_out t_in weight t_out slope t_start t_origin stride padding dilation "
                                         "groups alpha_per_position threshold_per_position output_mask",
                                         [r(2, 6, 6, 6), r(2, 4, 6, 6), r(6, 4, 3, 3), r(2, 6, 6, 6), r(2, 6, 6, 6),
                                          0.0, 1.0, *G.values(), False, False, M4]),
        "spide_forward_step": ("u rate current extra gate v_th reset leak", [*(r(4, 5) for _ in range(5)), 1.0, 2.0,
                                                                             0.9]),
        "spide_backward_step": ("u rate current current_gate inject gate v_th reset amplitude leak",
                                [*(r(4, 5) for _ in range(6)), 0.5, 1.0, 1.0, 0.9]),
        "spike_conv2d": ("input weight bias stride padding dilation transposed output_size",
                         [r(2, 4, 6, 6), r(4, 3, 3, 5), r(5), [1, 1], [1, 1], [1, 1], False, [6, 6]]),
    }

    # Shapes that no op accepts, per argument (every tensor argument of every op has some).
    def bad_shapes(op, name, x):
        conv = x.dim() == 4 or op in ("conv2d", "_conv2d_backward", "first_spike_conv2d",
                                      "_first_spike_conv2d_backward")
        if name == "input":  # spike_conv2d's
            return {"fewer channels": x[:, :-1], "3-D": x[0]}
        if name == "t_in":
            return {"fewer features": x[..., :-1]} if not conv else {"fewer channels": x[:, :-1],
                                                                     "3-D": x[0, 0][None]}
        if name == "weight":
            return {"3-D": x[0]} if conv else {"fewer inputs": x[:, :-1], "1-D": x[0]}
        if name in ("grad_out", "t_out", "slope"):
            return {"another batch": x[:1], "fewer outputs": x[:, :-1]}
        return {"wrong length": x[:-1], "2-D": x[None]}  # bias, alpha, threshold

    def cases():
        for op, (names, args) in VALID.items():
            names = names.split()
            for i, (name, x) in enumerate(zip(names, args)):
                def variant(value, i=i):
                    return args[:i] + [value] + args[i + 1:]
                if isinstance(x, torch.Tensor):
                    yield op, name, "int32", variant(x.to(torch.int32)), False, name
                    yield op, name, "float32", variant(x.float()), False, name
                    yield op, name, "meta", variant(x.to("meta")), False, name
                    yield op, name, "meta (CPU kernel)", variant(x.to("meta")), True, name
                    for what, y in bad_shapes(op, name, x).items():
                        yield op, name, what, variant(y), False, name
                    if torch.cuda.is_available():  # the CUDA kernel gets a foreign pointer
                        on_cuda = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
                        # the device guard names the first argument "t_in"
                        yield op, name, "cpu among cuda", on_cuda[:i] + [x] + on_cuda[i + 1:], False, (
                            "t_in" if i == 0 else name)
                        # The CUDA kernel runs, with t_in on the CPU: the op follows t_in's device.
                        yield op, name, "cuda among cpu", variant(x.cuda()), False, (
                            names[0] if i == 0 else "t_in")
                elif name in ("t_min", "t_max", "t_start", "t_origin"):
                    yield op, name, "nan", variant(float("nan")), False, name
                    yield op, name, "inf", variant(float("inf")), False, name
                    if name == "t_max" and op.lstrip("_").startswith("first_spike"):  # t_start and t_max:
                        yield op, name, "empty window", variant(args[i - 1]), False, name  # one axis
                elif name in ("v_th", "reset", "amplitude", "leak"):
                    yield op, name, "nan", variant(float("nan")), False, name
                elif name in ("stride", "dilation"):
                    yield op, name, "zero", variant([0, 1]), False, name
                elif name == "padding":
                    yield op, name, "negative", variant([1, -1]), False, name
                elif name == "output_size":
                    yield op, name, "not the output's", variant([5, 6]), False, name
                    yield op, name, "one entry", variant([6]), False, name
                elif name == "groups":
                    yield op, name, "zero", variant(0), False, name
                    yield op, name, "not a divisor", variant(5), False, name

    for op, name, what, args, cpu_kernel, named in cases():
        case = f"{op}: {name} {what}"
        print(json.dumps({"case": case, "start": True}), flush=True)
        overload = getattr(ops, op).default
        try:
            if cpu_kernel:
                overload.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *args)
            else:
                overload(*args)
            result = {"error": None}
        except Exception as err:  # noqa: BLE001  (the parent checks type and message)
            result = {"error": type(err).__name__, "message": str(err).split("\n")[0]}
        print(json.dumps({"case": case, "name": named, **result}), flush=True)
    print(json.dumps({"done": True}), flush=True)
''')


@pytest.fixture(scope="module", params=["cpu", "cuda-like"])
def results(request):
    """The cases' outcomes with the CPU kernel profile "cpu", or "cuda" (cuda-like)."""
    if request.param == "cuda-like" and not has_kernel_profiles():
        pytest.skip("this build of ttfs_ext has no CPU kernel profiles (ttfs_ext._C._set_cpu_kernel_profile): "
                    "rebuild the extension to run the CPU kernels as CUDA drives its own")
    profile = "cuda" if request.param == "cuda-like" else "cpu"
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, profile], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    started = [line["case"] for line in lines if line.get("start")]
    assert proc.returncode == 0 and lines and lines[-1].get("done"), (
        f"the subprocess ended with status {proc.returncode} during {started[-1] if started else 'import'!r}:\n"
        f"{proc.stderr[-3000:]}")
    return [line for line in lines if "error" in line]


OPS = ["linear", "_linear_backward", "readout", "_readout_backward", "conv2d", "_conv2d_backward",
       "first_spike_linear", "_first_spike_linear_backward", "first_spike_conv2d", "_first_spike_conv2d_backward",
       "spide_forward_step", "spide_backward_step", "spike_conv2d"]


@pytest.mark.parametrize("op", OPS)
def test_every_wrong_argument_gets_a_clear_error(results, op):
    mine = [r for r in results if r["case"].split(":")[0] == op]
    assert len(mine) >= 15  # every tensor argument in several ways, the windows and the geometry
    failures = []
    for r in mine:
        if r["error"] not in ("RuntimeError", "ValueError", "TypeError"):
            failures.append(f"{r['case']}: {'returned' if r['error'] is None else r['error']}")
        elif r["name"] not in r["message"] or "ttfs_ext" not in r["message"]:
            failures.append(f"{r['case']}: the message does not name the op and {r['name']}: {r['message']}")
    assert not failures, "\n".join(failures)
