"""Builders write the official layout; the reader reads it back with the official conventions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carrygate.models.tasks import maze, sudoku
from carrygate.models.tasks.dataset import IGNORE_LABEL_ID, read_split

SOLVED = np.array([int(c) for c in (
    "534678912672195348198342567859761423426853791713924856961537284287419635345286179"
)], dtype=np.uint8).reshape(9, 9)


def test_sudoku_solver_finds_the_unique_solution_and_detects_ambiguity() -> None:
    puzzle = SOLVED.copy()
    puzzle.reshape(-1)[[0, 10, 20, 30, 40, 50, 60, 70, 80]] = 0  # one blank per row, column and box
    count, solution = sudoku.count_solutions(puzzle)
    assert count == 1 and np.array_equal(solution, SOLVED)
    assert sudoku.count_solutions(np.zeros((9, 9), np.uint8))[0] == 2  # the empty grid has many
    bad = SOLVED.copy()
    bad[0, 0] = bad[0, 1]
    assert sudoku.count_solutions(bad)[0] == 0


def test_generated_sudoku_has_exact_givens_and_unique_solution() -> None:
    rng = np.random.RandomState(3)
    puzzle, solution = sudoku.generate(30, rng)
    assert int((puzzle > 0).sum()) == 30
    count, found = sudoku.count_solutions(puzzle)
    assert count == 1 and np.array_equal(found, solution)
    assert np.all((puzzle == 0) | (puzzle == solution))


def test_shuffle_preserves_validity() -> None:
    rng = np.random.RandomState(0)
    puzzle, solution = sudoku.generate(35, rng)
    p, s = sudoku.shuffle_sudoku(puzzle, solution, rng)
    count, found = sudoku.count_solutions(p)
    assert count == 1 and np.array_equal(found, s)
    for unit in [s[i] for i in range(9)] + [s[:, j] for j in range(9)]:
        assert sorted(unit.tolist()) == list(range(1, 10))


def test_sudoku_build_layout_and_reader(tmp_path: Path) -> None:
    meta = sudoku.build_sudoku(tmp_path, givens=45, train_puzzles=6, num_aug=2, test_puzzles=4, seed=1)
    assert meta["train"].total_puzzles == 18 and meta["test"].total_puzzles == 4
    for split in ("train", "test"):
        files = sorted(p.name for p in (tmp_path / split).iterdir())
        assert files == ["all__group_indices.npy", "all__inputs.npy", "all__labels.npy", "all__puzzle_identifiers.npy",
                         "all__puzzle_indices.npy", "dataset.json"]
        assert np.load(tmp_path / split / "all__inputs.npy").dtype == np.uint8
        assert np.load(tmp_path / split / "all__puzzle_indices.npy").dtype == np.int32
    assert json.loads((tmp_path / "identifiers.json").read_text()) == ["<blank>"]
    test = read_split(tmp_path, "test")
    assert test.metadata.vocab_size == 11 and test.metadata.seq_len == 81
    assert int((test.inputs == 1).sum(1)[0]) == 81 - 45  # blank token 1
    assert test.labels.min() >= 2 and test.labels.max() <= 10  # digits d -> d + 1, nothing ignored
    assert np.all((test.inputs == 1) | (test.inputs == test.labels))


def test_sudoku_csv(tmp_path: Path) -> None:
    q = "".join("." if i % 2 == 0 else str(d) for i, d in enumerate(SOLVED.reshape(-1)))
    a = "".join(str(d) for d in SOLVED.reshape(-1))
    (tmp_path / "train.csv").write_text(f"source,question,answer,rating\nx,{q},{a},5\nx,{q},{a},1\n")
    puzzles, solutions = sudoku.read_csv(tmp_path / "train.csv", min_rating=2)
    assert puzzles.shape == (1, 9, 9) and np.array_equal(solutions[0], SOLVED)
    (tmp_path / "bad.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="header"):
        sudoku.read_csv(tmp_path / "bad.csv")


def test_maze_has_unique_shortest_path_label() -> None:
    rng = np.random.RandomState(0)
    for loops in (0.0, 0.2):
        puzzle, solved = maze.generate(13, rng, loops=loops)
        start = tuple(np.argwhere(puzzle == maze.START)[0])
        goal = tuple(np.argwhere(puzzle == maze.GOAL)[0])
        path, ways = maze.shortest_paths(puzzle, start, goal)
        assert ways == 1
        marked = {tuple(c) for c in np.argwhere(solved == maze.PATH)}
        assert marked == set(path[1:-1])
        assert np.array_equal(puzzle[solved != maze.PATH], solved[solved != maze.PATH])


def test_maze_build_layout(tmp_path: Path) -> None:
    maze.build_maze(tmp_path, size=9, train_mazes=5, test_mazes=3, seed=2)
    test = read_split(tmp_path, "test")
    assert test.metadata.vocab_size == 6 and test.metadata.seq_len == 81 and len(test) == 3
    assert set(np.unique(test.inputs)) <= {1, 2, 3, 4} and 5 in set(np.unique(test.labels))
    train = read_split(tmp_path, "train")
    assert not {r.tobytes() for r in np.asarray(train.inputs)} & {r.tobytes() for r in np.asarray(test.inputs)}


def test_reader_maps_ignore_label_and_expands_puzzle_ids(tmp_path: Path) -> None:
    from carrygate.models.tasks.dataset import write_split

    write_split(tmp_path, "test", inputs=np.array([[1, 2, 0], [2, 2, 0], [3, 1, 0]]), labels=np.array([[1, 2, 0], [2, 0, 0], [3, 3, 3]]),
                puzzle_identifiers=np.array([4, 7]), puzzle_indices=np.array([0, 2, 3]), group_indices=np.array([0, 2]),
                vocab_size=4, num_puzzle_identifiers=8)
    split = read_split(tmp_path, "test")
    assert split.puzzle_identifiers.tolist() == [4, 4, 7]
    assert split.labels.tolist() == [[1, 2, IGNORE_LABEL_ID], [2, IGNORE_LABEL_ID, IGNORE_LABEL_ID], [3, 3, 3]]
    with pytest.raises(ValueError, match="no dataset.json"):
        read_split(tmp_path, "train")


def test_dataset_task_reads_our_builds_and_the_official_shapes(tmp_path: Path) -> None:
    from carrygate.models.tasks.dataset import write_split
    from carrygate.models.tasks.probes import dataset_task

    def official(name: str, vocab: int, seq_len: int) -> Path:  # no build.json, as the official builders write
        folder = tmp_path / name
        write_split(folder, "test", inputs=np.ones((1, seq_len), dtype=np.int64), labels=np.ones((1, seq_len), dtype=np.int64),
                    puzzle_identifiers=np.array([0]), puzzle_indices=np.array([0, 1]), group_indices=np.array([0, 1]),
                    vocab_size=vocab, num_puzzle_identifiers=1)
        return folder

    assert dataset_task(official("sudoku9", 11, 81)) == "sudoku"
    assert dataset_task(official("sudoku6", 8, 36)) == "sudoku"
    assert dataset_task(official("maze30", 6, 900)) == "maze"
    assert dataset_task(official("arc", 12, 900)) == "arc"
    assert dataset_task(official("other", 11, 80)) is None  # no shape guess past what the builders write
    assert dataset_task(tmp_path / "missing") is None
    # carrygate's own build says which builder wrote it, whatever the shape
    maze.build_maze(tmp_path / "ours", size=9, train_mazes=0, test_mazes=2, seed=0)
    (tmp_path / "ours" / "build.json").write_text(json.dumps({"command": "carrygate data maze out --size 9"}))
    assert dataset_task(tmp_path / "ours") == "maze"
    (tmp_path / "other" / "build.json").write_text(json.dumps({"command": "carrygate data arc out"}))
    assert dataset_task(tmp_path / "other") == "arc"
