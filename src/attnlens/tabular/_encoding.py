"""Per-column encoding of a table for NPT: standardized numbers, category codes, mask bits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from attnlens._validation import raise_invalid


@dataclass
class TableEncoder:
    """Learns, on the training table, the mean/std of numerical columns and the categories of the
    categorical ones; encodes rows as NPT's per-column inputs (value or one-hot, plus a mask bit).
    """

    categorical: tuple[int, ...] = ()
    means: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stds: np.ndarray = field(default_factory=lambda: np.ones(0))
    categories: dict[int, np.ndarray] = field(default_factory=dict)
    n_features: int = 0

    def fit(self, X: np.ndarray, caller: str) -> TableEncoder:
        self.n_features = X.shape[1]
        for j in self.categorical:
            if not 0 <= j < X.shape[1]:
                raise_invalid("categorical_features", f"column indices in [0, {X.shape[1]})", j,
                              "Index the columns of X.", caller)
            self.categories[j] = np.unique(X[:, j])
        self.means = X.mean(axis=0)
        std = X.std(axis=0)
        self.stds = np.where(std > 0, std, 1.0)
        return self

    @property
    def in_dims(self) -> list[int]:
        return [len(self.categories[j]) + 1 if j in self.categories else 2
                for j in range(self.n_features)]

    @property
    def out_dims(self) -> list[int]:
        return [len(self.categories[j]) if j in self.categories else 1
                for j in range(self.n_features)]

    @property
    def is_cat(self) -> list[bool]:
        return [j in self.categories for j in range(self.n_features)]

    def codes(self, X: np.ndarray, caller: str) -> np.ndarray:
        """(n, d) float: standardized numbers, integer codes (as floats) for categories."""
        Z = (X - self.means) / self.stds
        for j, cats in self.categories.items():
            idx = np.searchsorted(cats, X[:, j])
            idx = np.clip(idx, 0, len(cats) - 1)
            unseen = cats[idx] != X[:, j]
            if unseen.any():
                raise_invalid(
                    "X", f"categories of column {j} seen in fit ({len(cats)} values)",
                    f"got unseen value(s) {np.unique(X[unseen, j])[:5].tolist()}",
                    "Refit with these categories present, or map rare values to a shared one "
                    "before fit.", caller)
            Z[:, j] = idx
        return Z


def column_tensors(Z: np.ndarray, is_cat: list[bool], out_dims: list[int]) -> list[torch.Tensor]:
    """Unmasked per-column inputs: numerical (n, 2) [value, 0]; categorical (n, K+1) one-hot + 0."""
    cols = []
    Zt = torch.as_tensor(Z, dtype=torch.float32)
    for j, cat in enumerate(is_cat):
        if cat:
            c = torch.zeros(len(Z), out_dims[j] + 1)
            c[torch.arange(len(Z)), Zt[:, j].long()] = 1.0
        else:
            c = torch.stack([Zt[:, j], torch.zeros(len(Z))], 1)
        cols.append(c)
    return cols
