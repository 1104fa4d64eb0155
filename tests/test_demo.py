"""``attnlens demo`` on a small real slice: table, report folder, certificate, Att-SVM check."""

import json

import pytest

from attnlens.demo import run_demo
from attnlens.transfer.heads import DEMO_HEADS


def test_demo_writes_a_certified_report(tmp_path):
    out = tmp_path / "demo"
    metrics = run_demo(out, n_items=60, seeds=[0], max_tokens=32, cache_dir=tmp_path / "cache",
                       options={"nonconvex_max_epochs": 100}, quiet=True, max_train=None)
    for name in ("metrics.json", "results.csv", "accuracy.png", "report.md"):
        assert (out / name).is_file(), name
    rows = {r["head"]: r for r in metrics["rows"]}
    assert list(rows) == list(DEMO_HEADS)
    for head in DEMO_HEADS:
        if head != "attention_linear":
            assert rows[head].get("test_acc_mean") is not None, rows[head]
    assert metrics["convex_certified"]["certified"] is True
    assert rows["convex_attention_linear"]["certificate_max"] <= 1e-3
    # implicit bias: normalized GD on W aligns with W^mm (reported ~0.99 in the paper)
    assert metrics["attsvm_check"]["correlation"] > 0.95
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["features"]["n_items"] == 60
    assert "Att-SVM check" in (out / "report.md").read_text()
    nonconvex = rows["attention_linear"]
    if nonconvex.get("test_acc_mean") is None:  # reported as unavailable, never faked
        pytest.xfail(f"non-convex attention head failed: {nonconvex['status']}")
    # convex optimum <= the non-convex network's objective at the same beta (same data)
    assert rows["convex_attention_linear"]["convex_le_nonconvex"] == "1/1"
