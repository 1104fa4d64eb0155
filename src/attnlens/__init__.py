"""attnlens: the optimization theory of self-attention, executable.

Pillars: :mod:`attnlens.svm` (Att-SVM, max-margin token selection),
:mod:`attnlens.convex` (attention heads as convex programs),
:mod:`attnlens.kernel` (Primal-Attention, asymmetric kernel SVD).
"""

import logging

from attnlens._results import Status
from attnlens.errors import (
    ConvergenceWarning,
    InaccurateSolutionWarning,
    InfeasibleError,
    NotFittedError,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "ConvergenceWarning",
    "InaccurateSolutionWarning",
    "InfeasibleError",
    "NotFittedError",
    "Status",
    "__version__",
]
