"""The service's own labelled history, for `carrygate calibrate`: every stored job result that was
evaluated with labels (and so can teach the predicted-drop model what a changed answer costs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from carrygate.models.results import EvaluationResult
from carrygate.store.sessions import make_engine, session_factory
from carrygate.store.tables import Result


def labelled_results(settings: Any) -> Iterator[tuple[str, EvaluationResult]]:
    """(job id, result) for every stored result with labels, oldest first; unreadable bodies are skipped."""
    factory = session_factory(make_engine(settings.database_url))
    with factory() as session:
        for job_id, body in session.execute(select(Result.job_id, Result.body).order_by(Result.created_at)):
            if not isinstance(body, dict) or not body.get("labels"):
                continue
            try:
                yield job_id, EvaluationResult.model_validate(body)
            except ValidationError:
                continue
