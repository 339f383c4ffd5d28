"""Held-out probe sets from the offline builders: the puzzles a job (or `carrygate evaluate --builder`) runs on.

One place for the builders' defaults, so the service's workers and the CLI build the same puzzles for
the same arguments: Sudoku with 30 givens, mazes as wide as the checkpoint's grid with 10 % loops,
ARC-AGI-1 tasks. Only the test split is written (no training puzzles, no augmentation).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

Builder = Literal["sudoku", "maze", "arc"]
BUILDERS: tuple[Builder, ...] = get_args(Builder)


def build_probe(folder: Path, builder: str, *, seq_len: int, size: int, seed: int, args: Mapping[str, Any] | None = None) -> None:
    """Write `size` test puzzles of `builder` into `folder` (an official dataset folder, split `test`).

    Args:
        folder: where the dataset is written.
        builder: sudoku, maze or arc.
        seq_len: the checkpoint's sequence length; a maze's side defaults to its square root.
        size: how many puzzles (ARC: tasks).
        seed: the builder's seed.
        args: builder options: `givens` (sudoku), `size_side` and `loops` (maze), `version` (arc).

    Raises:
        ValueError: for an unknown builder.
    """
    args = args or {}
    if builder == "sudoku":
        from carrygate.models.tasks.sudoku import build_sudoku

        build_sudoku(folder, givens=int(args.get("givens", 30)), train_puzzles=0, num_aug=0, test_puzzles=size, seed=seed)
    elif builder == "maze":
        from carrygate.models.tasks.maze import build_maze

        build_maze(folder, size=int(args.get("size_side", math.isqrt(seq_len))), train_mazes=0, test_mazes=size,
                   loops=float(args.get("loops", 0.1)), seed=seed)
    elif builder == "arc":
        from carrygate.models.tasks.arc import build_arc

        build_arc(folder, version=str(args.get("version", "arc1")), num_aug=0, seed=seed, limit_tasks=size)
    else:
        raise ValueError(f"unknown builder {builder!r}")
