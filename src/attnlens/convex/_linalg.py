"""The linear algebra the convex solvers share: SVD, singular-value thresholding, norms.

Also the BLAS thread limiter those routines run under, the default seed of every randomized
routine of :mod:`attnlens.convex` and the progress bar of its iterative solvers.

LAPACK's SVD on tall-skinny blocks is 10-100x slower with 2 OpenBLAS threads when the cores
are shared (measured: 1024x64 block, 15 ms on 1 thread vs 0.6-2 s on 2 under load); the
blocks are small, so the SVDs and Gram eigendecompositions run single-threaded.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import scipy.linalg
import torch
from threadpoolctl import ThreadpoolController

from attnlens.errors import NonFiniteError

logger = logging.getLogger(__name__)

#: seed of the power iterations and BM starts when no ``rng`` is given (runs are reproducible)
DEFAULT_SEED = 0

#: blocks whose smaller side reaches this size use the Gram eigendecomposition in the
#: iterations (``Z^T Z`` is small; LAPACK's SVD of a 2304 x 480 block is ~10x slower)
GRAM_SVT_MIN = 128

#: :func:`svt` thresholds through the small Gram's eigendecomposition from this smaller side
#: on (measured on one thread: 144 x 120, the (2000,16,12,10) self-attention block, 2.1 ms vs
#: LAPACK's SVD 3.6 ms; 64 x 80, 0.6 vs 1.1 ms; same result to 1e-14). The Gram squares the
#: singular values, so those below ``sqrt(eps) s_max`` are lost -- they are thresholded away
#: (``tau`` is far above) -- and the certificates use LAPACK's SVD, never this estimate.
SVT_GRAM_MIN = 32

_THREADS = ThreadpoolController()


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the enclosed block with BLAS/LAPACK limited to one thread."""
    with _THREADS.limit(limits=1, user_api="blas"):
        yield


def svd(Z: np.ndarray, compute_uv: bool = True):
    """``np.linalg.svd(Z, full_matrices=False)`` on one BLAS thread (see the module doc).

    LAPACK's divide-and-conquer driver (``gesdd``, numpy's) can report non-convergence on a
    finite block; the QR-iteration driver (``gesvd``, through scipy) is then tried. A block
    with NaN or infinite entries raises :class:`~attnlens.errors.NonFiniteError`.
    """
    try:
        if Z.size <= 4096:  # tiny: LAPACK stays single-threaded; skip the limiter's overhead
            return np.linalg.svd(Z, full_matrices=False, compute_uv=compute_uv)
        with one_blas_thread():
            return np.linalg.svd(Z, full_matrices=False, compute_uv=compute_uv)
    except np.linalg.LinAlgError:
        bad = int(Z.size - np.count_nonzero(np.isfinite(Z)))
        if bad:
            raise NonFiniteError(
                f"svd: the {Z.shape[0]} x {Z.shape[1]} block has {bad} NaN or infinite "
                "entries; the iterate that produced it diverged (try precision='double', a "
                "larger beta or rescaled inputs).") from None
        logger.warning("gesdd did not converge on a finite %d x %d block; using gesvd",
                       *Z.shape)
        with one_blas_thread():
            return scipy.linalg.svd(Z, full_matrices=False, compute_uv=compute_uv,
                                    lapack_driver="gesvd", check_finite=False)


def _small_gram(Z: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(T, transposed)``: ``T`` is ``Z`` or ``Z^T``, whichever makes ``T^T T`` the small Gram."""
    transposed = Z.shape[0] < Z.shape[1]
    return (Z.T if transposed else Z), transposed


def nuclear_norm(Z: np.ndarray, estimate: bool = False) -> float:
    """``||Z||_*``; ``estimate=True`` on large blocks uses the small Gram's eigenvalues."""
    if min(Z.shape) == 1:
        return float(np.linalg.norm(Z))
    if estimate and min(Z.shape) >= GRAM_SVT_MIN:
        T, _ = _small_gram(Z)
        with one_blas_thread():
            w = np.linalg.eigvalsh(T.T @ T)
        return float(np.sqrt(np.maximum(w, 0.0)).sum())
    return float(svd(Z, compute_uv=False).sum())


def svt(Z: np.ndarray, tau: float) -> np.ndarray:
    """Singular-value thresholding: the prox of ``tau ||.||_*``.

    Blocks from :data:`SVT_GRAM_MIN` on: with ``Z^T Z = V diag(s^2) V^T`` (smaller side), ``svt(Z) = Z V_k
    diag(1 - tau / s_k) V_k^T`` over ``s_k > tau``. Vectors: ``max(0, 1 - tau/||z||) z``.
    """
    if min(Z.shape) == 1:
        nrm = float(np.linalg.norm(Z))
        return Z * (max(nrm - tau, 0.0) / nrm) if nrm > 0 else Z.copy()
    if min(Z.shape) >= SVT_GRAM_MIN:
        T, transposed = _small_gram(Z)
        with one_blas_thread():
            w, V = np.linalg.eigh(T.T @ T)
        sv = np.sqrt(np.maximum(w, 0.0))
        keep = sv > tau
        Vk = V[:, keep]
        out = (T @ Vk) * (1.0 - tau / sv[keep]) @ Vk.T
        return out.T if transposed else out
    U, s, Vt = svd(Z)
    s = np.maximum(s - tau, 0.0)
    k = int(np.count_nonzero(s))
    return (U[:, :k] * s[:k]) @ Vt[:k]


def spectral_norm(M: np.ndarray) -> float:
    """``||M||_2`` (large blocks: top eigenvalue of the small Gram, rounded up by 1e-12)."""
    if not M.size:
        return 0.0
    if min(M.shape) == 1:
        return float(np.linalg.norm(M))
    if min(M.shape) >= GRAM_SVT_MIN:
        T, _ = _small_gram(M)
        with one_blas_thread():
            top = float(np.linalg.eigvalsh(T.T @ T)[-1])
        return float(np.sqrt(max(top, 0.0))) * (1 + 1e-12)
    return float(svd(M, compute_uv=False)[0])


def bmm(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Batched matmul (n, i, j) @ (n, j, k) via torch (numpy's stacked matmul is far slower)."""
    return torch.bmm(torch.from_numpy(np.ascontiguousarray(A)),
                     torch.from_numpy(np.ascontiguousarray(B))).numpy()


def progress_bar(progress: bool, total: int, desc: str):
    """A tqdm bar of ``total`` steps when ``progress`` is set, else ``None``."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)
