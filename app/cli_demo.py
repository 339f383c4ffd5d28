"""`carrygate demo`: the main job on the shipped zoo models, in-process.

For every zoo model: reproduce its card (predict on the shipped held-out split), then run the
demo sweep against the reference on the first probe puzzles and print the gate-relevant table.
(The service path — SQLite, the embedded worker, the API — replaces the in-process run once the
service lands; the computation is the same `models.evaluate.evaluate`.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)
ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
DEMO_SPECS = ["bf16", "fp16", "int8-channel", "int8-dynamic", "int4-naive", "int4-calibrated", "prune-50", "depth-h1", "carry-int8"]


def zoo_models() -> list[Path]:
    return sorted(p for p in ZOO.iterdir() if (p / "model.safetensors").is_file())


def demo_command(
    probe: Annotated[int, typer.Option(help="Probe puzzles per model for the sweep.")] = 64,
    json_dir: Annotated[Path | None, typer.Option(help="Write each model's result JSON here.")] = None,
) -> None:
    """Run the demo sweep on every shipped zoo model and print the tables."""
    import numpy as np
    import torch

    from app.cli_evaluate import print_table
    from models.checkpoint import load_checkpoint
    from models.compress import CompressionSpec
    from models.compress.grids import PAPER
    from models.evaluate import Probe, evaluate
    from models.metrics import task_accuracy
    from models.predict import predict_arrays
    from models.tasks.dataset import read_split

    models = zoo_models()
    if not models:
        console.print(f"[red]no zoo models under {ZOO}[/]")
        raise typer.Exit(2)
    specs = [CompressionSpec.model_validate({"name": name, **PAPER[name]}) for name in DEMO_SPECS]
    for folder in models:
        card = json.loads((folder / "card.json").read_text())
        ckpt = load_checkpoint(folder)
        split = read_split(folder / "data", "test")
        out = predict_arrays(ckpt.model, np.asarray(split.inputs, dtype=np.int32), split.puzzle_identifiers, batch_size=256)
        scores = task_accuracy(torch.from_numpy(out["preds"]), torch.from_numpy(split.labels.astype(np.int64)))
        same = abs(scores["puzzle_exact"] - card["test"]["puzzle_exact"]) < 1e-6
        console.rule(f"{folder.name}: {ckpt.config.arch.upper()}{' mlp_t' if getattr(ckpt.config, 'mlp_t', False) else ''}")
        console.print(f"card reproduced: cell accuracy {scores['cell_accuracy']:.4f}, puzzle-exact {scores['puzzle_exact']:.4f} "
                      f"on {scores['count']} held-out puzzles ({'matches' if same else 'DIFFERS FROM'} card.md)")
        result = evaluate(ckpt.model, specs, Probe.from_split(split, probe))
        print_table(result)
        if json_dir is not None:
            json_dir.mkdir(parents=True, exist_ok=True)
            (json_dir / f"{folder.name}.json").write_text(result.model_dump_json(indent=1))
