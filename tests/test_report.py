"""The HTML report of a tiny end-to-end run: built by `snakemake --report`, self-contained, and
rendered by headless Chromium (every figure decodes and paints, no console errors).

Runs the tiny config (run ``tiny``, shared with the end-to-end pipeline test so a finished run
is reused); needs the Debian packages ``chromium`` and ``chromium-driver`` and the Python
package ``selenium`` for the browser part (skipped with the reason when absent).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, snakemake_cmd

pytestmark = pytest.mark.slow
CONFIG = "tests/configs/tiny.yaml"
RUN = REPO / "results" / "tiny"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1400,1000"]


def _run(*args: str, timeout: int = 3000) -> subprocess.CompletedProcess:
    proc = subprocess.run(snakemake_cmd(*args), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="session")
def report_html() -> Path:
    """Run the tiny pipeline (all + figures) and build its report."""
    _run("all", "figures", "predict", "--cores", "2", "--configfile", CONFIG)
    html = RUN / "report.html"
    if html.exists():
        html.unlink()
    _run("--cores", "1", "--configfile", CONFIG, "--report", str(html), timeout=600)
    return html


def embedded_results(html: Path) -> dict:
    """The report's ``var results = {...}`` object (path -> entry with data_uri, mime_type)."""
    text = html.read_text()
    m = re.search(r"var results = (\{.*?\});\s*</script>", text, re.S)
    assert m, "no results object in the report"
    return json.loads(m.group(1))


def not_blank(png: bytes) -> tuple[bool, float]:
    """A screenshot paints something: enough non-background pixels with contrast."""
    import matplotlib.image as mpimg

    img = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
    background = np.median(img.reshape(-1, 3), axis=0)
    painted = float(np.mean(np.abs(img - background).sum(axis=-1) > 0.1))
    return painted > 0.005 and float(img.std()) > 0.02, painted


def test_report_is_self_contained_and_holds_every_figure(report_html):
    text = report_html.read_text()
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?://""", text), \
        "the report loads something from the network"
    results = embedded_results(report_html)
    names = {Path(p).name for p in results}
    expected = {"confusion.png", "confusion_norm.png", "prior_vs_learned.png", "unseen.png",
                "umap.png", "tsne.png", "interpolation.png", "fig3.png", "fig6.png",
                "fig7.png", "table1.csv"}
    assert expected <= names, f"missing from the report: {sorted(expected - names)}"
    for path, entry in results.items():
        assert entry["data_uri"].startswith("data:"), path  # embedded, not linked
        if "/eval/" in path or "/figures/" in path:  # this stage's figures carry captions
            assert entry.get("caption"), f"{path} has no caption"
    # the numbers in the report are the run's numbers
    metrics = json.loads((RUN / "eval" / "metrics.json").read_text())
    table = (RUN / "figures" / "table1.md").read_text()
    assert f"{metrics['macro_f1']:.3f}" in table


def test_predict_calls_every_test_particle(report_html):
    import starfile

    for star in (RUN / "predict").glob("*_predicted.star"):
        table = starfile.read(star, always_dict=True)["particles"]
        assert len(table) > 0
        for _, row in table.iterrows():
            unknown = row["avaeCosineDistance"] > row["avaeUnknownThreshold"]
            expected = (f"unknown, nearest {row['avaeNearestClass']}" if unknown
                        else row["avaePredictedClass"])
            assert row["avaeCall"] == expected


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("headless Chromium not installed (Debian packages chromium, chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="the Python package selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 20.0):
    end = time.time() + timeout
    while time.time() < end:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    return driver.execute_script(script)


def test_report_renders_in_headless_chromium(report_html, browser):
    browser.get(report_html.resolve().as_uri())
    assert _wait(browser, "return document.querySelector('#app').children.length > 0"), \
        "the report's app did not render"
    ok, painted = not_blank(browser.get_screenshot_as_png())
    assert ok, f"the report's start page is blank ({painted:.4f} painted)"
    images = browser.execute_script(
        "return Object.keys(results).filter(k => results[k].mime_type == 'image/png')")
    assert len(images) >= 10
    for path in images:
        browser.execute_script(
            "app.setView({content: 'img', contentPath: results[arguments[0]].data_uri});", path)
        size = _wait(browser, f"const u = results[{json.dumps(path)}].data_uri;"
                              "const i = [...document.querySelectorAll('#app img')]"
                              ".find(x => x.src == u);"
                              "return i && i.complete && i.naturalWidth > 0 ? "
                              "[i.naturalWidth, i.naturalHeight] : null;")
        assert size and min(size) > 50, f"{path} did not render"
        ok, painted = not_blank(browser.get_screenshot_as_png())
        assert ok, f"{path} renders blank ({painted:.4f} painted)"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"console errors: {errors[:3]}"
