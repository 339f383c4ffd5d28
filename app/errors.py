"""Application errors rendered as JSON with the right status code."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

T = TypeVar("T")


class AppError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(AppError):
    status_code, code = 404, "not_found"


class Conflict(AppError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(AppError):
    status_code, code = 413, "payload_too_large"


class Unprocessable(AppError):
    status_code, code = 422, "unprocessable"


def get_or_404(session: Session, model: type[T], key: str, what: str) -> T:
    """The row of `model` with primary key `key`, or a 404 saying which `what` was not found."""
    row = session.get(model, key)
    if row is None:
        raise NotFound(f"{what} {key} not found")
    return row


class ErrorBody(BaseModel):
    """The body of every `AppError` response."""

    detail: str
    code: str


def _document_error_bodies(app: FastAPI) -> None:
    """A 422 is either FastAPI's validation error (a list) or an `Unprocessable` (a message naming the
    field): say so in the OpenAPI spec, so clients and schemathesis accept both."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["ErrorBody"] = ErrorBody.model_json_schema()
        validation = {"$ref": "#/components/schemas/HTTPValidationError"}
        for operation in (op for path in schema.get("paths", {}).values() for op in path.values() if isinstance(op, dict)):
            content = operation.get("responses", {}).get("422", {}).get("content", {}).get("application/json")
            if content is not None and content.get("schema") == validation:
                content["schema"] = {"anyOf": [validation, {"$ref": "#/components/schemas/ErrorBody"}]}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    _document_error_bodies(app)

    @app.exception_handler(AppError)
    async def _render(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.message, "code": exc.code})
