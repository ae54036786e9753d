"""Where the dataset files are: the names, the folders searched, the official URLs and
checksums, and downloading with verification."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

from .dataset import ChecksumError, DatasetNotFoundError, PathLike

__all__ = ["ENV_VAR", "DATASETS", "MIRRORS", "CHECKSUMS", "SYSTEM_DIRS", "canonical_name", "cache_dir", "fetch",
           "locate"]

#: Environment variable naming a folder that holds the datasets (or their subfolders).
ENV_VAR = "TTFS_EXT_DATA"

#: Canonical dataset names accepted by :func:`load_dataset`.
DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")

#: Base URLs of the official files; point an entry elsewhere (e.g. a ``file://`` folder) to use a mirror.
MIRRORS: dict[str, str] = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
    "cifar100": "https://www.cs.toronto.edu/~kriz/",
}

#: The files ``download=True`` fetches, with the MD5 of the official files.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
}

#: Folders searched last, after root, $TTFS_EXT_DATA and the cache (system-wide installs).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("/usr/share/datasets/mnist",),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),  # Debian: apt-get install dataset-fashion-mnist
}

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
_LOADERS = {"mnist": "load_mnist", "fashion-mnist": "load_fashion_mnist", "cifar10": "load_cifar10",
            "cifar100": "load_cifar100"}


_ALIASES = {
    "digits": "digits", "mnist": "mnist",
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar100": "cifar100", "cifar-100": "cifar100",
}


def canonical_name(name: str) -> str:
    """The canonical name of a dataset ("FMNIST" -> "fashion-mnist"); ValueError for unknown names."""
    try:
        return _ALIASES[name.strip().lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown dataset {name!r}; valid names: digits, mnist, fashion-mnist "
                         "(or fashion_mnist, fmnist), cifar10, cifar100") from None


# ----------------------------------------------------------------------------------------------
# Where the files are
# ----------------------------------------------------------------------------------------------

def cache_dir(name: Optional[str] = None) -> Path:
    """``~/.cache/ttfs_ext`` (or its subfolder ``name``): where ``download=True`` puts files."""
    base = Path.home() / ".cache" / "ttfs_ext"
    return base / name if name else base


def _search_dirs(name: str, root: Optional[PathLike]) -> list[tuple[Path, str]]:
    """The folders to look in, in order, each with a word on why it is searched: root alone
    when it is given."""
    if root is not None:
        return [(Path(root).expanduser(), "root")]
    dirs: list[tuple[Path, str]] = []
    env = os.environ.get(ENV_VAR)
    if env:
        base = Path(env).expanduser()
        dirs += [(base / name, f"${ENV_VAR}/{name}"), (base, f"${ENV_VAR}")]
    dirs.append((cache_dir(name), "cache"))
    dirs += [(Path(d), "system") for d in SYSTEM_DIRS.get(name, ())]
    seen: set[Path] = set()
    unique = []
    for d, why in dirs:
        if d not in seen:
            seen.add(d)
            unique.append((d, why))
    return unique


def _not_found(name: str, searched: list[tuple[Path, str]], notes: dict[Path, str], expected: str,
               cause: Optional[str] = None, error: type = DatasetNotFoundError) -> DatasetNotFoundError:
    """The error raised when a dataset is not found (or its download failed), saying how to get it."""
    title, loader = _TITLES[name], _LOADERS[name]
    urls = ", ".join(MIRRORS[name].rstrip("/") + "/" + f for f in CHECKSUMS[name])
    root = searched[0][0] if [why for _, why in searched] == ["root"] else None
    if cause:
        headline = f"{title}: {cause}"
    elif root is not None:
        headline = f"{title} not found in the given root {root}" + ("" if root.is_dir() else " (no such folder)")
    else:
        headline = f"{title} not found."
    lines = [headline, "Searched, in order:"]
    for d, why in searched:
        note = f": {notes[d]}" if d in notes else ("" if d.is_dir() else ": no such folder")
        lines.append(f"  {d} ({why}){note}")
    if [why for _, why in searched] == ["root"]:
        lines.append("  (a given root is the only folder searched)")
    elif not os.environ.get(ENV_VAR):
        lines.append(f"  (the environment variable {ENV_VAR} is not set)")
    lines += [
        f"Expected: {expected}.",
        "To get it:",
        f"  * ttfs_ext.data.{loader}(download=True) (or load_dataset({name!r}, download=True); ttfs train "
        f"--download) downloads {urls} into {root if root is not None else cache_dir(name)} and checks the MD5;",
        f"  * or download it yourself from {MIRRORS[name]} into " + (
            f"{root}." if root is not None else
            f"one of the folders above, or into a folder named by the environment variable {ENV_VAR} (or its "
            f"subfolder {name}/)."),
    ]
    if name == "fashion-mnist":
        lines.append("  * on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist "
                     "(installs the four .gz files in /usr/share/datasets/fashion-mnist).")
    return error("\n".join(lines))


# ----------------------------------------------------------------------------------------------
# Downloading
# ----------------------------------------------------------------------------------------------

def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_file(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to a temporary file next to ``dest``; move it there only if its MD5 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumError(f"{url}: MD5 {digest.hexdigest()} does not match the expected {md5}; "
                                f"the download was discarded ({dest.name} was not written). "
                                f"Check ttfs_ext.data.MIRRORS[...] or fetch the file by hand.")
        os.replace(tmp, dest)  # atomic: dest is either absent or complete
    finally:
        tmp.unlink(missing_ok=True)


def fetch(name: str, root: Optional[PathLike] = None) -> Path:
    """Download the official files of ``name`` ("mnist", "fashion-mnist", "cifar10", "cifar100")
    from :data:`MIRRORS` into ``root`` or ``~/.cache/ttfs_ext/<name>``, checking each against
    :data:`CHECKSUMS`; files already there with the right checksum are kept. Returns the folder.

    Raises:
        ChecksumError: a file does not match its checksum (it is not kept).
        OSError: the download failed (urllib.error.URLError, no network, ...).
    """
    name = canonical_name(name)
    if name not in CHECKSUMS:
        raise ValueError(f"{name!r} has no files to download (it is bundled with scikit-learn)")
    target = Path(root).expanduser() if root is not None else cache_dir(name)
    created = not target.exists()
    try:
        for filename, md5 in CHECKSUMS[name].items():
            dest = target / filename
            if dest.is_file() and _md5(dest) == md5:
                continue
            _fetch_file(MIRRORS[name].rstrip("/") + "/" + filename, dest, md5)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                target.rmdir()  # only if still empty: files already verified are kept
        raise
    return target


def locate(name: str, root: Optional[PathLike], download: bool, find: Callable[[Path], tuple[Any, str]],
            expected: str) -> Any:
    """Search the folders for a dataset with ``find`` (folder -> (location or None, note)); with
    ``download``, fetch it when it is nowhere. Raises DatasetNotFoundError when it is still missing."""
    searched = _search_dirs(name, root)
    notes: dict[Path, str] = {}
    for d, _ in searched:
        if d.is_dir():
            location, note = find(d)
            if location is not None:
                return location
            if note:
                notes[d] = note
    if not download:
        raise _not_found(name, searched, notes, expected)
    try:
        target = fetch(name, root)
    except ChecksumError as err:
        raise _not_found(name, searched, notes, expected, cause=f"download failed: {err}", error=ChecksumError) from err
    except (OSError, http.client.HTTPException) as err:
        raise _not_found(name, searched, notes, expected, cause=f"download failed ({err}).") from err
    location, note = find(target)
    if location is None:
        raise _not_found(name, searched, {target: note} if note else {}, expected,
                         cause=f"the downloaded files in {target} are incomplete.")
    return location

