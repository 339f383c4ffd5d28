"""Signal-validity page data: `results/validity-<model>.json` files (`carrygate validate --json`) shaped for the dashboard.

A validity file is an `EvaluationResult` dump whose candidates carry their `verdict`, plus a top-level
`validity` section (models/validity.py, app/cli/validate.py). `validity_view` is pure: it turns one
such document into one scatter per signal (x = the candidate's signal value, y = its Δ puzzle-exact,
colour = its verdict) with the signal's correlations beside it, and the gate-agreement and
predicted-drop numbers of the whole file. Only files found in the folder listing are ever read, so a
model name from a URL never becomes a path.

Conventions follow docs/validity.md (scripts/validity_table.py): correlations are *oriented* (+1 = the
signal orders the candidates as their Δ puzzle-exact does), Δ is candidate − reference (negative = lost
accuracy), *near baseline* is |Δ| ≤ NEAR_BASELINE.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from carrygate.app.dashboard.data import DECISION_LABELS, Trace
from carrygate.models.numbers import finite

PREFIX = "validity-"
REPO_RESULTS = Path(__file__).resolve().parent.parent.parent / "results"
"""The repository's `results/` folder (bench/signal_validity.py writes there): the default when it exists."""
NEAR_BASELINE = 0.05
DAMAGE = 0.02
"""Same values as models/validity.py (NEAR_BASELINE, DAMAGE); unit-tested to stay equal."""
DECISION_COLOURS = {"go": "#2ca02c", "no_go": "#d62728", "inconclusive": "#e0a100", None: "#7f7f7f"}
DECISION_ORDER = ("go", "inconclusive", "no_go", None)

SIGNAL_FIELDS: dict[str, tuple[str, ...]] = {
    "fidelity_mean": ("fidelity", "mean"),
    "fidelity_p05": ("fidelity", "p05"),
    "consecutive_similarity": ("consecutive_similarity", "mean"),
    "answer_agreement": ("answer_agreement",),
    "settled_agreement": ("settled_agreement",),
    "cell_agreement": ("cell_agreement",),
    "logit_kl_mean": ("logit_kl_mean",),
    "logit_kl_p95": ("logit_kl_p95",),
    "fidelity_tail": ("fidelity_tail",),
    "trajectory_area": ("trajectory_area",),
    "late_drift_excess": ("late_drift_excess",),
    "predicted_drop": ("predicted_puzzle_exact_drop", "mean"),
}
"""Where each signal of `validity.signals` lives on a candidate of the result document."""
SIGNAL_TITLES = {
    "fidelity_mean": "carry-trajectory fidelity (mean)", "fidelity_p05": "fidelity (5th percentile)",
    "consecutive_similarity": "consecutive-step similarity (mean)", "answer_agreement": "answer agreement",
    "settled_agreement": "settled agreement", "cell_agreement": "cell agreement", "logit_kl_mean": "logit KL (mean)",
    "logit_kl_p95": "logit KL (95th percentile)", "fidelity_tail": "fidelity tail (share below τ)",
    "trajectory_area": "trajectory area", "late_drift_excess": "late drift excess",
    "predicted_drop": "predicted puzzle-exact drop (leave one family out)",
}


def validity_dir(configured: Path | None) -> Path | None:
    """The folder to list: the configured one, else the repository's `results/` when it exists, else None."""
    if configured is not None:
        return configured.expanduser()
    return REPO_RESULTS if REPO_RESULTS.is_dir() else None


def validity_files(folder: Path | None) -> dict[str, Path]:
    """`validity-<model>.json` files in `folder` by model name, sorted by name (empty when there is no folder)."""
    if folder is None or not folder.is_dir():
        return {}
    files = {p.name[len(PREFIX):-len(".json")]: p for p in folder.glob(f"{PREFIX}*.json") if p.is_file()}
    return {name: files[name] for name in sorted(files) if name}


@lru_cache(maxsize=8)
def _read(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    body = json.loads(Path(path).read_text())
    if not isinstance(body, dict) or not isinstance(body.get("validity"), dict):
        raise ValueError("no `validity` section (write it with `carrygate validate CHECKPOINT --json OUT`)")
    return body


def load_document(path: Path) -> dict[str, Any]:
    """A validity file's JSON, re-read when the file changes; ValueError when it is not one (OSError when unreadable)."""
    stat = path.stat()
    try:
        return _read(str(path), stat.st_mtime_ns, stat.st_size)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc


def _path(obj: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def signal_value(candidate: dict[str, Any], signal: str) -> float | None:
    """A candidate's value of one validity signal (None when the document has none or it is not finite)."""
    keys = SIGNAL_FIELDS.get(signal, (signal,))
    return finite(_path(candidate, keys))


@dataclass
class SignalPanel:
    """One signal: its scatter and its validity numbers (as in `validity.signals`)."""

    signal: str
    title: str
    higher_is_better: bool
    traces: list[Trace]
    points: int
    missing: list[str]
    spearman: float | None = None
    spearman_ci95: tuple[float, float] | None = None
    kendall: float | None = None
    kendall_ci95: tuple[float, float] | None = None
    near_spearman: float | None = None
    near_spearman_ci95: tuple[float, float] | None = None
    near_n: int | None = None
    auroc: float | None = None
    n: int | None = None

    @property
    def weak_near_baseline(self) -> bool:
        """The near-baseline interval includes 0 (or there is none): the signal does not rank where a gate decides."""
        ci = self.near_spearman_ci95
        return ci is None or ci[0] <= 0 <= ci[1]


@dataclass
class GateRow:
    name: str
    agreement: float | None
    confusion: list[tuple[str, int]]
    false_go: list[str]
    inconclusive: list[str]
    policy: list[tuple[str, Any]]


@dataclass
class PredictionRow:
    candidate: str
    measured_drop: float | None
    predicted: float | None
    lo: float | None
    hi: float | None
    covered: bool | None


@dataclass
class ValidityView:
    model: str
    puzzles: int | None
    candidates: int | None
    reference_puzzle_exact: float | None
    resamples: int | None
    panels: list[SignalPanel]
    gates: list[GateRow] = field(default_factory=list)
    coverage: float | None = None
    mae: float | None = None
    prediction_n: int | None = None
    held_out_by: str | None = None
    prediction_rows: list[PredictionRow] = field(default_factory=list)
    decisions: dict[str, int] = field(default_factory=dict)


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        lo, hi = finite(value[0]), finite(value[1])
        if lo is not None and hi is not None:
            return (lo, hi)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _decision(candidate: dict[str, Any]) -> str | None:
    verdict = candidate.get("verdict")
    decision = verdict.get("decision") if isinstance(verdict, dict) else None
    return decision if decision in DECISION_COLOURS else None


def _pp(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f} pp"


def scatter_traces(candidates: list[dict[str, Any]], signal: str, overrides: dict[str, float] | None = None
                   ) -> tuple[list[Trace], int, list[str]]:
    """One marker trace per verdict decision: x = signal value, y = Δ puzzle-exact, hover = the candidate's name.

    Returns the traces, how many points they hold and the names of candidates left out (no value or no Δ).
    `overrides` replaces values by candidate name (the leave-one-family-out predictions of `validity.prediction`)."""
    overrides = overrides or {}
    groups: dict[str | None, list[tuple[str, float, float]]] = {}
    missing: list[str] = []
    for c in candidates:
        name = str(c.get("name", "?"))
        x = overrides.get(name, signal_value(c, signal))
        y = finite(c.get("delta_puzzle_exact"))
        if x is None or y is None:
            missing.append(name)
            continue
        groups.setdefault(_decision(c), []).append((name, x, y))
    traces: list[Trace] = []
    for decision in DECISION_ORDER:
        group = groups.get(decision)
        if not group:
            continue
        label = DECISION_LABELS.get(decision, str(decision))
        traces.append({
            "type": "scatter", "mode": "markers", "name": label,
            "x": [g[1] for g in group], "y": [g[2] for g in group], "customdata": [g[0] for g in group],
            "text": [f"<b>{g[0]}</b><br>{signal} {g[1]:.4g}<br>Δ puzzle-exact {_pp(g[2])}<br>verdict {label}" for g in group],
            "hovertemplate": "%{text}<extra></extra>",
            "marker": {"color": DECISION_COLOURS[decision], "size": 9, "line": {"width": 1, "color": "#fff"}},
        })
    return traces, sum(len(g) for g in groups.values()), missing


def scatter_layout(panel: SignalPanel) -> dict[str, Any]:
    """The plot's axes, the near-baseline band (|Δ| ≤ 5 pp) and the labelled-damage line (Δ = −2 pp)."""
    better = "higher is better" if panel.higher_is_better else "lower is better"
    return {
        "xaxis": {"title": {"text": f"{panel.title} ({better})"}, "zeroline": False},
        "yaxis": {"title": {"text": "Δ puzzle-exact (candidate − reference)"}, "zeroline": True, "tickformat": "+.0%"},
        "shapes": [
            {"type": "rect", "name": "near-baseline", "xref": "paper", "x0": 0, "x1": 1, "y0": -NEAR_BASELINE, "y1": NEAR_BASELINE,
             "fillcolor": "rgba(36, 87, 197, 0.07)", "line": {"width": 0}, "layer": "below"},
            {"type": "line", "name": "damage", "xref": "paper", "x0": 0, "x1": 1, "y0": -DAMAGE, "y1": -DAMAGE,
             "line": {"dash": "dot", "width": 1, "color": "#a11"}},
        ],
        "margin": {"t": 20, "r": 10}, "hovermode": "closest", "legend": {"title": {"text": "verdict"}, "orientation": "h", "y": -0.25},
    }


def _gate_rows(validity: dict[str, Any]) -> list[GateRow]:
    gates = validity.get("gates")
    if not isinstance(gates, dict):
        gates = {"policy": validity.get("gate")}
    rows = []
    for name, gate in gates.items():
        if not isinstance(gate, dict):
            continue
        confusion = gate.get("confusion") if isinstance(gate.get("confusion"), dict) else {}
        policy = gate.get("policy") if isinstance(gate.get("policy"), dict) else {}
        rows.append(GateRow(
            name=str(name), agreement=finite(gate.get("agreement")),
            confusion=sorted((str(k), int(v)) for k, v in confusion.items() if _int(v) is not None),
            false_go=[str(n) for n in gate.get("false_go") or []], inconclusive=[str(n) for n in gate.get("inconclusive") or []],
            policy=[(str(k), v) for k, v in policy.items() if v not in (None, False)],
        ))
    return rows


def validity_view(model: str, body: dict[str, Any]) -> ValidityView:
    """One validity document shaped for the page (pure: no files, no database)."""
    validity = body.get("validity") if isinstance(body.get("validity"), dict) else {}
    candidates = [c for c in body.get("candidates") or [] if isinstance(c, dict)]
    prediction = validity.get("prediction") if isinstance(validity.get("prediction"), dict) else {}
    rows = [PredictionRow(candidate=str(r.get("candidate", "?")), measured_drop=finite(r.get("measured_drop")),
                          predicted=finite(r.get("predicted")), lo=finite(r.get("lo")), hi=finite(r.get("hi")),
                          covered=r.get("covered") if isinstance(r.get("covered"), bool) else None)
            for r in prediction.get("per_candidate") or [] if isinstance(r, dict)]
    predicted = {r.candidate: r.predicted for r in rows if r.predicted is not None}
    panels = []
    for s in validity.get("signals") or []:
        if not isinstance(s, dict) or not isinstance(s.get("signal"), str):
            continue
        name = s["signal"]
        traces, points, missing = scatter_traces(candidates, name, predicted if name == "predicted_drop" else None)
        panels.append(SignalPanel(
            signal=name, title=SIGNAL_TITLES.get(name, name.replace("_", " ")), higher_is_better=bool(s.get("higher_is_better")),
            traces=traces, points=points, missing=missing,
            spearman=finite(s.get("spearman")), spearman_ci95=_interval(s.get("spearman_ci95")),
            kendall=finite(s.get("kendall")), kendall_ci95=_interval(s.get("kendall_ci95")),
            near_spearman=finite(s.get("near_spearman")), near_spearman_ci95=_interval(s.get("near_spearman_ci95")),
            near_n=_int(s.get("near_n")), auroc=finite(s.get("auroc")), n=_int(s.get("n")),
        ))
    decisions: dict[str, int] = {}
    for c in candidates:
        label = DECISION_LABELS.get(_decision(c), "no verdict")
        decisions[label] = decisions.get(label, 0) + 1
    return ValidityView(
        model=model, puzzles=_int(validity.get("puzzles")), candidates=_int(validity.get("candidates")),
        reference_puzzle_exact=finite(validity.get("reference_puzzle_exact")), resamples=_int(validity.get("resamples")),
        panels=panels, gates=_gate_rows(validity), coverage=finite(prediction.get("coverage")), mae=finite(prediction.get("mae")),
        prediction_n=_int(prediction.get("n")), held_out_by=prediction.get("held_out_by") if isinstance(prediction.get("held_out_by"), str)
        else None, prediction_rows=sorted(rows, key=lambda r: -(r.measured_drop if r.measured_drop is not None else -9)),
        decisions=decisions,
    )
