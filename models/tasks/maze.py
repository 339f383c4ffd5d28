"""Maze: a generator of mazes with a unique shortest path, and the official dataset layout.

Charset `"# SGo"` (TRM_FACTS §5.3): '#' wall -> 1, ' ' open -> 2, 'S' start -> 3, 'G' goal -> 4,
'o' path -> 5; PAD 0, vocab 6, seq_len = size * size (900 for the official 30x30).

Mazes are carved by a randomised depth-first search on the odd lattice (a perfect maze: one path
between any two cells); `loops` knocks out extra walls to make shortcuts. The label is the maze with
the shortest S->G path marked 'o'. With loops a maze is kept only if its shortest path is unique,
so every label is the one right answer.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np

from carrygate.models.tasks.dataset import DatasetMetadata, one_puzzle_per_example, write_identifiers

CHARSET = "# SGo"
VOCAB_SIZE = len(CHARSET) + 1
WALL, OPEN, START, GOAL, PATH = (CHARSET.index(c) + 1 for c in CHARSET)


def carve(size: int, rng: np.random.RandomState, loops: float = 0.0) -> np.ndarray:
    """[size, size] grid of WALL/OPEN; open cells sit on odd coordinates of the lattice."""
    if not 5 <= size <= 30:
        raise ValueError(f"maze size must be in 5..30, got {size}")
    grid = np.full((size, size), WALL, np.uint8)
    cells = (size - 1) // 2  # lattice cells per side; a 30-wide grid keeps its last column as wall
    stack = [(rng.randint(cells), rng.randint(cells))]
    grid[2 * stack[0][0] + 1, 2 * stack[0][1] + 1] = OPEN
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0))
                if 0 <= r + dr < cells and 0 <= c + dc < cells and grid[2 * (r + dr) + 1, 2 * (c + dc) + 1] == WALL]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[rng.randint(len(nbrs))]
        grid[r + nr + 1, c + nc + 1] = OPEN  # the wall between the two cells
        grid[2 * nr + 1, 2 * nc + 1] = OPEN
        stack.append((nr, nc))
    if loops > 0:
        inner = [(r, c) for r in range(1, 2 * cells) for c in range(1, 2 * cells)
                 if grid[r, c] == WALL and (r % 2) != (c % 2)]
        for i in rng.permutation(len(inner))[: int(loops * len(inner))]:
            grid[inner[i]] = OPEN
    return grid


def shortest_paths(grid: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> tuple[list[tuple[int, int]], int]:
    """BFS from start -> (one shortest path incl. both ends, number of distinct shortest paths)."""
    h, w = grid.shape
    dist = np.full((h, w), -1, np.int64)
    ways = np.zeros((h, w), np.int64)
    dist[start], ways[start] = 0, 1
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < h and 0 <= nc < w and grid[nr, nc] != WALL:
                if dist[nr, nc] < 0:
                    dist[nr, nc] = dist[r, c] + 1
                    queue.append((nr, nc))
                if dist[nr, nc] == dist[r, c] + 1:
                    ways[nr, nc] = min(ways[nr, nc] + ways[r, c], 2)  # 2 means "more than one"
    if dist[goal] < 0:
        return [], 0
    path = [goal]
    while path[-1] != start:
        r, c = path[-1]
        path.append(next((nr, nc) for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1))
                         if 0 <= nr < h and 0 <= nc < w and dist[nr, nc] == dist[r, c] - 1))
    return path[::-1], int(ways[goal])


def generate(size: int, rng: np.random.RandomState, loops: float = 0.0, min_path: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """-> (maze with S and G, the same maze with the unique shortest path marked)."""
    while True:
        grid = carve(size, rng, loops)
        open_cells = np.argwhere(grid == OPEN)
        s, g = (tuple(int(v) for v in open_cells[i]) for i in rng.choice(len(open_cells), 2, replace=False))
        path, ways = shortest_paths(grid, s, g)
        if ways != 1 or len(path) - 1 < min_path:
            continue
        puzzle = grid.copy()
        puzzle[s], puzzle[g] = START, GOAL
        solved = puzzle.copy()
        for cell in path[1:-1]:
            solved[cell] = PATH
        return puzzle, solved


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 symmetries of the square (k = 0..7: k % 4 quarter turns, then a flip if k >= 4);
    the official maze builder's augmentation. Mazes stay mazes and shortest paths stay shortest."""
    grid = np.rot90(grid, k % 4)
    return np.ascontiguousarray(grid.T if k >= 4 else grid)


def augment_example(inputs: np.ndarray, labels: np.ndarray, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """A random dihedral image of one flattened (inputs, labels) example, for on-the-fly training
    augmentation; ignored label positions move with their cells."""
    size = round(len(inputs) ** 0.5)
    k = int(rng.randint(8))
    return (dihedral(np.asarray(inputs).reshape(size, size), k).reshape(-1),
            dihedral(np.asarray(labels).reshape(size, size), k).reshape(-1))


def render(grid: np.ndarray) -> str:
    return "\n".join("".join(CHARSET[v - 1] if v else "." for v in row) for row in np.asarray(grid))


def build_maze(
    out_dir: str | Path,
    *,
    size: int = 11,
    train_mazes: int = 5000,
    test_mazes: int = 1000,
    loops: float = 0.0,
    min_path: int = 0,
    seed: int = 0,
) -> dict[str, DatasetMetadata]:
    """Write train/ and test/ (disjoint, checked) in the official layout."""
    rng = np.random.RandomState(seed)
    seen: set[bytes] = set()
    splits: dict[str, DatasetMetadata] = {}
    for split, count in (("train", train_mazes), ("test", test_mazes)):
        pairs: list[tuple[np.ndarray, np.ndarray]] = []
        while len(pairs) < count:
            puzzle, solved = generate(size, rng, loops, min_path)
            if puzzle.tobytes() not in seen:
                seen.add(puzzle.tobytes())
                pairs.append((puzzle, solved))
        inputs = np.stack([p.reshape(-1) for p, _ in pairs]) if pairs else np.zeros((0, size * size), np.uint8)
        labels = np.stack([s.reshape(-1) for _, s in pairs]) if pairs else np.zeros((0, size * size), np.uint8)
        splits[split] = one_puzzle_per_example(inputs, labels, split, out_dir, VOCAB_SIZE)
    write_identifiers(out_dir, [])
    return splits
