r"""``solve``: the certified solve of a convex head program, chosen by the program's type.

Solves :math:`\min_{Z_1..Z_m} f\big(\sum_j \mathcal A_j(Z_j)\big) + \beta\sum_j \|Z_j\|_*`
(Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022, arXiv 2205.08078), with
``f`` the squared or cross-entropy loss of :mod:`attnlens.convex.losses` and ``A_j`` the
implicit operators of :mod:`attnlens.convex.operators`:

* a :class:`~attnlens.convex.operators.Program` (linear and gated-ReLU heads) goes to the
  nuclear-norm solvers of :mod:`attnlens.convex.nuclear` (``"auto"``: FISTA with continuation
  in ``beta``; ``"fista"``; ``"bm"``: Burer-Monteiro; ``"cvxpy"``: the reference);
* a :class:`~attnlens.convex.relu_program.ReluProgram` goes to :mod:`attnlens.convex.relu`
  (gated relaxation for the lower bound, then projected FISTA with exact cone projections, or
  the cvxpy reference).

Certificate: ``certificate = (P - D) / max(P, 1e-12)``, the relative duality gap between the
primal value ``P`` and the dual value ``D`` of the scaled dual point (a bound on the relative
suboptimality). ``grad_ratio = max_j ||grad_j L(Z)||_2 / beta`` is reported too (<= 1 at an
optimum). ``tol`` is on the certificate.

``checkpoint``: a :class:`~attnlens.checkpoint.Checkpoint` the FISTA solvers (``"auto"``,
``"fista"``; numpy backend, linear and gated-ReLU heads) save their state to and resume from
(ignored, with a warning, elsewhere).

``backend``: ``"numpy"`` (default) or ``"torch"`` -- the FISTA iterations (``solver="fista"``
or ``"auto"``) in float64 torch on ``device`` ("cpu", "cuda"; default the GPU when one is
visible), see :mod:`attnlens.convex.torch_fista`; the certificate stays float64 numpy.
"""

from __future__ import annotations

import functools

import numpy as np

from attnlens._results import warn_on_status
from attnlens._validation import (
    Array,
    Boolean,
    InstanceOf,
    Integral,
    Interval,
    Options,
    Real,
    raise_invalid,
    validate_params,
    warn_ignored,
)
from attnlens.checkpoint import Checkpoint
from attnlens.convex._linalg import one_blas_thread
from attnlens.convex.losses import LOSSES
from attnlens.convex.nuclear import (
    BACKENDS,
    CHECKPOINT_SOLVERS,
    NUCLEAR_SOLVERS,
    solve_nuclear,
)
from attnlens.convex.operators import Program, check_targets
from attnlens.convex.relu import solve_relu
from attnlens.convex.relu_program import ReluProgram
from attnlens.convex.results import ConvexResult

#: every value of the ``solver`` parameter (a ReLU program refuses ``"bm"``)
SOLVERS = tuple(NUCLEAR_SOLVERS)

#: operator applications below this many multiply-adds run on one BLAS thread: OpenBLAS's
#: threads spin-wait, and on a shared 2-core machine small GEMMs got 30-100x slower with two
#: (measured: a (1000, 36) x (36, 80) product pair 0.6 ms on 1 thread, 60 ms on 2 under load)
SMALL_OPERATOR = 2e8


@functools.singledispatch
def solve_program(program: Program, Y: np.ndarray, beta: float, loss: str, *, solver: str,
                  tol: float, max_iter: int, rng: np.random.Generator | None,
                  progress: bool) -> ConvexResult:
    """The solver of ``program``'s type (registered below); unknown program types raise."""
    raise TypeError(f"no solver is registered for programs of type {type(program).__name__}")


solve_program.register(Program, solve_nuclear)
solve_program.register(ReluProgram, solve_relu)


@validate_params({
    "program": [InstanceOf(Program, name="a Program (see build_program)")],
    "Y": [Array(ndim=2)],
    "beta": [Interval(Real, 0, None, closed="neither")],
    "loss": [Options(*LOSSES)],
    "solver": [Options(*SOLVERS)],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "max_iter": [Interval(Integral, 1, None)],
    "rng": [None, InstanceOf(np.random.Generator)],
    "progress": [Boolean()],
    "warn": [Boolean()],
    "backend": [Options(*BACKENDS)],
    "device": [None, str],
    "checkpoint": [None, InstanceOf(Checkpoint)],
})
def solve(program: Program, Y: np.ndarray, beta: float, loss: str = "squared", *,
          solver: str = "auto", tol: float = 1e-6, max_iter: int = 5000,
          rng: np.random.Generator | None = None, progress: bool = False,
          warn: bool = True, backend: str = "numpy", device: str | None = None,
          checkpoint: Checkpoint | None = None) -> ConvexResult:
    """Solve the block nuclear-norm program of ``program`` for targets ``Y`` (n, c).

    ``Y`` is one-hot for classification; any real targets work with ``loss="squared"``.
    Returns a :class:`ConvexResult`; warns (``ConvergenceWarning``) when ``tol`` is not reached.
    Small programs run on one BLAS thread (:data:`SMALL_OPERATOR`). ``backend="torch"``: FISTA
    on the torch ``device`` (see the module doc); ReLU programs run on numpy only.
    """
    Y = check_targets(program, Y, "solve")
    kwargs = dict(solver=solver, tol=tol, max_iter=max_iter, rng=rng, progress=progress)
    if backend == "torch":
        if isinstance(program, ReluProgram):
            raise_invalid("backend", "'numpy' for a ReLU program (activation='relu')", backend,
                          "The torch backend runs FISTA on linear and gated-ReLU heads.", "solve")
        kwargs.update(backend=backend, device=device)
    elif device is not None:
        warn_ignored("device", device, "backend='numpy' runs on the CPU; set backend='torch'")
    if checkpoint is not None:
        if (isinstance(program, ReluProgram) or backend == "torch"
                or solver not in CHECKPOINT_SOLVERS):
            warn_ignored("checkpoint", checkpoint.path, "only the FISTA solvers ('auto', "
                         "'fista') of linear and gated-ReLU heads on backend='numpy' resume")
        else:
            kwargs.update(checkpoint=checkpoint)
    if solver != "cvxpy" and program.cost() < SMALL_OPERATOR:
        with one_blas_thread():
            res = solve_program(program, Y, float(beta), loss, **kwargs)
    else:
        res = solve_program(program, Y, float(beta), loss, **kwargs)
    if warn:
        warn_on_status(res.status, res.certificate, tol, f"convex solver {res.method!r}")
    return res
