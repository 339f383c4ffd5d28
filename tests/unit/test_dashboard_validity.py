"""The signal-validity page's data shaping (app/dashboard/validity.py) and its routes, no browser.

The validity section of the fixture documents is built with the models that `carrygate validate` dumps
(models/validity.py: ValidityReport, SignalValidity, GateAgreement, PredictionValidity), so a renamed or
removed field breaks these tests rather than the page.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from carrygate.app.dashboard import validity
from carrygate.models import signals
from carrygate.models import validity as model_validity
from carrygate.models.validity import GateAgreement, PredictionValidity, SignalValidity, ValidityReport


def candidate(name: str, fidelity: float, delta: float | None, decision: str | None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "fidelity": {"mean": fidelity, "p05": fidelity - 0.05}, "consecutive_similarity": {"mean": 0.99, "curve": []},
            "answer_agreement": 0.9, "logit_kl_mean": 1.0 - fidelity, "predicted_puzzle_exact_drop": {"mean": 0.5, "lo": 0, "hi": 1},
            "delta_puzzle_exact": delta, "verdict": None if decision is None else {"decision": decision, "rules": []}, **extra}


def signal_row(name: str, higher: bool, rho: float, near_ci: tuple[float, float] | None) -> SignalValidity:
    return SignalValidity(signal=name, higher_is_better=higher, spearman=rho, spearman_ci95=(rho - 0.2, min(rho + 0.1, 1.0)),
                          kendall=rho - 0.1, kendall_ci95=(rho - 0.3, rho), near_spearman=0.4, near_spearman_ci95=near_ci,
                          near_kendall=0.3, near_n=3, auroc=0.9, n=4)


def document() -> dict[str, Any]:
    gate = GateAgreement(policy={"min_fidelity_mean": 0.99, "min_fidelity_p05": None, "require_labels": False},
                         confusion={"go/go": 2, "no_go/no_go": 1, "inconclusive/no_go": 1}, agreement=0.75, false_go=[],
                         inconclusive=["c"])
    prediction = PredictionValidity(held_out_by="family", coverage=0.5, mae=0.031, n=2, per_candidate=[
        {"candidate": "a", "measured_drop": 0.0, "predicted": 0.004, "lo": -0.02, "hi": 0.03, "covered": True},
        {"candidate": "d", "measured_drop": 0.3, "predicted": 0.1, "lo": 0.05, "hi": 0.15, "covered": False},
    ])
    report = ValidityReport(puzzles=40, candidates=4, reference_puzzle_exact=0.8, resamples=50, gate=gate, prediction=prediction,
                            signals=[signal_row("fidelity_mean", True, 0.8, (0.1, 0.7)),
                                     signal_row("logit_kl_mean", False, 0.6, (-0.2, 0.9)), signal_row("predicted_drop", False, 0.7, None)])
    return {"schema_version": 1, "candidates": [
        candidate("a", 0.999, 0.0, "go"), candidate("b", 0.998, -0.01, "go"), candidate("c", 0.97, -0.04, "inconclusive"),
        candidate("d", 0.90, -0.3, "no_go"), candidate("e", float("nan"), None, None, non_finite="carry"),
    ], "validity": report.model_dump(mode="json") | {"gates": {"policy": gate.model_dump(mode="json"), "predicted_drop_only": None}}}


def test_constants_and_signal_fields_follow_models_validity() -> None:
    assert (validity.NEAR_BASELINE, validity.DAMAGE) == (model_validity.NEAR_BASELINE, model_validity.DAMAGE)
    assert set(validity.SIGNAL_FIELDS) == {*signals.SIGNALS, "predicted_drop"} == set(validity.SIGNAL_TITLES)


def test_signal_value_reads_nested_fields_and_drops_non_finite() -> None:
    c = candidate("a", 0.95, -0.1, "no_go", fidelity_tail=float("inf"), cell_agreement=True)
    assert validity.signal_value(c, "fidelity_mean") == 0.95
    assert math.isclose(validity.signal_value(c, "fidelity_p05") or 0, 0.90)
    assert validity.signal_value(c, "consecutive_similarity") == 0.99
    assert validity.signal_value(c, "predicted_drop") == 0.5
    assert validity.signal_value(c, "fidelity_tail") is None  # Inf
    assert validity.signal_value(c, "cell_agreement") is None  # not a number
    assert validity.signal_value(c, "settled_agreement") is None  # absent
    assert validity.signal_value({"fidelity": None}, "fidelity_mean") is None


def test_validity_view_one_scatter_per_signal_coloured_by_verdict() -> None:
    view = validity.validity_view("tiny", document())
    assert (view.model, view.puzzles, view.candidates, view.resamples, view.reference_puzzle_exact) == ("tiny", 40, 4, 50, 0.8)
    assert [p.signal for p in view.panels] == ["fidelity_mean", "logit_kl_mean", "predicted_drop"]
    fidelity = view.panels[0]
    assert [t["name"] for t in fidelity.traces] == ["go", "inconclusive", "no-go"]
    by_name = {t["name"]: t for t in fidelity.traces}
    assert by_name["go"]["x"] == [0.999, 0.998] and by_name["go"]["y"] == [0.0, -0.01] and by_name["go"]["customdata"] == ["a", "b"]
    assert by_name["no-go"]["x"] == [0.90] and by_name["no-go"]["y"] == [-0.3]
    assert by_name["go"]["marker"]["color"] != by_name["no-go"]["marker"]["color"]
    assert "<b>a</b>" in by_name["go"]["text"][0] and "+0.0 pp" in by_name["go"]["text"][0]
    assert fidelity.points == 4 and fidelity.missing == ["e"]  # NaN fidelity, no Δ
    assert fidelity.spearman == 0.8 and fidelity.spearman_ci95 == (0.6000000000000001, 0.9) and fidelity.near_n == 3
    assert fidelity.auroc == 0.9 and fidelity.n == 4 and not fidelity.weak_near_baseline
    assert view.panels[1].weak_near_baseline and view.panels[2].weak_near_baseline  # interval holds 0 / no interval
    assert not view.panels[1].higher_is_better
    # predicted_drop is plotted at the leave-one-family-out predictions (validity.prediction), the candidate field elsewhere
    predicted = {x for t in view.panels[2].traces for x in t["x"]}
    assert predicted == {0.004, 0.1, 0.5}


def test_validity_view_gates_prediction_and_figures_are_json() -> None:
    view = validity.validity_view("tiny", document())
    assert len(view.gates) == 1  # the None gate of predicted_drop_only is left out
    gate = view.gates[0]
    assert (gate.name, gate.agreement, gate.false_go, gate.inconclusive) == ("policy", 0.75, [], ["c"])
    assert gate.confusion == [("go/go", 2), ("inconclusive/no_go", 1), ("no_go/no_go", 1)]
    assert gate.policy == [("min_fidelity_mean", 0.99)]
    assert (view.coverage, view.mae, view.prediction_n, view.held_out_by) == (0.5, 0.031, 2, "family")
    assert [r.candidate for r in view.prediction_rows] == ["d", "a"] and view.prediction_rows[0].covered is False
    assert view.decisions == {"go": 2, "inconclusive": 1, "no-go": 1, "no verdict": 1}
    for panel in view.panels:
        layout = validity.scatter_layout(panel)
        json.dumps({"data": panel.traces, "layout": layout}, allow_nan=False)
        assert [s["name"] for s in layout["shapes"]] == ["near-baseline", "damage"]
    # without `gates` the single `gate` is shown
    body = document()
    del body["validity"]["gates"]
    assert [g.name for g in validity.validity_view("x", body).gates] == ["policy"]


def test_validity_view_tolerates_a_sparse_document() -> None:
    view = validity.validity_view("x", {"validity": {"signals": [{"signal": "fidelity_mean"}, "junk"]}, "candidates": ["junk"]})
    assert [p.signal for p in view.panels] == ["fidelity_mean"] and view.panels[0].traces == [] and view.panels[0].spearman is None
    assert view.gates == [] and view.coverage is None and view.prediction_rows == []


def test_validity_files_and_default_folder(tmp_path: Path) -> None:
    for name in ("validity-b.json", "validity-a.json", "sudoku-mlp.json", "validity-.json", "validity-c.txt"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "validity-dir.json").mkdir()
    assert list(validity.validity_files(tmp_path)) == ["a", "b"]
    assert validity.validity_files(None) == {} and validity.validity_files(tmp_path / "missing") == {}
    assert validity.validity_dir(tmp_path) == tmp_path
    assert validity.validity_dir(None) == (validity.REPO_RESULTS if validity.REPO_RESULTS.is_dir() else None)


def test_load_document_rereads_a_changed_file_and_refuses_others(tmp_path: Path) -> None:
    path = tmp_path / "validity-m.json"
    path.write_text(json.dumps(document()))
    assert validity.load_document(path)["validity"]["puzzles"] == 40
    body = document()
    body["validity"]["puzzles"] = 41
    path.write_text(json.dumps(body))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert validity.load_document(path)["validity"]["puzzles"] == 41
    path.write_text('{"candidates": []}')
    with pytest.raises(ValueError, match="no `validity` section"):
        validity.load_document(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        validity.load_document(path)


def test_validity_pages_render_in_process(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from carrygate.app.main import create_app
    from carrygate.app.settings import Settings

    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "validity-tiny.json").write_text(json.dumps(document()).replace("NaN", "null"))
    (folder / "validity-broken.json").write_text("[]")
    settings = Settings(data_dir=tmp_path / "data", validity_dir=folder)
    with TestClient(create_app(settings, start_workers=False)) as client:
        page = client.get("/dashboard/validity/tiny")
        assert page.status_code == 200
        for marker in ('id="chart-validity-fidelity_mean"', 'id="chart-validity-predicted_drop"', 'id="gate-agreement"',
                       'id="prediction-coverage"', "<strong>0.50</strong>", "<strong>0.75</strong>", "+0.80"):
            assert marker in page.text, marker
        assert "validity-broken.json: no `validity` section" in client.get("/dashboard/validity").text  # the first by name
        assert client.get("/dashboard/validity/nope").status_code == 404
        assert client.get("/dashboard/validity/..%2Fvalidity-tiny").status_code == 404
        assert '/dashboard/validity"' in client.get("/dashboard/grid").text  # the nav link
    with TestClient(create_app(Settings(data_dir=tmp_path / "data", validity_dir=tmp_path / "none"), start_workers=False)) as client:
        assert 'id="empty-validity"' in client.get("/dashboard/validity").text
