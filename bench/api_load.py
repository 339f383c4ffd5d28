"""API under load, on loopback: POST /jobs latency with 100 concurrent clients while a job runs,
and a streamed 1 GB checkpoint upload through both upload routes (throughput, server peak RSS).

    python bench/api_load.py [--clients 100] [--requests 1000] [--upload-mb 1024]

The server is a real `carrygate serve` subprocess (uvicorn + the embedded worker) on a temporary
SQLite database; a long job keeps the worker busy during the measurement. Peak RSS is the server
process's VmHWM from /proc, read before and after the upload.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_checkpoint(folder: Path) -> Path:
    from carrygate.models import TRMConfig, build_model
    from carrygate.models.checkpoint import save_checkpoint
    from carrygate.models.tasks.sudoku import build_sudoku

    config = TRMConfig(seq_len=81, vocab_size=11, num_puzzle_identifiers=1, puzzle_emb_ndim=64, puzzle_emb_len=1, H_cycles=2,
                       L_cycles=2, L_layers=2, hidden_size=64, expansion=2, num_heads=2, halt_max_steps=8, forward_dtype="float32")
    torch.manual_seed(0)
    save_checkpoint(build_model(config), folder)
    build_sudoku(folder / "data", givens=40, train_puzzles=0, num_aug=0, test_puzzles=512, seed=1)
    return folder


async def post_jobs(url: str, body: dict, clients: int, requests: int) -> list[float]:
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            queue.get_nowait()
            start = time.perf_counter()
            response = await client.post("/jobs", json=body)
            latencies.append(time.perf_counter() - start)
            response.raise_for_status()

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
    return latencies


def chunks(total: int, size: int = 1 << 20) -> Iterator[bytes]:
    block = os.urandom(size)
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield block[:n]


class Stream:
    """A file-like object over a generator, so httpx streams the multipart body."""

    def __init__(self, total: int) -> None:
        self.it, self.buffer = chunks(total), b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buffer) < n:
            try:
                self.buffer += next(self.it)
            except StopIteration:
                break
        out, self.buffer = (self.buffer, b"") if n < 0 else (self.buffer[:n], self.buffer[n:])
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--upload-mb", type=int, default=1024)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="carrygate-bench-"))
    ckpt = make_checkpoint(tmp / "tiny")
    port = free_port()
    env = os.environ | {"CARRYGATE_DATA_DIR": str(tmp / "data"), "CARRYGATE_UPLOAD_LIMIT_BYTES": str(4 << 30)}
    log = open(tmp / "server.log", "w")  # noqa: SIM115  (closed with the server)
    server = subprocess.Popen([sys.executable, "-m", "carrygate.app", "serve", "--port", str(port)], cwd=REPO, env=env,
                              stdout=log, stderr=log)
    print(f"server log: {tmp / 'server.log'}")
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        ckpt_id = httpx.post(f"{url}/checkpoints/register", json={"path": str(ckpt)}).json()["id"]
        spec = {"name": "int8", "weights": {"method": "int8-channel"}}
        busy = httpx.post(f"{url}/jobs", json={"checkpoint_id": ckpt_id, "candidates": [spec], "options": {"batch_size": 8}}).json()
        while httpx.get(f"{url}/jobs/{busy['id']}").json()["status"] != "running":
            time.sleep(0.1)
        body = {"checkpoint_id": ckpt_id, "candidates": [spec], "options": {"limit": 1}}
        start = time.perf_counter()
        latencies = asyncio.run(post_jobs(url, body, args.clients, args.requests))
        wall = time.perf_counter() - start
        running = httpx.get(f"{url}/jobs/{busy['id']}").json()["status"]
        q = statistics.quantiles(latencies, n=100)
        print(f"POST /jobs, {args.clients} concurrent clients, {args.requests} requests, a job {running} meanwhile:")
        print(f"  p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms (target < 50 ms), throughput {args.requests / wall:.0f} req/s")

        total = args.upload_mb << 20
        speeds = {}
        for route in ("multipart POST /checkpoints", "raw PUT /checkpoints/raw/{name}"):
            rss_before = vm_hwm_mb(server.pid)
            start = time.perf_counter()
            if route.startswith("multipart"):
                files = {"file": ("step_1", Stream(total), "application/octet-stream")}
                response = httpx.post(f"{url}/checkpoints", files=files, timeout=600)
            else:
                response = httpx.put(f"{url}/checkpoints/raw/step_1", content=chunks(total), timeout=600)
            wall = time.perf_counter() - start
            response.raise_for_status()
            speeds[route] = args.upload_mb / wall
            print(f"upload of {args.upload_mb} MiB, {route}: {speeds[route]:.0f} MiB/s (target >= 200 MB/s), "
                  f"server peak RSS {rss_before:.0f} MiB before, {vm_hwm_mb(server.pid):.0f} MiB after")
        raw, multipart = speeds["raw PUT /checkpoints/raw/{name}"], speeds["multipart POST /checkpoints"]
        print(f"raw / multipart throughput: {raw / multipart:.2f}x")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    main()
