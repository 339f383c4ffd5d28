"""The official puzzle-dataset folder: reader and writer (TRM_FACTS §5.1).

    <dir>/identifiers.json                  index = puzzle identifier -> name, [0] = "<blank>"
    <dir>/{train,test}/dataset.json         PuzzleDatasetMetadata
    <dir>/{train,test}/all__inputs.npy      uint8 [examples, seq_len]
                       all__labels.npy      uint8 [examples, seq_len]
                       all__puzzle_identifiers.npy  int32 [puzzles]
                       all__puzzle_indices.npy      int32 [puzzles + 1]  example offsets
                       all__group_indices.npy       int32 [groups + 1]   puzzle offsets

Labels equal to `ignore_label_id` become -100 when read, as the official loader does.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

IGNORE_LABEL_ID = -100
FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")


class DatasetMetadata(BaseModel):
    """`dataset.json`. HRM's builder writes no `total_puzzles`, so it is optional here."""

    model_config = ConfigDict(extra="ignore")

    pad_id: int = 0
    ignore_label_id: int | None = 0
    blank_identifier_id: int = 0
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int | None = None
    sets: list[str] = ["all"]


@dataclass
class PuzzleSplit:
    """One split, flattened to examples: what inference needs."""

    metadata: DatasetMetadata
    inputs: np.ndarray  # uint8/int [N, seq_len]
    labels: np.ndarray  # int32 [N, seq_len], ignored positions = -100
    puzzle_identifiers: np.ndarray  # int32 [N], per example
    puzzle_indices: np.ndarray
    group_indices: np.ndarray

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        n = len(self) if limit is None else min(limit, len(self))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield (
                np.asarray(self.inputs[start:stop], dtype=np.int32),
                self.labels[start:stop],
                self.puzzle_identifiers[start:stop],
            )


def shipped_data(checkpoint_path: str | Path) -> Path:
    """The held-out split a zoo checkpoint ships beside its weights (`<folder>/data`), used when a job names no probe."""
    path = Path(checkpoint_path)
    return (path if path.is_dir() else path.parent) / "data"


def read_split(data_dir: str | Path, split: str = "test", set_name: str = "all") -> PuzzleSplit:
    """Read `<data_dir>/<split>` in the official layout. Raises ValueError naming what is wrong."""
    folder = Path(data_dir) / split
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise ValueError(f"{folder}: no dataset.json (is {data_dir} an official dataset folder with a {split!r} split?)")
    metadata = DatasetMetadata.model_validate_json(meta_path.read_text())
    arrays: dict[str, np.ndarray] = {}
    for field in FIELDS:
        path = folder / f"{set_name}__{field}.npy"
        if not path.is_file():
            raise ValueError(f"{folder}: missing {path.name}")
        arrays[field] = np.load(path, mmap_mode="r", allow_pickle=False)
    inputs, labels = arrays["inputs"], arrays["labels"]
    if inputs.ndim != 2 or inputs.shape != labels.shape or inputs.shape[1] != metadata.seq_len:
        raise ValueError(f"{folder}: inputs {inputs.shape} / labels {labels.shape} do not match seq_len {metadata.seq_len}")
    pidx = np.asarray(arrays["puzzle_indices"], dtype=np.int64)
    if pidx[0] != 0 or pidx[-1] != inputs.shape[0] or np.any(np.diff(pidx) < 0):
        raise ValueError(f"{folder}: puzzle_indices do not partition the {inputs.shape[0]} examples")
    per_example_ids = np.repeat(np.asarray(arrays["puzzle_identifiers"], dtype=np.int32), np.diff(pidx))
    labels32 = np.asarray(labels, dtype=np.int32)
    if metadata.ignore_label_id is not None:
        labels32 = np.where(labels32 == metadata.ignore_label_id, IGNORE_LABEL_ID, labels32).astype(np.int32)
    return PuzzleSplit(metadata, inputs, labels32, per_example_ids, arrays["puzzle_indices"], arrays["group_indices"])


def write_split(
    data_dir: str | Path,
    split: str,
    *,
    inputs: np.ndarray,
    labels: np.ndarray,
    puzzle_identifiers: np.ndarray,
    puzzle_indices: np.ndarray,
    group_indices: np.ndarray,
    vocab_size: int,
    num_puzzle_identifiers: int,
    set_name: str = "all",
) -> DatasetMetadata:
    """Write one split in the official layout (uint8 inputs/labels, int32 indices)."""
    folder = Path(data_dir) / split
    folder.mkdir(parents=True, exist_ok=True)
    if inputs.max(initial=0) >= 256 or labels.max(initial=0) >= 256:
        raise ValueError("token ids must fit in uint8")
    num_puzzles = len(puzzle_identifiers)
    metadata = DatasetMetadata(
        vocab_size=vocab_size,
        seq_len=int(inputs.shape[1]),
        num_puzzle_identifiers=num_puzzle_identifiers,
        total_groups=len(group_indices) - 1,
        mean_puzzle_examples=float(inputs.shape[0] / max(num_puzzles, 1)),
        total_puzzles=num_puzzles,
        sets=[set_name],
    )
    arrays = {
        "inputs": inputs.astype(np.uint8),
        "labels": labels.astype(np.uint8),
        "puzzle_identifiers": np.asarray(puzzle_identifiers, dtype=np.int32),
        "puzzle_indices": np.asarray(puzzle_indices, dtype=np.int32),
        "group_indices": np.asarray(group_indices, dtype=np.int32),
    }
    for field, array in arrays.items():
        np.save(folder / f"{set_name}__{field}.npy", array)
    (folder / "dataset.json").write_text(metadata.model_dump_json(indent=2) + "\n")
    return metadata


def write_identifiers(data_dir: str | Path, names: list[str]) -> None:
    """`identifiers.json`: index = puzzle identifier; 0 is the blank."""
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    (Path(data_dir) / "identifiers.json").write_text(json.dumps(["<blank>", *names]) + "\n")


def one_puzzle_per_example(inputs: np.ndarray, labels: np.ndarray, split: str, data_dir: str | Path, vocab_size: int) -> DatasetMetadata:
    """Sudoku/Maze layout: every example its own puzzle and group, all with identifier 0."""
    n = inputs.shape[0]
    return write_split(
        data_dir,
        split,
        inputs=inputs,
        labels=labels,
        puzzle_identifiers=np.zeros(n, dtype=np.int32),
        puzzle_indices=np.arange(n + 1, dtype=np.int32),
        group_indices=np.arange(n + 1, dtype=np.int32),
        vocab_size=vocab_size,
        num_puzzle_identifiers=1,
    )
