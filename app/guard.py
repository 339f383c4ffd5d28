"""Hostile and careless input at the HTTP edge: JSON bodies, error bodies, 405s, the documented statuses.

- `JsonBodyGuard` (ASGI middleware) reads every JSON request body once, before routing, and refuses
  what no route should ever see: non-finite numbers (`NaN`, `Infinity`, and literals such as `1e400`
  that overflow to infinity; Python's `json` accepts all three, RFC 8259 none), integers outside the
  64-bit range, strings longer than `MAX_JSON_STRING`, and bodies over `MAX_JSON_BYTES`. The refusal
  is a 422 in FastAPI's own validation shape that names the location, so clients parse one format.
  PostgreSQL's JSON types reject NaN as well, so letting one through would fail later, as a 500.
- `validation_error_handler` replaces FastAPI's: it echoes the offending input as FastAPI does, but
  made JSON-safe first (non-finite floats become strings, bytes are decoded), so *every* validation
  error serialises whatever the input held (a query string of `nan` parses to a float NaN, too).
- `method_not_allowed_handler`: a 405's `Allow` lists every method of the path. Starlette names only
  the methods of the first route that matched the path, and `/jobs` (GET and POST) is two routes.
- `document_responses`: the statuses any operation can return beyond its own (400, 401, 403, 413,
  429) in the OpenAPI spec, so clients and schemathesis know them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_JSON_BYTES = 1 << 20
"""A JSON request body (a job with 64 candidate specs is about 30 KB); uploads are multipart or raw bytes."""
MAX_JSON_STRING = 8192
"""Longest JSON string (and object key) accepted anywhere; fields with a tighter `max_length` keep theirs."""
INT64 = 1 << 63
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyProblem(Exception):
    def __init__(self, loc: list[str | int], msg: str, kind: str) -> None:
        super().__init__(msg)
        self.loc, self.msg, self.kind = loc, msg, kind


def _parse_int(text: str) -> int:
    # Decimal digits beyond what a 64-bit int holds cannot be valid for any field and cost quadratic
    # time to convert; refuse them before `int()` (which also caps at 4300 digits with a ValueError).
    if len(text.lstrip("-")) > 19 or not -INT64 <= int(text) < INT64:
        raise BodyProblem([], f"integer {text[:30]}{'...' if len(text) > 30 else ''} is outside the 64-bit range", "int_out_of_range")
    return int(text)


def check_value(value: Any, loc: list[str | int]) -> None:
    """Raise BodyProblem at the first non-finite float or over-long string (keys included) in `value`."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BodyProblem(loc, f"non-finite number ({value}) is not allowed", "non_finite_number")
    elif isinstance(value, str):
        if len(value) > MAX_JSON_STRING:
            raise BodyProblem(loc, f"string of {len(value)} characters is over the limit of {MAX_JSON_STRING}", "string_too_long")
    elif isinstance(value, dict):
        for key, item in value.items():
            check_value(key, loc)
            check_value(item, [*loc, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, [*loc, i])


def _problem(body: bytes) -> BodyProblem | None:
    """What is wrong with this JSON body, or None (also for text that is not JSON at all: FastAPI answers that)."""
    try:
        value = json.loads(body, parse_int=_parse_int)
    except BodyProblem as problem:
        return BodyProblem(["body"], problem.msg, problem.kind)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError: malformed JSON is FastAPI's to report
        return None
    try:
        check_value(value, ["body"])
    except BodyProblem as problem:
        return problem
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


class JsonBodyGuard:
    """See the module docstring. A body without a content type is parsed as JSON by FastAPI, so it is
    checked too, but only while it stays under the limit: a raw upload without a content type streams on."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_JSON_BYTES) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        content_type = headers.get("content-type")
        declared_json = content_type is not None and _is_json(content_type)
        if content_type is not None and not declared_json:
            await self.app(scope, receive, send)
            return
        length = headers.get("content-length", "")
        if declared_json and length.isdigit() and int(length) > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        messages: list[Message] = []
        size, more = 0, True
        while more and size <= self.max_bytes:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away
                break
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        if size > self.max_bytes:
            if declared_json:
                await _too_large(self.max_bytes)(scope, receive, send)
                return
            await self.app(scope, _replay(messages, receive), send)  # not JSON-sized: a raw body, not ours to parse
            return
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        problem = _problem(body) if body else None
        if problem is not None:
            error = {"loc": problem.loc, "msg": problem.msg, "type": problem.kind}
            await JSONResponse(status_code=422, content={"detail": [error]})(scope, receive, send)
            return
        await self.app(scope, _replay(messages, receive), send)


def _too_large(limit: int) -> Response:
    return JSONResponse(status_code=413, content={"detail": f"JSON body over the limit of {limit} bytes", "code": "payload_too_large"})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float turned into its string (`"nan"`, `"inf"`), bytes decoded and
    anything else unknown shown by `repr`, so `json.dumps(..., allow_nan=False)` cannot fail."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(json_safe(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, BaseException):  # pydantic puts the validator's exception in ctx["error"]
        return str(value)
    try:  # what FastAPI knows how to show (enums, dates, decimals, models), then made safe in turn
        encoded = jsonable_encoder(value)
    except Exception:  # noqa: BLE001  (anything at all may sit in an error's input; it is only shown)
        return repr(value)
    return repr(value) if type(encoded) is type(value) else json_safe(encoded)


async def validation_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's validation 422, with the echoed input and context made JSON-safe first."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": json_safe(exc.errors())})


PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _documented_methods(app: FastAPI, path: str) -> list[str] | None:
    """The methods the OpenAPI spec lists for the most literal template matching `path` (fewest
    parameters): `/checkpoints/register` is POST only, although `GET /checkpoints/{checkpoint_id}` also
    matches it (and answers 404 there). None for paths outside the spec (docs, dashboard)."""
    best: tuple[int, list[str]] | None = None
    for template, operations in app.openapi().get("paths", {}).items():
        pattern = "^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            params = template.count("{")
            if best is None or params < best[0]:
                best = (params, sorted(m.upper() for m in operations))
    return None if best is None else best[1]


def _allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """From the spec when the path is in it, else every method some route fully matches (asked through
    the public `matches`, so routes inside included routers count too)."""
    documented = _documented_methods(app, scope["path"])
    if documented is not None:
        return documented
    return [method for method in PROBED_METHODS
            if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in app.router.routes)]


def method_not_allowed_handler(app: FastAPI) -> Callable[[Request, Exception], Any]:
    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 405:
            allowed = _allowed_methods(app, request.scope)
            if allowed:
                exc.headers = {**(exc.headers or {}), "Allow": ", ".join(allowed)}
        return await http_exception_handler(request, exc)

    return handle


HTTP_ERROR = {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"], "title": "HTTPError"}
_VALIDATION_OR_APP = {"anyOf": [{"$ref": "#/components/schemas/HTTPValidationError"}, {"$ref": "#/components/schemas/ErrorBody"}]}
_OPEN = frozenset({"/healthz", "/readyz"})


def _response(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def document_responses(app: FastAPI, submission_routes: frozenset[str]) -> None:
    """Add to the OpenAPI spec the statuses that the guards (not the routes) return; see the module docstring."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("schemas", {})["HTTPError"] = HTTP_ERROR
        error = {"$ref": "#/components/schemas/HTTPError"}
        for path, operations in schema.get("paths", {}).items():
            for operation in (op for op in operations.values() if isinstance(op, dict)):
                responses = operation.setdefault("responses", {})
                if path not in _OPEN:
                    responses.setdefault("401", _response("no or an invalid API key (once any key exists)", error))
                    responses.setdefault("403", _response("the API key lacks the scope this route needs", error))
                if "requestBody" in operation or any(p.get("in") == "header" for p in operation.get("parameters", [])):
                    responses.setdefault("400", _response("the body could not be parsed (e.g. malformed multipart)", error))
                body = operation.get("requestBody", {}).get("content", {})
                if "application/json" in body:
                    responses.setdefault("413", _response("JSON body over 1 MiB", {"$ref": "#/components/schemas/ErrorBody"}))
                    responses.setdefault("422", _response("validation error, or a non-finite number, a 64-bit overflow or an "
                                                          "over-long string in the body", _VALIDATION_OR_APP))
                if operation.get("operationId", "").startswith(tuple(submission_routes)):
                    responses.setdefault("429", _response("rate limit for this API key", error,
                                                          {"Retry-After": {"schema": {"type": "integer"},
                                                                           "description": "seconds until the next submission is allowed"}}))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI, submission_routes: frozenset[str]) -> None:
    """Everything above, on `app` (after `errors.install`, so the spec keeps both 422 shapes)."""
    app.add_middleware(JsonBodyGuard)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, method_not_allowed_handler(app))
    document_responses(app, submission_routes)
