"""`carrygate train`: train a TRM / HRM on a dataset folder and write its model card."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from carrygate.app.cli.console import console, fail

commands = typer.Typer()


@commands.command()
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
             "speeds up MLP mixing; pair attention with --fp32-attention), else float32 (bf16 there is ~100x slower).")] = "auto",
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

    from carrygate.models import HRMConfig, TRMConfig, build_model
    from carrygate.models.checkpoint import load_state_into, save_checkpoint
    from carrygate.models.tasks.dataset import read_split
    from carrygate.models.train import TrainConfig, evaluate
    from carrygate.models.train import train as run_training
    from carrygate.models.training_state import load_training_state

    torch.manual_seed(seed)
    if train_dtype == "auto":
        from carrygate.models.compress.half import native_bf16

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
        try:
            extra = load_training_state(resume).get("extra", {})
        except ValueError as err:
            fail(str(err))
            return
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
    scores = evaluate(model, test_split, record=True)
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
    shown = {k: v for k, v in scores.items() if k != "cells_correct"}  # the per-puzzle record is for the tests
    console.print({k: v for k, v in card.items() if k != "learning_curve"} | {"test": shown})


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
