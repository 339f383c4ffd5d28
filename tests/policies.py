"""Gate policies the tests share.

The default policy's label-free rule is the predicted drop (`max_predicted_exact_drop`); the fidelity
floors are off by default (docs/validity.md). Tests *about* the fidelity rules opt into them here.
"""

from __future__ import annotations

from carrygate.gate import GatePolicy

# The former default's label-free rules: fidelity floors on, the predicted drop off.
FIDELITY_FLOORS = GatePolicy(min_fidelity_mean=0.99, min_fidelity_p05=0.95, max_predicted_exact_drop=None)
# The same as a JSON policy body (the API, the CLI, stored jobs).
FIDELITY_FLOORS_JSON = FIDELITY_FLOORS.model_dump(mode="json")
