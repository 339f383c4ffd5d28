"""`carrygate evaluate` and `carrygate sweep`: run candidates against a reference, print the table."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from carrygate.app.cli.console import console, fail, stdout_console
from carrygate.models.numbers import fixed


def build_probe_folder(builder: str, seq_len: int, size: int, seed: int) -> Path:
    """A fresh held-out probe set from one of our offline builders (`models/tasks/probes.py`, train split left empty)."""
    from carrygate.models.tasks.probes import BUILDERS, build_probe

    if builder not in BUILDERS:
        fail(f"--builder must be sudoku, maze or arc, got {builder!r}")
    folder = Path(tempfile.mkdtemp(prefix=f"carrygate-probe-{builder}-"))
    build_probe(folder, builder, seq_len=seq_len, size=size, seed=seed)
    return folder


ExactOption = Annotated[bool, typer.Option("--exact", help="Run the official eager step (bit-identical to the official code) "
                                                        "instead of the fast path, which differs by rounding only.")]
CompileOption = Annotated[bool | None, typer.Option("--compile/--no-compile", help="torch.compile the fast path's step "
                                                                               "(default: when the job is large enough to pay for it).")]
DeviceOption = Annotated[str, typer.Option(help="cpu, cuda or cuda:N; refused if missing or unusable.")]
CacheOption = Annotated[Path | None, typer.Option("--reference-cache", help="Folder of the reference cache: a reference run before "
                                                                            "on the same weights, probe and settings is replayed.")]


@dataclass(frozen=True)
class Engine:
    """How the CLI runs the engine (`--exact`, `--compile`, `--device`, `--reference-cache`)."""

    exact: bool = False
    compile_steps: bool | None = None
    device: str = "cpu"
    reference_cache: Path | None = None


def run_evaluation(
    checkpoint: Path,
    specs: list,  # list[CompressionSpec]
    data: Path | None,
    builder: str | None,
    split: str,
    limit: int | None,
    labels: bool,
    json_out: Path | None,
    batch_size: int,
    seed: int,
    engine: Engine = Engine(),
    artifacts: Path | None = None,
    halting: Any = None,  # models.halting.Halting; None = fixed
) -> Any:  # the EvaluationResult
    from carrygate.models.checkpoint import CheckpointError, load_checkpoint
    from carrygate.models.devices import resolve_device
    from carrygate.models.evaluate import Probe, evaluate
    from carrygate.models.reference_cache import ReferenceCache
    from carrygate.models.tasks.dataset import read_split

    if data is not None and builder is not None:
        fail("give at most one of --data and --builder")
    if data is None and builder is None and (checkpoint / "data" / split / "dataset.json").is_file():
        data = checkpoint / "data"  # zoo models ship their held-out split
    try:
        if data is not None:
            split_data = read_split(data, split)
            dataset_json: Path | None = data / split / "dataset.json"
            ckpt = load_checkpoint(checkpoint, dataset_json=dataset_json, seq_len=split_data.metadata.seq_len)
        else:
            if builder is None:
                fail("no probe puzzles: give --data DIR or --builder sudoku|maze|arc")
            ckpt = load_checkpoint(checkpoint)
            split_data = read_split(build_probe_folder(str(builder), ckpt.config.seq_len, limit or 256, seed), "test")
        probe = Probe.from_split(split_data, limit, labels)
        ckpt.model.to(resolve_device(engine.device))
    except (CheckpointError, ValueError, OSError) as err:
        fail(str(err))
        return
    cache = ReferenceCache(engine.reference_cache) if engine.reference_cache is not None else None
    with Progress(TextColumn("evaluate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("puzzles", total=len(probe))
        try:
            if artifacts is None and any(s.onnxruntime is not None for s in specs):
                artifacts = (json_out.parent if json_out is not None else Path(tempfile.mkdtemp(prefix="carrygate-"))) / "artifacts"
            result = evaluate(ckpt.model, specs, probe, batch_size=batch_size, on_progress=lambda k: progress.advance(task, k),
                              numerics="exact" if engine.exact else "fast", compile_steps=engine.compile_steps, artifact_dir=artifacts,
                              halting=halting, reference_cache=cache)
        except ValueError as err:
            fail(str(err))
            return
    print_table(result)
    print_signal_table(result)
    print_halting_table(result)
    print_runtime_table(result, artifacts)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(result.model_dump_json(indent=1))
        console.print(f"wrote {json_out}")
    return result


def print_table(result) -> None:  # result: EvaluationResult
    ref = result.reference
    table = Table(title=f"{result.puzzles} probe puzzles, {'with' if result.labels else 'no'} labels, {result.seconds:.1f} s")
    for column in ("candidate", "fidelity", "p05", "answer agr.", "consec. sim", "cell acc", "puzzle exact", "Δ exact", "MB",
                   "SRAM 8/4 MB", "GFLOP/puzzle"):
        table.add_column(column, justify="left" if column == "candidate" else "right")

    def row(m, is_ref: bool = False) -> None:
        fp = m.footprint
        fits = "—" if fp is None else f"{'✓' if fp.fits_8mb else '✗'}/{'✓' if fp.fits_4mb else '✗'}"
        name = m.name if m.non_finite is None else f"{m.name} [red](non-finite @ step {m.non_finite.step})[/]"
        table.add_row(
            name,
            "1 (ref)" if is_ref else fixed(m.fidelity.mean if m.fidelity else None),
            "" if is_ref else fixed(m.fidelity.p05 if m.fidelity else None),
            "" if is_ref else fixed(m.answer_agreement, 3),
            fixed(m.consecutive_similarity.mean),
            fixed(m.cell_accuracy),
            fixed(m.puzzle_exact, 3),
            "" if is_ref else fixed(m.delta_puzzle_exact, 3),
            # an onnxruntime candidate's deployed size is its .onnx file
            f"{m.artifact.bytes / 2**20:.2f}" if m.artifact is not None else "—" if fp is None else f"{fp.total_bytes / 2**20:.2f}",
            fits,
            fixed(fp.gflops_per_puzzle if fp else None, 3),
        )

    row(ref, True)
    for m in result.candidates:
        row(m)
    stdout_console().print(table)


def print_halting_table(result) -> None:  # result: EvaluationResult
    """Under adaptive halting: every model stopped per puzzle at its own first halting step."""
    ref = result.reference.adaptive
    if ref is None:
        return
    table = Table(title=f"adaptive halting ({ref.rule}, at most {ref.max_steps} steps)")
    for column in ("model", "steps used", "p95", "halted early", "same step", "earlier", "later", "answer agr.", "puzzle exact",
                   "Δ exact", "GFLOP/puzzle"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for m in [result.reference, *result.candidates]:
        a, is_ref = m.adaptive, m is result.reference
        if a is None:
            table.add_row(m.name, *["—"] * 10)
            continue
        table.add_row(m.name, fixed(a.steps_used.mean, 2), fixed(a.steps_used.p95, 0), fixed(a.halted_early, 2),
                      "" if is_ref else fixed(a.halting_step_agreement, 3), "" if is_ref else fixed(a.halts_earlier, 2),
                      "" if is_ref else fixed(a.halts_later, 2), "" if is_ref else fixed(a.answer_agreement, 3),
                      fixed(a.puzzle_exact, 3), "" if is_ref else fixed(a.delta_puzzle_exact, 3), fixed(a.gflops_per_puzzle, 3))
    stdout_console().print(table)


def print_signal_table(result) -> None:  # result: EvaluationResult
    """The label-free signals beyond fidelity (models/signals.py) and the predicted drop (models/drop_model.py)."""
    if not result.candidates:
        return
    tau = "—" if result.fidelity_tail_tau is None else f"{result.fidelity_tail_tau:.4f}"
    table = Table(title=f"label-free signals (tail tau {tau}; settled puzzles {result.reference.settled_puzzles}); docs/validity.md "
                        "says how far each can be trusted")
    for column in ("candidate", "settled agr.", "KL mean", "KL p95", "fid. tail", "traj. area", "late drift", "pred. drop [90%]"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for m in result.candidates:
        p = m.predicted_puzzle_exact_drop
        table.add_row(m.name, fixed(m.settled_agreement, 3), fixed(m.logit_kl_mean, 3), fixed(m.logit_kl_p95, 3), fixed(m.fidelity_tail, 3),
                      fixed(m.trajectory_area), fixed(m.late_drift_excess, 5),
                      "—" if p is None else f"{p.mean:+.3f} [{p.lo:+.3f}, {p.hi:+.3f}]")
    stdout_console().print(table)


def print_runtime_table(result, artifacts: Path | None) -> None:  # result: EvaluationResult
    """The onnxruntime candidates: the file each was measured as, and its local ORT profile."""
    rows = [m for m in result.candidates if m.artifact is not None]
    if not rows:
        return
    table = Table(title=f"ONNX Runtime artifacts ({artifacts})")
    for column in ("candidate", "file", "KB", "max|Δ| export", "step ms p50", "p95", "puzzle ms", "host ms", "peak MB", "top ops"):
        table.add_column(column, justify="left" if column in ("candidate", "file", "top ops") else "right")
    for m in rows:
        p = m.profile
        top = ", ".join(f"{o.op_type} {o.share:.0%}" for o in p.ops[:3]) if p else "—"
        diff = m.artifact.export_max_abs_diff.get("z_H_next", 0.0)
        table.add_row(m.name, m.artifact.filename, f"{m.artifact.bytes / 1024:.0f}", f"{diff:.1e}",
                      fixed(p.step_latency_ms_p50 if p else None, 2), fixed(p.step_latency_ms_p95 if p else None, 2),
                      fixed(p.puzzle_latency_ms_p50 if p else None, 1), fixed(p.host_overhead_ms_per_puzzle if p else None, 2),
                      "—" if p is None or p.peak_memory_bytes is None else f"{p.peak_memory_bytes / 2**20:.1f}", top)
    stdout_console().print(table)


def load_specs(paths: list[Path]) -> list:
    from pydantic import ValidationError

    from carrygate.models.compress import CompressionSpec

    specs = []
    for path in paths:
        try:
            specs.append(CompressionSpec.from_yaml(path.read_text()))
        except (OSError, ValueError, ValidationError) as err:
            fail(f"{path}: {err}")
    return specs


HALTING_HELP = ("fixed: every puzzle runs max-steps ACT steps (the official evaluation); adaptive: also stop each puzzle at its "
                "own first halting step (TRM q_halt > 0, HRM q_halt > q_continue) and report that beside the fixed result.")
MAX_STEPS_HELP = "ACT steps per puzzle at most (fixed: exactly); default: the model's halt_max_steps."


def _halting(mode: str, max_steps: int | None) -> Any:
    from pydantic import ValidationError

    from carrygate.models.halting import Halting

    try:
        return Halting(mode=mode, max_steps=max_steps)  # type: ignore[arg-type]
    except ValidationError as err:
        fail(f"--halting/--max-steps: {err.errors()[0]['msg']}")


def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="Zoo folder, official step_N / HRM checkpoint, or its folder.")],
    spec: Annotated[list[Path], typer.Option("--spec", help="Candidate spec YAML (repeat for several).")],
    data: Annotated[Path | None, typer.Option(help="Official dataset folder with probe puzzles.")] = None,
    builder: Annotated[str | None, typer.Option(help="Build probe puzzles instead: sudoku, maze or arc.")] = None,
    split: str = "test",
    limit: Annotated[int | None, typer.Option(help="Probe puzzles to use (default: all).")] = None,
    labels: Annotated[bool, typer.Option("--labels/--no-labels", help="Also score cell accuracy and puzzle-exact.")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full result (curves included) here.")] = None,
    batch_size: int = 64,
    seed: int = 0,
    exact: ExactOption = False,
    compile_steps: CompileOption = None,
    device: DeviceOption = "cpu",
    reference_cache: CacheOption = None,
    artifacts: Annotated[Path | None, typer.Option(help="Folder for onnxruntime candidates' .onnx files "
                                                        "(default: artifacts/ beside --json, else a temporary folder).")] = None,
    halting: Annotated[str, typer.Option(help=HALTING_HELP)] = "fixed",
    max_steps: Annotated[int | None, typer.Option(help=MAX_STEPS_HELP)] = None,
) -> None:
    """Run candidate compression specs against the reference, step by step; print the table."""
    run_evaluation(checkpoint, load_specs(spec), data, builder, split, limit, labels, json_out, batch_size, seed,
                   Engine(exact, compile_steps, device, reference_cache), artifacts, _halting(halting, max_steps))


def sweep_command(
    checkpoint: Annotated[Path, typer.Argument(help="Zoo folder, official step_N / HRM checkpoint, or its folder.")],
    grid: Annotated[str, typer.Option(help="paper (the README sweep) or precision-depth.")] = "paper",
    data: Annotated[Path | None, typer.Option(help="Official dataset folder with probe puzzles.")] = None,
    builder: Annotated[str | None, typer.Option(help="Build probe puzzles instead: sudoku, maze or arc.")] = None,
    split: str = "test",
    limit: int | None = None,
    labels: Annotated[bool, typer.Option("--labels/--no-labels")] = True,
    json_out: Annotated[Path | None, typer.Option("--json")] = None,
    batch_size: int = 64,
    seed: int = 0,
    exact: ExactOption = False,
    compile_steps: CompileOption = None,
    device: DeviceOption = "cpu",
    reference_cache: CacheOption = None,
    halting: Annotated[str, typer.Option(help=HALTING_HELP)] = "fixed",
    max_steps: Annotated[int | None, typer.Option(help=MAX_STEPS_HELP)] = None,
) -> None:
    """Run a named grid of candidates (precision x depth) as one job."""
    from carrygate.models.checkpoint import CheckpointError, load_checkpoint
    from carrygate.models.compress.grids import GRIDS

    if grid not in GRIDS:
        fail(f"--grid must be one of {sorted(GRIDS)}, got {grid!r}")
    try:
        config = load_checkpoint(checkpoint, dataset_json=(data / split / "dataset.json") if data else None).config
    except CheckpointError as err:
        fail(str(err))
        return
    run_evaluation(checkpoint, GRIDS[grid](config), data, builder, split, limit, labels, json_out, batch_size, seed,
                   Engine(exact, compile_steps, device, reference_cache), halting=_halting(halting, max_steps))


commands = typer.Typer()
commands.command("evaluate")(evaluate_command)
commands.command("sweep")(sweep_command)
