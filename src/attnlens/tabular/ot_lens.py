"""The OT lens during training: a callback that records, at every epoch, the OT metrics of the
map a self-attention layer applies to its tokens (Candelieri & Quadrio, arXiv 2512.09530).

For each probe row, source = the row's feature tokens entering the layer (D points in R^E),
target = the layer's output tokens; the map ``t_j -> s_j`` is scored by
:func:`attnlens.tabular.ot_metrics.ot_metrics` (coupling ``I / D``) and the metrics are averaged
over the probe rows. The trajectory of the output clouds across epochs gives the path efficiency
(:func:`attnlens.tabular.ot_metrics.path_efficiency`, per row, averaged). The thesis's claims read
on it: the final mapping is close to the OT coupling (optimality near 1, small Monge gap), and the
trajectory is inefficient (path efficiency well below 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from attnlens._validation import Integral, Interval, check_array, check_param
from attnlens.tabular.ot_metrics import ot_metrics, path_efficiency

FIELDS = ("wasserstein", "transport_cost", "monge_gap", "optimality", "efficiency")


@dataclass(frozen=True)
class OTTrajectory:
    """Per-epoch means over the probe rows (epoch 0 = before training) and the path efficiency."""

    epochs: list[int]
    wasserstein: list[float]
    transport_cost: list[float]
    monge_gap: list[float]
    optimality: list[float]
    efficiency: list[float]
    path_efficiency: float
    n_rows: int

    def as_dict(self) -> dict:
        return asdict(self)


class OTLensCallback:
    """Call as ``cb(epoch, estimator)``; the estimator exposes ``net_.attention`` and ``scaler_``
    (:class:`attnlens.tabular.transformer.TabularTransformerClassifier`)."""

    def __init__(self, X_probe, max_rows: int = 32, metric: str = "sqeuclidean") -> None:
        check_param("max_rows", max_rows, [Interval(Integral, 1, None)], "OTLensCallback")
        self.X_probe = check_array(X_probe, "X_probe", ndim=2, caller="OTLensCallback")[:max_rows]
        self.metric = metric
        self.records: list[tuple[int, dict[str, float]]] = []
        self.outputs: list[np.ndarray] = []  # (rows, D, E) per recorded epoch

    def __call__(self, epoch: int, estimator) -> None:
        net = estimator.net_
        was_training = net.training
        net.eval()
        with torch.no_grad():
            X = torch.as_tensor(estimator.scaler_.transform(self.X_probe), dtype=torch.float32)
            T, S, _ = net.attention(X)
        net.train(was_training)
        T64, S64 = T.double().numpy(), S.double().numpy()
        per_row = [ot_metrics(T64[i], S64[i], metric=self.metric) for i in range(len(T64))]
        self.records.append((epoch, {f: float(np.mean([getattr(m, f) for m in per_row]))
                                     for f in FIELDS}))
        self.outputs.append(S64)

    def trajectory(self) -> OTTrajectory:
        if len(self.records) < 2:
            raise RuntimeError("OTLensCallback recorded fewer than two epochs; train first.")
        n = self.outputs[0].shape[0]
        eff = float(np.mean([path_efficiency([o[i] for o in self.outputs], metric="euclidean")
                             for i in range(n)]))
        return OTTrajectory(epochs=[e for e, _ in self.records],
                            **{f: [r[f] for _, r in self.records] for f in FIELDS},
                            path_efficiency=eff, n_rows=n)
