"""Sudoku: an exact solver, a generator of unique-solution puzzles, and the official dataset layout.

Encoding (TRM_FACTS §5.2): PAD 0, blank 1, digit d -> d + 1; vocab 11, seq_len 81, one puzzle
identifier (0) for every example. Difficulty is set by the number of givens: fewer givens need longer
chains of deduction. The official Sudoku-Extreme CSV (`source,question,answer,rating`, `.` for blank)
is read by `read_csv`.

Augmentation is the official validity-preserving `shuffle_sudoku`: a digit permutation, an optional
transpose, and permutations of bands, rows within bands, stacks and columns within stacks.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from models.tasks.dataset import DatasetMetadata, one_puzzle_per_example, write_identifiers

VOCAB_SIZE = 11
_ALL = 0x3FE  # bits 1..9
_UNITS = (
    [[r * 9 + c for c in range(9)] for r in range(9)]
    + [[r * 9 + c for r in range(9)] for c in range(9)]
    + [[(br + r) * 9 + bc + c for r in range(3) for c in range(3)] for br in (0, 3, 6) for bc in (0, 3, 6)]
)
_PEERS = [sorted({p for unit in _UNITS if i in unit for p in unit} - {i}) for i in range(81)]


def count_solutions(grid: np.ndarray, limit: int = 2, rng: np.random.RandomState | None = None) -> tuple[int, np.ndarray | None]:
    """Depth-first search with most-constrained-cell first. Returns (solutions found up to
    `limit`, the first solution). `rng` randomises the digit order (used to generate grids)."""
    cells = [int(v) for v in np.asarray(grid).reshape(81)]
    for i, v in enumerate(cells):
        if v and any(cells[p] == v for p in _PEERS[i]):
            return 0, None
    found: list[list[int]] = []
    count = 0

    def search() -> None:
        nonlocal count
        best, best_mask, best_n = -1, 0, 10
        for i in range(81):
            if cells[i]:
                continue
            mask = _ALL
            for p in _PEERS[i]:
                mask &= ~(1 << cells[p])
            n = bin(mask).count("1")
            if n < best_n:
                best, best_mask, best_n = i, mask, n
                if n <= 1:
                    break
        if best < 0:
            count += 1
            if not found:
                found.append(list(cells))
            return
        digits = [d for d in range(1, 10) if best_mask >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        for d in digits:
            cells[best] = d
            search()
            if count >= limit:
                break
        cells[best] = 0

    search()
    return count, (np.array(found[0], dtype=np.uint8).reshape(9, 9) if found else None)


def generate(givens: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """A puzzle with exactly one solution and `givens` filled cells -> (puzzle, solution), 0 = blank."""
    if not 17 <= givens <= 81:
        raise ValueError(f"givens must be in 17..81, got {givens}")
    while True:
        _, solution = count_solutions(np.zeros((9, 9), np.uint8), limit=1, rng=rng)
        assert solution is not None
        puzzle = solution.copy().reshape(81)
        for cell in rng.permutation(81):
            if int((puzzle > 0).sum()) == givens:
                break
            kept = puzzle[cell]
            puzzle[cell] = 0
            if count_solutions(puzzle)[0] != 1:
                puzzle[cell] = kept
        if int((puzzle > 0).sum()) == givens:
            return puzzle.reshape(9, 9), solution


def shuffle_sudoku(puzzle: np.ndarray, solution: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random validity-preserving symmetry to a (puzzle, solution) pair."""
    digit_map = np.concatenate([[0], rng.permutation(9) + 1])
    transpose = rng.rand() < 0.5
    bands = rng.permutation(3)
    rows = np.concatenate([b * 3 + rng.permutation(3) for b in bands])
    stacks = rng.permutation(3)
    cols = np.concatenate([s * 3 + rng.permutation(3) for s in stacks])

    def apply(grid: np.ndarray) -> np.ndarray:
        grid = grid.T if transpose else grid
        return digit_map[grid[rows][:, cols]]

    return apply(puzzle), apply(solution)


def encode(grids: np.ndarray) -> np.ndarray:
    """[N, 9, 9] digits with 0 = blank -> [N, 81] tokens (blank 1, digit d -> d + 1)."""
    return (np.asarray(grids).reshape(len(grids), 81) + 1).astype(np.uint8)


def read_csv(path: str | Path, min_rating: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sudoku-Extreme CSV (`source,question,answer,rating`) -> (puzzles, solutions) [N, 9, 9]."""
    puzzles, solutions = [], []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["source", "question", "answer"]:
            raise ValueError(f"{path}: expected header source,question,answer,rating; got {header}")
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 4:
                raise ValueError(f"{path}:{line_no}: expected 4 columns, got {len(row)}")
            _, q, a, rating = row[:4]
            if min_rating is not None and int(rating) < min_rating:
                continue
            if len(q) != 81 or len(a) != 81 or not a.isdigit():
                raise ValueError(f"{path}:{line_no}: question and answer must be 81 characters")
            puzzles.append([0 if ch == "." else int(ch) for ch in q])
            solutions.append([int(ch) for ch in a])
    return np.array(puzzles, np.uint8).reshape(-1, 9, 9), np.array(solutions, np.uint8).reshape(-1, 9, 9)


def build_sudoku(
    out_dir: str | Path,
    *,
    givens: int = 40,
    train_puzzles: int = 1000,
    num_aug: int = 9,
    test_puzzles: int = 1000,
    seed: int = 0,
    csv_train: str | Path | None = None,
    csv_test: str | Path | None = None,
) -> dict[str, DatasetMetadata]:
    """Write train/ and test/ in the official layout.

    Puzzles come from our generator (`givens` filled cells, unique solution) unless CSV files are
    given. The training split holds `train_puzzles` puzzles plus `num_aug` shuffled copies of each;
    the test split is neither augmented nor overlapping with training (checked).
    """
    rng = np.random.RandomState(seed)
    if csv_train is not None:
        train_p, train_s = read_csv(csv_train)
    else:
        pairs = [generate(givens, rng) for _ in range(train_puzzles)]
        train_p = np.stack([p for p, _ in pairs]) if pairs else np.zeros((0, 9, 9), np.uint8)
        train_s = np.stack([s for _, s in pairs]) if pairs else np.zeros((0, 9, 9), np.uint8)
    if csv_test is not None:
        test_p, test_s = read_csv(csv_test)
    else:
        seen = {p.tobytes() for p in train_p}
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        while len(pairs) < test_puzzles:
            p, s = generate(givens, rng)
            if p.tobytes() not in seen:
                seen.add(p.tobytes())
                pairs.append((p, s))
        test_p, test_s = np.stack([p for p, _ in pairs]), np.stack([s for _, s in pairs])

    aug_p, aug_s = [train_p], [train_s]
    for _ in range(num_aug):
        shuffled = [shuffle_sudoku(p, s, rng) for p, s in zip(train_p, train_s, strict=True)]
        if shuffled:
            aug_p.append(np.stack([p for p, _ in shuffled]))
            aug_s.append(np.stack([s for _, s in shuffled]))
    all_p, all_s = np.concatenate(aug_p), np.concatenate(aug_s)
    order = rng.permutation(len(all_p))
    write_identifiers(out_dir, [])
    return {
        "train": one_puzzle_per_example(encode(all_p[order]), encode(all_s[order]), "train", out_dir, VOCAB_SIZE),
        "test": one_puzzle_per_example(encode(test_p), encode(test_s), "test", out_dir, VOCAB_SIZE),
    }
