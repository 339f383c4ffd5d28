"""One page of a listing: the rows a `limit`/`offset` window selects and the count of the whole query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """The rows of one page, in order, and how many rows the unpaged query holds."""

    rows: list[T]
    count: int


def paginate(session: Session, query: Select[tuple[T]], *, order_by: Sequence[Any], limit: int, offset: int,
             options: Sequence[Any] = ()) -> Page[T]:
    """`query` counted whole, then one ordered page of it (with loader `options`, e.g. `selectinload`)."""
    count = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    rows = session.execute(query.options(*options).order_by(*order_by).limit(limit).offset(offset)).scalars().all()
    return Page(list(rows), count)
