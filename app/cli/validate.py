"""`carrygate validate` (how well each label-free signal tracks the real damage) and `carrygate
calibrate` (refit the predicted-drop model from labelled evaluations)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from carrygate.app.cli.console import console, fail, stdout_console
from carrygate.app.cli.evaluate import CacheOption, CompileOption, DeviceOption, Engine, ExactOption, load_specs, run_evaluation


def label_free(policy: Any) -> Any:  # GatePolicy -> GatePolicy without the rules that need labels
    return policy.model_copy(update={"max_puzzle_exact_drop": None, "max_cell_accuracy_drop": None, "require_labels": False})


def read_result(path: Path) -> Any:
    """An evaluation result JSON (`evaluate --json`, or `validate --json` with its verdicts and
    validity section, which are derived and dropped here) as an `EvaluationResult`."""
    from carrygate.models.results import EvaluationResult

    body = json.loads(path.read_text())
    body.pop("validity", None)
    for candidate in body.get("candidates", []):
        candidate.pop("verdict", None)
    return EvaluationResult.model_validate(body)


def validate_command(
    checkpoint: Annotated[Path, typer.Argument(help="Zoo folder, official step_N / HRM checkpoint, or its folder.")],
    json_out: Annotated[Path, typer.Option("--json", help="Write the result (candidates, verdicts, validity) here.")],
    data: Annotated[Path | None, typer.Option(help="Official dataset folder with labelled probe puzzles.")] = None,
    builder: Annotated[str | None, typer.Option(help="Build probe puzzles instead: sudoku, maze or arc.")] = None,
    family: Annotated[str, typer.Option(help="Candidate population: 'standard' or a YAML file with a list of specs.")] = "standard",
    spec: Annotated[list[Path] | None, typer.Option("--spec", help="More candidate specs (repeat).")] = None,
    policy: Annotated[Path | None, typer.Option(help="Gate policy YAML for the label-free gate (default: the default policy).")] = None,
    limit: Annotated[int | None, typer.Option(help="Probe puzzles (>= 500 for a report worth citing).")] = None,
    split: str = "test",
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of the puzzles.")] = 1000,
    batch_size: int = 250,
    seed: int = 0,
    from_result: Annotated[list[Path] | None, typer.Option(
        "--from-result", help="Skip the evaluation: report on this result JSON. Repeat to pool the candidates of runs on "
                              "the same checkpoint and probe puzzles (refused if their references differ).")] = None,
    exact: ExactOption = False,
    compile_steps: CompileOption = None,
    device: DeviceOption = "cpu",
    reference_cache: CacheOption = None,
) -> None:
    """Run a population of candidates with labels and measure every label-free signal's validity."""
    import yaml

    from carrygate.gate import GatePolicy
    from carrygate.models.checkpoint import CheckpointError, load_checkpoint
    from carrygate.models.compress import CompressionSpec
    from carrygate.models.validity import standard_family

    gate_policy = GatePolicy.from_yaml(policy.read_text()) if policy is not None else GatePolicy()
    if from_result:
        from carrygate.models.validity import pool_results

        try:
            result = pool_results([read_result(path) for path in from_result])
        except (OSError, ValueError) as err:
            fail(f"--from-result {', '.join(map(str, from_result))}: {err}")
            return
    else:
        if family == "standard":
            try:
                config = load_checkpoint(checkpoint, dataset_json=(data / split / "dataset.json") if data else None).config
            except CheckpointError as err:
                fail(str(err))
                return
            specs = standard_family(config)
        else:
            try:
                specs = [CompressionSpec.model_validate(body) for body in yaml.safe_load(Path(family).read_text())]
            except (OSError, ValueError, TypeError) as err:
                fail(f"--family {family}: {err}")
                return
        specs += load_specs(spec or [])
        result = run_evaluation(checkpoint, specs, data, builder, split, limit, True, None, batch_size, seed,
                                Engine(exact, compile_steps, device, reference_cache))
    body = validity_body(result, gate_policy, resamples, seed)
    print_validity(body["validity"])
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(body, indent=1))
    console.print(f"wrote {json_out}")


def validity_body(result: Any, gate_policy: Any, resamples: int, seed: int) -> dict[str, Any]:
    """The result JSON with each candidate's verdict and the `validity` section. The predicted drop
    on every candidate is replaced by its leave-one-family-out prediction, so neither the report nor
    the gate scores a calibration on candidates it was fitted on."""
    from carrygate.gate import judge
    from carrygate.models.results import DropPrediction
    from carrygate.models.validity import DAMAGE, gate_agreement, leave_one_out_drops, report

    if not result.labels:
        fail("validate needs labelled probe puzzles")
    drops = leave_one_out_drops(result)
    for i, (_, mean, lo, hi) in drops.items():
        result.candidates[i].predicted_puzzle_exact_drop = DropPrediction(mean=mean, lo=lo, hi=hi, calibration="leave-one-family-out")
    free = label_free(gate_policy)
    floors = {"min_fidelity_mean": 0.99, "min_fidelity_p05": 0.95}  # the default policy until 2026-12-03
    off = {"min_fidelity_mean": None, "min_fidelity_p05": None}
    gates_compared = {"fidelity_floors": free.model_copy(update={**floors, "max_predicted_exact_drop": None}),
                      "predicted_drop_only": free.model_copy(update={**off, "max_predicted_exact_drop": 0.02}),
                      "fidelity_and_predicted_drop": free.model_copy(update={**floors, "max_predicted_exact_drop": 0.02})}
    validity = report(result, resamples=resamples, seed=seed, gate=lambda r: judge(r, free), drops=drops)
    gates = {name: gate_agreement(result, lambda r, p=policy: judge(r, p), DAMAGE).model_dump(mode="json")
             for name, policy in gates_compared.items()}
    verdicts = {v.candidate: v for v in judge(result, free).candidates}
    body = result.model_dump(mode="json")
    for candidate in body["candidates"]:
        v = verdicts.get(candidate["name"])
        candidate["verdict"] = {"decision": v.decision, "rules": [r.model_dump(mode="json") for r in v.rules]} if v else None
    body["validity"] = validity.model_dump(mode="json") | {"gates": gates, "measured_on": datetime.date.today().isoformat()}
    return body


def print_validity(validity: dict[str, Any]) -> None:
    def f(v: float | None) -> str:
        return "—" if v is None else f"{v:+.2f}"

    def ci(v: list[float] | None) -> str:
        return "" if v is None else f" [{v[0]:+.2f}, {v[1]:+.2f}]"

    table = Table(title=f"signal validity: {validity['candidates']} candidates, {validity['puzzles']} puzzles "
                        f"(Spearman / Kendall vs Δ puzzle-exact, oriented; 95% bootstrap over puzzles)")
    for column in ("signal", "Spearman", "Kendall", "near-baseline Spearman (n)", "AUROC drop>2pp"):
        table.add_column(column, justify="left" if column == "signal" else "right")
    for s in validity["signals"]:
        table.add_row(s["signal"], f(s["spearman"]) + ci(s["spearman_ci95"]), f(s["kendall"]) + ci(s["kendall_ci95"]),
                      f(s["near_spearman"]) + ci(s["near_spearman_ci95"]) + f" ({s['near_n']})",
                      "—" if s["auroc"] is None else f"{s['auroc']:.2f}")
    out = stdout_console()
    out.print(table)
    for name, gate in validity["gates"].items():
        if gate:
            out.print(f"label-free gate ({name}) vs labelled gate (drop ≤ 2 pp): agreement {gate['agreement']:.2f}, "
                      f"false go {gate['false_go'] or 'none'}, inconclusive {len(gate['inconclusive'])}, confusion {gate['confusion']}")
    p = validity.get("prediction")
    if p:
        out.print(f"predicted drop, leave one {p['held_out_by']} out: 90% interval coverage {p['coverage']:.2f}, "
                  f"MAE {p['mae'] * 100:.2f} pp, n {p['n']}")


def calibrate_command(
    results: Annotated[list[Path], typer.Argument(help="Labelled result JSONs (evaluate / validate --json).")],
    out: Annotated[Path, typer.Option(help="Write the calibration JSON here.")],
    database: Annotated[bool, typer.Option("--database/--no-database", help="Also use the service's labelled jobs.")] = False,
    store: Annotated[bool, typer.Option("--store/--no-store", help="Add the fit to the service's database as its newest "
                                                                     "calibration: workers predict with it from the next job on.")] = False,
) -> None:
    """Refit the predicted puzzle-exact drop model on labelled history; the version is its content hash."""
    from carrygate.models import drop_model

    cases, sources = [], []
    for path in results:
        try:
            result = read_result(path)
        except (OSError, ValueError) as err:
            fail(f"{path}: {err}")
            return
        cases += drop_model.cases_from_result(result, model=path.stem)
        sources.append(path.name)
    if database:
        from carrygate.app.settings import Settings
        from carrygate.workers.calibration_history import labelled_results

        for job_id, result in labelled_results(Settings()):
            cases += drop_model.cases_from_result(result, model=f"job-{job_id}")
            sources.append(f"job:{job_id}")
    if not cases:
        fail("no labelled candidates with per-puzzle values in the given results")
    calibration = drop_model.fit(cases, sources=sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(calibration.model_dump_json(indent=1))
    console.print(f"calibration {calibration.version}: {calibration.candidates} candidates, {calibration.changed_puzzles} changed "
                  f"answers, conformal q {calibration.conformal_q:.2f} -> {out}")
    if store:
        from carrygate.app.settings import Settings
        from carrygate.store.sessions import make_engine, session_factory
        from carrygate.workers.calibrations import store_calibration

        with session_factory(make_engine(Settings().database_url))() as session:
            number = store_calibration(session, calibration)
            session.commit()
        console.print(f"stored as calibration #{number}: the service's workers predict with it from the next job on")


commands = typer.Typer()
commands.command("validate")(validate_command)
commands.command("calibrate")(calibrate_command)
