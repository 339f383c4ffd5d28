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
from functools import cache
from pathlib import Path

import numpy as np

from carrygate.models.tasks.dataset import DatasetMetadata, one_puzzle_per_example, write_identifiers

VOCAB_SIZE = 11  # 9x9; a size-n grid has vocab n + 2 (PAD, blank, digits 1..n)
# Box shape (rows, cols) per supported grid side. 6x6 uses 2x3 boxes, the usual mini-Sudoku.
BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}


def vocab_size(size: int) -> int:
    return size + 2


@cache
def _geometry(size: int) -> tuple[int, list[list[int]]]:
    """(bit mask of the digits 1..size, peers of every cell) for a size x size grid."""
    if size not in BOXES:
        raise ValueError(f"Sudoku size must be one of {sorted(BOXES)}, got {size}")
    br, bc = BOXES[size]
    units = (
        [[r * size + c for c in range(size)] for r in range(size)]
        + [[r * size + c for r in range(size)] for c in range(size)]
        + [[(r0 + r) * size + c0 + c for r in range(br) for c in range(bc)]
           for r0 in range(0, size, br) for c0 in range(0, size, bc)]
    )
    peers = [sorted({p for unit in units if i in unit for p in unit} - {i}) for i in range(size * size)]
    return sum(1 << d for d in range(1, size + 1)), peers


def count_solutions(grid: np.ndarray, limit: int = 2, rng: np.random.RandomState | None = None) -> tuple[int, np.ndarray | None]:
    """Depth-first search with most-constrained-cell first. Returns (solutions found up to
    `limit`, the first solution). `rng` randomises the digit order (used to generate grids).
    The grid side (4, 6 or 9) is read from `grid`'s shape."""
    grid = np.asarray(grid)
    size = grid.shape[0] if grid.ndim == 2 else round(grid.size**0.5)
    all_digits, peers = _geometry(size)
    cells = [int(v) for v in grid.reshape(size * size)]
    for i, v in enumerate(cells):
        if v and any(cells[p] == v for p in peers[i]):
            return 0, None
    found: list[list[int]] = []
    count = 0

    def search() -> None:
        nonlocal count
        best, best_mask, best_n = -1, 0, size + 1
        for i in range(size * size):
            if cells[i]:
                continue
            mask = all_digits
            for p in peers[i]:
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
        digits = [d for d in range(1, size + 1) if best_mask >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        for d in digits:
            cells[best] = d
            search()
            if count >= limit:
                break
        cells[best] = 0

    search()
    return count, (np.array(found[0], dtype=np.uint8).reshape(size, size) if found else None)


def generate(givens: int, rng: np.random.RandomState, size: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """A puzzle with exactly one solution and `givens` filled cells -> (puzzle, solution), 0 = blank."""
    low = {4: 4, 6: 8, 9: 17}[size] if size in BOXES else 0  # fewest givens a unique puzzle can have
    if not low <= givens <= size * size:
        raise ValueError(f"givens must be in {low}..{size * size} for {size}x{size}, got {givens}")
    while True:
        _, solution = count_solutions(np.zeros((size, size), np.uint8), limit=1, rng=rng)
        assert solution is not None
        puzzle = solution.copy().reshape(size * size)
        for cell in rng.permutation(size * size):
            if int((puzzle > 0).sum()) == givens:
                break
            kept = puzzle[cell]
            puzzle[cell] = 0
            if count_solutions(puzzle.reshape(size, size))[0] != 1:
                puzzle[cell] = kept
        if int((puzzle > 0).sum()) == givens:
            return puzzle.reshape(size, size), solution


def shuffle_sudoku(puzzle: np.ndarray, solution: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random validity-preserving symmetry to a (puzzle, solution) pair: digits, bands,
    rows within bands, stacks, columns within stacks, and (square boxes only) a transpose. For 9x9
    the random draws are the official ones in the official order, so seeded builds do not move."""
    size = puzzle.shape[0]
    br, bc = BOXES[size]
    digit_map = np.concatenate([[0], rng.permutation(size) + 1])
    transpose = rng.rand() < 0.5
    transpose = transpose and br == bc  # a transpose turns 2x3 boxes into 3x2 ones
    bands = rng.permutation(size // br)
    rows = np.concatenate([b * br + rng.permutation(br) for b in bands])
    stacks = rng.permutation(size // bc)
    cols = np.concatenate([s * bc + rng.permutation(bc) for s in stacks])

    def apply(grid: np.ndarray) -> np.ndarray:
        grid = grid.T if transpose else grid
        return digit_map[grid[rows][:, cols]]

    return apply(puzzle), apply(solution)


def encode(grids: np.ndarray) -> np.ndarray:
    """[N, n, n] digits with 0 = blank -> [N, n*n] tokens (blank 1, digit d -> d + 1)."""
    grids = np.asarray(grids)
    width = int(np.prod(grids.shape[1:])) if grids.ndim > 1 else 0  # an empty split (train_puzzles=0) has no grid shape
    return (grids.reshape(len(grids), width) + 1).astype(np.uint8)


def decode(tokens: np.ndarray) -> np.ndarray:
    """The inverse of `encode` for one example: [n*n] tokens -> [n, n] digits, 0 = blank."""
    size = round(len(tokens) ** 0.5)
    return (np.asarray(tokens, dtype=np.int64) - 1).clip(min=0).reshape(size, size).astype(np.uint8)


def augment_example(inputs: np.ndarray, labels: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """A fresh random symmetry of one encoded (inputs, labels) example, for on-the-fly augmentation
    during training (labels as read: digits + 1, nothing ignored in Sudoku)."""
    puzzle, solution = shuffle_sudoku(decode(inputs), decode(labels), rng)
    return encode(puzzle[None])[0], encode(solution[None])[0]


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
    size: int = 9,
    csv_train: str | Path | None = None,
    csv_test: str | Path | None = None,
) -> dict[str, DatasetMetadata]:
    """Write train/ and test/ in the official layout.

    Puzzles come from our generator (`givens` filled cells, unique solution) unless CSV files are
    given. The training split holds `train_puzzles` puzzles plus `num_aug` shuffled copies of each;
    the test split is neither augmented nor overlapping with training (checked). `size` 6 gives
    6x6 Sudoku with 2x3 boxes (vocab 8, seq_len 36), 4 gives 4x4 with 2x2 boxes.
    """
    if size not in BOXES:
        raise ValueError(f"size must be one of {sorted(BOXES)}, got {size}")
    if size != 9 and (csv_train is not None or csv_test is not None):
        raise ValueError("CSV files hold 9x9 puzzles; use size 9 with csv_train/csv_test")
    rng = np.random.RandomState(seed)
    if csv_train is not None:
        train_p, train_s = read_csv(csv_train)
    else:
        pairs = [generate(givens, rng, size) for _ in range(train_puzzles)]
        train_p = np.stack([p for p, _ in pairs]) if pairs else np.zeros((0, size, size), np.uint8)
        train_s = np.stack([s for _, s in pairs]) if pairs else np.zeros((0, size, size), np.uint8)
    if csv_test is not None:
        test_p, test_s = read_csv(csv_test)
    else:
        seen = {p.tobytes() for p in train_p}
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        while len(pairs) < test_puzzles:
            p, s = generate(givens, rng, size)
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
        "train": one_puzzle_per_example(encode(all_p[order]), encode(all_s[order]), "train", out_dir, vocab_size(size)),
        "test": one_puzzle_per_example(encode(test_p), encode(test_s), "test", out_dir, vocab_size(size)),
    }
