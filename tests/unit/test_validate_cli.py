"""`carrygate validate` end to end on a tiny zoo-layout model, and `calibrate` on what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from carrygate.app.cli import app as cli
from carrygate.models import signals
from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.validity import standard_family
from tests.conftest import make_tiny_zoo_model


def test_validate_writes_candidates_verdicts_and_a_reproducible_report(tmp_path: Path) -> None:
    folder = make_tiny_zoo_model(tmp_path / "tiny", steps=3, puzzles=40, seed=0)
    out = tmp_path / "validity.json"
    run = CliRunner().invoke(cli, ["validate", str(folder), "--limit", "40", "--resamples", "30", "--json", str(out)])
    assert run.exit_code == 0, run.output
    body = json.loads(out.read_text())
    family = standard_family(load_checkpoint(folder).config)
    assert len(family) >= 40 and [c["name"] for c in body["candidates"]] == [s.name for s in family]
    for candidate in body["candidates"]:
        assert candidate["verdict"]["decision"] in ("go", "no_go", "inconclusive"), candidate["name"]
        if candidate["non_finite"] is None:
            assert candidate["predicted_puzzle_exact_drop"]["calibration"] == "leave-one-family-out"
            # the default policy, label-free: judged on the predicted drop, not on the fidelity floors
            rules = {r["rule"] for r in candidate["verdict"]["rules"]}
            assert "max_predicted_exact_drop" in rules and not rules & {"min_fidelity_mean", "min_fidelity_p05"}, candidate["name"]
    validity = body["validity"]
    assert validity["puzzles"] == 40 and {s["signal"] for s in validity["signals"]} == {*signals.SIGNALS, "predicted_drop"}
    assert set(validity["gates"]) == {"fidelity_floors", "predicted_drop_only", "fidelity_and_predicted_drop"}
    assert validity["prediction"]["held_out_by"] == "family"
    assert validity["gates"]["fidelity_floors"]["policy"]["min_fidelity_mean"] == 0.99
    assert validity["gates"]["predicted_drop_only"]["policy"]["min_fidelity_mean"] is None
    gate = validity["gates"]["fidelity_floors"]
    assert sum(gate["confusion"].values()) == gate["decided"] + len(gate["inconclusive"])

    again = tmp_path / "again.json"
    rerun = CliRunner().invoke(cli, ["validate", str(folder), "--from-result", str(out), "--resamples", "30", "--json", str(again)])
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(again.read_text())["validity"]["signals"] == validity["signals"]  # the same puzzles, the same seed

    calibration = tmp_path / "cal.json"
    fit = CliRunner().invoke(cli, ["calibrate", str(out), "--out", str(calibration)])
    assert fit.exit_code == 0, fit.output
    assert json.loads(calibration.read_text())["candidates"] == sum(c["non_finite"] is None for c in body["candidates"])
