"""`carrygate predict` (answers for puzzles) and `carrygate export` (the single-step ONNX artifact)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from carrygate.app.cli.console import console, fail

commands = typer.Typer()


@commands.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="Zoo folder, official step_N / HRM checkpoint file, or its folder.")],
    out: Annotated[Path, typer.Option(help="Output .npz")],
    data: Annotated[Path | None, typer.Option(help="Official dataset folder.")] = None,
    split: str = "test",
    inputs: Annotated[Path | None, typer.Option(help="[N, seq_len] integer .npy of token ids.")] = None,
    puzzle_ids: Annotated[Path | None, typer.Option(help="[N] integer .npy of puzzle identifiers (default 0).")] = None,
    steps: Annotated[int | None, typer.Option(help="ACT steps (default: the checkpoint's halt_max_steps).")] = None,
    batch_size: int = 64,
    device: Annotated[str, typer.Option(help="cpu or cuda[:N]")] = "cpu",
    limit: Annotated[int | None, typer.Option(help="Only the first N examples.")] = None,
    save_carry: Annotated[bool, typer.Option(help="Also store z_H and z_L after every step.")] = False,
) -> None:
    """Run a checkpoint on a dataset split or an .npy of inputs; write predictions to OUT.npz."""
    import numpy as np
    import torch

    from carrygate.models.checkpoint import CheckpointError, load_checkpoint
    from carrygate.models.metrics import task_accuracy
    from carrygate.models.predict import predict_arrays
    from carrygate.models.tasks.dataset import read_split

    if (data is None) == (inputs is None):
        fail("give exactly one of --data DIR or --inputs X.npy")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {device}: CUDA is not available on this machine")
    labels = None
    try:
        if data is not None:
            split_data = read_split(data, split)
            x, ids, labels = split_data.inputs, split_data.puzzle_identifiers, split_data.labels
            dataset_json: Path | None = data / split / "dataset.json"
        else:
            assert inputs is not None
            x = np.load(inputs, allow_pickle=False)
            ids = np.load(puzzle_ids, allow_pickle=False) if puzzle_ids else np.zeros(len(x), np.int32)
            dataset_json = None
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
                fail(f"{inputs}: expected a 2-D integer array [N, seq_len], got {x.dtype} {x.shape}")
        if limit is not None:
            x, ids = x[:limit], ids[:limit]
            labels = labels[:limit] if labels is not None else None
        ckpt = load_checkpoint(checkpoint, dataset_json=dataset_json, seq_len=int(x.shape[1]))
    except (CheckpointError, ValueError, OSError) as err:
        fail(str(err))
        return
    console.print(f"{ckpt.source_format} {ckpt.config.arch.upper()} from {ckpt.path} "
                  f"({ckpt.config.forward_dtype}, {steps or ckpt.config.halt_max_steps} steps, {len(x)} examples)")
    from rich.progress import Progress

    with Progress(console=console) as progress:
        task = progress.add_task("predict", total=len(x))
        try:
            result = predict_arrays(ckpt.model, np.asarray(x), np.asarray(ids), steps=steps, batch_size=batch_size,
                                    device=device, save_carry=save_carry, on_batch=lambda k: progress.advance(task, k))
        except ValueError as err:
            fail(str(err))
            return
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **result)
    summary: dict[str, Any] = {"examples": len(x), "out": str(out)}
    if labels is not None:
        summary |= task_accuracy(torch.from_numpy(result["preds"]), torch.from_numpy(np.asarray(labels, dtype=np.int64)))
    print(json.dumps(summary))


# -- export ----------------------------------------------------------------------------------------
@commands.command("export")
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Zoo folder, official step_N / HRM checkpoint file, or its folder.")],
    out: Annotated[Path, typer.Option(help="Output .onnx (one ACT step; the host runs the loop).")],
    spec: Annotated[Path | None, typer.Option(help="Apply this compression spec first (its onnxruntime part quantises the file).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Fixed batch (NPUs, AI Hub); default: dynamic batch axis.")] = None,
    flash_row: Annotated[bool, typer.Option(help="Puzzle-embedding row as a graph input instead of the table.")] = False,
    exporter: Annotated[str, typer.Option(help="torchscript (opset 17) or dynamo (opset 18).")] = "torchscript",
    check_puzzles: Annotated[int, typer.Option(help="Shipped/built probe puzzles to check the file against PyTorch on.")] = 4,
) -> None:
    """Export one ACT step as ONNX and report its max abs difference from PyTorch."""
    import torch

    from carrygate.models.checkpoint import CheckpointError, load_checkpoint
    from carrygate.models.compress import CompressionSpec, apply
    from carrygate.models.compress.spec import OnnxRuntimeSpec
    from carrygate.models.evaluate import Probe
    from carrygate.models.tasks.dataset import read_split, shipped_data

    try:
        ckpt = load_checkpoint(checkpoint)
        compression = CompressionSpec.from_yaml(spec.read_text()) if spec is not None else CompressionSpec()
        data = shipped_data(checkpoint)
        if (data / "test" / "dataset.json").is_file():
            probe = Probe.from_split(read_split(data, "test"), max(check_puzzles, 1), labels=False)
            inputs, ids = torch.from_numpy(probe.inputs), torch.from_numpy(probe.puzzle_identifiers)
        else:  # no shipped puzzles: random tokens still exercise every op
            inputs = torch.randint(0, ckpt.config.vocab_size, (max(check_puzzles, 1), ckpt.config.seq_len), dtype=torch.int32)
            ids = torch.zeros(inputs.shape[0], dtype=torch.int32)
        ort_spec = compression.onnxruntime or OnnxRuntimeSpec(quantization="none", profile_repeats=0)
        ort_spec = ort_spec.model_copy(update={k: v for k, v in {"batch_size": batch_size, "flash_row": flash_row or None,
                                                                  "exporter": exporter}.items() if v is not None})
        ort_spec = OnnxRuntimeSpec.model_validate(ort_spec.model_dump())
        # the PyTorch side of the spec here; its onnxruntime part is the file this command writes (ort_spec)
        torch_side = apply(compression.model_copy(update={"onnxruntime": None}), ckpt.model,
                           calibration=((inputs, ids) for _ in range(1)))
        from carrygate.models.compress.ort import build_ort_candidate

        built = build_ort_candidate(ort_spec, torch_side, out.parent, out.stem, [(inputs, ids)])
    except (CheckpointError, ValueError, OSError) as err:
        fail(str(err))
        return
    assert built.artifact is not None
    path = out.parent / built.artifact.filename
    if path != out:
        path.replace(out)
    float_file = out.parent / f"{path.stem}.fp32.onnx"
    if ort_spec.quantization == "none" and float_file.exists():
        float_file.unlink()
    report = built.artifact.model_dump(mode="json") | {"path": str(out), "bytes": out.stat().st_size}
    console.print("max |ONNX fp32 - PyTorch| over one step: " + ", ".join(f"{k} {v:.2e}" for k, v in report["export_max_abs_diff"].items()))
    print(json.dumps(report))
