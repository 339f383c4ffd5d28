"""Schemathesis over every route of the OpenAPI spec: no 5xx, responses match their schemas and content types.

Bounded for CI: a few generated requests per operation (CARRYGATE_FUZZ_EXAMPLES, default 10), SQLite, no workers.
The app runs with a settings key holding every scope, sent with each request, so creating keys does not
lock the fuzzer out; registration is confined to an empty folder and uploads to 1 MB.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from carrygate.app.main import create_app
from carrygate.app.settings import Settings

ADMIN = "fuzz-admin-key"
_root = Path(tempfile.mkdtemp(prefix="carrygate-fuzz-"))
(_root / "allowed").mkdir()
app = create_app(Settings(data_dir=_root / "data", api_keys=[ADMIN], register_roots=[_root / "allowed"], upload_limit_bytes=1_000_000,
                          webhook_allow_private=True, submit_rate_limit_per_minute=100_000, lease_seconds=30, heartbeat_seconds=1),
                 start_workers=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"X-API-Key": ADMIN})  # the docs need a key once keys exist


@pytest.fixture(scope="module", autouse=True)
def _lifespan() -> Iterator[None]:
    with TestClient(app):  # runs the lifespan once: migrations, engine, store on app.state
        yield


@schema.parametrize()
@settings(max_examples=int(os.environ.get("CARRYGATE_FUZZ_EXAMPLES", "10")), deadline=None, suppress_health_check=list(HealthCheck))
def test_every_route_conforms(case: schemathesis.Case) -> None:
    response = case.call(headers={"X-API-Key": ADMIN})
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
