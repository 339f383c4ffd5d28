"""The floor `bench/api_load.py` compares POST /jobs with: a bare FastAPI endpoint that inserts one row.

    BARE_DATABASE_URL=sqlite:///x.db uvicorn bare_insert:create --factory --app-dir bench [--workers N]

`POST /items` takes any JSON object, stores it in one row (a JSON column) and answers 201 with the row's
id: the same kind of database (`store/sessions.make_engine`: SQLite in WAL mode with the same pragmas and
pool) and the same sync-route threadpool as carrygate's routes, and nothing else (no key check, no rate
limit, no validation beyond "a JSON object"). The table is created by `create_table` before the server
starts, so several worker processes never race to create it.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI, status
from sqlalchemy import JSON, Column, Engine, Integer, MetaData, Table, insert

from carrygate.store.sessions import make_engine

metadata = MetaData()
items = Table("items", metadata, Column("id", Integer, primary_key=True), Column("body", JSON, nullable=False))


def create_table(url: str) -> None:
    engine = make_engine(url)
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()


def create() -> FastAPI:
    """The app factory uvicorn calls in each worker process; the database comes from BARE_DATABASE_URL."""
    engine: Engine = make_engine(os.environ["BARE_DATABASE_URL"])
    app = FastAPI()

    @app.post("/items", status_code=status.HTTP_201_CREATED)
    def create_item(body: dict[str, Any]) -> dict[str, int]:
        with engine.begin() as connection:
            row_id = connection.execute(insert(items).values(body=body)).inserted_primary_key[0]
        return {"id": int(row_id)}

    return app
