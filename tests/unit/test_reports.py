"""Release reports (app/reports.py): the Markdown verdict's rows, marks and length; the HTML file's self-containment.

Verdicts come from the real gate (`gate.judge`) on hand-made results, so every expected mark is the
gate's own decision, not the renderer's."""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console

from carrygate.app.cli.verdicts import print_verdict_table
from carrygate.app.dashboard.routes import PLOTLY_JS
from carrygate.app.reports import Report, render_failure_markdown, render_html, render_markdown
from carrygate.gate import GatePolicy, judge
from carrygate.models.results import Curve, EvaluationResult, Footprint, ModelResult, NonFinite, Summary

MB = 1024 * 1024
DEMO_NAMES = ["bf16", "fp16", "int8-channel", "int8-dynamic", "int4-naive", "int4-calibrated", "prune-50", "depth-h1", "carry-int8",
              "int4-group64"]
POLICY = GatePolicy(min_fidelity_mean=0.99, min_fidelity_p05=0.95, max_puzzle_exact_drop=0.02, sram_budget_bytes=4 * MB)


def footprint(total: int, sram: int) -> Footprint:
    return Footprint(backbone_bytes=total, embedding_table_bytes=0, total_bytes=total, carry_bytes_per_puzzle=1000,
                     sram_streaming_bytes=sram, sram_full_load_bytes=total + sram, fits_8mb=sram <= 8 * MB, fits_4mb=sram <= 4 * MB,
                     gflops_per_step=0.5, gflops_per_puzzle=8.0)


def model(name: str, fidelity: float | None, *, exact: float = 0.8, sram: int = 2 * MB, **extra: Any) -> ModelResult:
    return ModelResult(name=name, steps=16, fidelity=Summary(mean=fidelity, p05=None if fidelity is None else fidelity - 0.01),
                       step_fidelity=[1.0, fidelity], consecutive_similarity=Curve(curve=[None, 0.9], mean=0.9),
                       per_puzzle={"fidelity": [fidelity or 0.0] * 4}, puzzle_exact=exact, cell_accuracy=0.9,
                       footprint=footprint(MB, sram), **extra)


def result(candidates: list[ModelResult]) -> EvaluationResult:
    return EvaluationResult(puzzles=32, labels=True, reference=model("reference", 1.0, exact=0.8, sram=6 * MB), candidates=candidates,
                            seconds=3.0)


def report_of(candidates: list[ModelResult], policy: GatePolicy = POLICY, **kw: Any) -> Report:
    evaluation = result(candidates)
    return Report.from_verdict(evaluation, judge(evaluation, policy), "sudoku-mlp", **kw)


def table_rows(markdown: str) -> dict[str, list[str]]:
    """candidate -> its cells, from the Markdown table (escaped pipes kept inside cells)."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| candidate"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells
    return rows


def test_one_row_per_candidate_with_the_gate_rules_as_columns_and_failures_marked() -> None:
    report = report_of([model("int8", 0.995, exact=0.8), model("int4", 0.90, exact=0.7), model("big", 0.999, sram=5 * MB)],
                       job_id="abcdef0123456789", dashboard_url="http://gate.example/dashboard/jobs/abcdef0123456789")
    markdown = render_markdown(report)
    assert markdown.startswith("### carrygate: ❌ NO-GO · sudoku-mlp\n")
    assert "[dashboard](http://gate.example/dashboard/jobs/abcdef0123456789)" in markdown and "job `abcdef01`" in markdown
    header = next(line for line in markdown.splitlines() if line.startswith("| candidate"))
    assert header == ("| candidate | decision | fidelity ≥ 0.99 | fidelity p05 ≥ 0.95 | exact drop ≤ 0.02 | SRAM ≤ 4.00 MB "
                      "| weights MB | SRAM MB (8 / 4 MB) |")
    rows = table_rows(markdown)
    assert list(rows) == ["*reference*", "int8", "int4", "big"]
    assert rows["int8"][1:6] == ["✅ go", "0.9950", "0.9850", "+0.000", "2.00 MB"]
    # int4 fails fidelity, p05 and the exact drop (0.8 - 0.7); its SRAM passes and is not marked
    assert rows["int4"][1:6] == ["❌ no-go", "**0.9000 ✗**", "**0.8900 ✗**", "**+0.100 ✗**", "2.00 MB"]
    assert rows["big"][5] == "**5.00 MB ✗**" and rows["big"][1] == "❌ no-go"
    # the footprint against 8 / 4 MB of on-chip memory, reference included
    assert rows["*reference*"][-1] == "6.00 ✓ ✗" and rows["big"][-1] == "5.00 ✓ ✗" and rows["int8"][-1] == "2.00 ✓ ✓"
    assert "1 of 3 candidates go, 2 no-go" in markdown and "reference puzzle-exact 0.800" in markdown


def test_go_report_has_no_failure_marks_and_no_details() -> None:
    markdown = render_markdown(report_of([model("int8", 0.995), model("bf16", 0.999)]))
    assert markdown.startswith("### carrygate: ✅ GO")
    assert not any("✗" in cell for cells in table_rows(markdown).values() for cell in cells[:-1])  # SRAM fits ✓ ✓ aside
    assert "<details>" not in markdown
    assert "run locally" in markdown  # no job, no dashboard link: it says so


def test_what_the_cells_cannot_show_goes_to_the_details() -> None:
    nan = model("nan", None, non_finite=NonFinite(step=3, tensor="z_H", puzzles=2))
    unmeasured = model("unmeasured", None)  # fidelity missing: inconclusive
    markdown = render_markdown(report_of([nan, unmeasured, model("int8", 0.995)]))
    rows = table_rows(markdown)
    assert rows["nan"][1] == "❌ no-go (non-finite z_H @ step 3)"
    assert rows["unmeasured"][1] == "⚠️ inconclusive" and rows["unmeasured"][2] == "?"
    details = markdown.split("<details>", 1)[1]
    assert "**nan** no-go: finite: z_H went non-finite at step 3" in details
    assert "**unmeasured** inconclusive: min_fidelity_mean: fidelity mean missing" in details
    assert "int8" not in details


def test_names_and_reasons_cannot_break_the_table() -> None:
    markdown = render_markdown(report_of([model("a|b<script>", 0.5)]))
    rows = table_rows(markdown)
    assert "a\\|b&lt;script&gt;" in rows and "<script>" not in markdown


def test_demo_sized_job_fits_on_one_screen_even_when_every_candidate_needs_a_reason() -> None:
    """The demo's sudoku job has 9 candidates; with 10 and the worst case (every one inconclusive or non-finite, so every
    one also gets a line of reasons) the Markdown still fits in 40 lines."""
    candidates = [model(name, None, non_finite=NonFinite(step=1, tensor="logits", puzzles=1)) if i % 2 else model(name, None)
                  for i, name in enumerate(DEMO_NAMES)]
    full = GatePolicy(min_fidelity_mean=0.99, min_fidelity_p05=0.95, min_answer_agreement=0.9, max_puzzle_exact_drop=0.02,
                      max_cell_accuracy_drop=0.02, sram_budget_bytes=4 * MB, max_artifact_bytes=8 * MB)
    markdown = render_markdown(report_of(candidates, full, job_id="0" * 32, dashboard_url="http://x/dashboard/jobs/0"))
    assert len(table_rows(markdown)) == len(DEMO_NAMES) + 1
    assert len(markdown.splitlines()) <= 40, markdown


def test_from_job_reads_what_get_jobs_returns() -> None:
    evaluation = result([model("int8", 0.995), model("int4", 0.9)])
    verdict = judge(evaluation, POLICY)
    job = {"id": "j" * 32, "status": "succeeded", "result": evaluation.model_dump(mode="json"),
           "candidates": [{"name": "int8", "spec_hash": "h1"}, {"name": "int4", "spec_hash": "h2"}],
           "verdict": {"decision": verdict.decision, "rules": [{"rule": "job", "observed": None, "threshold": None,
                                                                "passed": False, "reason": "; ".join(verdict.reasons)}]},
           "candidate_verdicts": [{"candidate": c.candidate, "decision": c.decision, "rules": [r.model_dump(mode="json") for r in c.rules]}
                                  for c in verdict.candidates]}
    from_job = render_markdown(Report.from_job(job, "sudoku-mlp", "http://x/dashboard/jobs/j"))
    direct = render_markdown(Report.from_verdict(evaluation, verdict, "sudoku-mlp", job_id="j" * 32,
                                                 dashboard_url="http://x/dashboard/jobs/j"))
    assert from_job == direct
    job["verdict"] = None
    try:
        Report.from_job(job, "x")
    except ValueError as err:
        assert "no result and verdict" in str(err)
    else:
        raise AssertionError("a job without a verdict must not render")


def test_failure_markdown_says_why_there_is_no_verdict() -> None:
    text = render_failure_markdown("ckpt", "job failed: probe missing", job_id="abcdef012345", dashboard_url="http://x/d")
    assert text.startswith("### carrygate: ⚠️ INCONCLUSIVE · ckpt") and "No verdict: job failed: probe missing" in text
    assert "[dashboard](http://x/d)" in text


def test_html_report_is_self_contained() -> None:
    html = render_html(report_of([model("int8", 0.995), model("int4", 0.9)], dashboard_url="http://x/dashboard/jobs/1", job_id="1"))
    # no external script, stylesheet or image: everything the page needs is inline
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", html)
    assert html.count("<script") == html.count("</script>")
    assert "Plotly.newPlot(" in html and PLOTLY_JS.read_text()[:2000] in html  # the bundle itself, inlined
    assert 'id="chart-steps-data"' in html and 'id="chart-footprint-data"' in html and 'id="chart-histogram-data"' in html
    assert html.count('class="candidate ') == 2 and 'data-candidate="int4"' in html


def test_github_actions_example_gates_with_options_the_cli_has_and_publishes_the_summary() -> None:
    import shlex

    import yaml
    from typer.main import get_command

    from carrygate.app.cli import app
    from tests.conftest import REPO

    workflow = yaml.safe_load((REPO / "examples/github-actions/carrygate-gate.yml").read_text())
    steps = {step.get("name"): step for step in workflow["jobs"]["gate"]["steps"]}
    script = steps["Gate the candidate specs"]["run"]
    words = shlex.split(script[script.index("carrygate gate"):script.index("code=$?")].replace("\\\n", " "))
    gate_options = {opt for param in get_command(app).commands["gate"].params for opt in param.opts}  # type: ignore[attr-defined]
    used = {w for w in words if w.startswith("--")}
    assert used <= gate_options, used - gate_options
    assert "--summary-md" in used and 'cat carrygate-summary.md >> "$GITHUB_STEP_SUMMARY"' in script
    assert "--body-file comment.md" in steps["Comment on the pull request"]["run"]
    assert workflow["permissions"]["pull-requests"] == "write"


def test_adaptive_halting_adds_steps_used_to_the_table_and_a_histogram() -> None:
    from carrygate.app.dashboard.data import steps_used_traces
    from carrygate.models.results import AdaptiveHalting, StepsUsed

    def block(histogram: list[int]) -> AdaptiveHalting:
        used = [k + 1 for k, n in enumerate(histogram) for _ in range(n)]
        return AdaptiveHalting(rule="q_halt > 0", max_steps=len(histogram), halted_early=0.5,
                               steps_used=StepsUsed(mean=sum(used) / len(used), p95=float(max(used)), max_steps=len(histogram),
                                                    histogram=histogram))

    evaluation = result([model("int8", 0.995, adaptive=block([0, 2, 2])), model("late", 0.995, adaptive=block([0, 0, 4]))])
    evaluation.reference.adaptive = block([4, 0, 0])
    report = Report.from_verdict(evaluation, judge(evaluation, POLICY), "sudoku-mlp")
    markdown = render_markdown(report)
    header = next(line for line in markdown.splitlines() if line.startswith("| candidate"))
    assert "| steps used |" in header and "(q_halt > 0)" in markdown
    rows = table_rows(markdown)
    steps_at = header.strip("|").split("|").index(" steps used ")
    assert [rows[n][steps_at] for n in ("*reference*", "int8", "late")] == ["1.0", "2.5", "3.0"]
    traces = steps_used_traces(evaluation)
    assert [(t["name"], t["x"], t["y"]) for t in traces] == [("reference (reference)", [1, 2, 3], [4, 0, 0]),
                                                             ("int8", [1, 2, 3], [0, 2, 2]), ("late", [1, 2, 3], [0, 0, 4])]
    html = render_html(report)
    assert 'id="chart-steps-used-data"' in html and html.count('class="num steps-used"') == 2
    # under fixed halting neither appears
    assert "steps used" not in render_markdown(report_of([model("int8", 0.995)]))


def test_a_value_whose_interval_straddles_the_threshold_keeps_its_value_beside_the_mark() -> None:
    straddles = model("straddles", 0.991)
    straddles = straddles.model_copy(update={"fidelity": straddles.fidelity.model_copy(update={"ci95": (0.985, 0.995)})})
    report = report_of([straddles])
    rows = table_rows(render_markdown(report))
    assert rows["straddles"][1] == "⚠️ inconclusive" and rows["straddles"][2] == "0.9910 ?"
    terminal = Console(width=200, record=True)
    print_verdict_table(terminal, report, "job")  # `carrygate gate` / `demo`: the same cell
    assert "0.9910 ?" in terminal.export_text()
