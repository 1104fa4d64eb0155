"""Fixed, seeded train/validation/test splits (stratified when labels are given)."""

from __future__ import annotations

import numpy as np

from attnlens._validation import check_array, check_int, check_random_state, check_scalar


def _count(fraction_or_count: float | int, n: int, name: str) -> int:
    if isinstance(fraction_or_count, (int, np.integer)) and not isinstance(fraction_or_count, bool):
        return check_int(fraction_or_count, name, low=0, high=n)
    frac = check_scalar(fraction_or_count, name, low=0.0, high=1.0, high_inclusive=False)
    return int(round(frac * n))


def train_val_test_split(
    n: int,
    val: float | int = 0.1,
    test: float | int = 0.2,
    seed: int = 0,
    stratify=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays ``(train, val, test)`` covering ``range(n)``.

    ``val`` and ``test`` are fractions in [0, 1) or absolute counts. With ``stratify``
    (labels of length n) every class is split in the same proportions (largest-remainder
    rounding, so the totals match the requested sizes exactly). The same ``seed`` always
    gives the same split.
    """
    n = check_int(n, "n", low=1)
    n_val, n_test = _count(val, n, "val"), _count(test, n, "test")
    if n_val + n_test >= n:
        raise ValueError(
            f"val + test must leave training items; got val={val!r} ({n_val}) and "
            f"test={test!r} ({n_test}) of n={n}. Use smaller fractions."
        )
    rng = check_random_state(seed, "seed")
    if stratify is None:
        perm = rng.permutation(n)
        return (np.sort(perm[n_val + n_test:]), np.sort(perm[:n_val]),
                np.sort(perm[n_val:n_val + n_test]))
    labels = check_array(stratify, "stratify", ndim=1, dtype=None)
    if len(labels) != n:
        raise ValueError(f"stratify must have length n={n}, got {len(labels)}.")
    classes, inverse = np.unique(labels, return_inverse=True)
    members = [rng.permutation(np.flatnonzero(inverse == c)) for c in range(len(classes))]
    sizes = np.array([len(m) for m in members])
    takes = []
    for total in (n_val, n_test):
        exact = sizes * total / n
        take = np.floor(exact).astype(int)
        order = np.argsort(-(exact - take), kind="stable")
        take[order[: total - take.sum()]] += 1
        takes.append(take)
    train, val_idx, test_idx = [], [], []
    for m, tv, tt in zip(members, takes[0], takes[1], strict=True):
        val_idx.append(m[:tv])
        test_idx.append(m[tv:tv + tt])
        train.append(m[tv + tt:])
    return (np.sort(np.concatenate(train)), np.sort(np.concatenate(val_idx)),
            np.sort(np.concatenate(test_idx)))
