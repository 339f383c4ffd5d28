"""`carrygate serve --api-workers 2`: two API processes on one port, and the background work once.

The server is a real subprocess. To know which process answers, the test stops the other one for a
moment (SIGSTOP): it cannot accept, so every new connection goes to the running one (uvicorn's supervisor
pings its workers every half second and only replaces one that stays silent for 5 s; each pause here is
well under that).

- The per-key submission rate limit holds across the processes: a key limited to 4 submissions a minute
  gets 2 through each process and then a 429 from either, although neither process alone saw 4.
- The background work runs once: the supervisor has exactly one embedded worker process (worker
  concurrency 1) and the API processes have none; a job runs once (attempts 1) and its webhook event is
  delivered once; each API process's /readyz reports the supervisor's worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, make_tiny_zoo_model
from tests.service.conftest import fresh_pg_database
from tests.service.test_webhooks import Receiver

SECRET = "s" * 32


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _listening_sockets(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def _holds(pid: int, sockets: set[str]) -> bool:
    try:
        return any(os.readlink(fd) in sockets for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=3, puzzles=8, seed=0)


class Served:
    """The running `serve --api-workers 2`: its URL, the supervisor and its two API processes."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process, self.port = process, port
        self.url = f"http://127.0.0.1:{port}"
        sockets = _listening_sockets(port)
        self.api = sorted(pid for pid in _children(process.pid) if _holds(pid, sockets))
        self.admin = ""  # an admin key, created once the server is up

    def embedded_workers(self) -> list[int]:
        """Spawned processes below the supervisor that do not serve HTTP: the embedded job workers."""
        found, pending = [], _children(self.process.pid)
        while pending:
            pid = pending.pop()
            pending += _children(pid)
            if pid not in self.api and "spawn_main" in _cmdline(pid):
                found.append(pid)
        return found

    @contextmanager
    def only(self, pid: int) -> Iterator[None]:
        """While inside, the other API process is stopped, so `pid` answers every new connection."""
        others = [p for p in self.api if p != pid]
        for other in others:
            os.kill(other, signal.SIGSTOP)
        try:
            yield
        finally:
            for other in others:
                os.kill(other, signal.SIGCONT)

    def request(self, method: str, path: str, key: str | None = None, **kw: object) -> httpx.Response:
        """One request on a new connection (a kept-alive one would stay with the process that accepted it)."""
        headers = {"X-API-Key": key} if key else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=15, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database per backend for this module's server (the shared fixtures are per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'carrygate.db'}"
        return
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="module")
def served(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server per backend, shared by the tests below (starting three Python processes takes seconds)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    database_url = database
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARRYGATE_")} | {
        "CARRYGATE_DATA_DIR": str(tmp_path / "data"), "CARRYGATE_DATABASE_URL": database_url, "CARRYGATE_EXECUTOR": "local",
        "CARRYGATE_WORKER_CONCURRENCY": "1", "CARRYGATE_LEASE_SECONDS": "30", "CARRYGATE_HEARTBEAT_SECONDS": "0.5",
        "CARRYGATE_WEBHOOK_ALLOW_PRIVATE": "true", "CARRYGATE_WEBHOOK_POLL_SECONDS": "0.2", "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115  (closed below)
    process = subprocess.Popen([sys.executable, "-m", "carrygate.app", "serve", "--port", str(port), "--api-workers", "2"],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        served = Served(process, port)
        while len(served.api) < 2 and time.monotonic() < deadline:  # the second may still be starting
            time.sleep(0.2)
            served = Served(process, port)
        assert len(served.api) == 2, f"API processes {served.api} of {_children(process.pid)}"
        for pid in served.api:  # both have finished their start-up
            with served.only(pid):
                assert served.request("GET", "/healthz").status_code == 200
        served.admin = served.request("POST", "/keys", json={"name": "admin", "scopes": ["admin"]}).json()["key"]
        yield served
        workers = served.embedded_workers()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()
    assert process.returncode == 0, (tmp_path / "serve.log").read_text()
    assert not any(Path(f"/proc/{pid}").exists() and "spawn_main" in _cmdline(pid) for pid in [*served.api, *workers])


def test_rate_limit_holds_across_api_processes(served: Served) -> None:
    first, second = served.api
    admin = served.admin
    created = served.request("POST", "/keys", admin, json={"name": "ci", "scopes": ["submit"], "rate_limit_per_minute": 4})
    key = created.json()["key"]
    job = {"checkpoint_id": "none", "candidates": [{"name": "int8", "weights": {"method": "int8-channel"}}]}
    with served.only(first):
        assert [served.request("POST", "/jobs", key, json=job).status_code for _ in range(2)] == [404, 404]
    with served.only(second):  # in-process counting would let 4 through here
        assert [served.request("POST", "/jobs", key, json=job).status_code for _ in range(2)] == [404, 404]
        limited = served.request("POST", "/jobs", key, json=job)
        assert limited.status_code == 429, limited.text
        assert 1 <= int(limited.headers["retry-after"]) <= 60
    with served.only(first):
        assert served.request("POST", "/jobs", key, json=job).status_code == 429
        assert served.request("POST", "/jobs", admin, json=job).status_code == 404  # per key


def test_background_work_runs_once(served: Served, tiny_checkpoint: Path) -> None:
    workers = served.embedded_workers()
    assert len(workers) == 1, f"embedded workers {workers}: one, in the supervisor, not one per API process"
    assert set(_children(served.process.pid)) >= {*served.api, *workers}
    for pid in served.api:
        assert not [c for c in _children(pid) if "spawn_main" in _cmdline(c)], f"API process {pid} started workers"
        with served.only(pid):
            assert served.request("GET", "/readyz").json() == {"status": "ok", "workers": 1}  # open: no key needed

    receiver = Receiver(SECRET)
    receiver.start()
    try:
        hook = served.request("POST", "/webhooks", served.admin, json={"url": receiver.url, "secret": SECRET, "events": ["job.succeeded"]})
        assert hook.status_code == 201, hook.text
        checkpoint = served.request("POST", "/checkpoints/register", served.admin, json={"path": str(tiny_checkpoint)}).json()["id"]
        submitted = served.request("POST", "/jobs", served.admin, json={"checkpoint_id": checkpoint, "options": {"limit": 8},
                                                          "candidates": [{"name": "int8", "weights": {"method": "int8-channel"}}]})
        assert submitted.status_code == 202, submitted.text
        deadline = time.monotonic() + 120
        while (job := served.request("GET", f"/jobs/{submitted.json()['id']}", served.admin).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempts"] == 1
        while not receiver.events and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # time for a second dispatcher, were there one, to send it again
        assert [e["type"] for e in receiver.events.values()] == ["job.succeeded"]
        assert receiver.duplicates == 0 and receiver.bad_signatures == 0
    finally:
        receiver.stop()


def test_readyz_of_an_api_process_follows_the_supervisor_status(sqlite_url: str, tmp_path: Path) -> None:
    """In-process: an API process (`supervisor_pid` set, no workers of its own) is ready only while the
    supervisor's status file is fresh and, when it runs embedded workers, one of them is alive."""
    import json

    from fastapi.testclient import TestClient

    from carrygate.app.main import create_app
    from carrygate.app.settings import Settings
    from carrygate.app.supervisor import STATUS_MAX_AGE_SECONDS, status_path

    settings = Settings(data_dir=tmp_path / "data", database_url=sqlite_url, lease_seconds=30, heartbeat_seconds=0.5)
    path = status_path(settings.data_dir, 424242)

    def status(**body: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": 424242, "at": time.time(), **body}))

    with TestClient(create_app(settings, start_workers=False, start_dispatchers=False, supervisor_pid=424242)) as client:
        assert client.app.state.executor is None and client.app.state.webhook_dispatcher is None
        missing = client.get("/readyz")
        assert missing.status_code == 503 and "supervisor" in missing.json()["reason"]
        status(embedded=True, workers=1)
        assert client.get("/readyz").json() == {"status": "ok", "workers": 1}
        status(embedded=True, workers=0)
        assert client.get("/readyz").status_code == 503
        status(embedded=False, workers=0)  # serve --no-workers, or the Celery executor
        assert client.get("/readyz").json() == {"status": "ok", "workers": 0}
        status(embedded=True, workers=1, at=time.time() - STATUS_MAX_AGE_SECONDS - 1)
        assert client.get("/readyz").status_code == 503
