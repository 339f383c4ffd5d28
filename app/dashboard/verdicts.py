"""The job page's verdict table: one row per candidate, the gate's threshold rules as columns.

The same pivot as the release reports and `carrygate gate` (`app.reports.rule_columns` picks and orders
the columns); the rules that are not threshold columns (`finite`, `device_profile`, ...) are listed in
the row's last cell, so every rule of every verdict still appears once on the page, with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from carrygate.app.dashboard.data import RuleRow
from carrygate.app.reports import rule_columns, threshold_text


@dataclass(frozen=True)
class Column:
    rule: str
    limit: str  # "≥ 0.99", or "" for a rule without a threshold


@dataclass(frozen=True)
class PivotRow:
    candidate: str
    decision: str
    cells: list[RuleRow | None]  # one per column; None: this candidate was not judged on that rule
    others: list[RuleRow]  # its rules outside the columns


@dataclass(frozen=True)
class VerdictPivot:
    columns: list[Column]
    rows: list[PivotRow]


def verdict_pivot(rules: list[RuleRow]) -> VerdictPivot:
    """`rules` (every rule of every candidate verdict, in candidate order) as one row per candidate."""
    columns = rule_columns((r.rule, r.threshold) for r in rules)
    names = [rule for rule, _ in columns]
    by_candidate: dict[str, list[RuleRow]] = {}
    for r in rules:
        by_candidate.setdefault(r.candidate, []).append(r)
    rows = []
    for candidate, own in by_candidate.items():
        by_rule = {r.rule: r for r in own}
        rows.append(PivotRow(candidate, own[0].decision, [by_rule.get(rule) for rule in names],
                             [r for r in own if r.rule not in names]))
    return VerdictPivot([Column(rule, threshold_text(rule, threshold)) for rule, threshold in columns], rows)
