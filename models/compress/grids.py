"""Named candidate grids: `carrygate sweep --grid NAME` evaluates one as a single job."""

from __future__ import annotations

from typing import Any

from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.config import HRMConfig, TRMConfig

# The paper's sweep (README "Reproducing the paper"); each entry equals examples/specs/<name>.yaml.
PAPER: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32"},
    "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"},
    "int8-bnb": {"weights": {"method": "int8-bnb", "threshold": 6.0}, "exclude": ["lm_head", "q_head"]},
    "int8-channel": {"weights": {"method": "int8-channel"}},
    "int8-dynamic": {"weights": {"method": "int8-dynamic"}},
    "int4-naive": {"weights": {"method": "int4", "granularity": "per_tensor", "symmetric": True}},
    "int4-calibrated": {"weights": {"method": "int4", "granularity": "per_channel", "symmetric": False}},
    "nf4": {"weights": {"method": "nf4", "blocksize": 64}, "exclude": ["lm_head", "q_head"]},
    "prune-25": {"prune": {"sparsity": 0.25, "structure": "intermediate"}},
    "prune-50": {"prune": {"sparsity": 0.5, "structure": "intermediate"}},
    "depth-h1": {"depth": {"H_cycles": 1}},
    "carry-int8": {"carry": {"bits": 8}},
}

# Precision axis of the depth x precision grid.
PRECISIONS: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "int8": {"weights": {"method": "int8-channel"}},
    "int4-cal": {"weights": {"method": "int4", "granularity": "per_channel", "symmetric": False}},
    "int4-naive": {"weights": {"method": "int4", "granularity": "per_tensor", "symmetric": True}},
}


def paper_grid() -> list[CompressionSpec]:
    return [CompressionSpec.model_validate({"name": name, **body}) for name, body in PAPER.items()]


def precision_depth_grid(config: TRMConfig | HRMConfig) -> list[CompressionSpec]:
    """Every precision at every H_cycles from 1 to the checkpoint's (the paper's depth x precision grid).
    The fp32 cell at full depth is the reference itself and is included as a check (fidelity 1)."""
    specs = []
    for h in range(1, config.H_cycles + 1):
        depth = {"depth": {"H_cycles": h}} if h != config.H_cycles else {}
        for pname, body in PRECISIONS.items():
            specs.append(CompressionSpec.model_validate({"name": f"{pname}/H{h}", **body, **depth}))
    return specs


GRIDS = {"paper": lambda config: paper_grid(), "precision-depth": precision_depth_grid}
