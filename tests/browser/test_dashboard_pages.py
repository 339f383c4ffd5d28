"""The dashboard in headless Chromium against a real server filled by real jobs (see conftest.py).

Expected counts come from the JSON API of the same server (what the jobs produced), never from the
dashboard's own data module; charts are read back from the DOM (Plotly's `gd.data` and the SVG it drew).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.common.exceptions import JavascriptException, StaleElementReferenceException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from carrygate.app.dashboard.artifact import TOP_OPS
from carrygate.app.dashboard.routes import PLOTLY_JS
from tests.browser.conftest import ARTIFACTS, FAMILY, ORT_CANDIDATE, DashboardServer, sweep_specs
from tests.conftest import make_tiny_zoo_model

FIGURE_STATE = """
const gd = document.getElementById(arguments[0]);
if (!gd || gd.dataset.rendered !== "true") return null;
return {traces: gd.data.map(t => ({name: t.name, type: t.type, x: t.x, y: t.y, z: t.z, text: t.text || null,
                                   customdata: t.customdata || null})),
        shapes: (gd.layout.shapes || []).map(s => ({name: s.name || null, x0: s.x0, y0: s.y0}))};
"""


def wait_until(condition: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (StaleElementReferenceException, JavascriptException):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def figure(browser: Any, chart_id: str) -> dict[str, Any]:
    return wait_until(lambda: browser.execute_script(FIGURE_STATE, chart_id), what=f"chart {chart_id} to render")


def shape_names(state: dict[str, Any]) -> list[str | None]:
    return [s["name"] for s in state["shapes"]]


def count(browser: Any, selector: str) -> int:
    return int(browser.execute_script("return document.querySelectorAll(arguments[0]).length", selector))


def shot(browser: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def open_page(browser: Any, server: DashboardServer, path: str) -> None:
    browser.get(server.url + path)
    wait_until(lambda: browser.execute_script("return document.readyState") == "complete", what=f"{path} to load")


def labelled_candidates(server: DashboardServer) -> list[tuple[str, dict[str, Any]]]:
    """(job id, candidate result) of every candidate with a fidelity and labels, over the succeeded jobs."""
    jobs = server.client.get("/jobs", params={"limit": 500}).json()["data"]
    found = []
    for listed in jobs:
        if listed["status"] != "succeeded":
            continue
        job = server.job(listed["id"])
        for cand in job["result"]["candidates"]:
            if cand["fidelity"] and cand["fidelity"]["mean"] is not None and cand["puzzle_exact"] is not None:
                found.append((job["id"], cand))
    return found


def test_overview_plots_every_candidate_with_gate_lines(dashboard_server: DashboardServer, browser: Any) -> None:
    expected = labelled_candidates(dashboard_server)
    assert len(expected) >= 18  # sweep on v1 and v2 (4 + 4) and the grid (10)
    open_page(browser, dashboard_server, "/dashboard")
    for chart in ("chart-exact", "chart-cell"):
        state = figure(browser, chart)
        plotted = sum(len(t["x"]) for t in state["traces"])
        assert plotted == len(expected), (chart, plotted, len(expected))
        assert count(browser, f"#{chart} .scatterlayer path.point") == len(expected)
        assert sorted(j for t in state["traces"] for j in t["customdata"]) == sorted(job_id for job_id, _ in expected)
    # The lines are the newest job's policy, the default one (sweep_v2): no fidelity floor, so no vertical line;
    # the puzzle-exact drop limit on its panel and, with no cell-accuracy limit, no line on that one.
    assert shape_names(figure(browser, "chart-exact")) == ["max_puzzle_exact_drop"]
    assert shape_names(figure(browser, "chart-cell")) == []
    fidelities = sorted(round(c["fidelity"]["mean"], 9) for _, c in expected)
    state = figure(browser, "chart-exact")
    assert sorted(round(x, 9) for t in state["traces"] for x in t["x"]) == fidelities
    rows = browser.find_elements(By.CSS_SELECTOR, "#recent-jobs tbody tr")
    assert len(rows) == len(dashboard_server.client.get("/jobs", params={"limit": 20}).json()["data"])
    shot(browser, "overview-1280")


def test_overview_filters_by_checkpoint_and_task(dashboard_server: DashboardServer, browser: Any) -> None:
    v2 = dashboard_server.checkpoints["v2"]
    sweep_v2 = dashboard_server.job(dashboard_server.jobs["sweep_v2"])
    open_page(browser, dashboard_server, f"/dashboard?checkpoint={v2}&task=sudoku")
    state = figure(browser, "chart-exact")
    assert {j for t in state["traces"] for j in t["customdata"]} == {sweep_v2["id"]}
    assert sum(len(t["x"]) for t in state["traces"]) == len(sweep_v2["result"]["candidates"])
    open_page(browser, dashboard_server, "/dashboard?task=maze")
    assert browser.find_element(By.ID, "empty-overview").is_displayed()
    assert count(browser, ".chart") == 0


def test_click_on_a_point_opens_its_job(dashboard_server: DashboardServer, browser: Any) -> None:
    open_page(browser, dashboard_server, "/dashboard")
    state = figure(browser, "chart-cell")
    job_ids = {j for t in state["traces"] for j in t["customdata"]}
    point = browser.find_elements(By.CSS_SELECTOR, "#chart-cell .scatterlayer path.point")[0]
    ActionChains(browser).move_to_element(point).pause(0.3).click().perform()
    wait_until(lambda: "/dashboard/jobs/" in browser.current_url, what="the click to open a job page")
    opened = browser.current_url.rsplit("/", 1)[-1]
    assert opened in job_ids
    assert opened[:8] in browser.find_element(By.TAG_NAME, "h1").text


def test_job_page_curves_histogram_footprint_and_verdicts(dashboard_server: DashboardServer, browser: Any) -> None:
    job = dashboard_server.job(dashboard_server.jobs["sweep_v1"])
    candidates = job["result"]["candidates"]
    open_page(browser, dashboard_server, f"/dashboard/jobs/{job['id']}")

    steps = figure(browser, "chart-steps")
    assert [t["name"] for t in steps["traces"]] == [c["name"] for c in candidates] + ["reference consecutive similarity"]
    for trace, cand in zip(steps["traces"], candidates, strict=False):
        assert len(trace["y"]) == len(cand["step_fidelity"]) == cand["steps"]
    assert count(browser, "#chart-steps .scatterlayer .trace") == len(candidates) + 1

    histogram = figure(browser, "chart-histogram")
    assert [t["type"] for t in histogram["traces"]] == ["histogram"] * len(candidates)
    assert [len(t["x"]) for t in histogram["traces"]] == [len(c["per_puzzle"]["fidelity"]) for c in candidates]
    assert count(browser, "#chart-histogram .barlayer .trace") == len(candidates)

    footprint = figure(browser, "chart-footprint")
    assert [len(t["x"]) for t in footprint["traces"]] == [len(candidates) + 1] * 2
    assert shape_names(footprint) == ["8 MB budget", "4 MB budget"]
    assert count(browser, "#chart-footprint .barlayer .point") == 2 * (len(candidates) + 1)

    # One row per candidate, every rule of its verdict once in it (a column cell or an "other rules" entry).
    assert len(browser.find_elements(By.CSS_SELECTOR, "#verdict-table tbody tr")) == len(job["candidate_verdicts"])
    rules = sum(len(v["rules"]) for v in job["candidate_verdicts"])
    assert len(browser.find_elements(By.CSS_SELECTOR, "#verdict-table tbody .rule")) == rules
    failed = sum(1 for v in job["candidate_verdicts"] for r in v["rules"] if r["passed"] is False)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#verdict-table .rule.fail")) == failed
    assert browser.find_element(By.ID, "raw-job").get_attribute("href") == f"{dashboard_server.url}/jobs/{job['id']}"
    assert browser.find_element(By.ID, "raw-verdict").get_attribute("href") == f"{dashboard_server.url}/jobs/{job['id']}/verdict"
    assert job["verdict"]["decision"].replace("_", "-") in browser.find_element(By.TAG_NAME, "h1").text
    shot(browser, "job-1280")
    check_artifact_section(dashboard_server, browser, job)

    open_page(browser, dashboard_server, f"/dashboard/jobs/{dashboard_server.jobs['sweep_v2']}")  # no onnxruntime candidate
    figure(browser, "chart-steps")
    assert count(browser, "#artifact-section") == 0


def check_artifact_section(server: DashboardServer, browser: Any, job: dict[str, Any]) -> None:
    """The open job page's "Deployable artifact" section against the job's JSON: one table row per onnxruntime
    candidate with its file size and download link, one bar per shown op type per candidate (the top ops of
    its profile, the rest summed into one bar), and the gate's latency and size rules for it."""
    profiled = [c for c in job["result"]["candidates"] if c["artifact"] or c["profile"] or c["device_profiles"]]
    assert [c["name"] for c in profiled] == [ORT_CANDIDATE["name"]]
    rows = browser.find_elements(By.CSS_SELECTOR, "#artifact-table tbody tr")
    assert [r.get_attribute("data-candidate") for r in rows] == [c["name"] for c in profiled]
    for row, cand in zip(rows, profiled, strict=True):
        assert row.find_element(By.CSS_SELECTOR, "td.file-size").get_attribute("title") == f"{cand['artifact']['bytes']} bytes"
        href = row.find_element(By.CSS_SELECTOR, "a.artifact-download").get_attribute("href")
        assert href == f"{server.url}/jobs/{job['id']}/artifacts/{cand['name']}"
        download = server.client.get(href)
        assert download.status_code == 200 and hashlib.sha256(download.content).hexdigest() == cand["artifact"]["sha256"]

    ops = figure(browser, "chart-ops")
    assert [t["name"] for t in ops["traces"]] == [c["name"] for c in profiled]
    bars = 0
    for trace, cand in zip(ops["traces"], profiled, strict=True):
        kernel = cand["profile"]["ops"]  # most time first
        top = [op["op_type"] for op in kernel[:TOP_OPS]]
        expected = len(top) + (1 if len(kernel) > TOP_OPS else 0)
        assert len(trace["y"]) == len(trace["x"]) == expected and trace["y"][:len(top)] == top
        assert sum(trace["x"]) == pytest.approx(sum(op["us_per_step"] for op in kernel))
        bars += expected
    assert count(browser, "#chart-ops .barlayer .point") == bars

    names = {c["name"] for c in profiled}
    budget_rules = [r for v in job["candidate_verdicts"] if v["candidate"] in names for r in v["rules"]
                    if r["rule"] in ("max_step_latency_ms", "max_artifact_bytes", "device_profile")]
    assert len(budget_rules) == 2 * len(profiled)  # latency and size; no AI Hub device was asked for
    assert len(browser.find_elements(By.CSS_SELECTOR, "#artifact-rules tbody tr")) == len(budget_rules)
    assert count(browser, "#device-table") == 0
    browser.execute_script("document.getElementById('artifact-section').scrollIntoView()")
    shot(browser, "job-artifact")


def _grid_expectation(job: dict[str, Any]) -> tuple[dict[tuple[str, str], float], tuple[str, str] | None]:
    """From the grid job's JSON: fidelity per (precision, "H<n>") cell from the candidate names, and the cheapest go cell
    that compresses something (a spec with no parts is the reference itself)."""
    decisions = {v["candidate"]: v["decision"] for v in job["candidate_verdicts"]}
    cells, passing = {}, []
    for cand in job["result"]["candidates"]:
        precision, depth = cand["name"].split("/")
        cells[(precision, depth)] = cand["fidelity"]["mean"]
        compresses = any(key != "name" for key in cand["spec"])
        if decisions[cand["name"]] == "go" and compresses:
            passing.append((cand["footprint"]["gflops_per_puzzle"], cand["footprint"]["total_bytes"], (precision, depth)))
    return cells, (min(passing)[2] if passing else None)


def test_grid_heatmaps_and_cheapest_passing_cell(dashboard_server: DashboardServer, browser: Any) -> None:
    job = dashboard_server.job(dashboard_server.jobs["grid_v1"])
    cells, cheapest = _grid_expectation(job)
    open_page(browser, dashboard_server, f"/dashboard/grid?checkpoint={dashboard_server.checkpoints['v1']}")
    for chart in ("chart-grid-fidelity", "chart-grid-exact"):
        state = figure(browser, chart)
        heatmap = state["traces"][0]
        assert heatmap["type"] == "heatmap"
        assert len(heatmap["z"]) == len({d for _, d in cells}) and all(len(row) == len({p for p, _ in cells}) for row in heatmap["z"])
        assert sum(v is not None for row in heatmap["z"] for v in row) == len(cells)
        assert count(browser, f"#{chart} .heatmaplayer image") == 1
        starred = [(heatmap["x"][i], heatmap["y"][j]) for j, row in enumerate(heatmap["text"]) for i, t in enumerate(row) if "★" in t]
        outlined = [(heatmap["x"][int(s["x0"] + 0.5)], heatmap["y"][int(s["y0"] + 0.5)]) for s in state["shapes"]]
        assert starred == outlined == ([cheapest] if cheapest else [])
        assert count(browser, f"#{chart} .shapelayer path") == (1 if cheapest else 0)
    state = figure(browser, "chart-grid-fidelity")
    heatmap = state["traces"][0]
    for (precision, depth), fidelity in cells.items():
        value = heatmap["z"][heatmap["y"].index(depth)][heatmap["x"].index(precision)]
        assert value == pytest.approx(fidelity, abs=1e-12)
    text = browser.find_element(By.ID, "cheapest").text
    assert cheapest is not None, "the lenient grid policy should let some compressed cell of the tiny model pass"
    assert f"{cheapest[0]} at {cheapest[1]}" in text
    shot(browser, "grid-1280")


def test_checkpoints_and_history(dashboard_server: DashboardServer, browser: Any) -> None:
    listed = dashboard_server.client.get("/checkpoints").json()
    open_page(browser, dashboard_server, f"/dashboard/checkpoints?family={FAMILY}")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#checkpoint-table tbody tr")) == listed["count"]
    versions = [dashboard_server.checkpoints["v1"], dashboard_server.checkpoints["v2"]]
    hashes: dict[str, set[str]] = {}
    for role in ("sweep_v1", "grid_v1", "sweep_v2"):
        job = dashboard_server.job(dashboard_server.jobs[role])
        for cand in job["result"]["candidates"]:
            hashes.setdefault(cand["spec_hash"], set()).add(job["checkpoint_id"])
    state = figure(browser, "chart-history")
    assert len(state["traces"]) == len(hashes)
    assert count(browser, "#chart-history .scatterlayer .trace") == len(hashes)
    by_points = sorted(len(t["x"]) for t in state["traces"])
    assert by_points == sorted(len(v & set(versions)) for v in hashes.values())
    assert by_points.count(2) == len(sweep_specs())  # the sweep's specs were measured on both versions
    shot(browser, "checkpoints-1280")


def test_empty_and_error_states(dashboard_server: DashboardServer, browser: Any, tmp_path: Path) -> None:
    open_page(browser, dashboard_server, "/dashboard?since=2999-01-01")
    assert "match these filters" in browser.find_element(By.ID, "empty-overview").text

    open_page(browser, dashboard_server, "/dashboard?since=yesterday")
    assert "not a date" in browser.find_element(By.CSS_SELECTOR, ".notice.error").text
    figure(browser, "chart-exact")  # the bad filter is ignored, the page still draws

    assert dashboard_server.client.get("/dashboard/jobs/no-such-job").status_code == 404
    open_page(browser, dashboard_server, "/dashboard/jobs/no-such-job")
    assert "no-such-job" in browser.find_element(By.ID, "error-message").text

    failed = dashboard_server.job(dashboard_server.jobs["failed"])
    assert failed["status"] == "failed"
    open_page(browser, dashboard_server, f"/dashboard/jobs/{failed['id']}")
    assert browser.find_element(By.ID, "job-error").text == failed["error"]
    assert count(browser, ".chart") == 0
    shot(browser, "job-failed")

    fresh = make_tiny_zoo_model(tmp_path / "fresh", steps=2, puzzles=4, seed=7)
    ckpt = dashboard_server.client.post("/checkpoints/register", json={"path": str(fresh), "name": "fresh"}).json()["id"]
    open_page(browser, dashboard_server, f"/dashboard/grid?checkpoint={ckpt}")
    assert "No depth × precision results for fresh" in browser.find_element(By.ID, "empty-grid").text
    open_page(browser, dashboard_server, "/dashboard/checkpoints?family=fresh")
    assert "No finished jobs for fresh" in browser.find_element(By.ID, "empty-history").text
    assert dashboard_server.client.get("/dashboard/grid", params={"checkpoint": "nope"}).status_code == 404


def test_plotly_is_served_locally(dashboard_server: DashboardServer, browser: Any) -> None:
    response = dashboard_server.client.get("/dashboard/assets/plotly.min.js")
    assert response.status_code == 200 and "javascript" in response.headers["content-type"]
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(PLOTLY_JS.read_bytes()).hexdigest()
    open_page(browser, dashboard_server, "/dashboard")
    figure(browser, "chart-exact")
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(url.startswith(dashboard_server.url) for url in resources), resources


PROGRESS_STATE = """
const box = document.getElementById("progress-box");
if (!box) return null;
return {status: box.dataset.status, text: document.getElementById("progress-text").textContent,
        marker: window.__notReloaded === true, verdicts: !!document.getElementById("verdict-table")};
"""


def test_running_job_progress_advances_live(dashboard_server: DashboardServer, browser: Any) -> None:
    """A slow job (160 puzzles, 2 per batch): the page, loaded once, shows progress rising (polling the JSON API),
    then reloads itself with the verdicts when the job ends."""
    job_id = dashboard_server.submit(dashboard_server.slow_checkpoint, sweep_specs(), options={"batch_size": 2})
    open_page(browser, dashboard_server, f"/dashboard/jobs/{job_id}")
    browser.execute_script("window.__notReloaded = true")
    seen: list[int] = []
    screenshot_taken = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = browser.execute_script(PROGRESS_STATE)
        if state is None or not state["marker"]:
            break  # the page reloaded: the job finished
        if state["status"] == "running":
            done = int(state["text"].split("/")[0])
            if not seen or done != seen[-1]:
                seen.append(done)
            if 0 < done and not screenshot_taken:
                shot(browser, "job-running")
                screenshot_taken = True
        time.sleep(0.1)
    intermediate = [d for d in seen if 0 < d < 160]
    assert len(intermediate) >= 2, f"progress values seen without a reload: {seen}"
    assert seen == sorted(seen)
    final = dashboard_server.wait(job_id)
    assert final["status"] == "succeeded", final["error"]
    wait_until(lambda: browser.execute_script(PROGRESS_STATE)["verdicts"], what="the finished page")
    assert len(figure(browser, "chart-steps")["traces"]) == len(sweep_specs()) + 1
    assert browser.find_element(By.ID, "progress-text").text.startswith("160 / 160")


@pytest.mark.parametrize("path", ["/dashboard", "job", "/dashboard/grid", "/dashboard/checkpoints"])
def test_pages_fit_a_phone(dashboard_server: DashboardServer, browser: Any, path: str) -> None:
    if path == "job":
        path = f"/dashboard/jobs/{dashboard_server.jobs['sweep_v1']}"
    browser.set_window_size(390, 844)
    try:
        open_page(browser, dashboard_server, path)
        for chart in browser.find_elements(By.CSS_SELECTOR, ".chart"):
            figure(browser, chart.get_attribute("id"))
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"page is {width[0]} px wide in a {width[1]} px viewport"
        charts = browser.execute_script("return [...document.querySelectorAll('.chart .main-svg')]"
                                        ".map(s => s.getBoundingClientRect().right)")
        assert all(right <= width[1] for right in charts), charts
        shot(browser, "phone-" + (path.strip("/").split("/")[1] if "/" in path.strip("/") else "overview"))
    finally:
        browser.set_window_size(1280, 900)
