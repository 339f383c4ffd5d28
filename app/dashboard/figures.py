"""The Plotly figures of one job's result, shared by the job page and the offline HTML report.

`figure_json` makes a figure safe inside a `<script type="application/json">` element; `job_figures`
lays out the per-step fidelity curves, the per-puzzle fidelity histogram, the steps-used histograms
(adaptive halting) and the footprint bars from `app.dashboard.data`'s traces.
"""

from __future__ import annotations

import json
from typing import Any

from markupsafe import Markup

from carrygate.app.dashboard import data
from carrygate.models.results import EvaluationResult

STEPS_USED_LAYOUT = {"barmode": "group", "xaxis": {"title": {"text": "ACT steps used (halted after)"}, "dtick": 1},
                     "yaxis": {"title": {"text": "puzzles"}}, "margin": {"t": 30, "r": 10}, "legend": {"orientation": "h", "y": -0.25}}
"""The steps-used histograms (adaptive halting), shared by the job page and the HTML report."""

_LEGEND = {"orientation": "h", "y": -0.25}


def figure_json(traces: list[data.Trace], layout: dict[str, Any]) -> Markup:
    """A Plotly figure as JSON that is safe inside a <script type="application/json"> element."""
    text = json.dumps({"data": traces, "layout": layout}, allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def job_figures(result: EvaluationResult, *, budget_labels: bool = True) -> dict[str, Markup]:
    """Figure JSON by name (steps, histogram, steps_used, footprint) for a stored result; figures without
    data are left out. `budget_labels` writes "8 MB" / "4 MB" beside the budget lines (the report's
    legend names them instead)."""
    figures = {"steps": figure_json(data.step_traces(result), {
        "xaxis": {"title": {"text": "ACT step"}, "dtick": 1}, "yaxis": {"title": {"text": "cosine similarity"}},
        "margin": {"t": 30, "r": 10}, "legend": _LEGEND})}
    histogram = data.histogram_traces(result)
    if histogram:
        figures["histogram"] = figure_json(histogram, {
            "barmode": "overlay", "xaxis": {"title": {"text": "per-puzzle fidelity"}}, "yaxis": {"title": {"text": "puzzles"}},
            "margin": {"t": 30, "r": 10}, "legend": _LEGEND})
    steps_used = data.steps_used_traces(result)
    if steps_used:
        figures["steps_used"] = figure_json(steps_used, STEPS_USED_LAYOUT)
    footprint = data.footprint_traces(result)
    if footprint:
        layout: dict[str, Any] = {"barmode": "group", "yaxis": {"title": {"text": "MB"}}, "shapes": data.budget_shapes(),
                                  "margin": {"t": 30, "r": 10}, "legend": {"orientation": "h", "y": -0.35}}
        if budget_labels:
            layout["annotations"] = [{"xref": "paper", "x": 1, "y": mb, "yref": "y", "text": f"{mb} MB", "showarrow": False,
                                      "xanchor": "right", "yanchor": "bottom"} for mb in data.SRAM_BUDGETS_MB]
        figures["footprint"] = figure_json(footprint, layout)
    return figures
