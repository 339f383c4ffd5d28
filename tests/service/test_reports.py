"""Release reports through the service: `GET /jobs/{id}/report.md|html` on a real job, and `carrygate gate
--summary-md / --report-html` against a live server and --local (the summary CI appends to $GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from carrygate.app.main import create_app
from tests.conftest import REPO
from tests.service.test_api import INT8, NAIVE, register, settings_for, tiny_checkpoint  # noqa: F401  (fixture)
from tests.service.test_gate_cli import POLICIES, checkpoint, gate, server  # noqa: F401  (fixtures)
from tests.service.waiting import wait_for

LENIENT = {"min_fidelity_mean": 0.9, "min_fidelity_p05": None, "min_answer_agreement": None, "max_puzzle_exact_drop": None}


def rows(markdown: str) -> dict[str, list[str]]:
    found = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| candidate"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            found[cells[0]] = cells
    return found


@pytest.fixture
def client(sqlite_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(sqlite_url, tmp_path))) as c:
        yield c


def test_report_routes_say_what_the_verdict_says(client: TestClient, tiny_checkpoint: Path) -> None:  # noqa: F811
    ckpt = register(client, tiny_checkpoint)
    submitted = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8, NAIVE], "policy": LENIENT})
    job = wait_for(client, submitted.json()["id"])
    assert job["status"] == "succeeded", job["error"]

    response = client.get(f"/jobs/{job['id']}/report.md")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/markdown")
    markdown = response.text
    decision = {"go": "GO", "no_go": "NO-GO", "inconclusive": "INCONCLUSIVE"}[job["verdict"]["decision"]]
    assert markdown.splitlines()[0].endswith(f"{decision} · tiny")
    table = rows(markdown)
    words = {"go": "go", "no_go": "no-go", "inconclusive": "inconclusive"}
    for verdict in job["candidate_verdicts"]:
        assert table[verdict["candidate"]][1].split(" ", 1)[1].startswith(words[verdict["decision"]])
        fidelity = next(r for r in verdict["rules"] if r["rule"] == "min_fidelity_mean")
        shown = f"{fidelity['observed']:.4f}"
        assert table[verdict["candidate"]][2] == (shown if fidelity["passed"] else f"**{shown} ✗**")
    link = re.search(r"\[dashboard\]\((\S+)\)", markdown)
    assert link and link.group(1).endswith(f"/dashboard/jobs/{job['id']}")
    assert client.get(httpx.URL(link.group(1)).path).status_code == 200  # the link opens the job's page

    html = client.get(f"/jobs/{job['id']}/report.html")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html.text) and "Plotly.newPlot(" in html.text
    saved = client.get(f"/jobs/{job['id']}/report.html", params={"download": "true"})
    assert saved.headers["content-disposition"] == f'attachment; filename="carrygate-{job["id"][:8]}.html"'


def test_no_report_before_the_verdict(sqlite_url: str, tmp_path: Path, tiny_checkpoint: Path) -> None:  # noqa: F811
    with TestClient(create_app(settings_for(sqlite_url, tmp_path), start_workers=False)) as client:
        ckpt = register(client, tiny_checkpoint)
        job = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8]}).json()
        for suffix in ("md", "html"):
            queued = client.get(f"/jobs/{job['id']}/report.{suffix}")
            assert queued.status_code == 404 and "no verdict to report yet (status queued)" in queued.text
            assert client.get(f"/jobs/{'0' * 32}/report.{suffix}").status_code == 404


def test_gate_summary_from_the_server_is_the_servers_report(checkpoint: Path, server: str, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "policy.yaml").write_text(POLICIES["no_go"])
    summary, html = tmp_path / "out" / "summary.md", tmp_path / "out" / "report.html"
    run = gate("--server", server, "--checkpoint", str(checkpoint), "--spec", str(REPO / "examples/specs/int8-channel.yaml"),
               "--policy", str(tmp_path / "policy.yaml"), "--summary-md", str(summary), "--report-html", str(html))
    assert run.returncode == 1, run.stdout + run.stderr
    written = summary.read_text()
    job_id = re.search(r"/dashboard/jobs/([\w-]+)\)", written).group(1)  # type: ignore[union-attr]
    served = httpx.get(f"{server}/jobs/{job_id}/report.md").text
    # identical but for the title: the CLI names the checkpoint path it was given, the server the stored name
    assert written.splitlines()[0] == f"### carrygate: ❌ NO-GO · {checkpoint}"
    assert written.splitlines()[1:] == served.splitlines()[1:]
    assert rows(written)["int8-channel"][2].endswith("✗**")
    assert "Plotly.newPlot(" in html.read_text()


def test_gate_local_summary_and_the_error_summary(checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "policy.yaml").write_text(POLICIES["go"])
    summary = tmp_path / "summary.md"
    run = gate("--local", "--checkpoint", str(checkpoint), "--spec", str(REPO / "examples/specs/int8-channel.yaml"),
               "--policy", str(tmp_path / "policy.yaml"), "--summary-md", str(summary))
    assert run.returncode == 0, run.stdout + run.stderr
    text = summary.read_text()
    assert text.startswith("### carrygate: ✅ GO") and rows(text)["int8-channel"][1] == "✅ go" and "run locally" in text
    # no verdict (the checkpoint is missing): the summary still appears and says why, and the exit code stays 2
    run = gate("--local", "--checkpoint", str(tmp_path / "missing"), "--spec", str(REPO / "examples/specs/bf16.yaml"),
               "--summary-md", str(summary))
    assert run.returncode == 2
    assert summary.read_text().startswith("### carrygate: ⚠️ INCONCLUSIVE") and "No verdict:" in summary.read_text()


def test_adaptive_halting_job_through_the_api(client: TestClient, tiny_checkpoint: Path) -> None:  # noqa: F811
    ckpt = register(client, tiny_checkpoint)
    policy = LENIENT | {"max_steps_used_increase": 100.0}
    submitted = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8], "policy": policy,
                                           "options": {"halting": "adaptive"}})
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["options"]["halting"] == {"mode": "adaptive", "max_steps": None}
    job = wait_for(client, submitted.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    result = job["result"]
    assert result["halting"] == "adaptive"
    for model in [result["reference"], *result["candidates"]]:
        assert sum(model["adaptive"]["steps_used"]["histogram"]) == result["puzzles"]
        assert len(model["per_puzzle"]["steps_used"]) == result["puzzles"]
    increase = next(r for r in job["candidate_verdicts"][0]["rules"] if r["rule"] == "max_steps_used_increase")
    assert increase["passed"] is True
    markdown = client.get(f"/jobs/{job['id']}/report.md").text
    assert "| steps used |" in markdown and "steps-used increase ≤ 100" in markdown
    assert client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8],
                                      "options": {"halting": "sometimes"}}).status_code == 422
