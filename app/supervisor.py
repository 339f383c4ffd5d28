"""`carrygate serve --api-workers N`: N uvicorn worker processes on one port, one set of background work.

uvicorn's supervisor (this process) binds the port and starts N worker processes; each imports
`app.main:api_process_app`, an app that starts no job workers, no dispatchers and no migrations. This
process migrates the database once, then runs what must exist once per deployment (`app.main.Background`):
the embedded worker processes, the Celery dispatcher and the webhook dispatcher. Jobs are therefore claimed
by one set of workers and sent or announced by one dispatcher each, never N (the claims and deliveries are
conditional updates anyway, so a second copy would only poll for nothing).

The API processes learn whether an embedded worker is alive, for `/readyz`, from a status file this
process rewrites every second: `<data_dir>/run/serve-<supervisor pid>.json`, found through the worker's
parent pid. A missing or stale file (the supervisor hangs or is gone) makes `/readyz` answer 503.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from carrygate.app.settings import Settings

log = logging.getLogger(__name__)
STATUS_SECONDS = 1.0
STATUS_MAX_AGE_SECONDS = 10.0
"""An API process reads an older status file as a supervisor that hangs or is gone."""


def status_path(data_dir: Path, supervisor_pid: int) -> Path:
    return Path(data_dir) / "run" / f"serve-{supervisor_pid}.json"


class StatusWriter(threading.Thread):
    """Rewrites the supervisor's status file every second: whether it runs embedded workers, how many are alive."""

    def __init__(self, path: Path, executor: Any) -> None:  # executor: workers.local.LocalExecutor | None
        super().__init__(daemon=True, name="carrygate-status")
        self.path, self.executor = path, executor
        self._stop_event = threading.Event()

    def write(self) -> None:
        body = {"pid": os.getpid(), "at": time.time(), "embedded": self.executor is not None,
                "workers": self.executor.alive() if self.executor is not None else 0}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(body))
        partial.replace(self.path)  # atomic: a reader never sees half a file

    def run(self) -> None:
        while not self._stop_event.wait(STATUS_SECONDS):
            try:
                self.write()
            except OSError:
                log.exception("cannot write the supervisor status %s", self.path)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5.0)
        self.path.unlink(missing_ok=True)


def read_status(path: Path, now: float | None = None) -> dict[str, Any] | None:
    """The supervisor's status, or None when the file is missing, unreadable or stale."""
    try:
        body: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (time.time() if now is None else now) - float(body.get("at", 0.0)) > STATUS_MAX_AGE_SECONDS:
        return None
    return body


def serve_processes(settings: Settings, *, host: str, port: int, api_workers: int, workers: bool) -> None:
    """Run until uvicorn's supervisor stops (SIGINT / SIGTERM): migrations once, the background work once,
    `api_workers` API processes. `workers`: start the embedded worker processes (dispatchers always run)."""
    import uvicorn

    from carrygate.app.db import make_engine, session_factory, upgrade_to_head
    from carrygate.app.main import Background

    upgrade_to_head(settings.database_url)  # once, before any API process starts (they do not migrate)
    engine = make_engine(settings.database_url)
    background = Background.start(settings, session_factory(engine), workers=workers, dispatchers=True)
    status = StatusWriter(status_path(settings.data_dir, os.getpid()), background.executor)
    status.write()  # before the first API process asks
    status.start()
    try:
        uvicorn.run("carrygate.app.main:api_process_app", factory=True, host=host, port=port, workers=api_workers, log_level="info")
    finally:
        status.stop()
        background.stop()
        engine.dispose()
