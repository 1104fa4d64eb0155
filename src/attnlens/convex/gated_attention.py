r"""Matrix-free operator of the convex gated-ReLU self-attention head (no dense per-gate features).

Sahiner, Ergen, Ozturkler, Pauly, Mardani, Pilanci, "Unraveling Attention via Convex Duality",
ICML 2022 (arXiv 2205.08078). With fixed gates ``H_j`` and patterns
``D_j[i, t, u] = 1[x_t^T H_j x_u >= 0]``, the pooled output of sample ``i`` is

.. math::  \hat y_{ic} = \sum_j \langle \Phi_j(X_i), Z_{j,c} \rangle, \qquad
   \Phi_j(X_i)_{abe} = \sum_u M_{j,iua}\, x_{iub}\, x_{iue}, \quad
   M_{j,iu} = \tfrac1s \textstyle\sum_t D_j[i,t,u]\, x_{it},

a sum over tokens of rank-one tensors ``m_u (x) x_u (x) x_u``. The dense program stores
``Phi_j`` (``n x m x d^3`` numbers); here only the tokens are kept:

* ``Q`` (T, P): ``x_u (x) x_u`` on the ``P = d (d+1) / 2`` pairs ``b <= e`` of every non-zero
  token (gate-independent; the features are symmetric in ``(b, e)``, so ``Z`` enters through
  its ``(b, e)``-symmetrized part);
* ``M`` (T, m d): the gated token means of every gate.

Forward: ``yhat_i = sum_{u in i} sum_{j,a} M[u, (j,a)] (Q[u] @ Zsym[:, (j,a), c])``, one
(T, P) @ (P, m d c) GEMM in token chunks; adjoint: ``Gsym = Q^T W`` with
``W[u, (j,a,c)] = M[u, (j,a)] R[i(u), c]``, unfolded to the ``(b, e)`` and ``(e, b)`` entries.
Cost ``O(T d^3 m c / 2)`` per application, memory ``O(T d^2)`` (``Q`` is cached while it fits
:func:`cache_budget`, else rebuilt per chunk). ``single=True``: float32 GEMMs accumulated in
float64 (the certificates are always evaluated in float64).

Per-sample features. Summing the tokens of each sample first gives the symmetric features
``F_i = M_i^T Q_i`` (m d, P) (``n m d P`` numbers, the dense features without the ``(b, e)``
duplicates); a forward is then ``F @ Zsym`` and an adjoint ``R^T F``: ``O(n m d P c)``
instead of ``O(T m d P c)``, i.e. ``T / n`` (the tokens per sample) times fewer multiply-adds,
read from memory once per application. They are built once and kept while they fit
:func:`feature_budget` (1 GiB by default, more by ``ATTNLENS_FEATURE_CACHE_GB``); otherwise
the token products above are used, and a low-rank block goes through its factors. On
Fashion-MNIST (3,000 images, 17 tokens, 10 classes, m = 5) at d = 64 the features take 7.4 GiB
and a float32 forward / adjoint drop from 7.3 / 5.3 s to 1.2 / 1.9 s on 2 cores
(benchmarks/convex_gated_attention.py ``--paths 64 fashion_mnist``).

Index conventions as :mod:`attnlens.convex.operators`: ``Z_j`` is (d^2, d c), rows
``vec(W1)`` = ``(a, b)`` row-major, columns ``(e, c)``.
"""

from __future__ import annotations

import os

import numpy as np

from attnlens.convex._linalg import one_blas_thread
from attnlens.convex.operators import check_dense_size, dense_budget

#: bytes of the token products ``Q`` (float32 and float64 copies together) kept between
#: applications (at most a quarter of the available memory, see :func:`cache_budget`)
CACHE_BYTES = 2**30
#: elements of one chunk's temporaries (``Q`` rows or ``W`` rows): 8M floats = 64 MB in float64
CHUNK_ELEMENTS = 2**23
#: a block ``Z_j`` is applied through its factors when ``||Z_j - U V^T||_F <= rtol ||Z_j||_F``
#: (float64 rounding level) with ``V`` the Gram eigenvectors above ``GRAM_KEEP`` of the top
LOW_RANK_RTOL = 1e-12
GRAM_KEEP = 1e-12
#: the factored product is used while its multiply-adds are below this share of the dense one
FACTORED_SHARE = 0.5
#: samples per chunk when the gate patterns are computed (an (k, s, s) score tensor each)
PATTERN_CHUNK = 256
#: bytes of the per-sample features (float32 and float64 copies together) kept between
#: applications unless :data:`FEATURE_CACHE_ENV` says otherwise (see :func:`feature_budget`)
FEATURE_CACHE_BYTES = 2**30
#: environment variable: the per-sample feature budget in GiB (0 turns the features off)
FEATURE_CACHE_ENV = "ATTNLENS_FEATURE_CACHE_GB"


def _available_bytes() -> int:
    return dense_budget() * 3 * 8  # MemAvailable in bytes (or the fallback's equivalent)


def cache_budget() -> int:
    """``min(CACHE_BYTES, MemAvailable / 4)``; :data:`CACHE_BYTES` where unknown."""
    return int(min(CACHE_BYTES, _available_bytes() // 4))


def feature_budget() -> int:
    """Bytes the per-sample features may take: ``min(cap, MemAvailable / 2)``, with ``cap``
    :data:`FEATURE_CACHE_BYTES` or ``$ATTNLENS_FEATURE_CACHE_GB`` GiB where that is set."""
    cap = FEATURE_CACHE_BYTES
    raw = os.environ.get(FEATURE_CACHE_ENV)
    if raw is not None and raw.strip():
        try:
            gib = float(raw)
        except ValueError:
            gib = float("nan")
        if not np.isfinite(gib) or gib < 0:
            raise ValueError(f"{FEATURE_CACHE_ENV} must be a number of GiB >= 0, got {raw!r}; "
                             "unset it for the default (1 GiB) or set 0 to keep no features.")
        cap = int(gib * 2**30)
    return int(min(cap, _available_bytes() // 2))


def low_rank(Z: np.ndarray, rtol: float = LOW_RANK_RTOL) -> tuple | None:
    """``(U, V)`` with ``Z = U V^T`` up to ``rtol ||Z||_F`` (verified), or None when not low rank.

    Right factor from the small Gram ``Z^T Z`` (cheap); the residual ``Z - Z V V^T`` is checked
    explicitly, so a product through the factors equals the product with ``Z`` to ``rtol``.
    """
    nrm = float(np.linalg.norm(Z))
    if nrm == 0.0:
        return Z[:, :0], np.zeros((Z.shape[1], 0))
    if not np.isfinite(nrm):
        return None  # the dense product carries the NaN / inf to the caller's check
    with one_blas_thread():
        w, V = np.linalg.eigh(Z.T @ Z)
    V = V[:, w > w[-1] * GRAM_KEEP]
    U = Z @ V  # (p, r)
    if np.linalg.norm(Z - U @ V.T) > rtol * nrm:
        return None
    return U, V


def gate_patterns(X: np.ndarray, gates: np.ndarray):
    """Yield ``(lo, j, D)``: gate ``j``'s pattern ``D[i, t, u] = 1[x_t^T H_j x_u >= 0]`` (k, s, s)
    on samples ``lo:lo + k``, in :data:`PATTERN_CHUNK` sample chunks.

    The one place the patterns are computed: the ReLU program's cones and its gated blocks
    take them from here, so their signs agree bit for bit (ties included).
    """
    for lo in range(0, X.shape[0], PATTERN_CHUNK):
        Xc = X[lo:lo + PATTERN_CHUNK]
        for j, H in enumerate(gates):
            S = np.einsum("nta,ab,nub->ntu", Xc, H, Xc, optimize=True)  # (k, s, s) scores
            yield lo, j, (S >= 0).astype(np.float64)


def gated_token_means(X: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """``M_j[i, u] = (1/s) sum_t D_j[i, t, u] x_it`` for every gate: (n, s, m, d)."""
    n, s, d = X.shape
    M = np.empty((n, s, len(gates), d))
    for lo, j, D in gate_patterns(X, gates):
        Xc = X[lo:lo + PATTERN_CHUNK]
        M[lo:lo + PATTERN_CHUNK, :, j] = np.einsum("ntu,nta->nua", D, Xc, optimize=True) / s
    return M


class GatedAttention:
    """All gates of a gated self-attention head at once, without the dense features.

    ``X`` (n, s, d) tokens (all-zero tokens are padding: they contribute nothing and are
    dropped), ``gates`` (m, d, d) the ``H_j``. ``blocks`` are per-gate views (the reference
    paths: the cvxpy formulation, Burer-Monteiro).
    """

    def __init__(self, X: np.ndarray, gates: np.ndarray, *, _parts=None):
        if _parts is not None:  # take(): already reduced
            self.n, self.d, self.m, self.tokens, self.M, self.seg = _parts
        else:
            X = np.asarray(X, dtype=np.float64)
            self.n, _, self.d = X.shape
            self.m = len(gates)
            valid = np.any(X != 0, axis=2)  # (n, s)
            self.tokens = np.ascontiguousarray(X[valid])  # (T, d), sample-major
            M = gated_token_means(X, np.asarray(gates, dtype=np.float64))
            self.M = np.ascontiguousarray(M[valid].reshape(-1, self.m * self.d))  # (T, m d)
            self.seg = np.nonzero(valid)[0]  # (T,) sample of each token
        d = self.d
        self._iu, self._ju = np.triu_indices(d)
        self._off = (self._iu != self._ju).astype(np.float64)  # (P,)
        self.P = len(self._iu)
        self.T = len(self.tokens)
        self._Q: dict = {}  # dtype -> cached (T, P) or None (streamed)
        self._F: dict = {}  # dtype -> cached per-sample features (n, m d, P) or None
        self._M32: np.ndarray | None = None

    @property
    def blocks(self) -> list[GatedAttentionBlock]:
        """Per-gate views, made on each access: a block refers to its group and the group
        keeps no list of blocks, so no reference cycle holds the cached features (gigabytes
        at d = 64) after the last reference to the program is gone."""
        return [GatedAttentionBlock(self, j) for j in range(self.m)]

    # ------------------------------------------------------------------ token data
    def _chunk(self, width: int) -> int:
        return max(64, CHUNK_ELEMENTS // max(width, 1))

    def _q_rows(self, lo: int, hi: int, dtype) -> np.ndarray:
        Xt = self.tokens[lo:hi]
        return (Xt[:, self._iu] * Xt[:, self._ju]).astype(dtype, copy=False)  # (k, P)

    def _q(self, dtype) -> np.ndarray | None:
        """The cached (T, P) products in ``dtype``, or None when over :func:`cache_budget`."""
        key = np.dtype(dtype).name
        if key not in self._Q:
            used = sum(a.nbytes for a in self._Q.values() if a is not None)
            need = self.T * self.P * np.dtype(dtype).itemsize
            self._Q[key] = self._q_fill(dtype) if used + need <= cache_budget() else None
        return self._Q[key]

    def _q_fill(self, dtype) -> np.ndarray:
        """All (T, P) products in ``dtype``, filled in token chunks (no float64 temporaries of
        the full size: at d = 64 those were three 1.2 GB arrays, the process's memory peak)."""
        Q = np.empty((self.T, self.P), dtype=dtype)
        step = self._chunk(self.P)
        for lo in range(0, self.T, step):
            hi = min(lo + step, self.T)
            Q[lo:hi] = self._q_rows(lo, hi, dtype)
        return Q

    def _features(self, dtype) -> np.ndarray | None:
        """The per-sample features (n, m d, P) in ``dtype``, or None over :func:`feature_budget`."""
        key = np.dtype(dtype).name
        if key not in self._F:
            used = sum(a.nbytes for a in self._F.values() if a is not None)
            need = self.n * self.m * self.d * self.P * np.dtype(dtype).itemsize
            self._F[key] = (self._features_fill(dtype) if used + need <= feature_budget()
                            else None)
        return self._F[key]

    def _features_fill(self, dtype) -> np.ndarray:
        """``F_i = M_i^T Q_i`` for every sample, one batched GEMM per chunk of samples (their
        tokens zero-padded to the longest sample)."""
        n, md = self.n, self.m * self.d
        counts = np.bincount(self.seg, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)])  # tokens are sample-major
        pos = np.arange(self.T) - starts[self.seg]  # (T,) place of each token in its sample
        s = max(int(counts.max(initial=0)), 1)
        F = np.empty((n, md, self.P), dtype=dtype)
        M = self._m(np.dtype(dtype) == np.float32)
        step = max(1, CHUNK_ELEMENTS // (s * (self.P + md)))
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            t0, t1 = starts[lo], starts[hi]
            Qp = np.zeros((hi - lo, s, self.P), dtype=dtype)  # (k, s, P)
            Mp = np.zeros((hi - lo, s, md), dtype=dtype)  # (k, s, m d)
            Qp[self.seg[t0:t1] - lo, pos[t0:t1]] = self._q_rows(t0, t1, dtype)
            Mp[self.seg[t0:t1] - lo, pos[t0:t1]] = M[t0:t1]
            np.matmul(Mp.transpose(0, 2, 1), Qp, out=F[lo:hi])  # (k, m d, P)
        return F

    def _m(self, single: bool) -> np.ndarray:
        if not single:
            return self.M
        if self._M32 is None:
            self._M32 = self.M.astype(np.float32)
        return self._M32

    def _rows(self, width: int, dtype):
        """Yield ``(lo, hi, Q[lo:hi])`` over token chunks."""
        Q = self._q(dtype)
        step = self._chunk(max(width, self.P))
        for lo in range(0, self.T, step):
            hi = min(lo + step, self.T)
            yield lo, hi, (Q[lo:hi] if Q is not None else self._q_rows(lo, hi, dtype))

    # ------------------------------------------------------------------ products
    def _zsym(self, Z: np.ndarray, g: int, c: int) -> np.ndarray:
        """(g, d^2, d c) blocks -> (P, g d c): the ``(b, e)``-symmetrized coefficients."""
        d = self.d
        Z5 = Z.reshape(g, d, d, d, c)  # (j, a, b, e, c)
        Zs = Z5[:, :, self._iu, self._ju, :] + self._off[:, None] * Z5[:, :, self._ju,
                                                                        self._iu, :]
        return np.ascontiguousarray(Zs.transpose(2, 0, 1, 3)).reshape(self.P, g * d * c)

    def _apply(self, Z: np.ndarray, c: int, sl: slice, single: bool) -> np.ndarray:
        g = len(range(self.m)[sl])
        d = self.d
        dt = np.float32 if single else np.float64
        Z = Z.reshape(g, d * d, d * c)
        F = self._features(dt)
        if F is not None:  # one pass over the features: cheaper than the low-rank check
            return self._apply_features(F, Z, c, sl, dt)
        M = self._m(single).reshape(self.T, self.m, d)[:, sl]  # (T, g, d)
        factors = [low_rank(Zj) for Zj in Z]
        if all(f is not None for f in factors) and (
                sum(f[0].shape[1] for f in factors) * (d * d + d * c) < FACTORED_SHARE
                * self.P * g * d * c):
            ytok = self._apply_factored(factors, M, c, dt)
        else:
            Zm = self._zsym(Z, g, c).astype(dt)  # (P, g d c)
            M = M.reshape(self.T, g * d)
            ytok = np.empty((self.T, c))
            for lo, hi, Q in self._rows(g * d * c, dt):
                Tm = (Q @ Zm).reshape(hi - lo, g * d, c)  # (k, g d, c)
                ytok[lo:hi] = np.einsum("tk,tkc->tc", M[lo:hi], Tm)
        return np.stack([np.bincount(self.seg, weights=ytok[:, k], minlength=self.n)
                         for k in range(c)], axis=1)  # (n, c)

    def _apply_factored(self, factors: list, M: np.ndarray, c: int, dt) -> np.ndarray:
        """Token outputs (T, c) of blocks ``Z_j = U_j V_j^T``: ``O(T r (d^2 + d c))``.

        ``(m_u (x) x_u)^T U_j`` is ``x_u^T (m_u^T U_j)`` (one (T, d) @ (d, d r) GEMM) and
        ``(x_u (x) I_c)^T V_j`` one (T, d) @ (d, c r) GEMM.
        """
        d = self.d
        ytok = np.zeros((self.T, c))
        step = self._chunk(d * max(f[0].shape[1] for f in factors) + 1)
        for lo in range(0, self.T, step):
            hi = min(lo + step, self.T)
            X = self.tokens[lo:hi].astype(dt, copy=False)  # (k, d)
            for j, (U, V) in enumerate(factors):
                r = U.shape[1]
                if r == 0:  # a zero block adds nothing, and numpy's einsum contracting an
                    continue  # empty axis returned uninitialized memory here (valgrind)
                MU = M[lo:hi, j] @ U.astype(dt).reshape(d, d * r)  # (k, d_b r)
                left = np.einsum("kbr,kb->kr", MU.reshape(hi - lo, d, r), X)  # (k, r)
                right = (X @ V.astype(dt).reshape(d, c * r)).reshape(hi - lo, c, r)
                ytok[lo:hi] += np.einsum("kr,kcr->kc", left, right)
        return ytok

    def _gate_view(self, F: np.ndarray, sl: slice) -> np.ndarray:
        """The features of gates ``sl``: (n, g, d P), a view (no copy of the 7 GiB array)."""
        return F.reshape(self.n, self.m, self.d * self.P)[:, sl]

    def _apply_features(self, F: np.ndarray, Z: np.ndarray, c: int, sl: slice,
                        dt) -> np.ndarray:
        """Outputs (n, c) through the per-sample features: ``sum_j F[:, j] @ Zsym_j``."""
        g, d = len(range(self.m)[sl]), self.d
        Zs = self._zsym(Z, g, c).reshape(self.P, g, d, c).transpose(1, 2, 0, 3)  # (g, a, P, c)
        Fj = self._gate_view(F, sl)
        y = np.zeros((self.n, c))
        for k in range(g):  # float32 GEMMs accumulated in float64 over the gates
            y += Fj[:, k] @ np.ascontiguousarray(Zs[k].reshape(d * self.P, c), dtype=dt)
        return y

    def _adjoint(self, R: np.ndarray, sl: slice, single: bool) -> np.ndarray:
        n, c = R.shape
        g = len(range(self.m)[sl])
        d = self.d
        dt = np.float32 if single else np.float64
        F = self._features(dt)
        if F is not None:
            Fj = self._gate_view(F, sl)
            Rt = np.ascontiguousarray(R.T, dtype=dt)  # (c, n)
            Gs = np.stack([(Rt @ Fj[:, k]).T.reshape(d, self.P, c) for k in range(g)])
        else:
            M = self._m(single).reshape(self.T, self.m, d)[:, sl].reshape(self.T, g * d)
            Rtok = R[self.seg].astype(dt)  # (T, c)
            Gs = np.zeros((self.P, g * d * c))
            for lo, hi, Q in self._rows(g * d * c, dt):
                W = (M[lo:hi, :, None] * Rtok[lo:hi, None, :]).reshape(hi - lo, g * d * c)
                Gs += Q.T @ W
            Gs = Gs.reshape(self.P, g, d, c).transpose(1, 2, 0, 3)  # (g, a, P, c)
        G = np.empty((g, d, d, d, c))  # (j, a, b, e, c)
        G[:, :, self._iu, self._ju, :] = Gs
        G[:, :, self._ju, self._iu, :] = Gs
        return G.reshape(g, d * d, d * c)

    def forward(self, Zs: list[np.ndarray], c: int, single: bool = False) -> np.ndarray:
        """Blocks (d^2, d c) per gate -> outputs (n, c)."""
        return self._apply(np.stack(Zs), c, slice(None), single)

    def adjoint(self, R: np.ndarray, single: bool = False) -> list[np.ndarray]:
        return list(self._adjoint(R, slice(None), single))

    def forward_flat(self, x: np.ndarray, c: int, single: bool = False) -> np.ndarray:
        return self._apply(x, c, slice(None), single)

    def adjoint_flat(self, R: np.ndarray, single: bool = False) -> np.ndarray:
        return self._adjoint(R, slice(None), single).ravel()

    def cost(self, c: int) -> float:
        """Multiply-adds of one forward application of all gates."""
        return float(self.T) * self.P * self.m * self.d * c

    def take(self, idx: np.ndarray) -> GatedAttention:
        """The operator on samples ``idx`` (in that order)."""
        idx = np.asarray(idx)
        starts = np.searchsorted(self.seg, np.arange(self.n))  # tokens are sample-major
        ends = np.searchsorted(self.seg, np.arange(self.n), side="right")
        rows = np.concatenate([np.arange(starts[i], ends[i]) for i in idx]
                              + [np.zeros(0, dtype=np.int64)])
        seg = np.repeat(np.arange(len(idx)), ends[idx] - starts[idx])
        return GatedAttention(None, None, _parts=(len(idx), self.d, self.m, self.tokens[rows],
                                                  self.M[rows], seg))

    def dense_features(self, j: int) -> np.ndarray:
        """Gate ``j``'s dense features (n, d^2, d) (reference paths; size-checked)."""
        check_dense_size(self.n * self.d**3, "the dense features of one gate of a gated "
                         "self-attention head", "use solver='auto' or 'fista' (matrix-free).")
        d = self.d
        Mj = self.M.reshape(self.T, self.m, d)[:, j]  # (T, d)
        phi = np.zeros((self.n, d, d, d))
        step = max(1, CHUNK_ELEMENTS // d**3)
        for lo in range(0, self.T, step):
            X = self.tokens[lo:lo + step]
            np.add.at(phi, self.seg[lo:lo + step],
                      np.einsum("ta,tb,te->tabe", Mj[lo:lo + step], X, X))
        return phi.reshape(self.n, d * d, d)


class GatedAttentionBlock:
    """Gate ``j`` of a :class:`GatedAttention` as a block (the per-block interface)."""

    def __init__(self, group: GatedAttention, j: int):
        self.group, self.j = group, j
        self.n, self.p, self.q = group.n, group.d**2, group.d

    @property
    def phi(self) -> np.ndarray:
        return self.group.dense_features(self.j)

    def zshape(self, c: int) -> tuple[int, int]:
        return (self.p, self.q * c)

    def cost(self, c: int) -> float:
        return self.group.cost(c) / self.group.m

    def forward(self, Z: np.ndarray, c: int, single: bool = False) -> np.ndarray:
        return self.group._apply(Z[None], c, slice(self.j, self.j + 1), single)

    def adjoint(self, R: np.ndarray, single: bool = False) -> np.ndarray:
        return self.group._adjoint(R, slice(self.j, self.j + 1), single)[0]

    def forward_factored(self, U: np.ndarray, V: np.ndarray, c: int):
        return self.forward(U @ V.T, c), None

    def grads_factored(self, R: np.ndarray, U: np.ndarray, V: np.ndarray, Q, c: int):
        G = self.adjoint(R)
        return G @ V, G.T @ U

    def take(self, idx: np.ndarray) -> GatedAttentionBlock:
        return self.group.take(idx).blocks[self.j]
