"""Convert a training-state file of the older pickled format into the plain one `--resume` reads.

    python scripts/convert_training_state.py OLD.pt NEW.pt

The older files held numpy arrays (the data order, the numpy RNG state), which only a full unpickle
reads. Run this only on a file you wrote yourself: it unpickles OLD.pt. NEW.pt holds tensors and
plain values only (`models.train.load_training_state` reads it with `weights_only=True`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from carrygate.models.training_state import numpy_rng_record


def convert(old: Path, new: Path) -> None:
    state = torch.load(old, weights_only=False)  # the caller vouches for this file (see the docstring)
    loop = state["loop"]
    if isinstance(loop["order"], np.ndarray):
        loop["order"] = torch.from_numpy(loop["order"])
    if isinstance(state["numpy_rng"], tuple):
        state["numpy_rng"] = numpy_rng_record(state["numpy_rng"])
    torch.save(state, new)
    torch.load(new, weights_only=True)  # proves the new file is plain


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {sys.argv[2]}")
