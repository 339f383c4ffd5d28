"""Versioned predicted-drop calibrations in the job store.

`carrygate calibrate --store` fits `models.drop_model` on labelled history (the zoo's validity sweeps
and the service's own labelled jobs) and adds a row here; nothing is ever overwritten. Workers
predict with the newest stored calibration and fall back to the one shipped with carrygate, so a
refit takes effect on the next job without a restart, and every prediction names the calibration
version it came from (`predicted_puzzle_exact_drop.calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from carrygate.models.drop_model import FEATURES, DropCalibration, default_calibration
from carrygate.store.tables import DropCalibrationRow


@dataclass(frozen=True)
class StoredCalibration:
    number: int
    created_at: datetime
    calibration: DropCalibration


def store_calibration(session: Session, calibration: DropCalibration) -> int:
    """Add `calibration` (its content hash is its identity) and return its number; storing the same
    fit twice returns the first row's number."""
    existing = session.scalar(select(DropCalibrationRow.number).where(DropCalibrationRow.version == calibration.version))
    if existing is not None:
        return existing
    row = DropCalibrationRow(version=calibration.version, body=calibration.model_dump(mode="json"), candidates=calibration.candidates)
    session.add(row)
    session.flush()
    return row.number


def stored_calibrations(session: Session) -> list[StoredCalibration]:
    """Every stored calibration that this code can use, newest first (a row fitted on other features,
    by an older or newer carrygate, is skipped rather than failing every job)."""
    out = []
    for row in session.scalars(select(DropCalibrationRow).order_by(DropCalibrationRow.number.desc())):
        try:
            calibration = DropCalibration.model_validate(row.body)
        except ValidationError:
            continue
        if calibration.features == list(FEATURES):
            out.append(StoredCalibration(row.number, row.created_at, calibration))
    return out


def active_calibration(factory: sessionmaker[Session]) -> DropCalibration | None:
    """The newest usable stored calibration, else the shipped default."""
    with factory() as session:
        stored = stored_calibrations(session)
    return stored[0].calibration if stored else default_calibration()
