"""The random data of the official Att-SVM code, reproduced bit for bit from its seed.

The notebooks of umich-sota/TF-as-SVM (``local_converge.ipynb``, which draws both the
local-convergence and the nuclear-bias figures of Tarzanagh, Li, Thrampoulidis, Oymak,
"Transformers as Support Vector Machines", arXiv 2308.16898) fix the data seed: run ``r`` uses
``seed = r`` (runs 0-99). Their generator draws, from a ``torch.Generator`` seeded with
``seed``, in this order and in float32:

1. ``v`` (d,) Gaussian, scaled to unit norm;
2. ``Y`` (n,) = +1 where a Gaussian draw is positive, else -1;
3. ``X`` (n, T, d) Gaussian, every token scaled to unit norm;
4. ``Z`` (n, d) Gaussian queries, scaled to unit norm,

and the notebook casts them to float64. :func:`official_problem` makes the same draws, so
``official_problem(r)`` is the notebook's data of run ``r`` exactly (the cast to float64 is
exact). The notebook does not seed the model initialization; see
:mod:`attnlens.svm.dynamics.reference_loop`. Score convention ``score_t = x_t^T W z``.
"""

from __future__ import annotations

from attnlens._validation import Integral, Interval, validate_params
from attnlens.svm.problems import TokenSelectionProblem

__all__ = ["OFFICIAL_SHAPE", "official_problem"]

#: (n, T, d) of ``local_converge.ipynb``.
OFFICIAL_SHAPE = (6, 8, 10)


@validate_params({
    "seed": [Interval(Integral, 0, None)],
    "n": [Interval(Integral, 1, None)],
    "T": [Interval(Integral, 2, None)],
    "d": [Interval(Integral, 1, None)],
})
def official_problem(
    seed: int,
    n: int = OFFICIAL_SHAPE[0],
    T: int = OFFICIAL_SHAPE[1],
    d: int = OFFICIAL_SHAPE[2],
) -> TokenSelectionProblem:
    """The cross-attention problem of run ``seed`` of the official TF-as-SVM notebooks.

    Draw order ``v, Y, X, Z`` from ``torch.Generator().manual_seed(seed)`` in float32 (see the
    module docstring), returned as a float64 :class:`TokenSelectionProblem` with queries ``Z``.
    """
    import torch

    gen = torch.Generator()
    gen.manual_seed(int(seed))
    n, T, d = int(n), int(T), int(d)
    v = torch.randn((d,), generator=gen)
    v = v / torch.norm(v)
    positive = torch.randn((n,), generator=gen) > 0
    Y = 2 * torch.ones(n) * positive - 1  # float32 +-1, as the notebook forms it
    X = torch.randn((n, T, d), generator=gen)
    X = X / torch.norm(X, dim=-1, keepdim=True)
    Z = torch.randn((n, d), generator=gen)
    Z = Z / torch.norm(Z, dim=-1, keepdim=True)
    as64 = [a.double().numpy() for a in (X, Y, v, Z)]
    return TokenSelectionProblem(as64[0], as64[1], as64[2], Z=as64[3])

