"""API under load, on loopback: POST /jobs at 20 concurrent clients while a job runs, beside a bare
FastAPI endpoint that inserts one row, and a streamed checkpoint upload through both upload routes.

    python bench/api_load.py [--api-workers 2] [--clients 20] [--requests 4000] [--upload-mb 1024] [--open]

carrygate is a real `carrygate serve --api-workers N` subprocess (uvicorn + the embedded worker) on a
temporary SQLite database. A long job keeps the embedded worker busy during the measurement. Unless
`--open`, the submissions carry an API key (with a rate limit it never reaches), so every request also
authenticates and passes the per-key rate limit, as a release pipeline's would.

The bare endpoint (`bench/bare_insert.py`) runs as its own uvicorn server with the same number of worker
processes, on a SQLite file of its own, and is measured in the same run, right after carrygate and while
the same job still runs; the ratio of the two throughputs is printed. Both are driven by the same client:
plain HTTP/1.1 keep-alive connections on asyncio (`--clients` of them, each sending its next request when
the last one answered), so the load generator costs little of the CPU it shares with the servers.

Beside throughput and latency, each line gives the CPU time the server's HTTP processes spent per request
(from /proc, the embedded job worker left out), which other load on a shared machine changes far less.
It also names the other processes that keep a core busy at the start and at the end of the run.

`--upload-mb 0` skips the upload measurement (peak RSS of the server's HTTP processes from /proc VmHWM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

REPO = Path(__file__).resolve().parents[1]
TARGET_RPS, TARGET_P99_MS = 500, 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def listening_processes(server_pid: int, port: int) -> list[int]:
    """The server process and its children that hold the socket listening on `port`: the processes that
    serve HTTP (the uvicorn workers under `--api-workers`, not the embedded job worker)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    children = [int(p) for p in Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()]
    found = []
    for pid in [server_pid, *children]:
        try:
            if any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir()):
                found.append(pid)
        except OSError:
            continue
    return found[1:] if len(found) > 1 else found  # the supervisor holds the socket too but serves nothing


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


def busy_processes(seconds: float = 1.0, share: float = 0.2) -> list[str]:
    """Other processes that used more than `share` of a core over `seconds` (what else loads the machine)."""
    def ticks() -> dict[int, tuple[int, str]]:
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                head, _, rest = stat.read_text().rpartition(")")
                fields = rest.split()
                found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12]), head.split("(", 1)[1])
            except (OSError, ValueError, IndexError):
                continue
        return found

    before = ticks()
    time.sleep(seconds)
    after = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (used, name) in after.items():
        if pid != os.getpid() and pid in before and (used - before[pid][0]) / hz / seconds > share:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
            busy.append(f"{(used - before[pid][0]) / hz / seconds:.0%} {command or name}")
    return busy


# -- the load generator ------------------------------------------------------------------------------
@dataclass
class Measurement:
    latencies: list[float]
    wall: float
    statuses: Counter[int]
    server_cpu: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall

    def quantile_ms(self, q: int) -> float:
        return statistics.quantiles(self.latencies, n=100)[q - 1] * 1000

    def line(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (f"{self.rps:.0f} req/s, p50 {self.quantile_ms(50):.1f} ms, p99 {self.quantile_ms(99):.1f} ms, "
                f"max {max(self.latencies) * 1000:.1f} ms ({len(self.latencies)} requests in {self.wall:.2f} s; statuses {codes}); "
                f"server CPU {self.cpu_ms:.2f} ms a request")

    @property
    def cpu_ms(self) -> float:
        return self.server_cpu / len(self.latencies) * 1000


def http_request(port: int, path: str, body: dict, headers: dict[str, str]) -> bytes:
    payload = json.dumps(body).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def _connection(port: int, request: bytes, take: list[int], latencies: list[float], statuses: Counter[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while take[0] > 0:
            take[0] -= 1
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:"))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            statuses[int(head[9:12])] += 1
    finally:
        writer.close()


async def _load(port: int, request: bytes, clients: int, requests: int) -> Measurement:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    take = [requests]
    start = time.perf_counter()
    await asyncio.gather(*(_connection(port, request, take, latencies, statuses) for _ in range(clients)))
    return Measurement(latencies, time.perf_counter() - start, statuses)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def load(port: int, path: str, body: dict, headers: dict[str, str], clients: int, requests: int, warmup: int,
         server_pid: int) -> Measurement:
    """`requests` POSTs over `clients` keep-alive connections (after `warmup` unmeasured ones), and the CPU
    time the server's HTTP processes spent on them (a cost per request that other load on the machine
    hardly changes, unlike the throughput)."""
    request = http_request(port, path, body, headers)
    if warmup:
        asyncio.run(_load(port, request, clients, warmup))
    pids = listening_processes(server_pid, port)
    before = cpu_seconds(pids)
    measured = asyncio.run(_load(port, request, clients, requests))
    measured.server_cpu = cpu_seconds(pids) - before
    return measured


# -- the servers -------------------------------------------------------------------------------------
def wait_ready(url: str, server: subprocess.Popen[bytes], path: str = "/readyz", method: str = "GET") -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}; see its log")
        try:
            if httpx.request(method, url + path, json={}).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready")


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def start_carrygate(tmp: Path, api_workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = os.environ | {"CARRYGATE_DATA_DIR": str(tmp / "data"), "CARRYGATE_UPLOAD_LIMIT_BYTES": str(4 << 30)}
    command = [sys.executable, "-m", "carrygate.app", "serve", "--port", str(port)]
    if api_workers > 1:
        command += ["--api-workers", str(api_workers)]
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, server)
    return server, url


def start_bare(tmp: Path, api_workers: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    sys.path.insert(0, str(REPO / "bench"))
    from bare_insert import create_table

    url = f"sqlite:///{tmp / 'bare.db'}"
    create_table(url)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "bare_insert:create", "--factory", "--app-dir", str(REPO / "bench"),
               "--port", str(port)]  # uvicorn's defaults, access log included, as carrygate serve runs it
    if api_workers > 1:
        command += ["--workers", str(api_workers)]
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=REPO, env=os.environ | {"BARE_DATABASE_URL": url}, stdout=out, stderr=out)
    wait_ready(f"http://127.0.0.1:{port}", server, "/items", "POST")
    return server, port


# -- uploads -----------------------------------------------------------------------------------------
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


def uploads(url: str, pids: list[int], megabytes: int, headers: dict[str, str]) -> None:
    """Both upload routes; the peak RSS is the largest of the processes serving HTTP."""
    total = megabytes << 20
    speeds = {}
    for route in ("multipart POST /checkpoints", "raw PUT /checkpoints/raw/{name}"):
        rss_before = max(vm_hwm_mb(pid) for pid in pids)
        start = time.perf_counter()
        if route.startswith("multipart"):
            files = {"file": ("step_1", Stream(total), "application/octet-stream")}
            response = httpx.post(f"{url}/checkpoints", files=files, headers=headers, timeout=600)
        else:
            response = httpx.put(f"{url}/checkpoints/raw/step_1", content=chunks(total), headers=headers, timeout=600)
        wall = time.perf_counter() - start
        response.raise_for_status()
        speeds[route] = megabytes / wall
        print(f"upload of {megabytes} MiB, {route}: {speeds[route]:.0f} MiB/s (target >= 200 MB/s), "
              f"server peak RSS {rss_before:.0f} MiB before, {max(vm_hwm_mb(pid) for pid in pids):.0f} MiB after")
    raw, multipart = speeds["raw PUT /checkpoints/raw/{name}"], speeds["multipart POST /checkpoints"]
    print(f"raw / multipart throughput: {raw / multipart:.2f}x")


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-workers", type=int, default=2, help="uvicorn worker processes, for carrygate and the bare server")
    parser.add_argument("--clients", type=int, default=20, help="concurrent keep-alive connections")
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per server")
    parser.add_argument("--warmup", type=int, default=400, help="unmeasured requests per server first")
    parser.add_argument("--upload-mb", type=int, default=1024, help="size of the upload measurement; 0 skips it")
    parser.add_argument("--open", action="store_true", help="no API key (the open single-user mode: no rate limit)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="carrygate-bench-"))
    ckpt = make_checkpoint(tmp / "tiny")
    print(f"logs: {tmp}/*.log; load average {os.getloadavg()[0]:.2f} at start, {os.cpu_count()} CPUs; other busy processes: "
          + ("; ".join(busy_processes()) or "none"))
    server, url = start_carrygate(tmp, args.api_workers, tmp / "server.log")
    bare: subprocess.Popen[bytes] | None = None
    try:
        headers: dict[str, str] = {}
        if not args.open:
            admin = httpx.post(f"{url}/keys", json={"name": "bench-admin", "scopes": ["admin"]}).json()["key"]
            submit = httpx.post(f"{url}/keys", json={"name": "bench", "scopes": ["submit"], "rate_limit_per_minute": 100_000},
                                headers={"X-API-Key": admin}).json()["key"]
            headers = {"X-API-Key": submit}
        ckpt_id = httpx.post(f"{url}/checkpoints/register", json={"path": str(ckpt)}, headers=headers).json()["id"]
        spec = {"name": "int8", "weights": {"method": "int8-channel"}}
        busy = httpx.post(f"{url}/jobs", json={"checkpoint_id": ckpt_id, "candidates": [spec], "options": {"batch_size": 8}},
                          headers=headers).json()

        def busy_status() -> str:
            return str(httpx.get(f"{url}/jobs/{busy['id']}", headers=headers).json()["status"])

        while busy_status() != "running":
            time.sleep(0.1)
        body = {"checkpoint_id": ckpt_id, "candidates": [spec], "options": {"limit": 1}}
        port = int(url.rsplit(":", 1)[1])
        ours = load(port, "/jobs", body, headers, args.clients, args.requests, args.warmup, server.pid)
        ours_busy = busy_status()
        bare, bare_port = start_bare(tmp, args.api_workers, tmp / "bare.log")
        floor = load(bare_port, "/items", body, {}, args.clients, args.requests, args.warmup, bare.pid)
        floor_busy = busy_status()
        stop(bare)
        bare = None
        key = "without a key" if args.open else "with an API key (auth + rate limit)"
        print(f"{args.clients} concurrent clients, {args.api_workers} API worker process(es), SQLite, load average "
              f"{os.getloadavg()[0]:.2f} at the end; busy processes then (the bench's own included): "
              + ("; ".join(busy_processes()) or "none"))
        print(f"  carrygate POST /jobs {key}, a job {ours_busy} meanwhile: {ours.line()}")
        print(f"  bare FastAPI insert of one row, the job {floor_busy} meanwhile: {floor.line()}")
        print(f"  carrygate / bare throughput: {ours.rps / floor.rps:.2f}x; p99 {ours.quantile_ms(99) / floor.quantile_ms(99):.2f}x; "
              f"server CPU a request {ours.cpu_ms / floor.cpu_ms:.2f}x")
        print(f"  targets: >= {TARGET_RPS} req/s {verdict(ours.rps >= TARGET_RPS)}, p99 < {TARGET_P99_MS} ms "
              f"{verdict(ours.quantile_ms(99) < TARGET_P99_MS)}")
        if args.upload_mb > 0:
            uploads(url, listening_processes(server.pid, port), args.upload_mb, headers)
    finally:
        if bare is not None:
            stop(bare)
        stop(server)


if __name__ == "__main__":
    main()
