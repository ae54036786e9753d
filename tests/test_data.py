"""ttfs_ext.data: loaders of the official dataset files, on tiny files written in each format."""
from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ttfs_ext import data

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the real cache, $TTFS_EXT_DATA, system folders or network."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    # Entries replaced, not the dicts: the loaders' modules (ttfs_ext.data.sources) share them.
    assert set(data.SYSTEM_DIRS) == {"mnist", "fashion-mnist"}
    for name in data.SYSTEM_DIRS:
        monkeypatch.setitem(data.SYSTEM_DIRS, name, (str(tmp_path / "system" / name),))
    nowhere = (tmp_path / "no-mirror").as_uri() + "/"
    for name in data.MIRRORS:
        monkeypatch.setitem(data.MIRRORS, name, nowhere)


# ----------------------------------------------------------------------------------------------
# Writers of the official formats
# ----------------------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray) -> bytes:
    code = IDX_CODES[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> Path:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist(folder: Path, compress: bool = True, dotted: bool = False, n_train: int = 6, n_test: int = 4,
                seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        filename = name.replace("-idx", ".idx") if dotted else name
        write_idx(folder / (filename + (".gz" if compress else "")), array, compress)
    return arrays


def check_mnist(ds: data.Dataset, arrays: dict[str, np.ndarray], name: str, folder: Path) -> None:
    n_train, n_test = len(arrays[IDX_NAMES[1]]), len(arrays[IDX_NAMES[3]])
    assert ds.name == name and ds.classes == 10 and ds.source == str(folder)
    assert ds.x_train.shape == (n_train, 1, 28, 28) and ds.x_test.shape == (n_test, 1, 28, 28)
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    torch.testing.assert_close(ds.x_train[:, 0] * 255, torch.from_numpy(arrays[IDX_NAMES[0]]).float())
    torch.testing.assert_close(ds.x_test[:, 0] * 255, torch.from_numpy(arrays[IDX_NAMES[2]]).float())
    assert ds.y_train.tolist() == arrays[IDX_NAMES[1]].tolist()
    assert ds.y_test.tolist() == arrays[IDX_NAMES[3]].tolist()


def cifar_images(n: int, seed: int) -> np.ndarray:
    """(n, 3072) uint8 rows: image 0 is pure red, image 1 has a single green pixel at (5, 7),
    the others are random."""
    rows = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    rows[0] = 0
    rows[0, :1024] = 255                       # channel-major: the first 1024 values are red
    if n > 1:
        rows[1] = 0
        rows[1, 1024 + 5 * 32 + 7] = 200       # green plane, row 5, column 7
    return rows


def write_cifar10(folder: Path, n: int = 3, protocol: int = 2) -> dict[str, tuple[np.ndarray, list[int]]]:
    """cifar-10-batches-py in `folder`: five train batches and a test batch of `n` images each."""
    batches = {}
    out = folder / "cifar-10-batches-py"
    out.mkdir(parents=True)
    for i, member in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        rows, labels = cifar_images(n, seed=i), [(i + j) % 10 for j in range(n)]
        batch = {b"batch_label": b"batch", b"data": rows, b"labels": labels, b"filenames": [b"x.png"] * n}
        (out / member).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches[member] = (rows, labels)
    (out / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=protocol))
    return batches


def write_cifar100(folder: Path, n_train: int = 4, n_test: int = 3, protocol: int = 5) -> dict[str, dict]:
    out = folder / "cifar-100-python"
    out.mkdir(parents=True)
    batches = {}
    for i, (member, n) in enumerate((("train", n_train), ("test", n_test))):
        batch = {b"data": cifar_images(n, seed=10 + i), b"fine_labels": [99 - 7 * j - i for j in range(n)],
                 b"coarse_labels": [19 - j - i for j in range(n)], b"filenames": [b"x.png"] * n}
        (out / member).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches[member] = batch
    return batches


def make_archive(folder: Path, inner: str, archive: Path) -> Path:
    """The official layout: a .tar.gz holding the folder `inner` of `folder`."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder / inner, arcname=inner)
    return archive


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# read_idx
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_ubyte(tmp_path, compress):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    x = data.read_idx(write_idx(tmp_path / "images", images, compress))
    y = data.read_idx(write_idx(tmp_path / "labels", labels, compress))
    assert x.dtype == y.dtype == torch.uint8 and x.shape == (5, 28, 28) and y.shape == (5,)
    assert np.array_equal(x.numpy(), images) and np.array_equal(y.numpy(), labels)


@pytest.mark.parametrize("dtype, torch_dtype", [(np.int8, torch.int8), (np.int16, torch.int16),
                                                (np.int32, torch.int32), (np.float32, torch.float32),
                                                (np.float64, torch.float64)])
def test_read_idx_dtypes_round_trip(tmp_path, dtype, torch_dtype):
    array = (np.random.default_rng(1).standard_normal((2, 3, 4)) * 100).astype(dtype)
    t = data.read_idx(write_idx(tmp_path / "a.idx", array, compress=False))
    assert t.dtype == torch_dtype and t.shape == (2, 3, 4)
    assert np.array_equal(t.numpy(), array)
    t.add_(1)  # a writable, native-order tensor


def test_read_idx_detects_gzip_by_magic(tmp_path):
    array = np.arange(12, dtype=np.int32).reshape(3, 4)
    gz_without_suffix = tmp_path / "plain-name"
    gz_without_suffix.write_bytes(gzip.compress(idx_bytes(array)))
    raw_with_suffix = tmp_path / "raw.gz"
    raw_with_suffix.write_bytes(idx_bytes(array))
    for path in (gz_without_suffix, raw_with_suffix):
        assert np.array_equal(data.read_idx(path).numpy(), array)


def test_read_idx_errors_name_the_file(tmp_path):
    good = idx_bytes(np.zeros((2, 3), dtype=np.uint8))
    cases = {
        "bad-magic": (b"\x01\x00" + good[2:], "bad magic number"),
        "bad-code": (good[:2] + b"\x0a" + good[3:], "unknown IDX type code 0x0A"),
        "truncated": (good[:-1], "truncated file"),
        "trailing": (good + b"\x00", "trailing bytes"),
        "short-header": (good[:6], "truncated IDX header"),
        "empty": (b"", "bad magic number"),
    }
    for name, (raw, message) in cases.items():
        for compress in (False, True):
            path = tmp_path / f"{name}{'.gz' if compress else ''}"
            path.write_bytes(gzip.compress(raw) if compress else raw)
            with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + re.escape(message)):
                data.read_idx(path)
    corrupt = tmp_path / "corrupt.gz"
    corrupt.write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(ValueError, match=re.escape(str(corrupt)) + ".*corrupt gzip"):
        data.read_idx(corrupt)


# ----------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, loader", [("mnist", data.load_mnist), ("fashion-mnist", data.load_fashion_mnist)])
@pytest.mark.parametrize("compress, dotted", [(True, False), (False, False), (False, True), (True, True)])
def test_idx_datasets_from_root(tmp_path, name, loader, compress, dotted):
    folder = tmp_path / "root"
    arrays = write_mnist(folder, compress=compress, dotted=dotted)
    check_mnist(loader(root=folder), arrays, name, folder)
    check_mnist(loader(root=str(folder)), arrays, name, folder)


@pytest.mark.parametrize("subfolder", [True, False])
def test_idx_datasets_from_env(tmp_path, monkeypatch, subfolder):
    base = tmp_path / "datasets"
    folder = base / "fashion-mnist" if subfolder else base
    arrays = write_mnist(folder)
    monkeypatch.setenv(data.ENV_VAR, str(base))
    check_mnist(data.load_fashion_mnist(), arrays, "fashion-mnist", folder)


def test_idx_datasets_from_cache_and_system_dirs(tmp_path):
    cached = write_mnist(tmp_path / "home" / ".cache" / "ttfs_ext" / "mnist", seed=1)
    check_mnist(data.load_mnist(), cached, "mnist", tmp_path / "home" / ".cache" / "ttfs_ext" / "mnist")
    system = write_mnist(tmp_path / "system" / "fashion-mnist", seed=2)
    check_mnist(data.load_fashion_mnist(), system, "fashion-mnist", tmp_path / "system" / "fashion-mnist")


def test_search_order(tmp_path, monkeypatch):
    """root alone when given; else $TTFS_EXT_DATA/<name>, then $TTFS_EXT_DATA, then the cache."""
    in_root = write_mnist(tmp_path / "root", seed=1)
    in_sub = write_mnist(tmp_path / "env" / "mnist", seed=2)
    in_env = write_mnist(tmp_path / "env", seed=3)
    in_cache = write_mnist(tmp_path / "home" / ".cache" / "ttfs_ext" / "mnist", seed=4)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    check_mnist(data.load_mnist(root=tmp_path / "root"), in_root, "mnist", tmp_path / "root")
    check_mnist(data.load_mnist(), in_sub, "mnist", tmp_path / "env" / "mnist")
    # A mistyped root is an error, never replaced by the copy in $TTFS_EXT_DATA.
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_mnist(root=tmp_path / "nonexistent")
    message = str(info.value)
    assert f"{tmp_path / 'nonexistent'} (root): no such folder" in message and "only folder searched" in message
    assert str(tmp_path / "env") not in message.split("To get it")[0]
    check_mnist(data.load_fashion_mnist(), in_env, "fashion-mnist", tmp_path / "env")
    monkeypatch.delenv(data.ENV_VAR)
    check_mnist(data.load_mnist(), in_cache, "mnist", tmp_path / "home" / ".cache" / "ttfs_ext" / "mnist")


def test_idx_dataset_checks(tmp_path):
    folder = tmp_path / "bad-labels"
    write_mnist(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 10], dtype=np.uint8), compress=True)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: labels must be 0..9"):
        data.load_mnist(root=folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2], dtype=np.uint8), compress=True)
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz: expected 4 uint8 labels"):
        data.load_mnist(root=folder)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3], dtype=np.uint8), compress=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((6, 32, 32), dtype=np.uint8), compress=True)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: expected uint8 images of shape \(N, 28, 28\)"):
        data.load_mnist(root=folder)


@pytest.mark.parametrize("name, loader", [("mnist", data.load_mnist), ("fashion-mnist", data.load_fashion_mnist)])
def test_missing_idx_dataset(tmp_path, name, loader):
    root = tmp_path / "empty"
    root.mkdir()
    partial = tmp_path / "home" / ".cache" / "ttfs_ext" / name
    partial.mkdir(parents=True)
    write_idx(partial / "train-images-idx3-ubyte.gz", np.zeros((1, 28, 28), dtype=np.uint8), compress=True)
    with pytest.raises(data.DatasetNotFoundError) as info:
        loader()
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    for needle in (str(partial), str(tmp_path / "system" / name), *IDX_NAMES, "download=True",
                   data.ENV_VAR, "lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte", data.MIRRORS[name]):
        assert needle in message, needle
    assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")
    with pytest.raises(data.DatasetNotFoundError) as info:  # a given root is the only folder searched
        loader(root=root)
    assert str(root) in str(info.value) and str(partial) not in str(info.value)


# ----------------------------------------------------------------------------------------------
# CIFAR-10 and CIFAR-100
# ----------------------------------------------------------------------------------------------

def check_pattern(x: torch.Tensor) -> None:
    """The known pixels of cifar_images(): channel-major rows, row-major planes."""
    assert bool((x[0, 0] == 1).all()) and bool((x[0, 1:] == 0).all())
    assert x[1, 1, 5, 7] == pytest.approx(200 / 255) and float(x[1].sum()) == pytest.approx(200 / 255)


@pytest.mark.parametrize("from_archive", [False, True])
def test_cifar10(tmp_path, from_archive):
    written = write_cifar10(tmp_path / "extracted")
    root = tmp_path / "extracted"
    if from_archive:
        root = tmp_path / "archive"
        make_archive(tmp_path / "extracted", "cifar-10-batches-py", root / "cifar-10-python.tar.gz")
    ds = data.load_cifar10(root=root)
    assert ds.name == "cifar10" and ds.classes == 10 and ds.input_shape == (3, 32, 32)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert 0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1
    rows = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    torch.testing.assert_close(ds.x_train * 255, torch.from_numpy(rows.reshape(-1, 3, 32, 32)).float())
    assert ds.y_train.tolist() == sum((written[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    assert ds.y_test.tolist() == written["test_batch"][1]
    check_pattern(ds.x_test)
    check_pattern(ds.x_train)
    expected_source = root / "cifar-10-python.tar.gz" if from_archive else root / "cifar-10-batches-py"
    assert ds.source == str(expected_source)


def test_cifar10_root_is_the_extracted_folder(tmp_path, monkeypatch):
    write_cifar10(tmp_path)
    assert data.load_cifar10(root=tmp_path / "cifar-10-batches-py").n_train == 15
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    make_archive(tmp_path, "cifar-10-batches-py", tmp_path / "env" / "cifar10" / "cifar-10-python.tar.gz")
    assert data.load_cifar10().source == str(tmp_path / "env" / "cifar10" / "cifar-10-python.tar.gz")


@pytest.mark.parametrize("from_archive", [False, True])
@pytest.mark.parametrize("labels, key, classes, name", [("fine", b"fine_labels", 100, "cifar100"),
                                                        ("coarse", b"coarse_labels", 20, "cifar100-coarse")])
def test_cifar100(tmp_path, from_archive, labels, key, classes, name):
    written = write_cifar100(tmp_path / "extracted")
    root = tmp_path / "extracted"
    if from_archive:
        root = tmp_path / "home" / ".cache" / "ttfs_ext" / "cifar100"  # found in the cache
        make_archive(tmp_path / "extracted", "cifar-100-python", root / "cifar-100-python.tar.gz")
    ds = data.load_cifar100(root=None if from_archive else root, labels=labels)
    assert ds.name == name and ds.classes == classes
    assert ds.x_train.shape == (4, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.y_train.dtype == torch.int64
    assert ds.y_train.tolist() == written["train"][key] and ds.y_test.tolist() == written["test"][key]
    torch.testing.assert_close(ds.x_test * 255,
                               torch.from_numpy(written["test"][b"data"].reshape(-1, 3, 32, 32)).float())
    check_pattern(ds.x_train)
    check_pattern(ds.x_test)


def test_cifar100_bad_labels_argument(tmp_path):
    with pytest.raises(ValueError, match="'fine' or 'coarse'"):
        data.load_cifar100(root=tmp_path, labels="super")


def test_cifar_checks(tmp_path):
    write_cifar100(tmp_path)
    batch = pickle.loads((tmp_path / "cifar-100-python" / "test").read_bytes())
    batch[b"fine_labels"][0] = 100
    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="fine_labels must be 0..99"):
        data.load_cifar100(root=tmp_path)
    batch[b"fine_labels"][0] = 1
    batch[b"data"] = batch[b"data"][:, :100]
    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"expected uint8 data of shape \(N, 3072\)"):
        data.load_cifar100(root=tmp_path)
    batch = pickle.loads((tmp_path / "cifar-100-python" / "test").read_bytes())
    batch[b"data"] = cifar_images(len(batch[b"fine_labels"]), seed=10)
    batch[b"fine_labels"] = [float(v) + 0.7 for v in batch[b"fine_labels"]]  # never truncated to ints
    (tmp_path / "cifar-100-python" / "test").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="fine_labels must be integers, got float64"):
        data.load_cifar100(root=tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_cifar_refuses_foreign_pickles(tmp_path, capsys):
    write_cifar10(tmp_path)
    evil = tmp_path / "cifar-10-batches-py" / "test_batch"
    evil.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(ValueError, match=re.escape(str(evil)) + ".*refusing to load builtins.print"):
        data.load_cifar10(root=tmp_path)
    assert "must not run" not in capsys.readouterr().out


def test_missing_cifar(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        data.load_cifar10()
    message = str(info.value)
    for needle in ("cifar-10-batches-py", "cifar-10-python.tar.gz", "download=True", data.ENV_VAR,
                   str(tmp_path / "home" / ".cache" / "ttfs_ext" / "cifar10")):
        assert needle in message, needle
    assert "apt-get" not in message
    with pytest.raises(FileNotFoundError) as info:  # a given root: searched alone, and the download target
        data.load_cifar10(root=tmp_path)
    message = str(info.value)
    assert message.startswith(f"CIFAR-10 not found in the given root {tmp_path}\n")
    assert f"into {tmp_path} and checks the MD5" in message and ".cache" not in message


# ----------------------------------------------------------------------------------------------
# Downloading (from file:// mirrors written by the tests)
# ----------------------------------------------------------------------------------------------

def mirror_mnist(tmp_path: Path, monkeypatch, name: str) -> dict[str, np.ndarray]:
    mirror = tmp_path / "mirror"
    arrays = write_mnist(mirror)
    monkeypatch.setitem(data.MIRRORS, name, mirror.as_uri() + "/")
    monkeypatch.setitem(data.CHECKSUMS, name, {f"{n}.gz": md5(mirror / f"{n}.gz") for n in IDX_NAMES})
    return arrays


@pytest.mark.parametrize("name, loader", [("mnist", data.load_mnist), ("fashion-mnist", data.load_fashion_mnist)])
def test_download_idx_dataset(tmp_path, monkeypatch, name, loader):
    arrays = mirror_mnist(tmp_path, monkeypatch, name)
    root = tmp_path / "downloads"
    check_mnist(loader(root=root, download=True), arrays, name, root)
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{n}.gz" for n in IDX_NAMES)  # no leftovers
    for n in IDX_NAMES:
        (tmp_path / "mirror" / f"{n}.gz").unlink()
    check_mnist(loader(root=root, download=True), arrays, name, root)  # found: nothing downloaded


def test_download_into_cache(tmp_path, monkeypatch):
    arrays = mirror_mnist(tmp_path, monkeypatch, "fashion-mnist")
    cache = tmp_path / "home" / ".cache" / "ttfs_ext" / "fashion-mnist"
    assert data.cache_dir("fashion-mnist") == cache
    check_mnist(data.load_dataset("fmnist", download=True), arrays, "fashion-mnist", cache)


def test_download_cifar(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "extracted")
    archive = make_archive(tmp_path / "extracted", "cifar-10-batches-py", tmp_path / "mirror" / "cifar-10-python.tar.gz")
    monkeypatch.setitem(data.MIRRORS, "cifar10", (tmp_path / "mirror").as_uri())  # no trailing slash
    monkeypatch.setitem(data.CHECKSUMS, "cifar10", {"cifar-10-python.tar.gz": md5(archive)})
    with pytest.raises(data.DatasetNotFoundError):
        data.load_cifar10(root=tmp_path / "downloads")
    ds = data.load_cifar10(root=tmp_path / "downloads", download=True)
    assert ds.source == str(tmp_path / "downloads" / "cifar-10-python.tar.gz") and ds.n_train == 15
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == ["cifar-10-python.tar.gz"]
    check_pattern(ds.x_test)


def test_download_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    mirror_mnist(tmp_path, monkeypatch, "mnist")
    monkeypatch.setitem(data.CHECKSUMS["mnist"], "train-images-idx3-ubyte.gz", "0" * 32)
    root = tmp_path / "downloads"
    with pytest.raises(data.ChecksumError, match="MD5 .* does not match the expected 0{32}") as info:
        data.load_mnist(root=root, download=True)
    assert isinstance(info.value, FileNotFoundError)
    assert not root.exists()  # created for the download, removed with it
    root.mkdir()
    with pytest.raises(data.ChecksumError):
        data.load_mnist(root=root, download=True)
    assert list(root.iterdir()) == []  # an existing folder stays, empty


def test_download_failure_without_network(tmp_path):
    root = tmp_path / "downloads"
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_fashion_mnist(root=root, download=True)  # the mirror folder does not exist
    message = str(info.value)
    assert "download failed" in message and "apt-get install dataset-fashion-mnist" in message
    assert not root.exists()


def test_fetch_rejects_digits():
    with pytest.raises(ValueError, match="bundled"):
        data.fetch("digits")


# ----------------------------------------------------------------------------------------------
# digits, dispatch, batches, subset
# ----------------------------------------------------------------------------------------------

def test_load_digits():
    pytest.importorskip("sklearn")
    ds = data.load_digits()
    assert ds.name == "digits" and ds.classes == 10 and ds.input_shape == (1, 8, 8)
    assert ds.n_train + ds.n_test == 1797 and ds.n_test == round(0.2 * 1797)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    again, other = data.load_digits(), data.load_digits(seed=1)
    assert torch.equal(ds.x_test, again.x_test) and torch.equal(ds.y_train, again.y_train)
    assert not torch.equal(ds.y_test, other.y_test)
    assert data.load_digits(test_fraction=0.5).n_test == round(0.5 * 1797)
    from ttfs_ext.cli.demo import load_digits as demo_digits  # the same split as `ttfs convert`
    assert torch.equal(demo_digits(0)[3], ds.y_test)
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits(test_fraction=1.0)


def test_load_dataset_dispatch(tmp_path):
    arrays = write_mnist(tmp_path / "idx")
    for alias, name in (("mnist", "mnist"), ("fashion-mnist", "fashion-mnist"), ("fashion_mnist", "fashion-mnist"),
                        ("FMNIST", "fashion-mnist")):
        check_mnist(data.load_dataset(alias, root=tmp_path / "idx"), arrays, name, tmp_path / "idx")
    write_cifar10(tmp_path / "c10")
    assert data.load_dataset("cifar10", root=tmp_path / "c10").name == "cifar10"
    write_cifar100(tmp_path / "c100")
    assert data.load_dataset("cifar-100", root=tmp_path / "c100", labels="coarse").classes == 20
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid names: digits, mnist, fashion-mnist"):
        data.load_dataset("imagenet")
    assert data.canonical_name(" Fashion_MNIST ") == "fashion-mnist" and data.canonical_name("cifar-10") == "cifar10"
    pytest.importorskip("sklearn")
    assert data.load_dataset("digits", seed=3).n_test == round(0.2 * 1797)


def test_iterate_batches():
    x = torch.arange(10, dtype=torch.float32).reshape(10, 1) * 10
    y = torch.arange(10)
    batches = list(data.iterate_batches(x, y, 4, generator=torch.Generator().manual_seed(0)))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    seen = torch.cat([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(10)) and seen.tolist() != list(range(10))
    assert all(torch.equal(bx[:, 0], by.float() * 10) for bx, by in batches)  # x and y stay paired
    again = list(data.iterate_batches(x, y, 4, generator=torch.Generator().manual_seed(0)))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert torch.equal(seen, torch.randperm(10, generator=torch.Generator().manual_seed(0)))
    ordered = list(data.iterate_batches(x, y, 4, shuffle=False, drop_last=True))
    assert [b[1].tolist() for b in ordered] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(list(data.iterate_batches(x, y, 5, drop_last=True))) == 2
    with pytest.raises(ValueError, match="batch_size"):
        data.iterate_batches(x, y, 0)
    with pytest.raises(ValueError, match="differ in length"):
        data.iterate_batches(x, y[:5], 2)


def test_subset_and_summary(tmp_path):
    write_mnist(tmp_path, n_train=6, n_test=4)
    ds = data.load_mnist(root=tmp_path)
    small = data.subset(ds, n_train=3)
    assert small.n_train == 3 and small.n_test == 4 and torch.equal(small.x_train, ds.x_train[:3])
    assert data.subset(ds, n_test=1).n_test == 1
    assert ds.summary() == f"mnist: 6 train / 4 test images of 1x28x28, 10 classes (from {tmp_path})"
    assert repr(ds) == f"Dataset({ds.summary()})" and len(repr(ds)) < 200
    with pytest.raises(ValueError, match="n_train"):
        data.subset(ds, n_train=-1)
    with pytest.raises(ValueError, match="labels"):
        data.Dataset("bad", ds.x_train, ds.y_train[:2], ds.x_test, ds.y_test, 10, "test")


# ----------------------------------------------------------------------------------------------
# The real files of Debian's dataset-fashion-mnist package, where installed
# ----------------------------------------------------------------------------------------------

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist():
    ds = data.load_fashion_mnist(root=DEBIAN_FASHION_MNIST)
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10 and torch.bincount(ds.y_test).tolist() == [1000] * 10
    assert 0.0 == float(ds.x_train.min()) and float(ds.x_train.max()) == 1.0
