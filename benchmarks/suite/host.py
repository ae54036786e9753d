"""What the benchmark scripts do to their host, and only they: ask git for the commit, rewrite
the generated parts of README.md, tune glibc's malloc for the whole process."""
from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path
from typing import Optional, Union

__all__ = ["ROOT", "git", "git_state", "replace_between_markers", "tune_cpu_allocator"]

ROOT = Path(__file__).resolve().parents[2]  # the repository's root

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, (1 << 31) - 1


def git(*args: str) -> Optional[str]:
    """The output of `git args...` in the repository, or None where git or the checkout is missing."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_state() -> dict[str, Optional[object]]:
    """{"git_commit": the full hash, "git_dirty": uncommitted changes?} (None where unknown)."""
    status = git("status", "--porcelain")
    return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}


def replace_between_markers(path: Union[str, Path], begin: str, end: str, text: str) -> bool:
    """Replace the text between the markers `begin` and `end` of the file with `text`; False
    (and nothing written) when the markers are absent or out of order."""
    path = Path(path)
    content = path.read_text()
    if begin not in content or end not in content or content.index(begin) > content.index(end):
        return False
    start, stop = content.index(begin) + len(begin), content.index(end)
    path.write_text(content[:start] + "\n" + text.strip("\n") + "\n" + content[stop:])
    return True


def tune_cpu_allocator() -> Optional[dict[str, int]]:
    """Keep freed memory in the heap for the rest of the process: fixed glibc malloc thresholds
    (mmap above 32 MiB only, never trim). By default glibc hands freed blocks above a moving
    threshold back to the OS and the next call page-faults them in again, so a timing depends
    on the heap's history (benchmarks/NOTES.md: "the machine's noise was mostly the
    allocator"). A caching allocator (CUDA's, or tcmalloc/jemalloc, which PyTorch's CPU tuning
    guide recommends) behaves like the tuned setting. Returns the settings, or None where malloc
    is not glibc's."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) != 1 or mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) != 1:
        return None
    return {"M_MMAP_THRESHOLD": _MMAP_THRESHOLD, "M_TRIM_THRESHOLD": _TRIM_THRESHOLD}
