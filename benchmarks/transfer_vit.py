"""Transfer benchmark: frozen ViT-S/14 (ONNX) on Fashion-MNIST, or the MNIST subset (issue 6).

Images are resized to 112 px (8 x 8 patches + CLS; 4x cheaper than 224 px on CPU) and the
patch tokens pooled to a 4 x 4 grid (17 tokens). The recorded run uses a stated stratified
subset (``n_items``) of the dataset the loader found; ``--full`` uses all items.
Anchor in the same run: logistic regression on the full 384-d pooled features.
Writes benchmarks/results/transfer_vit.json and .png.
"""

from __future__ import annotations

import sys

from _common import RESULTS, write_result

from attnlens.transfer.bench import run_and_record

SETTINGS = {
    "backbone": "vit",
    "dataset": "auto",
    "heads": "all",
    "seeds": (0, 1, 2),
    "dims": (16,),
    "n_items": 600,
    "image_size": 112,
    "token_grid": 4,
}

if __name__ == "__main__":
    settings = dict(SETTINGS)
    if "--full" in sys.argv:
        settings.update(n_items=None, max_train=2000)
    if "--stored-only" in sys.argv:  # summarize the units finished so far, fit nothing new
        settings["stored_only"] = True
    payload = run_and_record("transfer_vit", settings, RESULTS)
    write_result("transfer_vit", payload)
    print(payload["summary"])
