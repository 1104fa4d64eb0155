"""attnlens.convex: attention, MLP-Mixer, FNO and MLP heads as convex programs.

Sahiner et al., "Unraveling Attention via Convex Duality", ICML 2022 (arXiv 2205.08078).
Self-attention score convention: ``score_t = x_t^T W z`` with ``W = W1 = K Q^T``.
"""

from attnlens.convex.estimators import ConvexAttentionClassifier, NonConvexAttentionClassifier
from attnlens.convex.heads import ConvexHead, head_outputs
from attnlens.convex.programs import Program, build_program, sample_gates
from attnlens.convex.recover import network_to_blocks, recover_network
from attnlens.convex.solvers import ConvexResult, certify, solve

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
    "sample_gates",
    "solve",
]
