"""The dashboard's data shaping (app/dashboard/data.py, grid.py, history.py) on a migrated SQLite database, no browser.

Rows are written the way the pipeline writes them (candidate rows from specs, the result as an
`EvaluationResult` dump, verdicts from the real gate), with measurements chosen per test; the
deployable-artifact section is shaped from a real ONNX Runtime evaluation of a tiny model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from markupsafe import escape
from sqlalchemy.orm import Session

from carrygate.app.dashboard import data, grid, history
from carrygate.app.dashboard.artifact import OTHER_OPS, TOP_OPS, artifact_section
from carrygate.app.dashboard.figures import figure_json
from carrygate.app.dashboard.verdicts import verdict_pivot
from carrygate.app.db import make_engine, session_factory, upgrade_to_head
from carrygate.app.services.dashboard import stored_result
from carrygate.gate import GatePolicy, judge
from carrygate.models.aihub import AiHubOptions
from carrygate.models.checkpoint import load_checkpoint
from carrygate.models.compress.grids import PAPER, precision_depth_grid
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.evaluate import Probe, evaluate
from carrygate.models.results import Curve, EvaluationResult, Footprint, ModelResult, Summary
from carrygate.models.tasks.dataset import read_split
from carrygate.store.tables import JOB_SCOPE, Checkpoint, Job, ProbeSet, Result, Verdict
from carrygate.workers.pipeline import candidate_rows
from carrygate.workers.profile.aihub import attach_device_profiles
from tests import fake_qai_hub
from tests.conftest import REPO, make_tiny_zoo_model, tiny_trm
from tests.policies import FIDELITY_FLOORS
from tests.service.conftest import pg_url  # noqa: F401  (fixture used through database_url)

SUDOKU_CONFIG = {"config_json": {"vocab_size": 11, "seq_len": 81, "H_cycles": 2}}


@pytest.mark.parametrize(("name", "method"), [
    ("fp32", "fp32"), ("bf16", "bf16"), ("int8-bnb", "int8-bnb"), ("int8-channel", "int8-channel"), ("int4-naive", "int4/per_tensor"),
    ("int4-calibrated", "int4/per_channel"), ("nf4", "nf4"), ("prune-50", "prune-intermediate-0.5"), ("depth-h1", "depth-H_cycles=1"),
    ("carry-int8", "carry-int8"),
])
def test_method_of_names_what_a_paper_spec_changes(name: str, method: str) -> None:
    assert data.method_of(CompressionSpec.model_validate({"name": name, **PAPER[name]}).to_dict()) == method


def test_method_of_joins_combined_parts() -> None:
    spec = CompressionSpec.model_validate({"precision": "bf16", "carry": {"bits": 8}, "depth": {"H_cycles": 1}})
    assert data.method_of(spec.to_dict()) == "depth-H_cycles=1+bf16+carry-int8"
    assert data.method_of(None) == "reference"


def test_grid_cell_recognises_the_precision_depth_grid_only() -> None:
    for spec in precision_depth_grid(tiny_trm(H_cycles=3)):
        precision, depth = str(spec.name).split("/")
        assert grid.grid_cell(spec.to_dict(), 3) == (precision, int(depth[1:]))
    for name in ("int8-bnb", "prune-50", "carry-int8", "nf4"):
        assert grid.grid_cell(CompressionSpec.model_validate(PAPER[name]).to_dict(), 2) is None
    assert grid.grid_cell({"depth": {"H_cycles": 1, "L_cycles": 2}}, 2) is None
    assert grid.grid_cell({"precision": "bf16"}, None) is None  # full depth unknown


def test_non_finite_measurements_become_gaps() -> None:
    reference = ModelResult(name="reference", steps=2, consecutive_similarity=Curve(curve=[None, float("inf")], mean=None))
    candidate = ModelResult(name="c", steps=2, step_fidelity=[1.0, float("nan")], per_puzzle={"fidelity": [0.5, float("nan")]},
                            consecutive_similarity=Curve(curve=[None, None], mean=None))
    body = EvaluationResult(puzzles=2, labels=False, reference=reference, candidates=[candidate], seconds=1.0)
    steps = data.step_traces(body)
    assert steps[0]["y"] == [1.0, None] and steps[1]["y"] == [None, None]
    assert data.histogram_traces(body)[0]["x"] == [0.5]
    json.loads(str(figure_json(steps, {})))


def test_figure_json_is_valid_json_that_cannot_close_its_script_element() -> None:
    traces = [{"name": "</script><script>alert(1)</script>", "x": [1.0], "y": [None]}]
    text = str(figure_json(traces, {"title": "a & b"}))
    assert "</script>" not in text and "<" not in text and "&" not in text
    assert json.loads(text) == {"data": traces, "layout": {"title": "a & b"}}
    with pytest.raises(ValueError):
        figure_json([{"x": [float("nan")]}], {})


# -- database-backed -----------------------------------------------------------------------------
def footprint(gflops: float, total: int) -> Footprint:
    return Footprint(backbone_bytes=total, embedding_table_bytes=0, total_bytes=total, carry_bytes_per_puzzle=100,
                     sram_streaming_bytes=total // 2, sram_full_load_bytes=total, fits_8mb=True, fits_4mb=True,
                     gflops_per_step=gflops / 3, gflops_per_puzzle=gflops)


def model_result(spec: CompressionSpec | None, fidelity: float, *, exact: float | None, cell: float | None, gflops: float = 1.0,
                 total: int = 1000, name: str | None = None) -> ModelResult:
    return ModelResult(name=name or str(spec.name), spec=spec.to_dict() if spec else None, spec_hash=spec.content_hash if spec else None,
                       steps=3, fidelity=Summary(mean=fidelity, p05=fidelity - 0.001), step_fidelity=[1.0, fidelity, None],
                       consecutive_similarity=Curve(curve=[None, 0.9, 0.95], mean=0.925), answer_agreement=1.0,
                       puzzle_exact=exact, cell_accuracy=cell, footprint=footprint(gflops, total),
                       per_puzzle={"fidelity": [fidelity] * 4})


def add_job(session: Session, checkpoint: Checkpoint, measured: list[tuple[CompressionSpec, dict[str, Any]]], *,
            labels: bool = True, builder: str | None = None, created_at: datetime | None = None,
            policy: GatePolicy | None = None) -> Job:
    """A succeeded job as the pipeline stores it: candidates, result, the gate's verdicts."""
    policy = policy or GatePolicy()
    specs = [spec for spec, _ in measured]
    reference = model_result(None, 1.0, exact=0.8 if labels else None, cell=0.95 if labels else None, name="reference")
    candidates = [model_result(spec, **kw) for spec, kw in measured]
    result = EvaluationResult(puzzles=4, labels=labels, reference=reference, candidates=candidates, seconds=1.0)
    return store_job(session, checkpoint, specs, result, builder=builder, created_at=created_at, policy=policy)


def store_job(session: Session, checkpoint: Checkpoint, specs: list[CompressionSpec], result: EvaluationResult, *,
              builder: str | None = None, created_at: datetime | None = None, policy: GatePolicy | None = None) -> Job:
    """Store a measured `result` of `specs` as the pipeline does: candidate rows, the result document, the gate's verdicts."""
    policy = policy or GatePolicy()
    labels = result.labels
    probe = ProbeSet(builder=builder, task=builder or "sudoku", builder_args={}, dataset_path=None, content_hash="x" * 64,
                     puzzles=result.puzzles, labels=labels)
    rows = candidate_rows(specs)
    job = Job(checkpoint_id=checkpoint.id, probe_set=probe, status="succeeded", progress=1.0, puzzles_done=result.puzzles,
              puzzles_total=result.puzzles,
              policy=policy.model_dump(mode="json"), candidates=rows, created_at=created_at or datetime.now(UTC))
    session.add(job)
    session.flush()
    session.add(Result(job_id=job.id, body=result.model_dump(mode="json")))
    verdict = judge(result, policy)
    session.add(Verdict(job_id=job.id, candidate_id=None, decision=verdict.decision,
                        rules=[{"rule": "job", "passed": verdict.decision == "go", "reason": "; ".join(verdict.reasons)}]))
    for row, cv in zip(rows, verdict.candidates, strict=True):
        session.add(Verdict(job_id=job.id, candidate_id=row.id, decision=cv.decision, rules=[r.model_dump(mode="json") for r in cv.rules]))
    session.commit()
    return job


def add_checkpoint(session: Session, name: str, sha: str, created_at: datetime) -> Checkpoint:
    ckpt = Checkpoint(sha256=sha * 64, architecture="trm", config=SUDOKU_CONFIG, size_bytes=1, original_name=name, storage_path="/x",
                      source="registered", created_at=created_at)
    session.add(ckpt)
    session.commit()
    return ckpt


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database on each backend (the real PostgreSQL server, as in tests/service)."""
    url = f"sqlite:///{tmp_path / 'dash.db'}" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    upgrade_to_head(url)
    return url


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    engine = make_engine(database_url)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


def spec(name: str, body: dict[str, Any]) -> CompressionSpec:
    return CompressionSpec.model_validate({"name": name, **body})


INT8, NAIVE, PRUNE = spec("int8", PAPER["int8-channel"]), spec("int4-naive", PAPER["int4-naive"]), spec("prune-50", PAPER["prune-50"])


def test_overview_points_traces_and_filters(session: Session) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    v1 = add_checkpoint(session, "m", "a", t0)
    v2 = add_checkpoint(session, "m", "b", t0 + timedelta(days=1))
    job1 = add_job(session, v1, [(INT8, {"fidelity": 0.999, "exact": 0.8, "cell": 0.95}),
                                 (NAIVE, {"fidelity": 0.9, "exact": 0.5, "cell": 0.9}),
                                 (PRUNE, {"fidelity": 0.7, "exact": 0.1, "cell": 0.8})], created_at=t0)
    job2 = add_job(session, v2, [(INT8, {"fidelity": 0.98, "exact": None, "cell": None})], labels=False, builder="maze",
                   created_at=t0 + timedelta(days=1))

    points, jobs = data.load_points(session, data.Filters())
    assert [j.id for j in jobs] == [job2.id, job1.id]
    assert len(points) == 4
    traces = data.scatter_traces(points, "puzzle_exact_drop")
    # unlabelled left out
    assert {t["name"]: len(t["x"]) for t in traces} == {"int8-channel": 1, "int4/per_tensor": 1, "prune-intermediate-0.5": 1}
    by_name = {t["name"]: t for t in traces}
    assert by_name["int4/per_tensor"]["y"] == [pytest.approx(0.3)] and by_name["int4/per_tensor"]["customdata"] == [job1.id]
    assert by_name["int8-channel"]["marker"]["symbol"] == ["circle"]  # go under the default policy
    assert by_name["prune-intermediate-0.5"]["marker"]["symbol"] == ["x"]  # no_go
    cell = {t["name"]: t["y"] for t in data.scatter_traces(points, "cell_accuracy_drop")}
    assert cell["prune-intermediate-0.5"] == [pytest.approx(0.15)]

    assert len(data.load_points(session, data.Filters(checkpoint_id=v1.id))[0]) == 3
    assert [p.job_id for p in data.load_points(session, data.Filters(task="maze"))[0]] == [job2.id]
    assert len(data.load_points(session, data.Filters(task="sudoku"))[0]) == 3
    assert [p.job_id for p in data.load_points(session, data.Filters(since=t0 + timedelta(hours=12)))[0]] == [job2.id]
    assert data.load_points(session, data.Filters(until=t0 - timedelta(days=1)))[0] == []
    # a recommendation search is a jobs row too (kind "recommend"); the evaluation pages leave it out
    search = Job(kind="recommend", checkpoint_id=v1.id, probe_set=ProbeSet(builder="sudoku", task="sudoku", builder_args={},
                 content_hash="y" * 64, puzzles=8), status="succeeded", policy={}, options={}, candidates=[], created_at=t0)
    session.add(search)
    session.flush()
    assert search.id not in {j.id for j in data.load_jobs(session)}
    assert [j.id for j in data.load_points(session, data.Filters())[1]] == [job2.id, job1.id]

    shapes = data.threshold_shapes(data.policy_of(jobs), "puzzle_exact_drop")
    # the default policy has no fidelity floor: only the drop line is drawn
    assert [(s["name"], s.get("x0"), s.get("y0")) for s in shapes] == [("max_puzzle_exact_drop", 0, 0.02)]
    floors = data.threshold_shapes(FIDELITY_FLOORS, "puzzle_exact_drop")
    assert [(s["name"], s.get("x0"), s.get("y0")) for s in floors] == [("min_fidelity_mean", 0.99, 0), ("max_puzzle_exact_drop", 0, 0.02)]


def test_job_traces_and_verdict_rows(session: Session) -> None:
    ckpt = add_checkpoint(session, "m", "a", datetime(2026, 1, 1, tzinfo=UTC))
    job = add_job(session, ckpt, [(INT8, {"fidelity": 0.999, "exact": 0.8, "cell": 0.95}),
                                  (NAIVE, {"fidelity": 0.9, "exact": 0.5, "cell": 0.9})], policy=FIDELITY_FLOORS)
    body = stored_result(job)
    assert body is not None
    steps = data.step_traces(body)
    assert [t["name"] for t in steps] == ["int8", "int4-naive", "reference consecutive similarity"]
    assert steps[1]["y"] == [1.0, 0.9, None]
    assert steps[2]["y"] == [None, 0.9, 0.95]
    json.loads(str(figure_json(steps, {})))
    assert [len(t["x"]) for t in data.histogram_traces(body)] == [4, 4]
    bars = data.footprint_traces(body)
    assert [len(t["x"]) for t in bars] == [3, 3] and bars[0]["x"][0] == "reference (reference)"
    rows = data.verdict_rows(job)
    assert {r.candidate for r in rows} == {"int8", "int4-naive"}
    assert sum(len(v.rules) for v in job.verdicts if v.scope != JOB_SCOPE) == len(rows)
    assert any(r.rule == "min_fidelity_mean" and r.passed is False and r.candidate == "int4-naive" for r in rows)
    pivot = verdict_pivot(rows)  # the job page's table: one row per candidate, threshold rules as columns
    assert [r.candidate for r in pivot.rows] == ["int8", "int4-naive"]
    assert pivot.columns[0].rule == "min_fidelity_mean" and pivot.columns[0].limit.startswith("≥")
    assert sum(len([c for c in r.cells if c is not None]) + len(r.others) for r in pivot.rows) == len(rows)
    naive = pivot.rows[1].cells[0]
    assert naive is not None and naive.passed is False and naive.candidate == "int4-naive"
    assert all(o.rule not in {c.rule for c in pivot.columns} for r in pivot.rows for o in r.others)


def test_grid_view_marks_the_cheapest_passing_cell(session: Session) -> None:
    ckpt = add_checkpoint(session, "m", "a", datetime(2026, 1, 1, tzinfo=UTC))
    by_name = {str(s.name): s for s in precision_depth_grid(tiny_trm(H_cycles=2))}
    lenient = GatePolicy(min_answer_agreement=None, max_puzzle_exact_drop=0.2)
    measured = [
        (by_name["fp32/H2"], {"fidelity": 1.0, "exact": 0.8, "cell": 0.95, "gflops": 2.0, "total": 4000}),
        (by_name["int8/H2"], {"fidelity": 0.999, "exact": 0.8, "cell": 0.95, "gflops": 2.0, "total": 1000}),
        (by_name["int8/H1"], {"fidelity": 0.995, "exact": 0.7, "cell": 0.94, "gflops": 1.0, "total": 1000}),
        (by_name["int4-naive/H1"], {"fidelity": 0.5, "exact": 0.1, "cell": 0.6, "gflops": 1.0, "total": 500}),
        (PRUNE, {"fidelity": 0.9, "exact": 0.5, "cell": 0.9}),  # not a grid cell
    ]
    add_job(session, ckpt, measured, policy=lenient)
    view = grid.grid_view(session, ckpt.id)
    assert view.precisions == ["fp32", "int8", "int4-naive"] and view.depths == [1, 2]
    assert view.matrix("fidelity") == [[None, 0.995, 0.5], [1.0, 0.999, None]]
    assert view.cheapest is not None and (view.cheapest.precision, view.cheapest.h_cycles) == ("int8", 1)
    [heatmap] = grid.heatmap_traces(view, "fidelity", "fidelity")
    assert "★ cheapest" in heatmap["text"][0][1] and "(reference)" in heatmap["text"][1][0]
    assert sum("★" in t for row in heatmap["text"] for t in row) == 1
    assert grid.cheapest_shapes(view)[0]["x0"] == 0.5 and grid.cheapest_shapes(view)[0]["y0"] == -0.5
    assert [(c.id, n) for c, n in grid.grid_checkpoints(session)] == [(ckpt.id, 4)]


def test_grid_never_offers_the_reference_as_the_cheapest_cell(session: Session) -> None:
    ckpt = add_checkpoint(session, "m", "a", datetime(2026, 1, 1, tzinfo=UTC))
    by_name = {str(s.name): s for s in precision_depth_grid(tiny_trm(H_cycles=2))}
    add_job(session, ckpt, [(by_name["fp32/H2"], {"fidelity": 1.0, "exact": 0.8, "cell": 0.95, "gflops": 2.0, "total": 4000}),
                            (by_name["int8/H1"], {"fidelity": 0.5, "exact": 0.1, "cell": 0.6, "gflops": 1.0, "total": 1000})])
    view = grid.grid_view(session, ckpt.id)
    assert view.cells[("fp32", 2)].decision == "go" and view.cells[("fp32", 2)].is_reference
    assert view.cheapest is None and grid.cheapest_shapes(view) == []


def test_history_follows_a_spec_across_versions(session: Session) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    v1, v2 = add_checkpoint(session, "m", "a", t0), add_checkpoint(session, "m", "b", t0 + timedelta(days=1))
    other = add_checkpoint(session, "other", "c", t0)
    add_job(session, v1, [(INT8, {"fidelity": 0.999, "exact": 0.8, "cell": 0.95}), (PRUNE, {"fidelity": 0.7, "exact": 0.1, "cell": 0.8})])
    add_job(session, v2, [(spec("int8 renamed", PAPER["int8-channel"]), {"fidelity": 0.95, "exact": 0.6, "cell": 0.9})])
    add_job(session, other, [(INT8, {"fidelity": 0.5, "exact": 0.1, "cell": 0.5})])
    traces, versions = history.history_traces(session, "m")
    assert len(versions) == 2 and versions[0].startswith("v1 aaaaaaaa") and versions[1].startswith("v2 bbbbbbbb")
    by_hash = {t["name"]: t for t in traces}
    assert by_hash["int8 renamed"]["y"] == [0.999, 0.95] and by_hash["int8 renamed"]["x"] == versions
    assert by_hash["prune-50"]["y"] == [0.7]
    assert history.families(session) == [("m", 2), ("other", 1)]
    rows = {r.checkpoint.id: r for r in history.checkpoint_rows(session)}
    assert rows[v1.id].latest_decision == "no_go" and rows[v1.id].candidate_decisions == {"go": 1, "no_go": 1}


def test_pages_render_in_process(tmp_path: Path, database_url: str, session: Session) -> None:
    """Every page renders from the same data (in-process, no worker, no browser); unknown ids are 404 pages."""
    from fastapi.testclient import TestClient

    from carrygate.app.main import create_app
    from carrygate.app.settings import Settings

    ckpt = add_checkpoint(session, "m", "a", datetime(2026, 1, 1, tzinfo=UTC))
    job = add_job(session, ckpt, [(INT8, {"fidelity": 0.999, "exact": 0.8, "cell": 0.95})])
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with TestClient(create_app(settings, start_workers=False)) as client:
        pages = {"/dashboard": "chart-exact", f"/dashboard/jobs/{job.id}": "chart-steps", "/dashboard/grid": "chart-grid-fidelity",
                 "/dashboard/checkpoints": "chart-history"}
        for path, marker in pages.items():
            response = client.get(path)
            assert response.status_code == 200 and f'id="{marker}"' in response.text, path
        assert client.get("/dashboard/jobs/nope").status_code == 404
        assert client.get("/dashboard/static/dashboard.js").status_code == 200


def test_overview_reads_only_the_newest_jobs(session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ckpt = add_checkpoint(session, "m", "a", t0)
    jobs = [add_job(session, ckpt, [(INT8, {"fidelity": 0.999, "exact": 0.8, "cell": 0.95})], created_at=t0 + timedelta(hours=i))
            for i in range(3)]
    monkeypatch.setattr(data, "OVERVIEW_JOB_LIMIT", 2)
    points, loaded = data.load_points(session, data.Filters())
    assert [j.id for j in loaded] == [jobs[2].id, jobs[1].id] and len(points) == 2


# -- the deployable artifact section (onnxruntime candidates), from a real ORT evaluation ---------------
@dataclass(frozen=True)
class OrtMeasured:
    specs: list[CompressionSpec]
    result: EvaluationResult
    reference: Any
    probe: Probe
    artifact_dir: Path


@pytest.fixture(scope="module")
def ort_measured(tmp_path_factory: pytest.TempPathFactory) -> OrtMeasured:
    """The shipped ORT dynamic-INT8 spec (2 puzzles timed instead of 20) and a PyTorch INT8 candidate, evaluated for
    real on a tiny zoo-layout model: export, quantize_dynamic, lockstep engine, local ORT profile."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("ort-dashboard")
    folder = make_tiny_zoo_model(root / "tiny", steps=3, puzzles=4, seed=0)
    reference = load_checkpoint(folder).model
    probe = Probe.from_split(read_split(folder / "data", "test"), 4)
    shipped = yaml.safe_load((REPO / "examples" / "specs" / "ort-dynamic-int8.yaml").read_text())
    shipped["onnxruntime"]["profile_repeats"] = 2
    specs = [CompressionSpec.model_validate(shipped), INT8]
    result = evaluate(reference, specs, probe, batch_size=4, artifact_dir=root / "artifacts")
    return OrtMeasured(specs=specs, result=result, reference=reference, probe=probe, artifact_dir=root / "artifacts")


BUDGETS = GatePolicy(min_fidelity_mean=None, min_fidelity_p05=None, min_answer_agreement=None, max_puzzle_exact_drop=None,
                     max_step_latency_ms=10_000, max_artifact_bytes=50_000_000)


def test_artifact_section_from_a_real_ort_evaluation(session: Session, ort_measured: OrtMeasured) -> None:
    ckpt = add_checkpoint(session, "m", "a", datetime(2026, 1, 1, tzinfo=UTC))
    job = store_job(session, ckpt, ort_measured.specs, ort_measured.result, policy=BUDGETS)
    result = stored_result(job)
    assert result is not None
    section = artifact_section(result, data.verdict_rows(job))
    assert section is not None
    ort = ort_measured.result.candidates[0]
    artifact, profile = ort.artifact, ort.profile
    assert artifact is not None and profile is not None

    [row] = section.rows  # the PyTorch candidate has no file, no profile: no row
    assert row.candidate == ort.name == "ort-dynamic-int8" and row.quantization == "dynamic" and row.filename == artifact.filename
    assert row.file_bytes == artifact.bytes == (ort_measured.artifact_dir / artifact.filename).stat().st_size
    assert not row.stored  # evaluated in-process: no artifact store, so no download link
    assert (row.step_ms_p50, row.step_ms_p95) == (profile.step_latency_ms_p50, profile.step_latency_ms_p95)
    assert (row.puzzle_ms_p50, row.puzzle_ms_p95) == (profile.puzzle_latency_ms_p50, profile.puzzle_latency_ms_p95)
    assert row.peak_memory_bytes == profile.peak_memory_bytes and row.puzzles == 2 and row.steps == 3 and row.threads == 1

    [trace] = section.op_traces
    assert trace["name"] == ort.name and trace["orientation"] == "h"
    kernel_us = {op.op_type: op.us_per_step for op in profile.ops}
    top = [op.op_type for op in profile.ops[:TOP_OPS]]  # the profile lists ops by time, most first
    assert trace["y"][:len(top)] == top and trace["x"][:len(top)] == [kernel_us[op] for op in top]
    assert (trace["y"][-1] == OTHER_OPS) == (len(kernel_us) > TOP_OPS)
    assert sum(trace["x"]) == pytest.approx(sum(kernel_us.values()))  # the rest is summed, nothing dropped
    assert section.op_order == trace["y"]
    assert any("Quantize" in op or "Integer" in op for op in kernel_us), kernel_us  # quantize_dynamic's kernels ran
    json.loads(str(figure_json(section.op_traces, {})))

    rules = {r.rule: r for r in section.rules}
    assert set(rules) == {"max_step_latency_ms", "max_artifact_bytes"} and {r.candidate for r in section.rules} == {ort.name}
    assert rules["max_step_latency_ms"].observed == pytest.approx(profile.step_latency_ms_p50) and rules["max_step_latency_ms"].passed
    assert rules["max_artifact_bytes"].observed == artifact.bytes and rules["max_artifact_bytes"].passed
    assert section.devices == []
    assert data.method_of(job.result.body["candidates"][0]["spec"]) == "ort-dynamic"

    plain = add_job(session, ckpt, [(INT8, {"fidelity": 0.999, "exact": 0.8, "cell": 0.95})])
    plain_result = stored_result(plain)
    assert plain_result is not None and artifact_section(plain_result, data.verdict_rows(plain)) is None


def hub_client(**knobs: object) -> Any:
    """token -> a fake qai_hub client with these scenario knobs (as workers.profile.aihub.real_client)."""
    scenario = type("Scenario", (fake_qai_hub.Client,), dict(knobs))
    return lambda token: scenario(config=fake_qai_hub.ClientConfig(api_token=token))


def test_artifact_section_shows_ai_hub_devices_and_an_inconclusive_reason(session: Session, ort_measured: OrtMeasured, tmp_path: Path,
                                                                         database_url: str) -> None:
    """The same file on the AI Hub fake: one device that compiled and ran, one submission that was rate-limited."""
    from fastapi.testclient import TestClient

    from carrygate.app.main import create_app
    from carrygate.app.settings import Settings

    result = ort_measured.result.model_copy(deep=True)
    probe = ort_measured.probe
    options = AiHubOptions(devices=["Samsung Galaxy S24 (Family)"])
    profiles = []
    for client in (hub_client(), hub_client(rate_limited=True)):
        attach_device_profiles(result, ort_measured.reference, probe.inputs, probe.puzzle_identifiers, ort_measured.artifact_dir, options,
                               default_token="good-token", client_factory=client)
        profiles += result.candidates[0].device_profiles
    result.candidates[0].device_profiles = profiles
    ckpt = add_checkpoint(session, "m", "a", datetime(2026, 1, 1, tzinfo=UTC))
    job = store_job(session, ckpt, ort_measured.specs, result, policy=BUDGETS)
    stored = job.result.body["candidates"][0]["device_profiles"]
    typed = stored_result(job)
    assert typed is not None
    section = artifact_section(typed, data.verdict_rows(job))
    assert section is not None

    ok, limited = section.devices
    assert ok.status == "ok" and ok.device == stored[0]["device_name"] == "Samsung Galaxy S24 (Family)"
    assert ok.device_os == stored[0]["device_os"]
    assert ok.compute_units == stored[0]["compute_units"] and sum(ok.compute_units.values()) > 0
    assert ok.inference_ms == stored[0]["execution_summary"]["estimated_inference_time"] / 1000
    assert ok.peak_memory_bytes == stored[0]["execution_summary"]["estimated_inference_peak_memory"]
    assert ok.step_fidelity_min == min(stored[0]["step_fidelity"]) and ok.step_fidelity_min <= ok.step_fidelity_mean  # type: ignore[operator]
    assert limited.status == "inconclusive" and limited.reason == stored[1]["reason"] and limited.reason.startswith("rate-limited")
    assert limited.inference_ms is None and limited.step_fidelity_mean is None and limited.compute_units == {}
    assert [r.passed for r in section.rules if r.rule == "device_profile"] == [True, None]
    assert {v.candidate.name: v.decision for v in job.verdicts if v.candidate is not None}["ort-dynamic-int8"] == "inconclusive"

    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    with TestClient(create_app(settings, start_workers=False)) as client:
        page = client.get(f"/dashboard/jobs/{job.id}")
        assert page.status_code == 200
        html = page.text
    assert 'id="artifact-section"' in html and 'id="chart-ops"' in html
    assert html.count('<tr class="artifact"') == 1 and "(not stored)" in html
    assert html.count('<tr class="device ok"') == 1 and html.count('<tr class="device inconclusive"') == 1
    assert escape(limited.reason) in html
    assert html.count('<tr class="rule ') == len(section.rules)  # the artifact rules, one row each
    # the verdict pivot (one row per candidate) shows each rule of every verdict once: a column cell or an "other rules" entry
    assert html.count('<td class="rule ') + html.count('<span class="rule ') == len(data.verdict_rows(job))
