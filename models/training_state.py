"""The training-state file `carrygate train --checkpoint` writes and `--resume` reads.

It holds tensors and plain values only (the numpy RNG state and the data order as tensors), so it is
read with `weights_only=True`: a state shipped beside a zoo model can be resumed without unpickling
code. States written before this format (numpy arrays inside) are refused with the command that
converts them (`scripts/convert_training_state.py`).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch


def load_training_state(path: str | Path) -> dict[str, Any]:
    """A training-state file, read with `weights_only=True`: tensors and plain values only, so a state
    shipped beside a zoo model can be resumed without unpickling code. States written before this
    format (numpy arrays inside) are refused with the way to convert them."""
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: not a plain training state (an older pickled format?); convert a file you wrote yourself with "
                         f"`python scripts/convert_training_state.py {path} NEW.pt`") from err


def numpy_rng_record(state: tuple[Any, ...]) -> dict[str, Any]:
    name, key, pos, has_gauss, cached = state
    return {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def numpy_rng_state(record: dict[str, Any]) -> tuple[Any, ...]:
    return record["name"], record["key"].numpy().astype(np.uint32), record["pos"], record["has_gauss"], record["cached_gaussian"]
