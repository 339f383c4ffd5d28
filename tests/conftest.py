from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models import TRMConfig

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
