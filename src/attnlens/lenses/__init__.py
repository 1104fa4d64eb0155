"""attnlens.lenses: read attention out of real models (arrays in, result objects out).

Abnar & Zuidema 2020 (rollout, flow); Michel et al. 2019 (head importance); Tarzanagh et al.
2023 (Att-SVM of real heads); Chen et al. 2023 (kernel spectra); Rohekar, Gurwicz & Nisimov,
NeurIPS 2023 (the causal lens, :mod:`attnlens.lenses.causal`); Levine et al. 2020 (depth
threshold, :mod:`attnlens.lenses.depth`); Mehta 2025 (distributional projection,
:mod:`attnlens.lenses.projection`). No model or data is loaded
here: :mod:`attnlens.backbones.capture` records what these functions read.
"""

from attnlens.lenses.attsvm import HeadSVM, head_attsvm
from attnlens.lenses.depth import (
    COMMON_MODELS,
    DepthComparison,
    ModelShape,
    compare_depths,
    depth_regime,
    depth_threshold,
    threshold_table,
    transformer_params,
    width_for_params,
)
from attnlens.lenses.flow import attention_flow, raw_attention_flow
from attnlens.lenses.heads import (
    HeadImportance,
    attention_entropy,
    head_importance,
    mean_attention_distance,
)
from attnlens.lenses.projection import (
    Correlation,
    GloveEmbeddings,
    Projection,
    cooccurrence_counts,
    directional_asymmetry,
    distributional_projection,
    double_center,
    fit_bilinear,
    glove_embeddings,
    pair_correlation,
    pmi_matrix,
    split_bilinear,
    svd_embeddings,
)
from attnlens.lenses.rollout import attention_rollout
from attnlens.lenses.spectrum import ENERGY_LEVELS, MapSpectrum, map_spectrum

__all__ = [
    "COMMON_MODELS",
    "Correlation",
    "DepthComparison",
    "ENERGY_LEVELS",
    "GloveEmbeddings",
    "HeadImportance",
    "HeadSVM",
    "MapSpectrum",
    "ModelShape",
    "Projection",
    "attention_entropy",
    "attention_flow",
    "attention_rollout",
    "compare_depths",
    "cooccurrence_counts",
    "depth_regime",
    "depth_threshold",
    "directional_asymmetry",
    "distributional_projection",
    "double_center",
    "fit_bilinear",
    "glove_embeddings",
    "head_attsvm",
    "head_importance",
    "map_spectrum",
    "mean_attention_distance",
    "pair_correlation",
    "pmi_matrix",
    "raw_attention_flow",
    "split_bilinear",
    "svd_embeddings",
    "threshold_table",
    "transformer_params",
    "width_for_params",
]
