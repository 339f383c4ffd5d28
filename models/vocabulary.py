"""Vocabularies that more than one module speaks, each defined once, the rest derived from it.

- `Decision`: the gate decides with it (`gate/policy.py`), the job store's CHECK constraint
  (`store/tables.py`) and the API schemas derive from it. It lives below both, since the gate and the
  store are independent layers (DESIGN.md).
- `Granularity`: the weight-quantisation granularities of a spec (`compress/spec.py`) and of the tensor
  functions that implement them (`compress/quant.py`).
- `Exporter`: the ONNX exporters a spec may name (`compress/spec.py`) and `models/export.py` runs.
- `HaltingMode`: a job's halting policy (`models/halting.py`) and what a result says it ran (`models/results.py`).
- `Numerics`: the engine's arithmetic (`models/fast.py`), a job's option and what a result says it ran.
"""

from __future__ import annotations

from typing import Literal, get_args

Decision = Literal["go", "no_go", "inconclusive"]

DECISIONS: tuple[Decision, ...] = get_args(Decision)

Granularity = Literal["per_tensor", "per_channel", "group"]
Exporter = Literal["torchscript", "dynamo"]
HaltingMode = Literal["fixed", "adaptive"]
Numerics = Literal["exact", "fast"]
