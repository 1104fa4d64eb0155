"""Named errors and warnings of attnlens, in one place.

Every error says what went wrong, the value that was got, and what to try next.
"""

from __future__ import annotations

from typing import Any


class AttnLensError(Exception):
    """Base class of every error raised on purpose by attnlens."""


class InfeasibleError(AttnLensError):
    """A problem has no feasible point (for example an Att-SVM whose selection cannot be separated).

    ``evidence`` carries what proves it: the offending sequences and a certificate
    (for Att-SVM, a dual ray: nonnegative multipliers whose combination of constraint
    vectors is zero while their sum is positive).
    """

    def __init__(self, message: str, evidence: dict[str, Any] | None = None):
        super().__init__(message)
        self.evidence: dict[str, Any] = dict(evidence or {})


class InvalidParameterError(AttnLensError, ValueError, TypeError):
    """A parameter failed its declared constraints (wrong type, range, shape, option or value).

    Subclasses both ``ValueError`` and ``TypeError`` (as scikit-learn's error of the same name),
    so callers catching either keep working. The message names the parameter, the value got and
    what to try next.
    """


class NotFittedError(AttnLensError, ValueError, AttributeError):
    """An estimator was used before ``fit`` (mirrors ``sklearn.exceptions.NotFittedError``)."""


class BackboneNotInstalledError(AttnLensError, ImportError):
    """A pretrained backbone's package is not installed; the message gives the install command."""


class DatasetNotAvailableError(AttnLensError, FileNotFoundError):
    """A dataset's package or files are missing; the message says how to install them."""


class MemoryBudgetError(AttnLensError, MemoryError):
    """A model or problem would need more memory than its declared budget; the message gives the
    estimate, the budget and what to shrink (rows per batch, width, number of attributes)."""


class NonFiniteError(AttnLensError, FloatingPointError):
    """A solver's iterate or product became NaN or infinite; the message names the quantity, the
    iteration and what to try (double precision, a smaller step, rescaled inputs)."""


class CacheCorruptError(AttnLensError):
    """A cache entry failed its integrity check (it is rebuilt, never silently used)."""


class RunFolderMismatchError(AttnLensError):
    """A run folder holds results of a different configuration than the one asked to resume."""


class IgnoredParameterWarning(UserWarning):
    """A parameter was set but has no effect in the chosen mode (for example ``rank`` with ``param="W"``)."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped before reaching its tolerance; the result says how far it got."""


class InaccurateSolutionWarning(UserWarning):
    """A solver returned ``optimal_inaccurate``: usable, but its certificate is above ``tol``."""


class CorpusTooSmallError(AttnLensError, ValueError):
    """A corpus has too few tokens for the requested vocabulary or window; the message says
    which ids never occur and what to lower."""


class UnsortedEventTimesError(AttnLensError, ValueError):
    """An event sequence has decreasing times (a negative time gap); sort each sequence by time."""


class BackendUnavailableError(AttnLensError, RuntimeError):
    """An execution backend cannot run here (Ray not installed, a Ray cluster unreachable); the
    message names the fix (the install command, ``ray start --head``, or another ``--backend``)."""


class SweepIncompleteError(AttnLensError, RuntimeError):
    """Some units of a sweep did not finish (a worker died past its retries, or a unit raised).

    The finished units are stored; ``pending`` lists the keys left to run, and the message says
    that running the same command again resumes them.
    """

    def __init__(self, message: str, pending: list[str] | None = None):
        super().__init__(message)
        self.pending: list[str] = list(pending or [])
