"""Held-out probe sets from the offline builders: the puzzles a job (or `carrygate evaluate --builder`) runs on.

One place for the builders' defaults, so the service's workers and the CLI build the same puzzles for
the same arguments: Sudoku with 30 givens, mazes as wide as the checkpoint's grid with 10 % loops,
ARC-AGI-1 tasks. Only the test split is written (no training puzzles, no augmentation).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

from carrygate.models.files import read_text
from carrygate.models.tasks.dataset import DatasetMetadata

Builder = Literal["sudoku", "maze", "arc"]
BUILDERS: tuple[Builder, ...] = get_args(Builder)
"""The offline builders, which are also the tasks a probe set is stored with (`dataset_task`)."""


def dataset_task(folder: Path, split: str = "test") -> Builder | None:
    """The task of a dataset folder, stored on its probe set so nothing downstream has to guess it.

    carrygate's own builds say it in `build.json` (`carrygate data maze ...`). An official build has no
    `build.json`; its `dataset.json` shape names the task as the official builders write it (TRM_FACTS
    §5): maze vocab 6, ARC vocab 12, and a size-n Sudoku vocab n + 2 with n² cells. Anything else
    (or an unreadable file) is None: an unknown task, never a guess from the model.
    """
    try:
        build = json.loads(read_text(folder / "build.json")) if (folder / "build.json").is_file() else {}
        words = str(build.get("command", "")).split()
        if len(words) >= 3 and words[:2] == ["carrygate", "data"] and words[2] in BUILDERS:
            return words[2]  # type: ignore[return-value]
        meta = DatasetMetadata.model_validate_json(read_text(folder / split / "dataset.json"))
    except (OSError, ValueError, AttributeError):
        return None
    from carrygate.models.tasks import arc, maze, sudoku

    if meta.vocab_size == maze.VOCAB_SIZE:
        return "maze"
    if meta.vocab_size == arc.VOCAB_SIZE:
        return "arc"
    side = math.isqrt(meta.seq_len)
    if side * side == meta.seq_len and meta.vocab_size == sudoku.vocab_size(side):
        return "sudoku"
    return None


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
