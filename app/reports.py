"""Release reports of one gated job: a short Markdown verdict and a self-contained offline HTML file.

The Markdown is written for where a reviewer already looks: a CI job appends it to
`$GITHUB_STEP_SUMMARY` or posts it as a pull-request comment (`carrygate gate --summary-md FILE`,
`GET /jobs/{id}/report.md`). It holds the decision, one row per candidate with the rules that decide
it as columns (failing values in bold with ✗), the footprint against the 8 MB / 4 MB SRAM budgets and
a link to the job's dashboard page; one screen for a ten-candidate job.

The HTML (`GET /jobs/{id}/report.html`, `carrygate gate --report-html FILE`) is for attaching to a
release: the same table, every rule, and the dashboard's plots drawn by the plotly.js bundle of the
installed `plotly` package, inlined, so the file opens from disk with no server and no network.

Pure rendering: an `EvaluationResult` and its verdict in, text out. No database, no HTTP, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup

from carrygate.gate import CandidateVerdict, Decision, JobVerdict, RuleOutcome
from carrygate.models.numbers import finite, fixed
from carrygate.models.results import EvaluationResult, ModelResult

MB = 1024 * 1024
SRAM_BUDGETS_MB = (8, 4)
DECISION_MARKS = {"go": "✅ GO", "no_go": "❌ NO-GO", "inconclusive": "⚠️ INCONCLUSIVE"}
DECISION_WORDS = {"go": "go", "no_go": "no-go", "inconclusive": "inconclusive"}
DECISION_ICONS = {"go": "✅", "no_go": "❌", "inconclusive": "⚠️"}


@dataclass(frozen=True)
class RuleColumn:
    """How one gate rule is shown: a short header, its comparison, and how its numbers are written."""

    label: str
    op: str  # ">=" or "<="
    kind: str  # "fraction" | "drop" | "mb" | "ms" | "steps" | "plain"


# Rules the gate can list (gate/policy.py), in the column order of the report. `finite`,
# `reference_finite`, `require_labels` and `device_profile` are not threshold columns: a non-finite
# candidate or a missing measurement shows in the decision cell and in the reasons instead.
RULE_COLUMNS: dict[str, RuleColumn] = {
    "min_fidelity_mean": RuleColumn("fidelity", ">=", "fraction"),
    "min_fidelity_p05": RuleColumn("fidelity p05", ">=", "fraction"),
    "min_answer_agreement": RuleColumn("answer agr.", ">=", "fraction"),
    "max_puzzle_exact_drop": RuleColumn("exact drop", "<=", "drop"),
    "max_predicted_exact_drop": RuleColumn("predicted drop", "<=", "drop"),
    "max_cell_accuracy_drop": RuleColumn("cell-acc. drop", "<=", "drop"),
    "max_adaptive_exact_drop": RuleColumn("adaptive exact drop", "<=", "drop"),
    "max_steps_used_increase": RuleColumn("steps-used increase", "<=", "steps"),
    "sram_budget_bytes": RuleColumn("SRAM", "<=", "mb"),
    "max_artifact_bytes": RuleColumn("artifact", "<=", "mb"),
    "max_step_latency_ms": RuleColumn("step ms", "<=", "ms"),
}
NOT_COLUMNS = {"finite", "reference_finite", "require_labels", "device_profile"}


def format_value(kind: str, value: float | None) -> str:
    """A rule's observed value or threshold in the report's units (drops signed: + means the candidate lost)."""
    if value is None:
        return "—"
    if kind == "fraction":
        return f"{value:.4f}"
    if kind == "drop":
        return f"{value:+.3f}"
    if kind == "mb":
        return f"{value / MB:.2f} MB"
    if kind == "ms":
        return f"{value:.2f} ms"
    if kind == "steps":
        return f"{value:+.2f}"
    return f"{value:.4g}"


def threshold_text(rule: str, threshold: float | None) -> str:
    """A rule's comparison and limit as the reports write it ("≥ 0.99"); "" for a rule without a threshold."""
    if threshold is None:
        return ""
    column = RULE_COLUMNS.get(rule, RuleColumn(rule, "", "plain"))
    op = {">=": "≥", "<=": "≤"}.get(column.op, "")
    # Thresholds are round numbers a person chose: written short (0.99, not 0.9900).
    limit = f"{threshold:g}" if column.kind in ("fraction", "drop", "steps", "plain") else format_value(column.kind, threshold)
    return f"{op} {limit}".strip()


def _header(rule: str, threshold: float | None) -> str:
    label = RULE_COLUMNS.get(rule, RuleColumn(rule, "", "plain")).label
    return f"{label} {threshold_text(rule, threshold)}".strip()


def rule_columns(rules: Iterable[tuple[str, float | None]]) -> list[tuple[str, float | None]]:
    """(rule, threshold) of every threshold rule among `rules` (the first threshold seen), in `RULE_COLUMNS` order:
    the columns of a one-row-per-candidate verdict table (the reports, `carrygate gate`, the dashboard)."""
    seen: dict[str, float | None] = {}
    for rule, threshold in rules:
        if rule not in NOT_COLUMNS and rule not in seen:
            seen[rule] = threshold
    order = list(RULE_COLUMNS)
    return sorted(seen.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))


@dataclass(frozen=True)
class Cell:
    text: str
    passed: bool | None  # None: not evaluated ("?", or "0.9890 ?" when measured); a column the candidate does not have is ("", True)


@dataclass(frozen=True)
class Row:
    """One candidate: its decision, one cell per rule column and its footprint."""

    candidate: str
    decision: Decision
    note: str  # e.g. "non-finite z_H @ step 3"
    cells: list[Cell]
    weights_mb: float | None
    sram_mb: float | None
    gflops_per_puzzle: float | None
    steps_used: float | None  # mean ACT steps per puzzle under adaptive halting; None under fixed
    problems: list[str]  # "rule: reason" of what the cells cannot show: unmeasured rules, failures outside the columns


@dataclass
class Report:
    """Everything both renderers show about one gated job."""

    result: EvaluationResult
    decision: Decision
    reasons: list[str]
    verdicts: list[CandidateVerdict]
    subject: str  # what was gated: the checkpoint's name
    job_id: str | None = None
    dashboard_url: str | None = None
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def from_verdict(cls, result: EvaluationResult, verdict: JobVerdict, subject: str, *, job_id: str | None = None,
                     dashboard_url: str | None = None) -> Report:
        return cls(result, verdict.decision, list(verdict.reasons), list(verdict.candidates), subject, job_id, dashboard_url)

    @classmethod
    def from_job(cls, job: Mapping[str, Any], subject: str, dashboard_url: str | None = None) -> Report:
        """From a job as `GET /jobs/{id}` returns it (`app.schemas.JobRead` as JSON). Raises ValueError when
        the job has no result or no verdict yet."""
        if job.get("result") is None or job.get("verdict") is None:
            raise ValueError(f"job {job.get('id')} has no result and verdict (status {job.get('status')})")
        names = {c["name"]: c.get("spec_hash") for c in job.get("candidates", [])}
        verdicts = [CandidateVerdict(candidate=v["candidate"], spec_hash=names.get(v["candidate"]), decision=v["decision"],
                                     rules=[_rule(r) for r in v["rules"]])
                    for v in job.get("candidate_verdicts", [])]
        # The job-level verdict row keeps the reasons joined into one (workers/pipeline.py); candidate reasons
        # contain "; " themselves, so the joined text is kept whole rather than split.
        job_rules = job["verdict"].get("rules") or []
        reasons = [str(job_rules[0].get("reason") or "")] if job_rules else []
        return cls(EvaluationResult.model_validate(job["result"]), job["verdict"]["decision"], reasons, verdicts, subject,
                   str(job["id"]), dashboard_url)

    # -- the shared table ---------------------------------------------------------------------------
    def columns(self) -> list[tuple[str, float | None]]:
        """(rule, threshold) of every threshold rule any candidate was judged on, in `RULE_COLUMNS` order."""
        return rule_columns((rule.rule, rule.threshold) for verdict in self.verdicts for rule in verdict.rules)

    def headers(self) -> list[str]:
        return [_header(rule, threshold) for rule, threshold in self.columns()]

    def rows(self) -> list[Row]:
        results = {c.name: c for c in self.result.candidates}
        columns = self.columns()
        rows = []
        for verdict in self.verdicts:
            by_rule = {r.rule: r for r in verdict.rules}
            cells = []
            for rule, _ in columns:
                outcome = by_rule.get(rule)
                kind = RULE_COLUMNS.get(rule, RuleColumn(rule, "", "plain")).kind
                if outcome is None:
                    cells.append(Cell("", True))
                elif outcome.passed is None:  # not judged: unmeasured "?", or a value whose interval straddles the threshold
                    value = finite(outcome.observed)
                    cells.append(Cell("?" if value is None else f"{format_value(kind, value)} ?", None))
                else:
                    cells.append(Cell(format_value(kind, outcome.observed), outcome.passed))
            model = results.get(verdict.candidate)
            # A failed column value is already on the row; the reasons left are those the table cannot show
            # (not measured, non-finite, a device that did not run, labels missing).
            shown = {rule for rule, _ in columns}
            problems = [f"{r.rule}: {r.reason}" for r in verdict.rules
                        if r.passed is None or (r.passed is False and r.rule not in shown)]
            rows.append(Row(verdict.candidate, verdict.decision, _note(model), cells, *_footprint(model), _steps_used(model), problems))
        return rows

    def reference_footprint(self) -> tuple[float | None, float | None, float | None]:
        return _footprint(self.result.reference)

    @property
    def adaptive(self) -> bool:
        """Whether the models ran under adaptive halting (then the steps each used is shown)."""
        return getattr(self.result.reference, "adaptive", None) is not None

    def counts(self) -> dict[str, int]:
        counts = {"go": 0, "no_go": 0, "inconclusive": 0}
        for verdict in self.verdicts:
            counts[verdict.decision] += 1
        return counts

    def summary_line(self) -> str:
        """Candidates per decision, the probe and the reference's own accuracy: the context of the table."""
        counts = self.counts()
        parts = [f"{counts['go']} of {len(self.verdicts)} candidates go"]
        if counts["no_go"]:
            parts.append(f"{counts['no_go']} no-go")
        if counts["inconclusive"]:
            parts.append(f"{counts['inconclusive']} inconclusive")
        ref = self.result.reference
        probe = f"{self.result.puzzles} probe puzzles {'with' if self.result.labels else 'without'} labels"
        accuracy = ""
        if ref.puzzle_exact is not None:
            accuracy = f"reference puzzle-exact {ref.puzzle_exact:.3f}"
            if ref.cell_accuracy is not None:
                accuracy += f", cell accuracy {ref.cell_accuracy:.3f}"
        return " · ".join(p for p in (", ".join(parts), probe, accuracy) if p)


def _rule(body: Mapping[str, Any]) -> RuleOutcome:
    """A stored rule as the gate's outcome; fields the renderer does not show (added by newer gates) are left out."""
    return RuleOutcome.model_validate({k: body[k] for k in RuleOutcome.model_fields if k in body})


def _note(model: ModelResult | None) -> str:
    if model is None:
        return "no result"
    if model.non_finite is not None:
        return f"non-finite {model.non_finite.tensor} @ step {model.non_finite.step}"
    return ""


def _footprint(model: ModelResult | None) -> tuple[float | None, float | None, float | None]:
    """(deployed MB, streaming SRAM MB, GFLOPs per puzzle); an onnxruntime candidate's deployed size is its file."""
    if model is None or model.footprint is None:
        return None, None, None
    fp = model.footprint
    deployed = model.artifact.bytes if model.artifact is not None else fp.total_bytes
    return deployed / MB, fp.sram_streaming_bytes / MB, finite(fp.gflops_per_puzzle)


def _steps_used(model: ModelResult | None) -> float | None:
    adaptive = getattr(model, "adaptive", None)  # getattr: results stored before adaptive halting existed
    return None if adaptive is None else adaptive.steps_used.mean


def _fits(sram_mb: float | None) -> str:
    if sram_mb is None:
        return "—"
    return f"{sram_mb:.2f} " + " ".join("✓" if sram_mb <= budget else "✗" for budget in SRAM_BUDGETS_MB)


# -- Markdown ---------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    """Keep a name or reason from breaking a table row or opening markup."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def _md_cell(cell: Cell) -> str:
    if cell.passed is False:
        return f"**{cell.text} ✗**"
    return cell.text


def render_markdown(report: Report) -> str:
    """The short verdict for a CI step summary or a pull-request comment (GitHub-flavoured Markdown)."""
    lines = [f"### carrygate: {DECISION_MARKS[report.decision]} · {_md_escape(report.subject)}", ""]
    where = []
    if report.dashboard_url:
        where.append(f"[dashboard]({report.dashboard_url})")
    if report.job_id:
        where.append(f"job `{report.job_id[:8]}`")
    if not where:
        where.append("run locally (`gate --local`), no dashboard")
    lines += [" · ".join([report.summary_line(), *where]), ""]
    steps = ["steps used"] if report.adaptive else []
    headers = ["candidate", "decision", *report.headers(), *steps, "weights MB", "SRAM MB (8 / 4 MB)"]
    lines.append("| " + " | ".join(_md_escape(h) for h in headers) + " |")
    lines.append("|" + "|".join([":--", ":--", *(["--:"] * (len(headers) - 2))]) + "|")
    ref_weights, ref_sram, _ = report.reference_footprint()
    blanks = [""] * len(report.columns())
    ref_steps = [fixed(_steps_used(report.result.reference), 1)] if report.adaptive else []
    lines.append("| " + " | ".join(["*reference*", "", *blanks, *ref_steps, fixed(ref_weights, 2), _fits(ref_sram)]) + " |")
    for row in report.rows():
        decision = f"{DECISION_ICONS[row.decision]} {DECISION_WORDS[row.decision]}" + (f" ({row.note})" if row.note else "")
        cells = [_md_escape(row.candidate), decision,
                 *(_md_cell(c) for c in row.cells), *([fixed(row.steps_used, 1)] if report.adaptive else []),
                 fixed(row.weights_mb, 2), _fits(row.sram_mb)]
        lines.append("| " + " | ".join(cells) + " |")
    adaptive = getattr(report.result.reference, "adaptive", None)
    halting = (f" Steps used: mean ACT steps per puzzle, each stopping at its own first halting step "
               f"({adaptive.rule}).") if adaptive is not None else ""
    lines += ["", "Failing values are **bold ✗**, `?` could not be measured. SRAM is the streaming peak "
              "(weights + one carry + activations) against 8 MB and 4 MB of on-chip memory." + halting]
    problems = [row for row in report.rows() if row.problems]
    if problems:
        lines += ["", "<details><summary>Not shown in the table</summary>", ""]
        lines += [f"- **{_md_escape(row.candidate)}** {DECISION_WORDS[row.decision]}: {_md_escape('; '.join(row.problems))}"
                  for row in problems]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def render_failure_markdown(subject: str, message: str, *, job_id: str | None = None, dashboard_url: str | None = None) -> str:
    """What CI shows when there is no verdict to report (the job failed, timed out or never ran)."""
    where = " · ".join(([f"[dashboard]({dashboard_url})"] if dashboard_url else []) + ([f"job `{job_id[:8]}`"] if job_id else []))
    lines = [f"### carrygate: {DECISION_MARKS['inconclusive']} · {_md_escape(subject)}", "",
             f"No verdict: {_md_escape(message)}" + (f" · {where}" if where else "")]
    return "\n".join(lines) + "\n"


# -- HTML -------------------------------------------------------------------------------------------
def _plotly_js() -> str:
    from carrygate.app.dashboard.routes import PLOTLY_JS

    # Inside an inline <script>, only "</script" could end the element early; the bundle holds none
    # today, and escaping it keeps that true for any future bundle (\/ is "/" in JS strings and regexes).
    return PLOTLY_JS.read_text(encoding="utf-8").replace("</script", "<\\/script")


def report_figures(report: Report) -> dict[str, Markup]:
    """The dashboard's job-page plots of this result, as script-safe figure JSON (app/dashboard/figures.py)."""
    from carrygate.app.dashboard.figures import job_figures

    return job_figures(report.result, budget_labels=False)


def render_html(report: Report) -> str:
    """One self-contained HTML file: styles, data and plotly.js inline, no external reference."""
    from carrygate.app.dashboard.routes import TEMPLATES

    css = (Path(__file__).resolve().parent / "static" / "dashboard.css").read_text(encoding="utf-8")
    template = TEMPLATES.env.get_template("report.html")
    return template.render(report=report, rows=report.rows(), headers=report.headers(), figures=report_figures(report),
                           css=Markup(css), plotly_js=Markup(_plotly_js()), decision_words=DECISION_WORDS,
                           ref_footprint=report.reference_footprint(), budgets=SRAM_BUDGETS_MB)
