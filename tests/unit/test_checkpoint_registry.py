"""Registering the same weights again: one row, read from where they were registered last."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from carrygate.app.services.checkpoints import record_checkpoint
from carrygate.store.tables import Base

META = {"format": "carrygate", "config_json": {"arch": "trm"}}


def _record(session: Session, path: str, source: str = "registered") -> object:
    return record_checkpoint(session=session, sha256="ab" * 32, size_bytes=10, meta=META, original_name="m",
                             storage_path=path, source=source)  # type: ignore[arg-type]


def test_a_moved_checkout_is_read_from_its_new_path() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        first = _record(session, "/old/clone/models/zoo/m/model.safetensors")
        again = _record(session, "/new/clone/models/zoo/m/model.safetensors")
        assert first.created and not again.created and again.checkpoint.id == first.checkpoint.id
        assert again.checkpoint.storage_path == "/new/clone/models/zoo/m/model.safetensors"


def test_an_uploaded_checkpoint_keeps_its_stored_copy() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        uploaded = _record(session, "/artifacts/ab/model.safetensors", source="upload")
        registered = _record(session, "/some/folder/model.safetensors")
        assert registered.checkpoint.id == uploaded.checkpoint.id
        assert registered.checkpoint.storage_path == "/artifacts/ab/model.safetensors"
