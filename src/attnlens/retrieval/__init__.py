"""attnlens.retrieval: self-attention as a tool for retrieval.

- :class:`CSAReranker` (Ouyang et al., NeurIPS 2021; MCC-WH/CSA): a transformer over affinity
  features re-ranks any first-stage shortlist; :func:`affinity_features`, :func:`csa_loss`,
  :class:`CSATransformer`.
- Classic re-rankers with the same interface ``(Q, G, ranking) -> ranking``:
  :func:`average_query_expansion`, :func:`alpha_query_expansion`, :func:`k_reciprocal_rerank`
  (Zhong et al. 2017), :func:`diffusion_rerank` (Iscen et al. 2017).
- First stage and evaluation: :func:`first_stage_ranking`, :func:`find_query_duplicates`,
  :func:`evaluate_ranking` (mAP, mP@k).
- :func:`inter_modality_flow` (Xue et al., NeurIPS 2021) and the small
  :class:`FusionTransformer` its experiment trains.

A pillar: arrays in, result objects out; nothing here loads models or data.
"""

from attnlens.retrieval.affinity import affinity_features
from attnlens.retrieval.csa import CSAReranker
from attnlens.retrieval.csa_model import CSATransformer, csa_loss
from attnlens.retrieval.diffusion import diffusion_rerank, diffusion_scores
from attnlens.retrieval.fusion import FusionTransformer
from attnlens.retrieval.imf import IMFResult, inter_modality_flow
from attnlens.retrieval.kreciprocal import k_reciprocal_distance, k_reciprocal_rerank
from attnlens.retrieval.metrics import RankingMetrics, evaluate_ranking
from attnlens.retrieval.query_expansion import alpha_query_expansion, average_query_expansion
from attnlens.retrieval.similarity import (
    complete_ranking,
    find_query_duplicates,
    first_stage_ranking,
)

__all__ = [
    "CSAReranker",
    "CSATransformer",
    "FusionTransformer",
    "IMFResult",
    "RankingMetrics",
    "affinity_features",
    "alpha_query_expansion",
    "average_query_expansion",
    "complete_ranking",
    "csa_loss",
    "diffusion_rerank",
    "diffusion_scores",
    "evaluate_ranking",
    "find_query_duplicates",
    "first_stage_ranking",
    "inter_modality_flow",
    "k_reciprocal_distance",
    "k_reciprocal_rerank",
]
