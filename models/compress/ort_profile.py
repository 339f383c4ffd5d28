"""Local profile of an exported step on this CPU with ONNX Runtime: what one puzzle costs as deployed.

The host loop runs real probe puzzles one at a time (or at the file's fixed batch): every ACT step
is a `session.run` fed the carry the previous step returned. Measured:
- per-step latency p50/p95/mean over every timed step;
- per-puzzle latency = the host loop's wall time (steps x step latency + host overhead, both shown);
- session load time; peak memory = peak RSS increase while loading the session and running a puzzle,
  in a fresh process that imports only numpy and onnxruntime (one puzzle's host loop);
- the file size; a per-op-type breakdown from ORT's Chrome-trace profile (a second session with
  profiling on, so the timed runs carry no profiler overhead). QDQ graphs show their
  QuantizeLinear/DequantizeLinear cost and dynamic quantisation its DynamicQuantizeLinear +
  MatMulInteger pairs here — the static-vs-dynamic and small-matrix penalties (paper App. G.1).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from carrygate.models.export import HostInputs, OrtReasoner, ort_session
from carrygate.models.results import LocalProfile, OpTime

# Runs in a fresh interpreter that imports only numpy and onnxruntime, so its peak RSS is the session's.
_MEMORY_PROBE = """
import sys, numpy as np, onnxruntime as ort
def status(key):  # kB lines of /proc/self/status; VmHWM is this exec's own peak (ru_maxrss inherits the parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
data = {k: v for k, v in np.load(sys.argv[2]).items()}
before = status("VmRSS")
options = ort.SessionOptions(); options.intra_op_num_threads = int(sys.argv[3])
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
names = [i.name for i in session.get_inputs()]
z_H, z_L = data["z_H"], data["z_L"]
for _ in range(int(sys.argv[4])):
    z_H, z_L, *_ = session.run(None, {names[0]: z_H, names[1]: z_L, names[2]: data["inputs"], names[3]: data["puzzle"]})
print(max(0, status("VmHWM") - before))
"""


def peak_memory_bytes(path: Path, z_H: np.ndarray, z_L: np.ndarray, rest: list[np.ndarray], steps: int, threads: int) -> int | None:
    """Peak RSS increase (bytes) of a fresh process that loads the session and runs one puzzle;
    None where that cannot be measured (no `resource` module, the child failed)."""
    import subprocess
    import sys

    if sys.platform != "linux":  # ru_maxrss is KiB on Linux, bytes on macOS
        return None
    with tempfile.TemporaryDirectory(prefix="carrygate-ort-mem-") as tmp:
        feeds = Path(tmp) / "feeds.npz"
        np.savez(feeds, z_H=z_H, z_L=z_L, inputs=rest[0], puzzle=rest[1])
        try:
            done = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), str(feeds), str(threads), str(steps)],
                                  capture_output=True, text=True, timeout=120, env=os.environ | {"OMP_NUM_THREADS": str(threads)})
        except (OSError, subprocess.TimeoutExpired):
            return None
    lines = done.stdout.strip().splitlines()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else None


def _puzzle_feeds(runner: OrtReasoner, x: HostInputs, index: int, batch: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    rows = [(index + k) % x.inputs.shape[0] for k in range(batch)]
    T, D = runner.config.total_len, runner.config.hidden_size
    z_H = np.ascontiguousarray(np.broadcast_to(runner.H_init, (batch, T, D)), dtype=np.float32)
    z_L = np.ascontiguousarray(np.broadcast_to(runner.L_init, (batch, T, D)), dtype=np.float32)
    return z_H, z_L, [np.ascontiguousarray(x.inputs[rows]), np.ascontiguousarray(x.puzzle[rows])]


def _host_loop(session, names: list[str], z_H: np.ndarray, z_L: np.ndarray, rest: list[np.ndarray], steps: int,
               step_times: list[float]) -> float:
    """One puzzle as the device host runs it; returns its wall time (s), appends each run's time."""
    start = time.perf_counter()
    halted = None
    for _ in range(steps):
        t0 = time.perf_counter()
        z_H, z_L, logits, q_halt, _ = session.run(None, dict(zip(names, (z_H, z_L, *rest), strict=True)))
        step_times.append(time.perf_counter() - t0)
        halted = q_halt > 0  # what a device host would check to stop early (evaluation runs every step)
    answer = logits.argmax(-1)
    del answer, halted
    return time.perf_counter() - start


def op_breakdown(trace_path: str | Path, steps_run: int) -> list[OpTime]:
    """Per op type: kernel calls and microseconds per ACT step, from an ORT Chrome-trace JSON."""
    events = json.loads(Path(trace_path).read_text())
    total: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        total[op] += float(event.get("dur", 0))
        calls[op] += 1
    summed = sum(total.values()) or 1.0
    ops = [OpTime(op_type=op, calls_per_step=calls[op] / steps_run, us_per_step=total[op] / steps_run, share=total[op] / summed)
           for op in total]
    return sorted(ops, key=lambda o: -o.us_per_step)


def profile_runner(runner: OrtReasoner, inputs: np.ndarray, puzzle_identifiers: np.ndarray, *, repeats: int = 20,
                   threads: int = 1, trace_puzzles: int = 2) -> LocalProfile:
    """Profile `runner`'s file on these probe puzzles (see the module docstring)."""
    import onnxruntime as ort
    import torch

    if repeats < 1:
        raise ValueError("profile_repeats: must be >= 1 to profile")
    x = runner.input_embeddings(torch.from_numpy(np.asarray(inputs, np.int32)),
                                torch.from_numpy(np.asarray(puzzle_identifiers, np.int32)))
    batch, steps = runner.batch_size or 1, runner.config.halt_max_steps
    load_start = time.perf_counter()
    session = ort_session(runner.path, threads)
    load_ms = (time.perf_counter() - load_start) * 1e3
    names = [i.name for i in session.get_inputs()]
    warm: list[float] = []
    _host_loop(session, names, *_puzzle_feeds(runner, x, 0, batch), steps, warm)
    step_times: list[float] = []
    puzzle_times = [_host_loop(session, names, *_puzzle_feeds(runner, x, r * batch, batch), steps, step_times) for r in range(repeats)]
    del session
    peak = peak_memory_bytes(runner.path, *_puzzle_feeds(runner, x, 0, batch), steps, threads)

    with tempfile.TemporaryDirectory(prefix="carrygate-ort-trace-") as tmp:
        traced = ort_session(runner.path, threads, profile_prefix=str(Path(tmp) / "trace"))
        for r in range(trace_puzzles):
            _host_loop(traced, names, *_puzzle_feeds(runner, x, r * batch, batch), steps, [])
        ops = op_breakdown(traced.end_profiling(), trace_puzzles * steps)

    step_ms = np.asarray(step_times) * 1e3
    puzzle_ms = np.asarray(puzzle_times) * 1e3  # a fixed-batch file finishes its batch together: latency, not throughput
    host_ms = (np.asarray(puzzle_times).sum() - np.asarray(step_times).sum()) * 1e3 / repeats
    notes = [f"host loop in Python, {steps} ACT steps per puzzle, batch {batch}; machine shared, rerun for clean numbers"]
    return LocalProfile(
        runtime=f"onnxruntime {ort.__version__} CPUExecutionProvider", threads=threads, batch_size=batch, puzzles=repeats * batch,
        steps=steps,
        step_latency_ms_p50=float(np.percentile(step_ms, 50)), step_latency_ms_p95=float(np.percentile(step_ms, 95)),
        step_latency_ms_mean=float(step_ms.mean()), puzzle_latency_ms_p50=float(np.percentile(puzzle_ms, 50)),
        puzzle_latency_ms_p95=float(np.percentile(puzzle_ms, 95)), host_overhead_ms_per_puzzle=float(host_ms),
        session_load_ms=load_ms, peak_memory_bytes=peak, model_file_bytes=runner.path.stat().st_size, ops=ops, notes=notes,
    )
