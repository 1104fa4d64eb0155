"""Transfer benchmark: frozen MiniLM on Rotten Tomatoes, all heads (issue 6).

Anchor, side by side in the same run: logistic regression on the full 384-d pooled features
(the practitioner's baseline) and the first probe quoted in the issue (linear 62.4%, convex
linear self-attention 65.1%, full-dimension linear 72.9%; 3,000 train / 1,000 test, d=32).
Writes benchmarks/results/transfer_minilm_rt.json and .png; the run folder under runs/ resumes.
"""

from __future__ import annotations

import os
import sys

from _common import RESULTS, write_result

from attnlens.transfer.bench import run_and_record

SETTINGS = {
    "backbone": "minilm",
    "dataset": "rotten_tomatoes",
    "heads": "all",
    "seeds": (0, 1, 2),
    "dims": (16,),
    "max_train": 500,
    "max_tokens": 64,
    "head_tokens": 32,
}
PROBE = {"n_train": 3000, "n_test": 1000, "d": 32, "linear": 0.624,
         "convex_attention_linear_uncertified": 0.651, "linear_full": 0.729}

if __name__ == "__main__":
    quick = "--quick" in sys.argv or os.environ.get("ATTNLENS_BENCH_QUICK")
    settings = dict(SETTINGS, **({"n_items": 600, "seeds": (0,), "out": "runs/bench-quick-rt"}
                                 if quick else {}))
    for arg in sys.argv[1:]:  # --seeds=0,1 runs (or resumes) a stated subset of the seeds
        if arg.startswith("--seeds="):
            settings["seeds"] = tuple(int(v) for v in arg.split("=", 1)[1].split(","))
    if "--stored-only" in sys.argv:  # summarize the units finished so far, fit nothing new
        settings["stored_only"] = True
    payload = run_and_record("transfer_minilm_rt", settings, RESULTS, probe=PROBE)
    write_result("transfer_minilm_rt", payload)
    print(payload["summary"])
