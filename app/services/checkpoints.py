"""Recording checkpoints: the architecture their config names, deduplication by weights, the row, listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from carrygate.app.errors import Conflict, get_or_404
from carrygate.app.services.pages import Page, paginate
from carrygate.store.tables import Checkpoint
from carrygate.store.vocabulary import CheckpointSource


@dataclass(frozen=True)
class Recorded:
    """The checkpoint holding these weights, and whether this request created it (else it was stored before)."""

    checkpoint: Checkpoint
    created: bool


def architecture(meta: dict[str, Any]) -> str:
    """"trm", "hrm" or "unknown", from the config stored beside the weights."""
    if "config_json" in meta:
        return str(meta["config_json"].get("arch", "trm"))
    try:
        data = yaml.safe_load(meta.get("all_config_yaml") or "") or {}
    except yaml.YAMLError:
        return "unknown"
    arch = data.get("arch") if isinstance(data, dict) else None
    if not isinstance(arch, dict):
        return "unknown"
    return "hrm" if "hrm" in str(arch.get("name", "")) else "trm"


def _existing(session: Session, sha256: str, meta: dict[str, Any]) -> Checkpoint | None:
    """The row already holding these weights; 409 if it was stored with another config, since the
    same weights under a different config are a different model and one row cannot say both."""
    row = session.execute(select(Checkpoint).where(Checkpoint.sha256 == sha256)).scalar_one_or_none()
    if row is None:
        return None
    keys = ("config_json", "all_config_yaml", "dataset_json")
    if any((row.config or {}).get(k) != meta.get(k) for k in keys):
        raise Conflict(f"checkpoint {row.id} has the same weights (sha256 {sha256[:12]}) with a different config; "
                       "these weights can be stored once, with one config")
    return row


def record_checkpoint(*, session: Session, sha256: str, size_bytes: int, meta: dict[str, Any], original_name: str,
                      storage_path: str, source: CheckpointSource) -> Recorded:
    """The row for these weights: the one stored before (same sha256 and config), else a new one. Weights
    registered again by path are read from where they were registered last (a moved or re-cloned checkout:
    the old folder may be gone, or lack what the new one ships, such as its data/)."""
    existing = _existing(session, sha256, meta)
    if existing is not None:
        if source == "registered" and existing.source == "registered" and existing.storage_path != storage_path:
            existing.storage_path = storage_path
            session.commit()
        return Recorded(existing, created=False)
    row = Checkpoint(sha256=sha256, architecture=architecture(meta), config=meta, size_bytes=size_bytes,
                     original_name=original_name, storage_path=storage_path, source=source)
    session.add(row)
    session.commit()
    return Recorded(row, created=True)


def list_checkpoints(*, session: Session, limit: int, offset: int) -> Page[Checkpoint]:
    """Newest first."""
    return paginate(session, select(Checkpoint), order_by=[Checkpoint.created_at.desc()], limit=limit, offset=offset)


def get_checkpoint(*, session: Session, checkpoint_id: str) -> Checkpoint:
    """The checkpoint, or a 404."""
    return get_or_404(session, Checkpoint, checkpoint_id, "checkpoint")
