"""Webhooks end to end: a real receiver on 127.0.0.1 that checks signatures, is down for the first attempts
and comes back; filters; the attempt log; redelivery with the same event id; retry window; SSRF; signatures."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from carrygate.app.main import create_app
from carrygate.app.settings import Settings
from carrygate.store.api_tables import Webhook
from carrygate.store.sessions import make_engine, session_factory
from carrygate.workers.webhooks import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    DeliveryConfig,
    UnsafeURL,
    check_url,
    claim_due,
    deliver_due,
    enqueue_job_events,
    sign,
    verify_signature,
)
from tests.conftest import make_tiny_zoo_model

SECRET = "whsec_test_0123456789abcdef"
INT8 = {"name": "int8", "weights": {"method": "int8-channel"}}
NAIVE = {"name": "int4-naive", "weights": {"method": "int4", "granularity": "per_tensor", "symmetric": True}}
STRICT = {"min_fidelity_mean": 0.9, "min_fidelity_p05": None, "min_answer_agreement": None, "max_puzzle_exact_drop": None}


class Receiver:
    """An HTTP receiver on 127.0.0.1 that verifies each signature and processes each event id once."""

    def __init__(self, secret: str, status: int = 200) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.secret, self.status = secret, status
        self.events: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify_signature(receiver.secret, body, self.headers.get(SIGNATURE_HEADER, ""))
                with receiver.lock:
                    if not ok:
                        receiver.bad_signatures += 1
                    elif self.headers[EVENT_ID_HEADER] in receiver.events:
                        receiver.duplicates += 1  # idempotency: acknowledged, not processed again
                    elif receiver.status == 200:
                        receiver.events[self.headers[EVENT_ID_HEADER]] = json.loads(body)
                self.send_response(receiver.status if ok else 401)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(SECRET)
    yield r
    r.stop()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=3, puzzles=16, seed=0)


def settings_for(database_url: str, tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, lease_seconds=30, heartbeat_seconds=0.5,
                    webhook_allow_private=True, webhook_backoff_seconds=0.3, webhook_backoff_max_seconds=1.0,
                    webhook_retry_window_seconds=120, webhook_poll_seconds=0.1, **kw)


def wait_until(predicate: Any, timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_no_go_reaches_a_receiver_that_was_down_with_valid_signatures(sqlite_url: str, tmp_path: Path, tiny_checkpoint: Path,
                                                                      receiver: Receiver) -> None:
    with TestClient(create_app(settings_for(sqlite_url, tmp_path))) as client:
        events = ["verdict.no_go", "job.succeeded", "job.failed", "fidelity.below_threshold"]
        hook = client.post("/webhooks", json={"url": receiver.url, "secret": SECRET, "events": events, "fidelity_threshold": 0.999,
                                              "tag": "release"})
        assert hook.status_code == 201 and hook.json()["secret"] == SECRET
        other = client.post("/webhooks", json={"url": receiver.url, "events": ["verdict.no_go", "job.failed"], "tag": "nightly"}).json()
        assert other["secret"].startswith("whsec_")
        hook_id = hook.json()["id"]
        ckpt = client.post("/checkpoints/register", json={"path": str(tiny_checkpoint)}).json()["id"]
        corrupt = client.post("/checkpoints", files={"file": ("step_5", b"\x80\x04not a zip at all"),
                                                     "config": ("all_config.yaml", b"arch: {hidden_size: 16}\n")}).json()["id"]
        probe = {"dataset_path": str(tiny_checkpoint / "data")}
        no_go = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8, NAIVE], "policy": STRICT,
                                           "tags": ["release"]}).json()
        failed = client.post("/jobs", json={"checkpoint_id": corrupt, "candidates": [INT8], "probe": probe, "tags": ["release"]}).json()

        def deliveries(hid: str = hook_id) -> list[dict[str, Any]]:
            return client.get(f"/webhooks/{hid}/deliveries").json()["data"]

        # the receiver is down: every event is attempted, refused, logged and rescheduled
        wait_until(lambda: len(deliveries()) == 4 and all(d["attempts"] >= 2 for d in deliveries()), what="failed attempts")
        assert receiver.events == {}
        first = deliveries()[0]
        assert first["status"] == "pending" and first["attempt_log"][0]["status_code"] is None
        assert "Connect" in first["attempt_log"][0]["error"]
        receiver.start()
        wait_until(lambda: all(d["status"] == "delivered" for d in deliveries()), what="deliveries after the receiver came back")
        assert receiver.bad_signatures == 0 and receiver.duplicates == 0
        by_type = {e["type"]: e for e in receiver.events.values()}
        assert set(by_type) == set(events)
        assert by_type["verdict.no_go"]["job"]["id"] == no_go["id"] and by_type["verdict.no_go"]["verdict"]["decision"] == "no_go"
        assert by_type["job.failed"]["job"]["id"] == failed["id"]
        assert "not a readable torch checkpoint" in by_type["job.failed"]["job"]["error"]
        assert "int4-naive" in by_type["fidelity.below_threshold"]["below"] and by_type["fidelity.below_threshold"]["threshold"] == 0.999
        assert client.get(f"/jobs/{no_go['id']}").json()["verdict"]["decision"] == "no_go"
        for d in deliveries():
            log = d["attempt_log"]
            assert [a["number"] for a in log] == list(range(1, len(log) + 1)) and log[-1]["status_code"] == 200
            assert all(a["status_code"] is None for a in log[:-1])
        assert deliveries(other["id"]) == []  # tag filter: "nightly" matches no job

        # manual redelivery: same event id, the receiver drops the duplicate
        target = next(d for d in deliveries() if d["event"] == "verdict.no_go")
        again = client.post(f"/webhooks/{hook_id}/deliveries/{target['id']}/redeliver")
        assert again.status_code == 202 and again.json()["status"] == "pending"
        wait_until(lambda: receiver.duplicates == 1, what="redelivery")
        assert len(receiver.events) == 4
        redelivered = next(d for d in deliveries() if d["id"] == target["id"])
        assert redelivered["status"] == "delivered" and redelivered["event_id"] == target["event_id"]
        assert client.get(f"/webhooks/{hook_id}/deliveries", params={"status": "failed"}).json()["count"] == 0
        assert client.delete(f"/webhooks/{hook_id}").status_code == 204
        assert client.get(f"/webhooks/{hook_id}/deliveries").status_code == 404


def test_delivery_gives_up_after_the_window_and_logs_every_attempt(database_url: str, tmp_path: Path) -> None:
    receiver = Receiver(SECRET, status=500)
    receiver.start()
    engine = make_engine(database_url)
    try:
        from carrygate.app.db import upgrade_to_head

        upgrade_to_head(database_url)
        factory = session_factory(engine)
        with factory() as session:
            session.add(Webhook(url=receiver.url, secret=SECRET, events=["job.failed"], active=True))
            session.add(Webhook(url=receiver.url, secret=SECRET, events=["job.failed"], active=False))
            assert enqueue_job_events(session, job_id="j1", checkpoint_id="c1", tags=[], status="failed", error="boom") == 1
            assert enqueue_job_events(session, job_id="j1", checkpoint_id="c1", tags=[], status="succeeded") == 0
            session.commit()
            enqueue_job_events(session, job_id="j1", checkpoint_id="c1", tags=[], status="failed", error="boom")
            with pytest.raises(Exception, match="(?i)unique|duplicate"):  # one event per job and subscription
                session.commit()
            session.rollback()
        config = DeliveryConfig(allow_private=True, window_seconds=1.5, backoff_seconds=0.2, backoff_max_seconds=0.4)
        with factory() as session:
            assert len(claim_due(session, config)) == 1
            assert claim_due(session, config) == []  # claimed: a second dispatcher gets nothing
        with factory() as session:
            from sqlalchemy import update

            from carrygate.store.api_tables import WebhookDelivery

            session.execute(update(WebhookDelivery).values(next_attempt_at=WebhookDelivery.created_at))
            session.commit()
        deadline = time.monotonic() + 10
        with httpx.Client() as http:
            while time.monotonic() < deadline:
                deliver_due(factory, config, http)
                with factory() as session:
                    row = session.query(WebhookDelivery).one()
                    if row.status != "pending":
                        break
                time.sleep(0.05)
        with factory() as session:
            row = session.query(WebhookDelivery).one()
            assert row.status == "failed" and row.last_status_code == 500 and "HTTP 500" in (row.last_error or "")
            assert row.attempts >= 3 and [a.number for a in row.attempt_log] == list(range(1, row.attempts + 1))
            gaps = [(b.at - a.at).total_seconds() for a, b in zip(row.attempt_log, row.attempt_log[1:], strict=False)]
            assert gaps[0] >= 0.15 and all(g >= 0.35 for g in gaps[1:])  # 0.2 s, then capped at 0.4 s
    finally:
        receiver.stop()
        engine.dispose()


def test_backoff_doubles_and_is_capped() -> None:
    config = DeliveryConfig(backoff_seconds=10, backoff_max_seconds=60)
    assert [config.delay(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


@pytest.mark.parametrize("url", [
    "ftp://example.com/x", "file:///etc/passwd", "gopher://127.0.0.1/", "javascript:alert(1)", "http://", "http://127.0.0.1:8000/",
    "http://localhost/", "http://[::1]/", "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://192.168.1.10/",
    "http://172.16.0.1/", "http://0.0.0.0/", "http://[::ffff:127.0.0.1]/", "http://[fe80::1]/", "http://100.64.0.1/",
    "http://2130706433/", "http://0x7f000001/",
])
def test_ssrf_refused(url: str) -> None:
    with pytest.raises(UnsafeURL):
        check_url(url)


def test_ssrf_checks_every_resolved_address() -> None:
    check_url("https://93.184.216.34/hook")  # a public literal needs no DNS
    check_url("https://hooks.example/x", resolve=lambda host, port: ["93.184.216.34"])
    with pytest.raises(UnsafeURL, match="non-public"):
        check_url("https://rebind.example/x", resolve=lambda host, port: ["93.184.216.34", "10.1.2.3"])
    check_url("http://127.0.0.1:9/", allow_private=True)
    with pytest.raises(UnsafeURL, match="scheme"):
        check_url("file:///etc/passwd", allow_private=True)


def test_api_refuses_private_urls_and_needs_admin(sqlite_url: str, tmp_path: Path) -> None:
    settings = settings_for(sqlite_url, tmp_path).model_copy(update={"webhook_allow_private": False})
    with TestClient(create_app(settings, start_workers=False)) as client:
        response = client.post("/webhooks", json={"url": "http://127.0.0.1:9/x", "events": ["job.failed"]})
        assert response.status_code == 422 and "url" in response.json()["detail"] and "non-public" in response.json()["detail"]
        response = client.post("/webhooks", json={"url": "https://93.184.216.34/x", "events": ["fidelity.below_threshold"]})
        assert response.status_code == 422 and "fidelity_threshold" in response.text
        admin = client.post("/keys", json={"name": "a", "scopes": ["admin"]}).json()["key"]
        submitter = client.post("/keys", json={"name": "s", "scopes": ["submit"]}, headers={"X-API-Key": admin}).json()["key"]
        body = {"url": "https://93.184.216.34/x", "events": ["job.failed"]}
        assert client.post("/webhooks", json=body, headers={"X-API-Key": submitter}).status_code == 403
        assert client.get("/webhooks", headers={"X-API-Key": submitter}).status_code == 403
        assert client.post("/webhooks", json=body, headers={"X-API-Key": admin}).status_code == 201


def test_signature_format_and_verification() -> None:
    body = b'{"id":"evt_1"}'
    header = sign(SECRET, body, 1_700_000_000)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify_signature(SECRET, body, header, now=1_700_000_100)
    assert not verify_signature(SECRET, body + b" ", header, now=1_700_000_100)  # tampered body
    assert not verify_signature("whsec_other_secret_value", body, header, now=1_700_000_100)
    assert not verify_signature(SECRET, body, header, now=1_700_000_000 + 301)  # replayed later
    assert not verify_signature(SECRET, body, "v1=" + header.split("v1=")[1]) and not verify_signature(SECRET, body, "garbage")


def test_a_job_that_kills_its_workers_sends_job_failed(database_url: str) -> None:
    from datetime import timedelta

    from carrygate.app.db import upgrade_to_head
    from carrygate.store.api_tables import WebhookDelivery
    from carrygate.store.tables import Checkpoint, Job, ProbeSet
    from carrygate.workers.queue import MAX_ATTEMPTS, claim_next_job, now

    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as session:
            session.add(Webhook(url="https://93.184.216.34/x", secret=SECRET, events=["job.failed"], active=True))
            checkpoint = Checkpoint(sha256="ab" * 32, architecture="trm", config={}, size_bytes=1, storage_path="/x", source="upload")
            job = Job(checkpoint=checkpoint,
                      probe_set=ProbeSet(builder="sudoku", builder_args={}, content_hash="0" * 64, puzzles=1), tags=["nightly"],
                      status="running", attempts=MAX_ATTEMPTS, lease_owner="dead", lease_expires_at=now() - timedelta(seconds=1))
            session.add(job)
            session.commit()
            assert claim_next_job(session, "w", 30) is None
            session.refresh(job)
            delivery = session.query(WebhookDelivery).one()
            assert job.status == "failed" and delivery.event == "job.failed" and delivery.job_id == job.id
            assert delivery.payload["job"]["error"] == f"its worker died {MAX_ATTEMPTS} times while running it"
    finally:
        engine.dispose()


def test_dispatchers_run_without_embedded_workers(sqlite_url: str, tmp_path: Path) -> None:
    """`carrygate serve --no-workers` (workers elsewhere) still delivers webhooks from the API process."""
    with TestClient(create_app(settings_for(sqlite_url, tmp_path), start_workers=False, start_dispatchers=True)) as client:
        assert client.app.state.executor is None and client.app.state.webhook_dispatcher.is_alive()
    with TestClient(create_app(settings_for(sqlite_url, tmp_path), start_workers=False)) as client:
        assert client.app.state.webhook_dispatcher is None
