"""Transfer benchmark: frozen MiniLM on Rotten Tomatoes (all 8,530 sentences), all heads (issue 6).

Anchors, side by side in the same run: logistic regression on the full 384-d pooled features
(the practitioner's baseline) and the first probe quoted in the issue (linear 62.4%, convex
linear self-attention 65.1%, full-dimension linear 72.9%; 3,000 train / 1,000 test, d=32).
Protocol: fixed stratified 20% test split (1,706 sentences); per seed the rest is split 80/20
into train and validation and training is capped at 3,000 sentences (as in the probe); every
head's grid value is selected on validation. MiniLM reads up to 64 WordPiece tokens; the d-dim
heads see the first 32 (69% of the sentences whole, 90% of all tokens), the full-dimension
baseline pools all of them. Writes benchmarks/results/transfer_minilm_rt.json
and .png; the run folder runs/bench-transfer_minilm_rt resumes (``--budget-s=720`` runs a
bounded piece and exits 3 while incomplete).
"""

from __future__ import annotations

import sys

from _common import RESULTS, write_result

from attnlens.transfer.bench import main

SETTINGS = {
    "backbone": "minilm",
    "dataset": "rotten_tomatoes",
    "heads": "all",
    "seeds": (0, 1, 2),
    "dims": (16, 32, 64),
    "max_train": 3000,
    "max_tokens": 64,
    "head_tokens": 32,
}
PROBE = {"n_train": 3000, "n_test": 1000, "d": 32, "linear": 0.624,
         "convex_attention_linear_uncertified": 0.651, "linear_full": 0.729}

if __name__ == "__main__":
    status = main("transfer_minilm_rt", SETTINGS, RESULTS, write_result, probe=PROBE)
    if status:  # incomplete: exit 3 so a shell loop resumes it (run_all goes on otherwise)
        sys.exit(status)
