"""Numbers read back from stored results, and how every table writes them.

A stored result or rule may hold None, a bool, a string or a non-finite float where a number was
expected (old rows, hand-written JSON); `finite` turns each into a float or None, and `fixed` writes
None as "—". The gate, the reports, the dashboard and the CLI tables all use these two.
"""

from __future__ import annotations

import math

DASH = "—"
"""What a table shows for a value that is missing or could not be measured."""


def finite(value: object) -> float | None:
    """A finite float, or None for anything missing, non-numeric (bools included) or NaN/Inf."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def fixed(value: float | None, digits: int = 4) -> str:
    """`value` with `digits` decimals, or "—" for None."""
    return DASH if value is None else f"{value:.{digits}f}"
