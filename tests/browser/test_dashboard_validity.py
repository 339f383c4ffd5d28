"""The signal-validity page (/dashboard/validity) in headless Chromium against a real server.

The server (`python -m carrygate.app serve`, its own data dir) reads `validity-*.json` files that this test writes
into CARRYGATE_VALIDITY_DIR, in the layout `carrygate validate --json` writes (the validity section is
built with models/validity.py's own models). Expected values come from those files, never from the
dashboard's data module; charts are read back from the DOM (Plotly's `gd.data` and the SVG it drew).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By

from carrygate.models.validity import GateAgreement, PredictionValidity, SignalValidity, ValidityReport
from tests.browser.conftest import ARTIFACTS, free_port
from tests.browser.test_dashboard_pages import count, figure, shot, wait_until
from tests.conftest import REPO

CANDIDATES = [  # name, fidelity mean, Δ puzzle-exact, verdict
    ("int8-channel", 0.999, 0.0, "go"), ("bf16", 0.998, -0.0125, "go"), ("nf4", 0.985, -0.04, "inconclusive"),
    ("int4-naive", 0.91, -0.30, "no_go"), ("prune-50", 0.87, -0.45, "no_go"),
]


def validity_document(spearman: float, agreement: float, coverage: float) -> dict[str, Any]:
    candidates = [{"name": name, "fidelity": {"mean": fid, "p05": fid - 0.04}, "logit_kl_mean": 2 * (1 - fid),
                   "predicted_puzzle_exact_drop": {"mean": (1 - fid) * 3, "lo": 0.0, "hi": 1.0}, "delta_puzzle_exact": delta,
                   "puzzle_exact": 0.8 + delta, "verdict": {"decision": decision, "rules": []}}
                  for name, fid, delta, decision in CANDIDATES]

    def row(signal: str, higher: bool) -> SignalValidity:
        return SignalValidity(signal=signal, higher_is_better=higher, spearman=spearman, spearman_ci95=(spearman - 0.3, 1.0),
                              kendall=spearman - 0.1, kendall_ci95=(spearman - 0.4, 1.0), near_spearman=0.5,
                              near_spearman_ci95=(-0.5, 1.0), near_kendall=0.33, near_n=3, auroc=1.0, n=len(CANDIDATES))

    gate = GateAgreement(policy={"min_fidelity_mean": 0.99}, confusion={"go/go": 2, "no_go/no_go": 2, "inconclusive/no_go": 1},
                         agreement=agreement, false_go=[], inconclusive=["nf4"])
    prediction = PredictionValidity(held_out_by="family", coverage=coverage, mae=0.042, n=len(CANDIDATES), per_candidate=[
        {"candidate": c["name"], "measured_drop": -c["delta_puzzle_exact"], "predicted": c["predicted_puzzle_exact_drop"]["mean"],
         "lo": 0.0, "hi": 1.0, "covered": True} for c in candidates])
    report = ValidityReport(puzzles=64, candidates=len(CANDIDATES), reference_puzzle_exact=0.8, resamples=20, gate=gate,
                            prediction=prediction,
                            signals=[row("fidelity_mean", True), row("logit_kl_mean", False), row("predicted_drop", False)])
    gates = {"policy": gate.model_dump(mode="json"), "predicted_drop_only": None}
    return {"schema_version": 1, "puzzles": 64, "candidates": candidates, "validity": report.model_dump(mode="json") | {"gates": gates}}


@pytest.fixture(scope="module")
def validity_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`carrygate serve` on a free loopback port whose CARRYGATE_VALIDITY_DIR holds two models' validity files."""
    import json

    root = tmp_path_factory.mktemp("validity")
    results = root / "results"
    results.mkdir()
    (results / "validity-alpha.json").write_text(json.dumps(validity_document(0.8, 0.8, 0.6)))
    (results / "validity-beta.json").write_text(json.dumps(validity_document(0.5, 0.4, 1.0)))
    (results / "sudoku-mlp.json").write_text("{}")  # an ordinary result file: not listed
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    env = {**os.environ, "CARRYGATE_DATA_DIR": str(root / "data"), "CARRYGATE_VALIDITY_DIR": str(results), "OMP_NUM_THREADS": "1",
           "CARRYGATE_DATABASE_URL": "", "CARRYGATE_ARTIFACT_STORE": "", "CARRYGATE_API_KEYS": ""}
    log = (ARTIFACTS / "validity-server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "carrygate.app", "serve", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not become ready; see {ARTIFACTS / 'validity-server.log'}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def open_url(browser: Any, url: str) -> None:
    browser.get(url)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete", what=f"{url} to load")


HOVER = """
const gd = document.getElementById(arguments[0]);
Plotly.Fx.hover(gd, [{curveNumber: arguments[1], pointNumber: arguments[2]}]);
const label = gd.querySelector(".hoverlayer .hovertext");
return label ? label.textContent : null;
"""


def test_validity_page_plots_each_signal_against_delta_exact(validity_server: str, browser: Any) -> None:
    open_url(browser, f"{validity_server}/dashboard/validity")
    assert browser.find_element(By.CSS_SELECTOR, "header nav a[aria-current]").text == "Signal validity"
    models = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#validity-models a")]
    assert models == ["alpha", "beta"]  # validity-*.json only, not sudoku-mlp.json
    assert "alpha" in browser.find_element(By.TAG_NAME, "h1").text  # the first model by name
    assert count(browser, "section.signal") == 3 and count(browser, "section.signal .chart") == 3

    state = figure(browser, "chart-validity-fidelity_mean")
    by_name = {name: (x, y) for t in state["traces"] for name, x, y in zip(t["customdata"], t["x"], t["y"], strict=True)}
    assert by_name == {name: (fid, delta) for name, fid, delta, _ in CANDIDATES}
    assert [t["name"] for t in state["traces"]] == ["go", "inconclusive", "no-go"]
    assert count(browser, "#chart-validity-fidelity_mean .scatterlayer path.point") == len(CANDIDATES)
    assert shape_count(browser, "chart-validity-fidelity_mean") == 2  # near-baseline band, damage line
    # hovering a point names its candidate
    no_go = [t["name"] for t in state["traces"]].index("no-go")
    label = wait_until(lambda: browser.execute_script(HOVER, "chart-validity-fidelity_mean", no_go, 0), what="the hover label")
    assert "int4-naive" in label

    # every signal's numbers beside its plot
    numbers = browser.find_element(By.CSS_SELECTOR, "#signal-fidelity_mean .signal-numbers")
    assert numbers.find_element(By.CSS_SELECTOR, ".spearman").text.startswith("+0.80 [+0.50, +1.00]")
    assert numbers.find_element(By.CSS_SELECTOR, ".kendall").text.startswith("+0.70")
    near = numbers.find_element(By.CSS_SELECTOR, ".near").text
    assert "+0.50" in near and "(n 3)" in near and "weak near the baseline" in near
    assert numbers.find_element(By.CSS_SELECTOR, ".auroc").text == "1.00"
    assert figure(browser, "chart-validity-logit_kl_mean") and figure(browser, "chart-validity-predicted_drop")
    # and the gate agreement and predicted-drop coverage at the top
    assert browser.find_element(By.CSS_SELECTOR, '#gate-agreement tr[data-gate="policy"] .agreement').text == "0.80"
    assert "0.60" in browser.find_element(By.ID, "prediction-coverage").text
    shot(browser, "validity-1280")

    browser.find_element(By.LINK_TEXT, "beta").click()
    wait_until(lambda: browser.current_url.endswith("/dashboard/validity/beta"), what="the beta page")
    figure(browser, "chart-validity-fidelity_mean")
    assert browser.find_element(By.CSS_SELECTOR, '#gate-agreement tr[data-gate="policy"] .agreement').text == "0.40"
    assert "1.00" in browser.find_element(By.ID, "prediction-coverage").text
    assert browser.find_element(By.CSS_SELECTOR, "#signal-fidelity_mean .spearman").text.startswith("+0.50")


def shape_count(browser: Any, chart_id: str) -> int:
    return int(browser.execute_script("return document.getElementById(arguments[0]).layout.shapes.length", chart_id))


def test_unknown_model_is_a_404_page(validity_server: str, browser: Any) -> None:
    assert httpx.get(f"{validity_server}/dashboard/validity/gamma").status_code == 404
    open_url(browser, f"{validity_server}/dashboard/validity/gamma")
    assert "no validity file for gamma" in browser.find_element(By.TAG_NAME, "main").text

