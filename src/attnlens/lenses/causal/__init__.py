"""The causal lens: constraint-based causal graphs over tokens from the deepest attention layer.

Rohekar, Gurwicz & Nisimov, "Causal Interpretation of Self-Attention in Pre-Trained
Transformers", NeurIPS 2023 (arXiv 2310.20307); official code IntelLabs/causality-lab (CLEANN).
Pure functions over arrays: :func:`attention_covariance` (the paper's ``A A^T``),
:func:`partial_correlations`, :func:`fisher_z_test` (effective sample size = hidden size),
:func:`pc_skeleton` / :func:`pc_search` (stable PC, own implementation, equal to causal-learn's
skeleton), :func:`icd_search` (ICD, the paper's search: a PAG under latent confounders) and
:func:`causal_explanation` (CLEANN's minimal explaining token set).
"""

from attnlens.lenses.causal.citest import FisherZResult, fisher_z_test
from attnlens.lenses.causal.covariance import (
    AttentionCovariance,
    attention_covariance,
    partial_correlations,
    samples_with_correlation,
)
from attnlens.lenses.causal.explain import CausalExplanation, causal_explanation
from attnlens.lenses.causal.icd import ICDResult, icd_search
from attnlens.lenses.causal.pc import PCResult, pc_search, pc_skeleton

__all__ = [
    "AttentionCovariance",
    "CausalExplanation",
    "FisherZResult",
    "ICDResult",
    "PCResult",
    "attention_covariance",
    "causal_explanation",
    "fisher_z_test",
    "icd_search",
    "partial_correlations",
    "pc_search",
    "pc_skeleton",
    "samples_with_correlation",
]
