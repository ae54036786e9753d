"""scikit-learn's bundled 8x8 digits (no files, no download)."""
from __future__ import annotations

import torch

from .dataset import Dataset

__all__ = ["load_digits"]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, no download): images / 16 of shape
    (N, 1, 8, 8), split by a permutation seeded with ``seed``: the first
    ``round(test_fraction * 1797)`` permuted images are the test set (as ``ttfs convert`` does)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:
        raise ImportError("load_digits needs scikit-learn (it bundles the digits): pip install scikit-learn") from err
    digits = sklearn_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return Dataset("digits", x[train], y[train], x[test], y[test], classes=10,
                   source="sklearn.datasets.load_digits (bundled with scikit-learn)")

