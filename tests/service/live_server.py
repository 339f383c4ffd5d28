"""A real uvicorn server on a loopback port, in a thread, for tests where a hang must show as a timeout.

The in-process TestClient runs the app in the calling thread's event loop; a request that blocks (a FIFO
opened for reading) would block the test itself. Over a socket with a client timeout it fails instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI


@contextmanager
def live_server(app: FastAPI, timeout: float = 15.0) -> Iterator[httpx.Client]:
    """Serve `app` on 127.0.0.1 (a free port) and yield a client for it whose every request times out after `timeout` s."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(30)
