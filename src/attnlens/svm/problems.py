"""Token-selection problems: the data of the Att-SVM programs.

Score convention: ``score_t = x_t^T W z`` (``W = K Q^T`` when factorized). A sequence ``X_i``
(``T`` tokens of dimension ``d``), a query ``z_i``, a label ``Y_i = +-1`` and a head ``v`` give
the token scores ``gamma_it = Y_i v^T x_it``; the optimal token is ``argmax_t gamma_it``.

References: Tarzanagh, Li, Zhang, Oymak, "Max-Margin Token Selection in Attention Mechanism",
NeurIPS 2023 (arXiv 2306.13596); Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as Support
Vector Machines" (arXiv 2308.16898).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from attnlens._validation import (
    Integral,
    Interval,
    RandomState,
    check_array,
    check_int,
    check_random_state,
    raise_invalid,
    validate_params,
)

__all__ = [
    "TokenSelectionProblem",
    "random_problem",
    "planted_problem",
    "paper_2d_example",
]


@dataclass(frozen=True)
class TokenSelectionProblem:
    """Tokens ``X`` (n, T, d), labels ``Y`` (n,) of +-1, head ``v`` (d,), queries.

    Either ``Z`` (n, d) gives one query per sequence (cross-attention), or ``query_index``
    selects the query among the tokens (self-attention: ``z_i = x_{i, query_index}``).
    Everything is stored as float64. Scores follow ``score_t = x_t^T W z``.
    """

    X: np.ndarray
    Y: np.ndarray
    v: np.ndarray
    Z: np.ndarray | None = None
    query_index: int | None = None
    _queries: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        X = check_array(self.X, "X", ndim=3)
        n, T, d = X.shape
        Y = check_array(self.Y, "Y", shape=(n,))
        if not np.all(np.isin(Y, (-1.0, 1.0))):
            bad = np.unique(Y[~np.isin(Y, (-1.0, 1.0))])[:5]
            raise_invalid("Y", "labels -1 or +1", f"got values {bad.tolist()}",
                          "Map the classes to -1/+1.", "TokenSelectionProblem")
        v = check_array(self.v, "v", shape=(d,))
        if self.Z is not None and self.query_index is not None:
            raise_invalid("query_index", "None when Z is given", self.query_index,
                          "Pass either Z (cross-attention queries) or query_index "
                          "(self-attention), not both.", "TokenSelectionProblem")
        if self.Z is None and self.query_index is None:
            raise_invalid("Z", "(n, d) queries when query_index is None", None,
                          "Pass Z for cross-attention, or query_index=k for self-attention "
                          "(z_i = x_{i,k}).", "TokenSelectionProblem")
        if self.Z is not None:
            Z = check_array(self.Z, "Z", shape=(n, d))
            queries = Z
            qi = None
        else:
            qi = check_int(self.query_index, "query_index", low=0, high=T - 1)
            Z = None
            queries = X[:, qi, :].copy()
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "Y", Y)
        object.__setattr__(self, "v", v)
        object.__setattr__(self, "Z", Z)
        object.__setattr__(self, "query_index", qi)
        object.__setattr__(self, "_queries", queries)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def T(self) -> int:
        return int(self.X.shape[1])

    @property
    def d(self) -> int:
        return int(self.X.shape[2])

    @property
    def variant(self) -> str:
        """``"cross"`` when queries are given, ``"self"`` when taken from the tokens."""
        return "cross" if self.Z is not None else "self"

    @property
    def queries(self) -> np.ndarray:
        """The queries ``z_i``, shape (n, d)."""
        return self._queries

    @property
    def token_scores(self) -> np.ndarray:
        """``gamma_it = Y_i v^T x_it``, shape (n, T)."""
        return self.Y[:, None] * (self.X @ self.v)

    @property
    def optimal_tokens(self) -> np.ndarray:
        """``opt_i = argmax_t gamma_it`` (first index on ties), shape (n,)."""
        return np.argmax(self.token_scores, axis=1)

    def attention_scores(self, W: np.ndarray) -> np.ndarray:
        """``x_it^T W z_i`` for all i, t, shape (n, T)."""
        W = check_array(W, "W", shape=(self.d, self.d))
        return np.einsum("itd,id->it", self.X, self.queries @ W.T)


def _unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


@validate_params({
    "n": [Interval(Integral, 1, None)],
    "T": [Interval(Integral, 2, None)],
    "d": [Interval(Integral, 1, None)],
    "seed": [RandomState()],
    "self_attention": ["boolean"],
    "query_index": [Interval(Integral, 0, None)],
})
def random_problem(
    n: int,
    T: int,
    d: int,
    seed: int | np.random.Generator | None = None,
    *,
    self_attention: bool = False,
    query_index: int = 0,
) -> TokenSelectionProblem:
    """The papers' random setting: unit-norm Gaussian tokens and queries, unit ``v``, ``Y = +-1``.

    ``self_attention=True`` takes the query from the tokens (``z_i = x_{i, query_index}``)
    instead of drawing it.
    """
    n, T, d = int(n), int(T), int(d)
    rng = check_random_state(seed, "seed")
    X = _unit_rows(rng.standard_normal((n, T, d)))
    Zs = _unit_rows(rng.standard_normal((n, d)))
    v = _unit_rows(rng.standard_normal(d))
    Y = rng.choice(np.array([-1.0, 1.0]), size=n)
    if self_attention:
        return TokenSelectionProblem(X, Y, v, query_index=query_index)
    return TokenSelectionProblem(X, Y, v, Z=Zs)


@validate_params({
    "n": [Interval(Integral, 1, None)],
    "T": [Interval(Integral, 2, None)],
    "d": [Interval(Integral, 1, None)],
    "seed": [RandomState()],
})
def planted_problem(
    n: int,
    T: int,
    d: int,
    seed: int | np.random.Generator | None = None,
) -> tuple[TokenSelectionProblem, np.ndarray]:
    """A random problem and a selection that is feasible by construction.

    Draws the random setting of :func:`random_problem` and a planted Gaussian ``W0``; selects in
    each sequence the top token under ``x_t^T W0 z_i``. ``W0`` separates that selection, so the
    Att-SVM is feasible even when ``n >> d`` (where random selections usually are not).
    Returns ``(problem, selection)``.
    """
    rng = check_random_state(seed, "seed")
    problem = random_problem(n, T, d, rng)
    W0 = rng.standard_normal((d, d))
    selection = np.argmax(problem.attention_scores(W0), axis=1)
    return problem, selection


def paper_2d_example() -> TokenSelectionProblem:
    """The hand-built example of Tarzanagh et al. (NeurIPS 2023): one sequence, three 2-D tokens.

    Tokens ``(-0.1, 1)``, ``(1, 0)``, ``(0, 0)`` with scores 1, 0.9, 0 (``v = (0.9, 1.09)``).
    The query is ``z = e_1`` so ``W z = p`` is the paper's prompt and ``||W||_F = ||p||``.
    Selecting token 0 (globally optimal) gives ``1/2 ||p||^2 = 1/(2 * 1.01) = 0.495``;
    selecting token 1 (locally optimal) gives ``0.5``; token 2 is not locally optimal.
    """
    X = np.array([[[-0.1, 1.0], [1.0, 0.0], [0.0, 0.0]]])
    return TokenSelectionProblem(X, np.array([1.0]), np.array([0.9, 1.09]), Z=np.array([[1.0, 0.0]]))
