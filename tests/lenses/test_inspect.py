"""`attnlens inspect`: the report folder, the HTML page in headless Chromium, bad input."""

import json
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from attnlens.cli import app
from attnlens.inspect import run_inspect

SECTIONS = ("rollout-flow", "heads", "attsvm", "spectra", "causal", "inputs")


@pytest.fixture(scope="module")
def text_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("inspect")
    metrics = run_inspect(out, texts=["a gorgeous , witty , seductive movie .", "bad"],
                          importance=False, attsvm=False, progress=False)
    return out, metrics


def test_text_report_folder(text_report):
    out, metrics = text_report
    for name in ("report.md", "report.html", "metrics.json", "rollout_0.png", "flow_1.png",
                 "head_entropy.png", "spectra.png"):
        assert (out / name).is_file(), name
    stored = json.loads((out / "metrics.json").read_text())
    assert stored["tokens"] == metrics["tokens"] == [10, 3]
    html = (out / "report.html").read_text()
    assert "src=\"http" not in html and "href=\"http" not in html  # works offline
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "causal_0.png" in pngs  # the causal graph over the tokens
    assert html.count("data:image/png;base64,") == len(pngs) >= 9
    md = (out / "report.md").read_text()
    for title in ("Attention rollout and attention flow", "Head statistics", "Kernel spectra",
                  "Causal lens"):
        assert f"## {title}" in md
    assert metrics["causal"]["status"] == "done" and len(metrics["causal"]["rows"]) == 2


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _render(path):
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-logging=stderr", "--v=0", "--dump-dom",
                           path.resolve().as_uri()], capture_output=True, text=True,
                          timeout=120, check=False)
    return done.stdout, done.stderr


@pytest.mark.skipif(_chromium() is None, reason="no headless browser: Debian's `chromium` "
                    "package is not installed (.ci/run installs it where apt works)")
def test_report_renders_in_headless_chromium(text_report, tmp_path):
    out, _ = text_report
    dom, log = _render(out / "report.html")
    for key in SECTIONS:
        assert f'<section id="{key}">' in dom
    assert 'data-images-ok="yes"' in dom, dom[-500:]
    assert "Uncaught" not in log and "CONSOLE" not in log, log
    # the check sees a JavaScript error when there is one
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>throw new Error('planted')</script></body></html>")
    assert "Uncaught Error: planted" in _render(bad)[1]


def test_vit_report_on_a_real_image(tmp_path):
    from sklearn.datasets import load_sample_image

    image = load_sample_image("china.jpg")[::4, ::4]  # (107, 160, 3) uint8
    metrics = run_inspect(tmp_path, model="vit", images=[image], image_size=112,
                          progress=False)
    assert metrics["tokens"] == [1 + 8 * 8]
    assert metrics["rollout_flow"][0]["flow rows"] == "all"
    assert "Not run" in (tmp_path / "report.md").read_text()  # Att-SVM: no attention inputs
    assert len(metrics["spectra"]) == 12


@pytest.mark.parametrize("args,message", [
    (["--text", "   "], "non-empty"),
    ([], "pass --text"),
    (["--model", "no-such-model", "--text", "hi"], "local transformers encoder folder"),
    (["--text", "good " * 600, "--no-truncate"], "at most 512 tokens"),
    (["--model", "vit", "--image", "missing.png"], "existing image file"),
])
def test_bad_input_is_a_clear_error(args, message, tmp_path):
    result = CliRunner().invoke(app, ["inspect", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in result.output


def test_an_unreadable_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    result = CliRunner().invoke(app, ["inspect", "--model", "vit", "--image", str(bad),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "readable image" in result.output
