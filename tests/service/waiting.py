"""Polling a job through the API until it reaches a status (shared by the service tests)."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

FINISHED = ("succeeded", "failed", "cancelled")


def wait_for(client: TestClient, job_id: str, statuses: tuple[str, ...] = FINISHED, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")
