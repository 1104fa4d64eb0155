r"""The implicit linear operators of the convex programs (blocks, fused groups, ``Program``).

Sahiner, Ergen, Ozturkler, Pauly, Mardani, Pilanci, "Unraveling Attention via Convex Duality",
ICML 2022 (arXiv 2205.08078). Training a head with weight decay equals

.. math::  \min_{Z_1..Z_m}\ L\Big(\sum_j \mathcal{A}_j(Z_j),\, Y\Big) + \beta \sum_j \|Z_j\|_*

where :math:`\mathcal{A}_j` maps block :math:`Z_j \in \mathbb{R}^{p \times qc}` to the
token-mean-pooled outputs (n, c). Every block here is one of two structured operators, so the
``d^3``-sized design is never built where the structure avoids it:

* :class:`KronBlock`: :math:`\hat y_{ic} = \sum_{k,k',l} a_{ik} B_{ik'l} Z_{(k,k'),(l,c)}`.
  Linear self-attention: with :math:`\bar x = \tfrac1s X^\top 1` and :math:`G = X^\top X`, the
  pooled head output is :math:`\bar x^\top W_1 G W_2`, so ``a = xbar`` and ``B = G``
  (one (n, d^2) @ (d^2, dc) product per operator application, :math:`O(n d^3 c)`).
  Linear MLP-Mixer: ``a = 1/s``, ``B = X``.
* :class:`DenseBlock`: :math:`\hat y_{ic} = \sum_{k,l} \Phi_{ikl} Z_{k,(l,c)}` with a
  materialized (n, p, q) feature tensor (gated-ReLU heads, FNO, MLP).

Score convention (self-attention): ``score_{tu} = x_t^T W1 x_u``, i.e. ``W1 = K Q^T`` and
``score_t = x_t^T W z`` with ``z`` the query token.
Row index of ``Z_j`` is ``vec(W1)`` (row-major), column index is ``vec(W2)`` (row-major (l, c)).
"""


from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from attnlens._validation import check_array
from attnlens.convex._linalg import bmm
from attnlens.convex.losses import Loss, get_loss

#: :meth:`Program.normal_flat` (``A^* A`` through a Gram) is used up to this Gram side
#: (2,500: 50 MB; the (2000,16,12,10) self-attention head has 936) and while the side is at
#: most ``n`` (then one Gram product costs at most half of a forward + adjoint pair)
MAX_GRAM_SIDE = 2500

#: Dense feature tensors (float64 entries) up to this size are always built (~1.6 GB); larger
#: ones while they fit in a third of the memory available now (:func:`dense_budget`).
MAX_DENSE_ENTRIES = 200_000_000


def dense_budget() -> int:
    """Largest dense feature tensor (float64 entries) a program may build on this machine.

    ``max(MAX_DENSE_ENTRIES, MemAvailable / 3 / 8)`` from ``/proc/meminfo`` (Linux); elsewhere
    :data:`MAX_DENSE_ENTRIES`. A third leaves room for the solver's iterates and temporaries.
    """
    try:
        with open("/proc/meminfo") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError, IndexError):
        return MAX_DENSE_ENTRIES
    return max(MAX_DENSE_ENTRIES, kib * 1024 // 3 // 8)


class KronBlock:
    """Block with features ``Phi_i = a_i (x) B_i``; ``a`` (n, p1), ``B`` (n, p2, q).

    When every ``B_i`` is symmetric (linear self-attention: ``B_i = X_i^T X_i``) the products
    use only the ``p2 (p2 + 1) / 2`` upper-triangle pairs (half the GEMM). ``single=True`` runs
    the big GEMM in float32 (float32 copy of ``B`` made once) and returns float64.
    """

    def __init__(self, a: np.ndarray, B: np.ndarray):
        self.a = np.ascontiguousarray(a, dtype=np.float64)  # (n, p1)
        self.B = np.ascontiguousarray(B, dtype=np.float64)  # (n, p2, q)
        n, self.p1 = self.a.shape
        _, self.p2, self.q = self.B.shape
        self.n = n
        self._B2 = self.B.reshape(n, self.p2 * self.q)  # (n, p2 q)
        self.Bt = np.ascontiguousarray(self.B.transpose(0, 2, 1))  # (n, q, p2)
        self.symmetric = self.p2 == self.q and np.array_equal(self.B, self.Bt)
        if self.symmetric:
            iu, ju = np.triu_indices(self.p2)
            self._up = iu * self.q + ju  # flat (k2, l), k2 <= l
            self._lo = ju * self.q + iu  # its transpose
            self._off = (iu != ju).astype(np.float64)[:, None]
            self._Bc = np.ascontiguousarray(self._B2[:, self._up])  # (n, P)
        else:
            self._Bc = self._B2
        self._Bc32 = None
        self._gram = None

    @property
    def p(self) -> int:
        return self.p1 * self.p2

    def zshape(self, c: int) -> tuple[int, int]:
        return (self.p, self.q * c)

    def cost(self, c: int) -> float:
        """Multiply-adds of one forward application with ``c`` outputs."""
        return float(self.n) * (self._Bc.shape[1] * self.p1) * c

    def _mat(self, single: bool) -> np.ndarray:
        if not single:
            return self._Bc
        if self._Bc32 is None:
            self._Bc32 = self._Bc.astype(np.float32)
        return self._Bc32

    def _reduce(self, Z: np.ndarray, c: int) -> np.ndarray:
        """(p, qc) -> (P, p1 c): the coordinates the operator sees (symmetric pairs summed)."""
        Z4 = Z.reshape(self.p1, self.p2, self.q, c)
        Zt = Z4.transpose(1, 2, 0, 3).reshape(self.p2 * self.q, self.p1 * c)  # (p2 q, p1 c)
        if self.symmetric:
            Zt = Zt[self._up] + self._off * Zt[self._lo]  # (P, p1 c)
        return Zt

    def forward(self, Z: np.ndarray, c: int, single: bool = False) -> np.ndarray:
        """(p, qc) -> (n, c)."""
        Zt = self._reduce(Z, c)
        B = self._mat(single)
        T = (B @ Zt.astype(B.dtype)).reshape(self.n, self.p1, c)  # (n, p1, c)
        return np.einsum("nk,nkc->nc", self.a, T.astype(np.float64))

    def gram_size(self) -> int:
        """Side of the Gram :meth:`normal` uses: ``P p1`` (``P`` reduced columns of ``B``)."""
        return self._Bc.shape[1] * self.p1

    def gram(self) -> np.ndarray:
        """``K = Phi^T Phi`` ((P p1, P p1)) of the reduced features ``Phi_i = B_i (x) a_i``
        (built once): ``A Z = Phi W`` with ``W = reduce(Z)`` (P p1, c), see :meth:`reduce`."""
        if self._gram is None:
            Phi = (self._Bc[:, :, None] * self.a[:, None, :]).reshape(self.n, -1)  # (n, P p1)
            self._gram = Phi.T @ Phi
        return self._gram

    def reduce(self, Z: np.ndarray, c: int) -> np.ndarray:
        """(p, qc) -> (P p1, c): the coordinates ``W`` the operator sees, ``A Z = Phi W``."""
        return self._reduce(Z, c).reshape(-1, c)

    def expand(self, M: np.ndarray, c: int) -> np.ndarray:
        """(P p1, c) -> (p, qc): the adjoint of :meth:`reduce`."""
        return self._expand(M.reshape(-1, self.p1 * c), c)

    def reduced_adjoint(self, R: np.ndarray) -> np.ndarray:
        """``Phi^T R`` (P p1, c) for ``R`` (n, c): ``A^* R = expand(Phi^T R)``."""
        c = R.shape[1]
        aR = (self.a[:, :, None] * R[:, None, :]).reshape(self.n, self.p1 * c)  # (n, p1 c)
        return (self._Bc.T @ aR).reshape(-1, c)

    def normal(self, Z: np.ndarray, c: int) -> np.ndarray:
        """``A^* A Z`` (p, qc) through the Gram ``K = Phi^T Phi`` of the reduced features
        ``Phi_i = B_i (x) a_i`` (built once, ``(P p1)^2`` entries): one (P p1)^2 x c product
        instead of the two (n, P) x (P, p1 c) products of :meth:`forward` + :meth:`adjoint`."""
        return self.expand(self.gram() @ self.reduce(Z, c), c)

    def adjoint(self, R: np.ndarray, single: bool = False) -> np.ndarray:
        """(n, c) -> (p, qc): sum_i Phi_i (x) R_i."""
        c = R.shape[1]
        aR = (self.a[:, :, None] * R[:, None, :]).reshape(self.n, self.p1 * c)  # (n, p1 c)
        B = self._mat(single)
        Mc = (B.T @ aR.astype(B.dtype)).astype(np.float64)  # (P or p2 q, p1 c)
        return self._expand(Mc, c)

    def _expand(self, Mc: np.ndarray, c: int) -> np.ndarray:
        """(P, p1 c) -> (p, qc): the adjoint of :meth:`_reduce`."""
        if self.symmetric:
            M = np.empty((self.p2 * self.q, self.p1 * c))
            M[self._up] = Mc
            M[self._lo] = Mc
        else:
            M = Mc
        M = M.reshape(self.p2, self.q, self.p1, c)  # (p2, q, p1, c)
        return M.transpose(2, 0, 1, 3).reshape(self.p, self.q * c)

    def forward_factored(self, U: np.ndarray, V: np.ndarray, c: int):
        """Output of ``Z = U V^T`` (U (p, r), V (qc, r)) without forming Z; also returns cache.

        Cost ``O(n (p1 p2 r + p2 q r + q r c))`` -- all products are plain GEMMs.
        """
        r = U.shape[1]
        P = (self.a @ U.reshape(self.p1, self.p2 * r)).reshape(self.n, self.p2, r)  # (n,p2,r)
        Q = bmm(self.Bt, P)  # (n, q, r)
        Vr = V.reshape(self.q, c, r).transpose(0, 2, 1).reshape(self.q * r, c)  # (q r, c)
        return Q.reshape(self.n, self.q * r) @ Vr, Q

    def grads_factored(self, R: np.ndarray, U: np.ndarray, V: np.ndarray, Q: np.ndarray, c: int):
        """``(A^* R) V`` and ``(A^* R)^T U`` for ``Z = U V^T`` without forming ``A^* R``."""
        r = U.shape[1]
        Vr = V.reshape(self.q, c, r).transpose(1, 0, 2).reshape(c, self.q * r)  # (c, q r)
        W = (R @ Vr).reshape(self.n, self.q, r)  # (n, q, r)
        BW = bmm(self.B, W)  # (n, p2, r)
        gU = (self.a.T @ BW.reshape(self.n, self.p2 * r)).reshape(self.p, r)
        gV = (R.T @ Q.reshape(self.n, self.q * r)).reshape(c, self.q, r)
        return gU, gV.transpose(1, 0, 2).reshape(self.q * c, r)

    def take(self, idx: np.ndarray) -> KronBlock:
        return KronBlock(self.a[idx], self.B[idx])


class DenseBlock:
    """Block with a materialized feature tensor ``phi`` of shape (n, p, q)."""

    def __init__(self, phi: np.ndarray):
        self.phi = np.ascontiguousarray(phi, dtype=np.float64)  # (n, p, q)
        self.n, self.p, self.q = self.phi.shape
        self._P2 = self.phi.reshape(self.n, self.p * self.q)  # (n, p q)

    def zshape(self, c: int) -> tuple[int, int]:
        return (self.p, self.q * c)

    def cost(self, c: int) -> float:
        """Multiply-adds of one forward application with ``c`` outputs."""
        return float(self.n) * (self.p * self.q) * c

    def forward(self, Z: np.ndarray, c: int, single: bool = False) -> np.ndarray:
        return self._P2 @ Z.reshape(self.p * self.q, c)

    def adjoint(self, R: np.ndarray, single: bool = False) -> np.ndarray:
        return (self._P2.T @ R).reshape(self.p, self.q * R.shape[1])

    def forward_factored(self, U: np.ndarray, V: np.ndarray, c: int):
        r = U.shape[1]
        Q = np.tensordot(self.phi, U, axes=([1], [0]))  # (n, q, r)
        Vr = V.reshape(self.q, c, r).transpose(0, 2, 1).reshape(self.q * r, c)  # (q r, c)
        return Q.reshape(self.n, self.q * r) @ Vr, Q

    def grads_factored(self, R: np.ndarray, U: np.ndarray, V: np.ndarray, Q: np.ndarray, c: int):
        r = U.shape[1]
        Vr = V.reshape(self.q, c, r).transpose(1, 0, 2).reshape(c, self.q * r)  # (c, q r)
        W = (R @ Vr).reshape(self.n, self.q, r)  # (n, q, r)
        gU = np.tensordot(self.phi, W, axes=([0, 2], [0, 1]))  # (p, r)
        gV = (R.T @ Q.reshape(self.n, self.q * r)).reshape(c, self.q, r)
        return gU, gV.transpose(1, 0, 2).reshape(self.q * c, r)

    def take(self, idx: np.ndarray) -> DenseBlock:
        return DenseBlock(self.phi[idx])


class MaskedGroup:
    """All blocks of a gated MLP at once: ``yhat = sum_j D_j * (X Z_j)`` (no per-gate copies).

    ``X`` (n, p) pooled features, ``D`` (n, m) 0/1 patterns; block ``j`` is
    ``DenseBlock((D[:, j] * X)[:, :, None])``. One application costs ``O(n p m c)`` reading
    ``X`` once instead of the ``m`` materialized (n, p) blocks (pyscnn's operator).
    """

    def __init__(self, X: np.ndarray, D: np.ndarray):
        self.X = np.ascontiguousarray(X, dtype=np.float64)  # (n, p)
        self.D = np.ascontiguousarray(D, dtype=np.float64)  # (n, m)

    def forward(self, Zs: list[np.ndarray], c: int, single: bool = False) -> np.ndarray:
        m, (n, p) = self.D.shape[1], self.X.shape
        Zst = np.stack(Zs).reshape(m, p, c).transpose(1, 0, 2).reshape(p, m * c)
        XZ = (self.X @ Zst).reshape(n, m, c)
        return np.einsum("nm,nmc->nc", self.D, XZ)

    def adjoint(self, R: np.ndarray, single: bool = False) -> list[np.ndarray]:
        c = R.shape[1]
        return list(self.adjoint_flat(R).reshape(self.D.shape[1], -1, c))

    def forward_flat(self, x: np.ndarray, c: int, single: bool = False) -> np.ndarray:
        """Same as :meth:`forward` on the concatenated blocks ``x`` (m p c,); float64 always."""
        m, (n, p) = self.D.shape[1], self.X.shape
        XZ = (self.X @ x.reshape(m, p, c).transpose(1, 0, 2).reshape(p, m * c))
        return np.einsum("nm,nmc->nc", self.D, XZ.reshape(n, m, c))

    def adjoint_flat(self, R: np.ndarray, single: bool = False) -> np.ndarray:
        n, c = R.shape
        m = self.D.shape[1]
        W = (self.D[:, :, None] * R[:, None, :]).reshape(n, m * c)
        G = (self.X.T @ W).reshape(-1, m, c)  # (p, m, c)
        return np.ascontiguousarray(G.transpose(1, 0, 2)).ravel()


@dataclass
class Program:
    """The implicit linear operator ``Z -> sum_j A_j(Z_j)`` of one head on one data set.

    ``fused`` (optional) applies every block at once (:class:`MaskedGroup`); the blocks stay
    the reference (explicit designs, ReLU programs).
    """

    blocks: list
    n_outputs: int
    head: str
    activation: str
    meta: dict = field(default_factory=dict)
    fused: object | None = None

    @property
    def n(self) -> int:
        return self.blocks[0].n

    def zshapes(self) -> list[tuple[int, int]]:
        return [b.zshape(self.n_outputs) for b in self.blocks]

    def zeros(self) -> list[np.ndarray]:
        return [np.zeros(s) for s in self.zshapes()]

    def forward(self, Zs: list[np.ndarray], single: bool = False) -> np.ndarray:
        """Outputs (n, c); ``single``: big products in float32 (float64 accumulation)."""
        if self.fused is not None:
            return self.fused.forward(Zs, self.n_outputs, single)
        out = np.zeros((self.n, self.n_outputs))
        for b, Z in zip(self.blocks, Zs, strict=True):
            out += b.forward(Z, self.n_outputs, single)
        return out

    def adjoint(self, R: np.ndarray, single: bool = False) -> list[np.ndarray]:
        if self.fused is not None:
            return self.fused.adjoint(R, single)
        return [b.adjoint(R, single) for b in self.blocks]

    # flat representation (all blocks concatenated, row-major): used by the solvers
    def unflatten(self, x: np.ndarray) -> list[np.ndarray]:
        out, k = [], 0
        for shp in self.zshapes():
            size = shp[0] * shp[1]
            out.append(x[k : k + size].reshape(shp))
            k += size
        return out

    @staticmethod
    def flatten(Zs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(Z, dtype=np.float64).ravel() for Z in Zs])

    def forward_flat(self, x: np.ndarray, single: bool = False) -> np.ndarray:
        if self.fused is not None:
            return self.fused.forward_flat(x, self.n_outputs, single)
        return self.forward(self.unflatten(x), single)

    def adjoint_flat(self, R: np.ndarray, single: bool = False) -> np.ndarray:
        if self.fused is not None:
            return self.fused.adjoint_flat(R, single)
        return self.flatten(self.adjoint(R, single))

    def has_normal(self) -> bool:
        """Whether :meth:`normal_flat` applies (one Kronecker block, Gram side <= n and
        :data:`MAX_GRAM_SIDE`)."""
        return (self.fused is None and len(self.blocks) == 1
                and isinstance(self.blocks[0], KronBlock)
                and self.blocks[0].gram_size() <= min(self.n, MAX_GRAM_SIDE))

    def normal_flat(self, x: np.ndarray) -> np.ndarray:
        """``A^* A x`` on the flat vector ``x`` (float64; only where :meth:`has_normal`)."""
        (shape,) = self.zshapes()
        return self.blocks[0].normal(x.reshape(shape), self.n_outputs).ravel()

    def take(self, idx: np.ndarray) -> Program:
        if hasattr(self.fused, "blocks"):  # matrix-free group: its blocks are views of it
            fused = self.fused.take(idx)
            return Program(fused.blocks, self.n_outputs, self.head, self.activation,
                           dict(self.meta), fused=fused)
        return Program([b.take(idx) for b in self.blocks], self.n_outputs, self.head,
                       self.activation, dict(self.meta))

    def cost(self) -> float:
        """Multiply-adds of one forward application (decides the BLAS threading of a solve)."""
        return sum(b.cost(self.n_outputs) for b in self.blocks)


def operator_norm_sq(program, rng: np.random.Generator, iters: int = 30,
                     single: bool = False, x0=None) -> float:
    """``||A||_2^2`` by power iteration on ``A^* A`` (a slight overestimate is added by callers).

    ``program``: anything with ``zshapes``, ``forward_flat`` and ``adjoint_flat`` (a
    :class:`Program`, or the torch operator of :mod:`attnlens.convex.torch_fista` with a start
    vector ``x0`` on its device); ``x0`` defaults to a standard normal draw from ``rng``.
    """
    x = rng.standard_normal(sum(p * q for p, q in program.zshapes())) if x0 is None else x0
    lam = 0.0
    for _ in range(iters):
        nrm = math.sqrt(float(x.dot(x)))  # = np.linalg.norm(x) for a numpy vector
        if nrm == 0:
            return 0.0
        if not math.isfinite(nrm):
            return math.nan  # callers decide (lipschitz_bound redoes float32 in float64)
        x = x / nrm
        x_new = program.adjoint_flat(program.forward_flat(x, single), single)
        lam = float(x.dot(x_new))
        x = x_new
    return lam


def lipschitz_bound(program, loss: str | Loss, n: int, rng: np.random.Generator,
                    single: bool = False, x0=None) -> float:
    """``1.05 ||A||^2 curvature / n`` (power iteration) -- the FISTA step is its inverse.

    A non-finite float32 estimate (overflow, or a faulty float32 GEMM) is redone in float64.
    """
    lam = operator_norm_sq(program, rng, 20 if single else 30, single, x0)
    if single and not math.isfinite(lam):
        lam = operator_norm_sq(program, rng, 30, False, x0)
    return max(1.05 * lam * get_loss(loss).curvature / n, 1e-12)


def check_targets(program: Program, Y, caller: str = "") -> np.ndarray:
    """``Y`` as a finite float64 array of shape (n, c) matching ``program``."""
    return check_array(Y, "Y", shape=(program.n, program.n_outputs), caller=caller)


# ----------------------------------------------------------------------------- features


def circ_apply(X: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``circ(X) vec(h)`` for every sample: ``out[i, t] = sum_{u,e} X[i, (t+u) % s, e] h[u, e]``.

    X (n, s, d), h (s, d) -> (n, s); computed by FFT over tokens.
    """
    FX = np.fft.rfft(X, axis=1)  # (n, s//2+1, d)
    Fh = np.fft.rfft(h, axis=0)  # (s//2+1, d)
    return np.fft.irfft((np.conj(Fh)[None] * FX).sum(-1), n=X.shape[1], axis=1)


def circ_pool(X: np.ndarray, D: np.ndarray) -> np.ndarray:
    """``(1/s) D_i^T circ(X_i)`` reshaped (n, s, d): ``out[i,u,e] = 1/s sum_t D[i,t] X[i,(t+u)%s,e]``."""
    s = X.shape[1]
    FX = np.fft.rfft(X, axis=1)  # (n, f, d)
    FD = np.fft.rfft(D, axis=1)  # (n, f)
    return np.fft.irfft(np.conj(FD)[:, :, None] * FX, n=s, axis=1) / s


_GATED_ADVICE = ("use activation='linear' (structured operator), fewer gates, fewer samples "
                 "or a smaller feature dimension.")


def check_dense_size(entries: int, what: str, advice: str = _GATED_ADVICE) -> None:
    """Raise ``MemoryError`` (sizes, budget, ``advice``) when ``entries`` exceed :func:`dense_budget`."""
    budget = dense_budget()
    if entries > budget:
        raise MemoryError(
            f"{what} needs a dense feature tensor of {entries:,} float64 entries "
            f"(> {budget:,}, a third of the available memory); {advice}"
        )


def group_slices(d: int, groups: int) -> list[slice]:
    width = d // groups
    return [slice(g * width, (g + 1) * width) for g in range(groups)]


def pattern_block(X: np.ndarray, head: str, D: np.ndarray) -> DenseBlock:
    """Features of one fixed activation pattern ``D`` (gated ReLU / ReLU with known signs).

    ``D``: self_attention (n, s, s) over (t, u); mixer (n, s, d) over (t, e); fno/bfno (n, s)
    (pass the group's tokens); mlp (n,). The pooled output of a unit with first-layer weight
    ``w`` and second-layer weight ``v`` is ``phi_i[w (x) v]``.
    """
    n, s, d = X.shape
    if head == "self_attention":
        M = np.einsum("ntu,nta->nua", D, X, optimize=True) / s  # (n, s, d)
        phi = np.einsum("nua,nub,nue->nabe", M, X, X, optimize=True)  # (n, d, d, d)
        return DenseBlock(phi.reshape(n, d * d, d))
    if head == "mixer":
        phi = np.einsum("nte,nue->ntue", D, X, optimize=True) / s  # (n, s, s, d)
        return DenseBlock(phi.reshape(n, s * s, d))
    if head in ("fno", "bfno"):
        return DenseBlock(circ_pool(X, D).reshape(n, -1, 1))
    return DenseBlock((D[:, None] * X.mean(axis=1))[:, :, None])
