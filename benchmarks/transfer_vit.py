"""Transfer benchmark: frozen ViT-S/14 (ONNX) on Fashion-MNIST (issue 6).

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` (root: ``apt-get install -y
dataset-fashion-mnist``); without it the loader falls back to the 5,000-image MNIST subset and
says so (the JSON records which ran). Images are resized to 112 px (8 x 8 patches + CLS, 65
tokens; ~19 images/s on 2 cores, so all 70,000 would take about an hour) and the patch tokens
pooled to a 4 x 4 grid (17 tokens). The recorded run uses a stated stratified subset of
10,000 images (1,000 per class); training is capped at 3,000 per seed. Anchor in the same
run: logistic regression on the full 384-d pooled features. Writes
benchmarks/results/transfer_vit.json and .png (``--budget-s=720`` runs a bounded piece).
"""

from __future__ import annotations

import sys

from _common import RESULTS, write_result

from attnlens.transfer.bench import main

SETTINGS = {
    "backbone": "vit",
    "dataset": "auto",
    "heads": "all",
    "seeds": (0, 1, 2),
    "dims": (16, 32, 64),
    "n_items": 10000,
    "max_train": 3000,
    "image_size": 112,
    "token_grid": 4,
}

if __name__ == "__main__":
    status = main("transfer_vit", SETTINGS, RESULTS, write_result)
    if status:  # incomplete: exit 3 so a shell loop resumes it (run_all goes on otherwise)
        sys.exit(status)
