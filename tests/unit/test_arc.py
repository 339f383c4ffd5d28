"""ARC builder: grid encoding, augmentation inverses and the written dataset (TRM_FACTS §5.4, §6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from carrygate.models.tasks.arc import (
    COLOUR_OFFSET,
    EOS,
    PAD,
    SEQ_LEN,
    _augment,
    build_arc,
    decode_prediction,
    dihedral,
    encode_grid,
    inverse_aug,
    inverse_dihedral,
    variant_name,
)
from carrygate.models.tasks.dataset import IGNORE_LABEL_ID, read_split

# Non-symmetric under every dihedral transform and uses several colours.
ASYM = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)


def test_eos_placement_on_small_grid() -> None:
    canvas = encode_grid(ASYM).reshape(30, 30)
    assert canvas.dtype == np.uint8 and canvas.size == SEQ_LEN
    np.testing.assert_array_equal(canvas[:2, :3], ASYM + COLOUR_OFFSET)
    assert canvas[2, :3].tolist() == [EOS] * 3  # row below, within the grid's columns
    assert canvas[:2, 3].tolist() == [EOS] * 2  # column to the right, within its rows
    assert canvas[2, 3] == PAD  # no corner cell
    assert int((canvas == EOS).sum()) == 5 and int((canvas != PAD).sum()) == 11


def test_eos_follows_offset_and_canvas_edge() -> None:
    canvas = encode_grid(ASYM, offset=(28, 27)).reshape(30, 30)
    np.testing.assert_array_equal(canvas[28:, 27:], ASYM + COLOUR_OFFSET)
    assert int((canvas == EOS).sum()) == 0  # touches both edges: no EOS at all
    canvas = encode_grid(ASYM, offset=(5, 7)).reshape(30, 30)
    assert canvas[7, 7:10].tolist() == [EOS] * 3 and canvas[5:7, 10].tolist() == [EOS] * 2


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 30), (30, 4), (30, 30)])
def test_encode_decode_round_trip(shape: tuple[int, int]) -> None:
    grid = np.random.RandomState(0).randint(0, 10, size=shape).astype(np.uint8)
    seq = encode_grid(grid)
    if shape == (30, 30):
        assert int((seq == EOS).sum()) == 0 and int((seq == PAD).sum()) == 0
    np.testing.assert_array_equal(decode_prediction(seq), grid)


def test_decode_crops_at_first_non_colour_token() -> None:
    canvas = np.zeros((30, 30), np.uint8)
    canvas[:3, :4] = 5
    canvas[1, 2] = EOS  # second row is only 2 wide: 1x4 (area 4) loses to 3x2 (area 6)
    assert decode_prediction(canvas.reshape(-1)).shape == (3, 2)


def test_encode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="0..9"):
        encode_grid([[10]])
    with pytest.raises(ValueError, match="does not fit"):
        encode_grid(ASYM, offset=(29, 0))


@pytest.mark.parametrize("tid", range(8))
def test_inverse_dihedral_undoes_each_transform(tid: int) -> None:
    moved = dihedral(ASYM, tid)
    if tid != 0:
        assert moved.shape != ASYM.shape or not np.array_equal(moved, ASYM)
    np.testing.assert_array_equal(inverse_dihedral(moved, tid), ASYM)


def test_dihedral_ids_match_official() -> None:
    g = np.arange(6).reshape(2, 3)
    np.testing.assert_array_equal(dihedral(g, 1), np.rot90(g))
    np.testing.assert_array_equal(dihedral(g, 4), g[:, ::-1])
    np.testing.assert_array_equal(dihedral(g, 5), g[::-1])
    np.testing.assert_array_equal(dihedral(g, 6), g.T)
    np.testing.assert_array_equal(dihedral(g, 7), np.rot90(g)[:, ::-1])


def test_colour_map_inverse() -> None:
    mapping = np.array([0, 3, 1, 2, 9, 8, 7, 6, 5, 4], np.uint8)
    _, undo = inverse_aug(variant_name("task", 0, mapping))
    mapped = mapping[ASYM]
    assert not np.array_equal(mapped, ASYM)
    np.testing.assert_array_equal(undo(mapped), ASYM)


@pytest.mark.parametrize("tid", range(8))
def test_variant_round_trip_through_inverse_aug(tid: int) -> None:
    mapping = np.concatenate([[0], np.random.RandomState(tid).permutation(np.arange(1, 10))]).astype(np.uint8)
    name = variant_name("abc123", tid, mapping)
    assert name == f"abc123|||t{tid}|||{''.join(map(str, mapping))}"
    task, undo = inverse_aug(name)  # forward = colour map first, then dihedral
    assert task == "abc123"
    np.testing.assert_array_equal(undo(dihedral(mapping[ASYM], tid)), ASYM)


def test_inverse_aug_plain_name_and_bad_name() -> None:
    task, undo = inverse_aug("abc123")
    assert task == "abc123" and undo(ASYM) is ASYM
    with pytest.raises(ValueError, match="not a permutation"):
        inverse_aug("abc|||t1|||0123456788")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("arc")
    return out, build_arc(out, limit_tasks=3, num_aug=4)


def test_build_metadata_and_identifiers(built: tuple[Path, dict]) -> None:
    out, summary = built
    names = json.loads((out / "identifiers.json").read_text())
    assert names[0] == "<blank>" and len(names) == len(set(names)) == summary["num_puzzle_identifiers"]
    # 6 tasks (3 per subset), each the original + 4 variants; test tasks reuse their train names.
    assert summary["augmentation_short"] == []
    assert summary["num_puzzle_identifiers"] == 1 + 6 * 5
    for split in ("train", "test"):
        data = read_split(out, split)
        meta = data.metadata
        assert (meta.vocab_size, meta.seq_len) == (12, 900)
        assert meta.num_puzzle_identifiers == summary["num_puzzle_identifiers"]
        assert meta.total_puzzles == summary[split]["puzzles"] == len(data.puzzle_indices) - 1
        assert len(data) == summary[split]["examples"]
        assert 0 < data.puzzle_identifiers.min() and data.puzzle_identifiers.max() < len(names)
        assert int(data.group_indices[-1]) == meta.total_puzzles
    assert summary["train"]["groups"] == 6 and summary["test"]["groups"] == 3
    test_names = {names[i] for i in np.unique(read_split(out, "test").puzzle_identifiers)}
    assert {n.split("|||")[0] for n in test_names} == set(json.loads((out / "test_puzzles.json").read_text()))


def test_build_translation_only_in_train(built: tuple[Path, dict]) -> None:
    out, _ = built
    test = read_split(out, "test")
    assert np.all(np.asarray(test.inputs)[:, 0] >= COLOUR_OFFSET)  # every test input sits at top-left
    assert np.all(test.labels[:, 0] >= COLOUR_OFFSET)
    train = read_split(out, "train")
    assert np.any(np.asarray(train.inputs)[:, 0] < COLOUR_OFFSET)  # some train examples were moved


def test_arc2_multi_example_test_puzzles_stay_at_top_left(tmp_path: Path) -> None:
    # arc2's 5th eval task (sorted, 142ca369) has two test pairs smaller than the canvas, so the
    # "one example per puzzle kept in place" rule alone cannot explain an all-top-left test split.
    build_arc(tmp_path, version="arc2", limit_tasks=5, num_aug=2)
    test = read_split(tmp_path, "test")
    assert np.diff(np.asarray(test.puzzle_indices)).max() >= 2
    assert np.all(np.asarray(test.inputs)[:, 0] >= COLOUR_OFFSET)


def test_augmentation_rejects_duplicates() -> None:
    # One non-zero colour in one corner: 4 distinct placements x 9 colours = 36 distinct puzzles.
    task = {"train": [{"input": [[0, 1], [0, 0]], "output": [[0, 1], [0, 0]]}], "test": []}
    group, full = _augment("one", task, {"train": "train", "test": "train"}, 50, np.random.RandomState(0))
    assert not full and len(group) == 36
    assert len({variant["train"].name for variant in group}) == 36


def test_build_label_conventions(built: tuple[Path, dict]) -> None:
    out, _ = built
    for split in ("train", "test"):
        data = read_split(out, split)
        inputs = np.asarray(data.inputs)
        assert data.labels.dtype == np.int32
        assert not np.any(data.labels == PAD)  # PAD became the ignore label
        assert np.any(data.labels == IGNORE_LABEL_ID) and np.any(data.labels == EOS)  # EOS is scored
        assert set(np.unique(data.labels)) <= {IGNORE_LABEL_ID, *range(1, 12)}
        assert inputs.max() < 12


def test_build_test_split_decodes_to_variant_of_original(built: tuple[Path, dict]) -> None:
    out, _ = built
    names = json.loads((out / "identifiers.json").read_text())
    originals = json.loads((out / "test_puzzles.json").read_text())
    test = read_split(out, "test")
    for row in range(len(test)):
        task, undo = inverse_aug(names[int(test.puzzle_identifiers[row])])
        expected = [np.asarray(ex["output"], np.uint8) for ex in originals[task]["test"]]
        decoded = undo(decode_prediction(test.labels[row]))
        assert any(np.array_equal(decoded, grid) for grid in expected)


def test_build_is_deterministic_and_validates(tmp_path: Path) -> None:
    a = build_arc(tmp_path / "a", limit_tasks=2, num_aug=2, seed=7)
    b = build_arc(tmp_path / "b", limit_tasks=2, num_aug=2, seed=7)
    assert a == b
    for split in ("train", "test"):
        first, second = read_split(tmp_path / "a", split), read_split(tmp_path / "b", split)
        np.testing.assert_array_equal(first.inputs, second.inputs)
        np.testing.assert_array_equal(first.labels, second.labels)
    with pytest.raises(ValueError, match="subsets"):
        build_arc(tmp_path / "c", subsets=("nope",))
    with pytest.raises(ValueError, match="num_aug"):
        build_arc(tmp_path / "c", num_aug=-1)
