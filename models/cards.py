"""A zoo model's card (`models/zoo/NAME/card.json`, written by `carrygate train`) and whether the model reasons.

"Reasons" is issue 11's bar, kept here once for the demo and the docs: puzzle-exact at least 0.6 on the
held-out split the folder ships *and* on a fresh probe (the card's data command with another seed). A card
without a probe score does not qualify: one split alone cannot tell a model that reasons from one that
memorised the builder's quirks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REASONING_PUZZLE_EXACT = 0.6


def read_card(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / "card.json"
    return json.loads(path.read_text()) if path.is_file() else None


def reasons(card: dict[str, Any] | None) -> bool:
    if not card or "probe" not in card:
        return False
    return min(card["test"]["puzzle_exact"], card["probe"]["puzzle_exact"]) >= REASONING_PUZZLE_EXACT
