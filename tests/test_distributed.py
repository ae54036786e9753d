"""Training at scale (ttfs_ext.train.distributed, `ttfs train --dataset places365`, torchrun):
the samplers, the schedule, and end to end on CPU with gloo: a 2-process run equals the
1-process run with the same global batch, a worker killed mid-epoch is restarted by torchrun and
the run ends with exactly the weights of an uninterrupted one, and `ttfs validate` agrees with
itself across process counts. Data: a synthetic Places365 in the official layout (with a
corrupt JPEG and nested class names), written by the tests."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ttfs_ext.train import distributed as dd

WORKER = Path(__file__).with_name("ddp_worker.py")


# --- samplers and schedule -----------------------------------------------------------------------------

@pytest.mark.parametrize("world,accumulation", [(1, 1), (2, 1), (2, 2), (4, 1), (3, 2)])
@pytest.mark.parametrize("seed", [0, 1729, 2**31 - 1])
def test_ranks_and_micro_batches_partition_the_global_batch(world, accumulation, seed):
    size, global_batch = 97, 12
    single = dd.GlobalBatchSampler(size, global_batch, seed=seed)
    single.set_epoch(3)
    global_batches = list(single)
    parts = [dd.GlobalBatchSampler(size, global_batch, r, world, accumulation, seed) for r in range(world)]
    for p in parts:
        p.set_epoch(3)
    per_rank = [list(p) for p in parts]
    assert len(global_batches) == size // global_batch
    for step, batch in enumerate(global_batches):
        union = [key for r in range(world) for a in range(accumulation)
                 for key in per_rank[r][step * accumulation + a]]
        assert sorted(union) == sorted(batch)  # same samples and the same augmentation seeds
        assert all(len(per_rank[r][step * accumulation + a]) == global_batch // (world * accumulation)
                   for r in range(world) for a in range(accumulation))
    seen = [i for batch in global_batches for i, _ in batch]
    assert len(set(seen)) == len(seen) == (size // global_batch) * global_batch


@pytest.mark.parametrize("seed", [0, 1729, 2**31 - 1])
def test_a_resumed_epoch_sees_every_sample_once(seed):
    for rank in range(2):
        whole = dd.GlobalBatchSampler(64, 8, rank, 2, 2, seed)
        whole.set_epoch(1)
        batches = list(whole)
        resumed = dd.GlobalBatchSampler(64, 8, rank, 2, 2, seed)
        resumed.set_epoch(1, start_step=3)
        assert list(resumed) == batches[3 * 2:]
        assert len(resumed) == len(batches) - 6
    # Epochs differ in order and in augmentation seeds.
    s = dd.GlobalBatchSampler(64, 8, seed=seed)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert [k for b in e0 for k in b] != [k for b in e1 for k in b]
    assert {i for b in e0 for i, _ in b} == {i for b in e1 for i, _ in b}


def test_sampler_refuses_what_cannot_split():
    with pytest.raises(ValueError, match="multiple of world size x accumulation"):
        dd.GlobalBatchSampler(100, 10, 0, 4, 1)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        dd.GlobalBatchSampler(5, 8)
    s = dd.GlobalBatchSampler(32, 8)
    with pytest.raises(ValueError, match="start_step"):
        s.set_epoch(0, start_step=5)


def test_shards_cover_the_split_once():
    shards = [list(dd.ShardSampler(23, 4, r, 3)) for r in range(3)]
    seen = sorted(i for shard in shards for batch in shard for i in batch)
    assert seen == list(range(23))


def test_schedule_warmup_cosine_and_steps():
    p = torch.nn.Parameter(torch.zeros(1))
    for kind in ("cosine", "step", "constant"):
        opt = torch.optim.SGD([p], lr=0.4)
        sched = dd.make_schedule(opt, total_steps=20, warmup_steps=4, kind=kind, milestones=[10])
        lrs = []
        for _ in range(20):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
        if kind == "cosine":
            assert lrs[4] == pytest.approx(0.4) and lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
        elif kind == "step":
            assert lrs[9] == pytest.approx(0.4) and lrs[10] == pytest.approx(0.04)
        else:
            assert lrs[4:] == pytest.approx([0.4] * 16)
    with pytest.raises(ValueError, match="unknown schedule"):
        dd.make_schedule(torch.optim.SGD([p], lr=1.0), 10, kind="linear")


def test_sample_seeds_are_distinct_and_stable():
    seeds = {dd.sample_seed(0, e, i) for e in range(4) for i in range(1000)}
    assert len(seeds) == 4000 and all(0 <= s < 2**63 for s in seeds)
    assert dd.sample_seed(5, 2, 7) == dd.sample_seed(5, 2, 7)


# --- end to end: torchrun on CPU -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    pytest.importorskip("PIL")
    from ttfs_ext.data import places365
    root = tmp_path_factory.mktemp("places365")
    places365.make_synthetic_places365(root, classes=("a/airfield", "s/swimming_pool/indoor", "s/swimming_pool/outdoor",
                                                      "b/bedroom"), train_per_class=10, val_per_class=4, test_count=4,
                                       size=(40, 36), corrupt=1, seed=3)
    return root


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    python_dir = str(Path(__import__("ttfs_ext").__file__).parents[1])
    env["PYTHONPATH"] = os.pathsep.join([python_dir] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


TRAIN = ["train", "--dataset", "places365", "--model", "vgg-small", "--image-size", "32", "--batch-size", "8",
         "--epochs", "2", "--dtype", "float64", "--optimizer", "adam", "--lr", "0.02", "--workers", "1",
         "--calibration-images", "8", "--no-progress", "--no-plots", "--json"]


def _run(args: list[str], nproc: int = 0, restarts: int = 0, env: dict = None, timeout: int = 240):
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               f"--max-restarts={restarts}", str(WORKER)] + args
    else:
        cmd = [sys.executable, str(WORKER)] + args
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**_env(), **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _state(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", weights_only=True)


@pytest.fixture(scope="module")
def two_process_run(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp2") / "run"
    _run(TRAIN + ["--data-dir", str(data_dir), "--out", str(out), "--accumulate", "2"], nproc=2,
         env={"TTFS_TEST_WIDTHS_DIR": str(out.parent)})
    return out


def test_two_processes_equal_one_with_the_same_global_batch(data_dir, two_process_run, tmp_path):
    single = tmp_path / "single"
    proc = _run(TRAIN + ["--data-dir", str(data_dir), "--out", str(single)])  # no torchrun: one process
    summary = json.loads(proc.stdout[proc.stdout.index("{"):])["summary"]
    a, b = _state(single), _state(two_process_run)
    assert a["world_size"] == 1 and b["world_size"] == 2
    for key, value in a["model"].items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(b["model"][key], value, rtol=1e-9, atol=1e-12, msg=key)
    wa, wb = a["model"]["_extra_state"]["widths"], b["model"]["_extra_state"]["widths"]
    assert wb == pytest.approx(wa, rel=1e-12)
    for ra, rb in zip(a["history"], b["history"]):
        for key in ("loss", "top1", "top5", "images", "unreadable", "spikes_per_neuron"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-9), key
        assert rb["val"]["top1"] == pytest.approx(ra["val"]["top1"])
        assert rb["val"]["agreement"] == pytest.approx(ra["val"]["agreement"])
    # The corrupt JPEG was skipped and counted once per epoch, in both.
    assert [r["unreadable"] for r in a["history"]] == [1, 1] == [r["unreadable"] for r in b["history"]]
    assert summary["epoch"] == 2 and summary["images"] == 40 - 1  # 4 classes x 10 images, 5 steps of 8
    # Both ranks of the 2-process run ended with the same windows.
    ranks = [json.loads((two_process_run.parent / f"widths_rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] == wb
    rows = (two_process_run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_agreement" in rows[0]


def test_a_killed_worker_is_restarted_and_the_run_ends_exactly(data_dir, two_process_run, tmp_path):
    out = tmp_path / "faulted"
    # Rank 1 dies after optimizer step 3 of 10 on the first attempt (mid-epoch; a checkpoint every 2 steps).
    proc = _run(TRAIN + ["--data-dir", str(data_dir), "--out", str(out), "--accumulate", "2",
                         "--checkpoint-every", "2"], nproc=2, restarts=1,
                env={"TTFS_TEST_FAIL_AT_STEP": "3", "TTFS_TEST_FAIL_RANK": "1"})
    a, b = _state(two_process_run), _state(out)
    # torchrun's second attempt resumed the checkpoint of step 2 (mid-epoch 1), by itself.
    assert b["resumes"] == [{"epoch": 0, "step": 2, "global_step": 2, "restart_count": 1}] and a["resumes"] == []
    for key, value in a["model"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(b["model"][key], value), key
        else:
            assert b["model"][key] == value
    assert [r["loss"] for r in b["history"]] == [r["loss"] for r in a["history"]]
    assert b["global_step"] == a["global_step"] == 10


@pytest.mark.parametrize("fail_at", [1, 3, 6])
def test_a_killed_rank_0_with_dataloader_workers_restarts_on_its_run_lock(data_dir, two_process_run, tmp_path,
                                                                          fail_at):
    """Rank 0 holds the run lock and forks 2 DataLoader workers; when it dies, the workers linger
    (they poll their parent every few seconds) but must not hold the lock: torchrun's restarted
    rank 0 takes it at once and the run ends with the uninterrupted run's weights (the data order
    does not depend on --workers)."""
    out = tmp_path / "rank0"
    _run(TRAIN + ["--data-dir", str(data_dir), "--out", str(out), "--accumulate", "2", "--checkpoint-every", "2",
                  "--workers", "2"], nproc=2, restarts=1,
         env={"TTFS_TEST_FAIL_AT_STEP": str(fail_at), "TTFS_TEST_FAIL_RANK": "0"})
    a, b = _state(two_process_run), _state(out)
    assert [r["restart_count"] for r in b["resumes"]] == ([1] if fail_at >= 2 else [])
    for key, value in a["model"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(b["model"][key], value), key
    assert b["global_step"] == a["global_step"] == 10
    assert not (out / ".ttfs-train.lock").exists()


def test_validate_is_the_same_on_one_and_two_processes(data_dir, two_process_run, tmp_path):
    reports = []
    for nproc in (0, 2):
        target = tmp_path / f"report{nproc}"
        _run(["validate", "--checkpoint", str(two_process_run / "checkpoint.pt"), "--data-dir", str(data_dir),
              "--workers", "0", "--eval-batch-size", "3", "--out", str(target), "--no-progress"], nproc=nproc)
        reports.append(json.loads((target / "validate.json").read_text()))
    one, two = reports
    assert one["images"] == two["images"] == 16 and one["world_size"] == 1 and two["world_size"] == 2
    for key in ("top1", "top5", "relu_top1", "agreement", "loss", "spikes_per_neuron"):
        assert two[key] == pytest.approx(one[key], rel=1e-9), key
    # The training run's last validation saw the same network on the same images.
    assert one["top1"] == pytest.approx(_state(two_process_run)["history"][-1]["val"]["top1"])


def test_an_existing_run_is_never_replaced(data_dir, two_process_run):
    proc = subprocess.run([sys.executable, str(WORKER)] + TRAIN + ["--data-dir", str(data_dir), "--out",
                                                                  str(two_process_run)],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    proc = subprocess.run([sys.executable, str(WORKER)] + TRAIN + ["--data-dir", str(data_dir / "nowhere"), "--out",
                                                                  str(two_process_run.parent / "x")],
                          capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 2 and "error" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def relu_checkpoint(tmp_path_factory) -> Path:
    """A ReLU VGG of torchvision's layout (vgg_small_relu) with random weights, as a user's checkpoint."""
    from ttfs_ext.train.vgg16 import vgg_small_relu
    torch.manual_seed(233)
    path = tmp_path_factory.mktemp("relu") / "vgg_small.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in vgg_small_relu(4).state_dict().items()}}, path)
    return path


def test_a_converted_network_is_exact_on_every_rank(data_dir, relu_checkpoint, tmp_path):
    """Rank 0 converts the ReLU checkpoint, the other rank takes its network: on the validation
    split the SNN decides as the ReLU network on every image; then both ranks fine-tune it."""
    target = tmp_path / "converted"
    _run(["validate", "--relu-checkpoint", str(relu_checkpoint), "--model", "vgg-small", "--image-size", "32",
          "--data-dir", str(data_dir), "--calibration-images", "8", "--workers", "0", "--out", str(target),
          "--no-progress"], nproc=2)
    report = json.loads((target / "validate.json").read_text())
    assert report["images"] == 16 and report["agreement"] == 1.0
    assert report["top1"] == report["relu_top1"] and report["top5"] == report["relu_top5"]
    assert report["spikes_per_neuron"] < 1
    out = tmp_path / "finetune"
    _run(TRAIN + ["--data-dir", str(data_dir), "--out", str(out), "--relu-checkpoint", str(relu_checkpoint),
                  "--epochs", "1", "--dtype", "float32"], nproc=2)
    state = _state(out)
    assert state["extra"]["config"]["windows"] == "fixed"  # the converted windows are kept
    assert state["history"][0]["val"]["images"] == 16


# --- in one process: precision and compile ---------------------------------------------------------------

def _tiny_run(**options):
    from ttfs_ext.train import CalibratedWindows, fc2
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(6)
    x, y = torch.rand(48, 1, 4, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
    net = fc2(16, 12, 3, input_shape=(1, 4, 4))
    # lr 0.1: at 0.5 the run diverged to non-finite spike times on one CPU's rounding (AVX2) and not
    # on another's: a test of precision and compile must not ride on a trajectory at its edge.
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    history = dd.fit_distributed(net, dd.KeyedTensorDataset(x, y), dd.KeyedTensorDataset(x[:9], y[:9]), dd.Context(),
                                 epochs=2, global_batch=8, optimizer=opt, windows=CalibratedWindows(), seed=2,
                                 progress=False, **options)
    return net, history


def test_bfloat16_autocast_and_compile_train_the_same_network():
    """bf16 on the CPU: the layers' GEMMs run in bfloat16 under autocast (spike times and the
    master weights float32), so the run follows the float32 run to bfloat16's precision;
    torch.compile of the training forward gives the float32 run (float tolerance)."""
    plain, h_plain = _tiny_run()
    bf16, h_bf16 = _tiny_run(precision="bf16")
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    for a, b in zip(plain.parameters(), bf16.parameters()):  # 2 epochs of 6 steps at lr 0.1
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.02)
    assert [r["loss"] for r in h_bf16] == pytest.approx([r["loss"] for r in h_plain], rel=0.02)
    compiled, h_compiled = _tiny_run(compile=True)
    for a, b in zip(plain.parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert h_compiled[-1]["val"]["top1"] == h_plain[-1]["val"]["top1"]
    with pytest.raises(ValueError, match="precision"):
        _tiny_run(precision="fp16")


def test_command_line_mistakes_are_one_line_errors(data_dir, tmp_path, capsys):
    from ttfs_ext.cli.main import main
    base = ["train", "--dataset", "places365", "--model", "vgg-small", "--image-size", "32", "--workers", "0",
            "--out", str(tmp_path / "run"), "--no-progress"]
    cases = [
        (base, "needs --data-dir"),
        (base + ["--data-dir", str(data_dir), "--noise", "0.1"], "--noise: not available at scale"),
        (base + ["--data-dir", str(data_dir), "--batch-size", "6", "--accumulate", "4"], "must be a multiple"),
        (base + ["--data-dir", str(data_dir), "--batch-size", "64"], "exceeds the 40 training images"),
        (base + ["--data-dir", str(tmp_path / "missing")], "places2.csail.mit.edu"),
        (base + ["--data-dir", str(data_dir), "--relu-checkpoint", str(tmp_path / "none.pth")], "none.pth"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, (argv, err)
