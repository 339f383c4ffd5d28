"""`carrygate recommend`: the cheapest compression of a checkpoint that still reasons, under a budget.

Writes the recommended spec as YAML (`carrygate gate --local --spec best.yaml` accepts it as it is and,
on the same probe, returns the same verdict), optionally the whole search as JSON and the front as SVG,
and prints the sensitivity map and the front.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from carrygate.app.cli.console import console, fail, stdout_console
from carrygate.app.cli.evaluate import build_probe_folder
from carrygate.models.numbers import fixed


def print_sensitivity(rec: object) -> None:  # rec: models.recommend.Recommendation
    cells = rec.sensitivity.cells  # type: ignore[attr-defined]
    widths = sorted({c.bits for c in cells if c.axis != "step" and c.bits is not None})
    table = Table(title=f"sensitivity on {rec.sensitivity.puzzles} puzzles: fidelity / predicted drop hi, "  # type: ignore[attr-defined]
                  "that part alone compressed")
    table.add_column("part")
    for bits in widths:
        table.add_column(f"int{bits}", justify="right")
    rows: dict[str, dict[int | None, object]] = {}
    for c in cells:
        if c.axis != "step":
            rows.setdefault(c.row, {})[c.bits] = c.damage
    for row, by_bits in rows.items():
        table.add_row(row, *[_cell(by_bits.get(b)) for b in widths])
    stdout_console().print(table)
    steps = Table(title=f"compress everything (int{rec.sensitivity.cells[-1].bits}) only from ACT step s on")  # type: ignore[attr-defined]
    steps.add_column("from step", justify="right")
    steps.add_column("fidelity / predicted drop hi", justify="right")
    for c in cells:
        if c.axis == "step":
            steps.add_row(c.row.removeprefix("step>="), _cell(c.damage))
    stdout_console().print(steps)


def _cell(damage: object) -> str:
    if damage is None:
        return "—"
    if damage.non_finite:  # type: ignore[attr-defined]
        return "non-finite"
    fid, hi = damage.fidelity, damage.predicted_drop_hi  # type: ignore[attr-defined]
    return f"{fid:.4f} / {hi:.3f}" if fid is not None and hi is not None else f"{fid}"


def print_front(rec: object) -> None:
    table = Table(title="evaluated points (front marked *; search probe)")
    for column in ("", "name", "stage", "bytes/fp32", "GFLOP/puzzle", "fidelity", "pred. drop hi", "budget", "tolerance"):
        table.add_column(column)
    for p in rec.points:  # type: ignore[attr-defined]
        hi = p.damage.predicted_drop_hi
        table.add_row("*" if p.on_front else "", p.name, p.stage, f"{p.cost.weight_fraction:.3f}", f"{p.cost.gflop_per_puzzle:.3f}",
                      fixed(p.damage.fidelity), fixed(hi, 3),
                      "✓" if p.within_budget else "✗", "✓" if p.within_tolerance else "✗")
    stdout_console().print(table)
    finals = Table(title="finalists on the full probe")
    for column in ("name", "bytes/fp32", "fidelity", "pred. drop hi", "measured drop", "gate", "confirmed", "why"):
        finals.add_column(column)
    for f in rec.finalists:  # type: ignore[attr-defined]
        d = f.damage
        finals.add_row(f.name, f"{f.cost.weight_fraction:.3f}", fixed(d.fidelity), fixed(d.predicted_drop_hi, 3),
                       fixed(d.puzzle_exact_drop, 3), f.verdict or "—",
                       "✓" if f.confirmed else "✗", f.reason)
    stdout_console().print(finals)


def recommend_command(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint file or zoo folder.")],
    out: Annotated[Path, typer.Option("--out", help="Write the recommended spec YAML here.")],
    max_weight_fraction: Annotated[float | None, typer.Option(help="Deployed weight bytes / the fp32 reference's.")] = None,
    max_weight_bytes: Annotated[int | None, typer.Option(help="Deployed weight bytes.")] = None,
    max_sram_bytes: Annotated[int | None, typer.Option(help="Streaming SRAM peak (footprint.sram_streaming_bytes).")] = None,
    max_gflop_per_puzzle: Annotated[float | None, typer.Option(help="GFLOPs of a full evaluation.")] = None,
    max_step_ms: Annotated[float | None, typer.Option(help="Step latency: the reference's measured CPU step time scaled by "
                                                      "the FLOP ratio (an estimate).")] = None,
    max_predicted_drop: Annotated[float | None, typer.Option(help="Upper end of the predicted puzzle-exact drop's 90% interval.")] = None,
    min_fidelity: Annotated[float | None, typer.Option(help="Fidelity floor instead of the predicted drop.")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder (default: the checkpoint's data/), split test.")] = None,
    builder: Annotated[str | None, typer.Option(help="Probe puzzles from a builder: sudoku, maze, arc (as `gate --builder`).")] = None,
    probe_size: Annotated[int, typer.Option(help="Builder probe size (as `gate --probe-size`).")] = 64,
    limit: Annotated[int | None, typer.Option(help="First N probe puzzles (the full probe the finalists are confirmed on).")] = None,
    search_puzzles: Annotated[int, typer.Option(help="Probe puzzles each search evaluation runs on.")] = 128,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the whole search (map, points, front, finalists) here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the front as SVG here.")] = None,
    policy: Annotated[Path | None, typer.Option(help="Gate policy YAML the finalists are judged by (default: the default policy).")] = None,
    require_go: Annotated[bool, typer.Option("--require-go", help="Confirm a finalist only when the gate policy says go.")] = False,
    onnxruntime: Annotated[bool, typer.Option(help="Also try ONNX Runtime dynamic INT8 (when onnxruntime is installed).")] = True,
) -> None:
    """Find the cheapest spec within the budget whose label-free damage stays within the tolerance."""
    from pydantic import ValidationError

    from carrygate.gate import GatePolicy, judge
    from carrygate.models.checkpoint import CheckpointError, load_checkpoint
    from carrygate.models.compress import CompressionSpec
    from carrygate.models.evaluate import Probe
    from carrygate.models.recommend import Budget, Tolerance, recommend
    from carrygate.models.recommend.plot import front_svg
    from carrygate.models.tasks.dataset import read_split, shipped_data

    if max_predicted_drop is None and min_fidelity is None:
        max_predicted_drop = 0.02
    try:
        budget = Budget(max_weight_fraction=max_weight_fraction, max_weight_bytes=max_weight_bytes, max_sram_bytes=max_sram_bytes,
                        max_gflop_per_puzzle=max_gflop_per_puzzle, max_step_ms=max_step_ms)
        tolerance = Tolerance(max_predicted_drop=max_predicted_drop, min_fidelity=min_fidelity)
    except ValidationError as err:
        fail("; ".join(e["msg"] for e in err.errors()))
    try:
        gate_policy = GatePolicy.from_yaml(policy.read_text()) if policy else GatePolicy()
    except (OSError, ValueError) as err:
        fail(str(err))
    if data is not None and builder is not None:
        fail("give at most one of --data, --builder")
    try:
        ckpt = load_checkpoint(checkpoint)
        folder = data or (build_probe_folder(builder, ckpt.config.seq_len, probe_size, 1234) if builder else shipped_data(checkpoint))
        probe = Probe.from_split(read_split(folder, "test"), limit)
    except (CheckpointError, ValueError, OSError) as err:
        fail(str(err))
    with console.status("searching") as status:
        rec = recommend(ckpt.model, probe, budget, tolerance, search_puzzles=search_puzzles, checkpoint=str(checkpoint),
                        on_progress=lambda stage, n: status.update(f"{stage}: {n} evaluations"),
                        verdict_of=lambda result: judge(result, gate_policy).decision, require_go=require_go,
                        with_ort=None if onnxruntime else False)
    print_sensitivity(rec)
    print_front(rec)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(rec.model_dump_json(indent=1) + "\n")
    if plot is not None:
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot.write_text(front_svg(rec))
    console.print(f"{rec.evaluations} evaluations in {rec.seconds:.1f} s; reference steps computed {rec.reference_steps_computed}, "
                  f"replayed {rec.reference_steps_replayed}")
    if rec.chosen is None:
        console.print("[yellow]no configuration within the budget met the tolerance; nothing written to --out[/]")
        raise typer.Exit(1)
    spec = CompressionSpec.model_validate(rec.chosen.spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(spec.to_yaml())
    print(json.dumps({"chosen": rec.chosen.name, "weight_fraction": rec.chosen.cost.weight_fraction, "verdict": rec.verdict,
                      "out": str(out)}))


commands = typer.Typer()
commands.command("recommend")(recommend_command)
