"""The verdict vocabulary, defined once: the gate decides with it (`gate/policy.py`), the job store's
CHECK constraint (`store/tables.py`) and the API schemas derive from it. It lives below both, since
the gate and the store are independent layers (DESIGN.md)."""

from __future__ import annotations

from typing import Literal, get_args

Decision = Literal["go", "no_go", "inconclusive"]

DECISIONS: tuple[Decision, ...] = get_args(Decision)
