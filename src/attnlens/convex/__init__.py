"""attnlens.convex: attention, MLP-Mixer, FNO and MLP heads as convex programs.

Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022 (arXiv 2205.08078).
Self-attention score convention: ``score_t = x_t^T W z`` with ``W = W1 = K Q^T``.

Modules, bottom up (each imports only those above it): ``_linalg`` (SVD, SVT, norms, BLAS
threads, seed, progress bar), ``losses``, ``heads`` (torch heads), ``operators`` (implicit
linear operators, ``Program``), ``cones``, ``relu_program``, ``results``, ``certificate``,
``_reference`` (cvxpy), ``ssnal`` (semismooth Newton augmented Lagrangian), ``nuclear`` (FISTA / continuation / Burer-Monteiro), ``relu``
(projected FISTA), ``relu_bracket`` (tightening the ReLU bracket), ``solvers`` (``solve``: the solver chosen by the program's type),
``programs`` (``build_program``), ``recover``, ``estimators``.
"""

from attnlens.convex.certificate import certify
from attnlens.convex.estimators import ConvexAttentionClassifier, NonConvexAttentionClassifier
from attnlens.convex.heads import ConvexHead, head_outputs
from attnlens.convex.operators import Program
from attnlens.convex.programs import build_program, sample_gates
from attnlens.convex.recover import network_to_blocks, recover_network
from attnlens.convex.relu_bracket import refine_bracket, solve_relu_bracket
from attnlens.convex.results import ConvexResult
from attnlens.convex.solvers import solve

__all__ = [
    "ConvexAttentionClassifier",
    "NonConvexAttentionClassifier",
    "ConvexHead",
    "ConvexResult",
    "Program",
    "build_program",
    "certify",
    "head_outputs",
    "network_to_blocks",
    "recover_network",
    "refine_bracket",
    "sample_gates",
    "solve",
    "solve_relu_bracket",
]
