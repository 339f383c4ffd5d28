"""The HTML release report opened from disk (file://) in headless Chromium, with no carrygate server running.

The report is rendered from a real evaluation of a small random TRM and the real gate's verdict; the page must
draw every plot from what is inline in the file and load nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selenium.webdriver.common.by import By

from carrygate.app.reports import Report, render_html
from carrygate.gate import GatePolicy, judge
from carrygate.models import build_model
from carrygate.models.compress.grids import PAPER
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.evaluate import Probe, evaluate
from tests.browser.conftest import ARTIFACTS
from tests.browser.test_dashboard_pages import figure
from tests.conftest import tiny_trm


def test_html_report_opens_from_disk_with_every_plot_drawn(browser: Any, tmp_path: Path) -> None:
    import numpy as np

    model = build_model(tiny_trm(halt_max_steps=3))
    rng = np.random.default_rng(0)
    probe = Probe(rng.integers(1, 5, size=(12, 9)).astype(np.int32), np.zeros(12, dtype=np.int32),
                  rng.integers(1, 5, size=(12, 9)).astype(np.int64))
    specs = [CompressionSpec.model_validate({"name": name, **PAPER[name]}) for name in ("int8-channel", "int4-naive")]
    result = evaluate(model, specs, probe, batch_size=8)
    verdict = judge(result, GatePolicy(min_fidelity_mean=0.999, min_fidelity_p05=0.99))
    page = tmp_path / "report.html"
    page.write_text(render_html(Report.from_verdict(result, verdict, "tiny-trm", job_id="f" * 32,
                                                    dashboard_url="http://127.0.0.1:9/dashboard/jobs/x")), encoding="utf-8")

    browser.get(page.as_uri())
    assert page.as_uri().startswith("file://")
    steps = figure(browser, "chart-steps")
    assert [t["name"] for t in steps["traces"]] == ["int8-channel", "int4-naive", "reference consecutive similarity"]
    assert [t["y"] for t in steps["traces"][:2]] == [c.step_fidelity for c in result.candidates]
    histogram = figure(browser, "chart-histogram")
    assert [len(t["x"]) for t in histogram["traces"]] == [12, 12]
    footprint = figure(browser, "chart-footprint")
    assert footprint["traces"][0]["x"] == ["reference (reference)", "int8-channel", "int4-naive"]
    # the plots were drawn (SVG in the DOM), and nothing was fetched: scripts, styles and data are all in the file
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-steps svg.main-svg")) >= 1
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0

    rows = browser.find_elements(By.CSS_SELECTOR, "#candidate-table tr.candidate")
    assert [r.get_attribute("data-candidate") for r in rows] == ["int8-channel", "int4-naive"]
    failed = sum(1 for v in verdict.candidates for r in v.rules if r.passed is False)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#candidate-table td.fail")) == failed
    decision = {"go": "go", "no_go": "no-go", "inconclusive": "inconclusive"}[verdict.decision]
    assert browser.find_element(By.CSS_SELECTOR, "#report-title .badge").text == decision
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report-offline.png"))
