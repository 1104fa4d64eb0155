"""attnlens.tabular: attention between datapoints and the optimal-transport view of attention on
tables (a pillar: arrays in, estimators and result objects out).

- :class:`NPTClassifier`, :class:`NPTRegressor`: Non-Parametric Transformers (Kossen et al.,
  NeurIPS 2021) as scikit-learn estimators.
- :func:`make_lookup_table`, :func:`lookup_probe`: the cross-datapoint lookup probe.
- :func:`ot_metrics`, :func:`path_efficiency`: discrete OT metrics of a coupling / a trajectory.
- :class:`TabularTransformerClassifier`, :class:`OTLensCallback`: a small tabular transformer and
  the per-epoch OT lens on its self-attention layer (Candelieri & Quadrio, arXiv 2512.09530).
- :class:`OTDummyClassifier`: the OT dummy-Gaussian classifier of the same thesis.

Uses no other pillar.
"""

from attnlens.tabular.lookup import LookupProbeResult, LookupTable, lookup_probe, make_lookup_table
from attnlens.tabular.npt import NPTClassifier, NPTRegressor
from attnlens.tabular.ot_classifier import OTDummyClassifier
from attnlens.tabular.ot_lens import OTLensCallback, OTTrajectory
from attnlens.tabular.ot_metrics import OTMetrics, ot_metrics, path_efficiency
from attnlens.tabular.transformer import TabularTransformerClassifier

__all__ = [
    "LookupProbeResult",
    "LookupTable",
    "NPTClassifier",
    "NPTRegressor",
    "OTDummyClassifier",
    "OTLensCallback",
    "OTMetrics",
    "OTTrajectory",
    "TabularTransformerClassifier",
    "lookup_probe",
    "make_lookup_table",
    "ot_metrics",
    "path_efficiency",
]
