"""API keys: open until the first key, scopes, hashed storage, revocation, legacy keys, rate limit, CLI, serve guard."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from carrygate.app.auth import grants
from carrygate.app.cli import app as cli_app
from carrygate.app.cli.service import is_loopback
from carrygate.app.db import upgrade_to_head
from carrygate.app.main import create_app
from carrygate.app.ratelimit import DatabaseRateLimiter, RateLimiter, RedisRateLimiter
from carrygate.app.settings import Settings, get_settings
from carrygate.store.api_tables import ApiKey
from carrygate.store.sessions import make_engine, session_factory

JOB = {"checkpoint_id": "none", "candidates": [{"name": "int8", "weights": {"method": "int8-channel"}}]}


def settings_for(database_url: str, tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, lease_seconds=30, heartbeat_seconds=0.5, **kw)


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(database_url, tmp_path), start_workers=False)) as c:
        yield c


def make_key(client: TestClient, admin: str | None, *scopes: str, **extra: object) -> str:
    headers = {"X-API-Key": admin} if admin else {}
    response = client.post("/keys", json={"name": "-".join(scopes), "scopes": list(scopes), **extra}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["key"]


def test_open_until_the_first_key_then_scoped(client: TestClient) -> None:
    assert client.get("/jobs").status_code == 200 and client.post("/jobs", json=JOB).status_code == 404  # open
    admin = make_key(client, None, "admin")
    reader, submitter = make_key(client, admin, "read"), make_key(client, admin, "submit")
    assert client.get("/jobs").status_code == 401
    assert client.post("/jobs", json=JOB).status_code == 401
    assert client.get("/jobs", headers={"X-API-Key": "cg_00000000_forged"}).status_code == 401
    # the probes stay open; the API description needs a key like any read (issue 13; CARRYGATE_PUBLIC_DOCS opens it)
    assert client.get("/healthz").status_code == 200 and client.get("/openapi.json").status_code == 401
    assert client.get("/openapi.json", headers={"X-API-Key": reader}).status_code == 200

    def call(method: str, url: str, key: str, **kw: object) -> int:
        return client.request(method, url, headers={"X-API-Key": key}, **kw).status_code

    assert call("GET", "/jobs", reader) == 200
    assert call("POST", "/jobs", reader, json=JOB) == 403
    assert call("POST", "/checkpoints/register", reader, json={"path": "/nope"}) == 403
    assert call("GET", "/keys", reader) == 403
    assert call("GET", "/jobs", submitter) == 200  # submit includes read
    assert call("POST", "/jobs", submitter, json=JOB) == 404  # through the guard, to the route
    assert call("GET", "/keys", submitter) == 403 and call("POST", "/keys", submitter, json={}) == 403
    assert client.get("/jobs", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    listing = client.get("/keys", headers={"X-API-Key": admin}).json()
    assert listing["count"] == 3 and all("key" not in k for k in listing["data"])
    assert {tuple(k["scopes"]) for k in listing["data"]} == {("admin",), ("read",), ("submit",)}


def test_keys_are_stored_hashed_and_revocation_is_immediate(client: TestClient) -> None:
    admin = make_key(client, None, "admin")
    reader = make_key(client, admin, "read")
    engine = make_engine(client.app.state.settings.database_url)
    with session_factory(engine)() as session:
        rows = session.execute(select(ApiKey)).scalars().all()
        stored = " ".join(str(getattr(r, c.name)) for r in rows for c in ApiKey.__table__.columns)
    engine.dispose()
    assert reader not in stored and admin not in stored
    assert hashlib.sha256(reader.encode()).hexdigest() in stored
    prefix = reader[:11]
    revoked = client.delete(f"/keys/{prefix}", headers={"X-API-Key": admin})
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert client.get("/jobs", headers={"X-API-Key": reader}).status_code == 401
    assert client.delete("/keys/cg_missing", headers={"X-API-Key": admin}).status_code == 404


def test_settings_keys_keep_working_with_every_scope(tmp_path: Path, sqlite_url: str) -> None:
    with TestClient(create_app(settings_for(sqlite_url, tmp_path, api_keys=["s3cret"]), start_workers=False)) as client:
        assert client.get("/jobs").status_code == 401
        assert client.get("/jobs", headers={"X-API-Key": "s3cret"}).status_code == 200
        reader = make_key(client, "s3cret", "read")
        assert client.get("/jobs", headers={"X-API-Key": reader}).status_code == 200


def test_submission_rate_limit_is_per_key(client: TestClient) -> None:
    admin = make_key(client, None, "admin")
    slow, other = make_key(client, admin, "submit", rate_limit_per_minute=2), make_key(client, admin, "submit")
    assert [client.post("/jobs", json=JOB, headers={"X-API-Key": slow}).status_code for _ in range(2)] == [404, 404]
    limited = client.post("/jobs", json=JOB, headers={"X-API-Key": slow})
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    assert client.post("/jobs", json=JOB, headers={"X-API-Key": other}).status_code == 404
    assert client.get("/jobs", headers={"X-API-Key": slow}).status_code == 200  # reads are not limited


@pytest.fixture(params=["database", "redis"])
def limiter(request: pytest.FixtureRequest, database_url: str) -> Iterator[RateLimiter]:
    """Each limiter the settings can name: the database one on both backends, and Redis (127.0.0.1:6379)."""
    if request.param == "redis":
        if "postgresql" in database_url:
            pytest.skip("the Redis limiter does not depend on the database backend")
        redis_limiter = RedisRateLimiter("redis://127.0.0.1:6379/0", prefix=f"carrygate-test:{uuid.uuid4().hex}:")
        yield redis_limiter
        for key in redis_limiter.client.scan_iter(match=redis_limiter.prefix + "*"):
            redis_limiter.client.delete(key)
        return
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    yield DatabaseRateLimiter(engine)
    engine.dispose()


def test_rate_limiter_window_slides(limiter: RateLimiter) -> None:
    assert [limiter.hit("k", 2, now=t) for t in (0.0, 1.0)] == [None, None]
    assert limiter.hit("k", 2, now=30.0) == pytest.approx(30.0)
    assert limiter.hit("other", 2, now=30.0) is None  # per key
    assert limiter.hit("k", 2, now=60.5) is None  # the first event left the window
    assert limiter.hit("k", 2, now=60.75) == pytest.approx(0.25)  # 1.0 and 60.5 in the window; 1.0 leaves at 61.0
    assert limiter.hit("k", 2, now=61.0) is None


def test_rate_limiter_holds_under_concurrent_hits(limiter: RateLimiter) -> None:
    """Many threads at once (as several API processes would be) get exactly the limit between them."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: limiter.hit("burst", 5), range(24)))
    assert sum(a is None for a in answers) == 5


def test_scope_order() -> None:
    assert grants(["admin"], "read") and grants(["submit"], "read") and not grants(["read"], "submit")
    assert not grants(["submit"], "admin") and grants(["read", "admin"], "submit")


def test_cli_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARRYGATE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CARRYGATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("CARRYGATE_API_KEYS", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        created = runner.invoke(cli_app, ["keys", "create", "--name", "release-ci", "--scope", "submit"])
        assert created.exit_code == 0, created.output
        secret = created.stdout.strip().splitlines()[-1]
        assert secret.startswith("cg_") and len(secret) > 40
        bad = runner.invoke(cli_app, ["keys", "create", "--name", "x", "--scope", "root"])
        assert bad.exit_code == 2 and "unknown ['root']" in bad.output
        listed = runner.invoke(cli_app, ["keys", "list"])
        prefix = secret[:11]
        assert listed.exit_code == 0 and prefix in listed.stdout and secret not in listed.stdout
        with TestClient(create_app(get_settings(), start_workers=False)) as client:
            assert client.get("/jobs", headers={"X-API-Key": secret}).status_code == 200
            assert runner.invoke(cli_app, ["keys", "revoke", prefix]).exit_code == 0
            assert client.get("/jobs", headers={"X-API-Key": secret}).status_code == 401
            assert client.get("/jobs").status_code == 401  # revoking the last key does not reopen the API
        assert runner.invoke(cli_app, ["keys", "revoke", "cg_nothere"]).exit_code == 2
    finally:
        get_settings.cache_clear()


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARRYGATE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CARRYGATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("CARRYGATE_API_KEYS", raising=False)
    get_settings.cache_clear()
    try:
        refused = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0", "--port", "1"])
        assert refused.exit_code == 2 and "refusing to listen on 0.0.0.0" in " ".join(refused.output.split())
    finally:
        get_settings.cache_clear()
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("example.com")
