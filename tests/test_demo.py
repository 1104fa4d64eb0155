"""``attnlens demo`` on a small real slice: table, report folder, certificate, Att-SVM check."""

import json

import pytest

from attnlens.demo import run_demo
from attnlens.transfer.heads import DEMO_HEADS


def test_demo_writes_a_certified_report(tmp_path):
    out = tmp_path / "demo"
    metrics = run_demo(out, n_items=60, seeds=[0], max_tokens=32, cache_dir=tmp_path / "cache",
                       options={"nonconvex_max_epochs": 100}, quiet=True, max_train=None,
                       inspect_options={"importance": False, "attsvm": False})
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
    report = (out / "report.md").read_text()
    assert "Att-SVM check" in report
    assert "issue probe" not in report
    # the main job: inspect on the bundled sentences, its HTML report linked from the demo's
    assert (out / "inspect" / "report.html").is_file()
    assert "inspect/report.html" in report
    assert metrics["inspect"]["tokens"] == stored["inspect"]["tokens"]
    assert len(metrics["inspect"]["tokens"]) == 4
    nonconvex = rows["attention_linear"]
    if nonconvex.get("test_acc_mean") is None:  # reported as unavailable, never faked
        pytest.xfail(f"non-convex attention head failed: {nonconvex['status']}")
    # convex optimum <= the non-convex network's objective at the same beta (same data)
    assert rows["convex_attention_linear"]["convex_le_nonconvex"] == "1/1"


def test_accuracy_legend_colours_match_the_bars():
    from matplotlib.colors import to_hex

    from attnlens.transfer.summary import plot_rows

    rows = [{"head": "linear", "kind": "baseline", "test_acc_mean": 0.7, "test_acc_std": 0.01},
            {"head": "mlp", "kind": "nonconvex", "test_acc_mean": 0.72, "test_acc_std": 0.01},
            {"head": "convex", "kind": "convex", "test_acc_mean": 0.74, "test_acc_std": 0.01}]
    fig = plot_rows(rows, "t")
    ax = fig.axes[0]
    bars = {label.get_text(): to_hex(p.get_facecolor())
            for label, p in zip(ax.get_xticklabels(), ax.patches, strict=False)}
    legend = {t.get_text(): to_hex(h.get_facecolor())
              for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles,
                              strict=True)}
    assert len(set(legend.values())) == 3
    assert legend["baseline"] == bars["linear"] and legend["convex"] == bars["convex"]
    assert legend["nonconvex"] == bars["mlp"]
