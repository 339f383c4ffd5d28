from __future__ import annotations

from pathlib import Path

import pytest
import torch

from carrygate.models import TRMConfig

REPO = Path(__file__).resolve().parents[1]
ZOO = REPO / "models" / "zoo"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_trm(**overrides: object) -> TRMConfig:
    fields: dict[str, object] = {
        "seq_len": 9, "vocab_size": 5, "num_puzzle_identifiers": 3, "puzzle_emb_ndim": 16, "puzzle_emb_len": 2,
        "H_cycles": 2, "L_cycles": 2, "L_layers": 2, "hidden_size": 16, "expansion": 2, "num_heads": 2,
        "pos_encodings": "rope", "halt_max_steps": 3, "forward_dtype": "float32",
    }
    fields.update(overrides)
    return TRMConfig(**fields)  # type: ignore[arg-type]


def make_tiny_zoo_model(folder: Path, *, steps: int, puzzles: int, seed: int) -> Path:
    """A small random TRM in the zoo layout (model.safetensors + config.json + data/ with Sudoku probes)."""
    from carrygate.models import build_model
    from carrygate.models.checkpoint import save_checkpoint
    from carrygate.models.tasks.sudoku import build_sudoku

    torch.manual_seed(seed)
    model = build_model(tiny_trm(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, puzzle_emb_ndim=16, puzzle_emb_len=1,
                                 hidden_size=16, num_heads=2, halt_max_steps=steps))
    save_checkpoint(model, folder)
    build_sudoku(folder / "data", givens=40, train_puzzles=0, num_aug=0, test_puzzles=puzzles, seed=seed + 3)
    return folder
