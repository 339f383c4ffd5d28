"""The verdict as a person reads it in a terminal: one row per candidate, the gate's rules as columns.

`carrygate gate` and `carrygate demo` print this table; failing values are red and marked ✗, a rule the
gate could not judge is yellow and marked `?` (with its value, e.g. `0.9890 ?`, when the value was measured
but its interval straddles the threshold), and what a column cannot show (a non-finite candidate, a device
that did not run, labels missing) is listed under the table. The plots and every rule's reason are on
the job's dashboard page, which the table points to. Columns and cells come from `app.reports`, so the
terminal, the Markdown summary and the HTML report show the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from carrygate.app.reports import DECISION_WORDS, Cell, Report, threshold_text

DECISION_STYLES = {"go": "green", "no_go": "bold red", "inconclusive": "yellow"}


def _cell(cell: Cell) -> str:
    if cell.passed is False:
        return f"[bold red]{escape(cell.text)} ✗[/]"
    if cell.passed is None:
        return f"[yellow]{escape(cell.text)}[/]"
    return escape(cell.text)


def _decision(decision: str, note: str = "") -> str:
    word = DECISION_WORDS.get(decision, decision)
    return f"[{DECISION_STYLES.get(decision, 'white')}]{word}[/]" + (f" [red]({escape(note)})[/]" if note else "")


def verdict_table(report: Report, title: str) -> tuple[Table, list[str]]:
    """-> (the table, one line per candidate whose verdict rests on something the columns cannot show).

    Headers are the policy's own rule names (what a person writes in the policy file) over the threshold."""
    table = Table(title=title)
    table.add_column("candidate", no_wrap=True)
    table.add_column("decision", no_wrap=True)
    for rule, threshold in report.columns():
        table.add_column(f"{rule}\n{threshold_text(rule, threshold)}", justify="right")
    notes = []
    for row in report.rows():
        table.add_row(escape(row.candidate), _decision(row.decision, row.note), *(_cell(c) for c in row.cells))
        if row.problems:
            notes.append(f"{escape(row.candidate)}: {escape('; '.join(row.problems))}")
    return table, notes


def print_verdict_table(out: Console, report: Report, title: str, dashboard_url: str | None = None) -> None:
    table, notes = verdict_table(report, title)
    out.print(table)
    for note in notes:
        out.print(f"  {note}")
    if dashboard_url:
        out.print(f"details (plots, every rule's reason): {dashboard_url}")


def print_job_verdicts(out: Console, job: Mapping[str, Any], dashboard_url: str | None = None) -> str:
    """Print a job as `GET /jobs/{id}` returns it; -> its decision ("inconclusive" without a verdict)."""
    verdict = job.get("verdict")
    decision = str(verdict["decision"]) if verdict else "inconclusive"
    title = f"job {job['id']}: {job['status']} — {DECISION_WORDS.get(decision, decision).upper()}"
    try:
        report = Report.from_job(job, "", dashboard_url)
    except (ValueError, ValidationError):  # no result or verdict yet (a failed job): the decisions alone
        table = Table(title=title)
        table.add_column("candidate", no_wrap=True)
        table.add_column("decision", no_wrap=True)
        for cv in job.get("candidate_verdicts", []):
            table.add_row(escape(str(cv["candidate"])), _decision(str(cv["decision"])))
        out.print(table)
        if dashboard_url:
            out.print(f"details: {dashboard_url}")
    else:
        print_verdict_table(out, report, title, dashboard_url)
    return decision
