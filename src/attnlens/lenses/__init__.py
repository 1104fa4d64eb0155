"""attnlens.lenses: read attention out of real models (arrays in, result objects out).

Abnar & Zuidema 2020 (rollout, flow); Michel et al. 2019 (head importance); Tarzanagh et al.
2023 (Att-SVM of real heads); Chen et al. 2023 (kernel spectra); Rohekar, Gurwicz & Nisimov,
NeurIPS 2023 (the causal lens, :mod:`attnlens.lenses.causal`). No model or data is loaded
here: :mod:`attnlens.backbones.capture` records what these functions read.
"""

from attnlens.lenses.flow import attention_flow, raw_attention_flow
from attnlens.lenses.rollout import attention_rollout

__all__ = ["attention_flow", "attention_rollout", "raw_attention_flow"]
