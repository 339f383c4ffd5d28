"""Where models run: `resolve_device("cpu" | "cuda" | "cuda:N")`, checked before any work starts.

A device that is missing or unusable is a `ValueError` naming it, raised when a worker, the CLI or
a job starts, never a silent fall-back to the CPU: a GPU worker that quietly evaluated on the CPU
would report timings and numerics of another machine.
"""

from __future__ import annotations

import subprocess
import sys

import torch


def resolve_name(name: str | torch.device) -> torch.device:
    try:
        return torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device {str(name)!r}: expected cpu, cuda or cuda:N") from err


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device `name` names, after a small allocation on it proved it usable."""
    device = resolve_name(name)
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {str(name)!r}: only cpu and cuda are supported")
    if not torch.cuda.is_available():
        raise ValueError(f"device {str(name)!r}: CUDA is not available here (torch {torch.__version__}, "
                         f"built with CUDA {torch.version.cuda or 'none'})")
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {str(name)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    device = torch.device("cuda", index)
    try:
        torch.ones(1, device=device).add_(1).item()
    except RuntimeError as err:  # present but unusable: out of memory, a busy exclusive-mode GPU, a driver mismatch
        raise ValueError(f"device {device}: not usable ({err})") from err
    return device


def check_device(name: str) -> str:
    """`resolve_device` for a process that forks or spawns workers: a CUDA device is tried in a fresh
    interpreter, so this process never creates a CUDA context that forked workers would inherit broken.
    Returns the resolved name; raises ValueError with the reason."""
    if resolve_name(name).type == "cpu":
        return str(resolve_device(name))
    code = "import sys\nfrom carrygate.models.devices import resolve_device\nprint(resolve_device(sys.argv[1]))"
    try:
        done = subprocess.run([sys.executable, "-c", code, name], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as err:
        raise ValueError(f"device {name!r}: no answer from CUDA within {err.timeout:g} s") from err
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise ValueError(lines[-1].removeprefix("ValueError: ") if lines else f"device {name!r}: check failed")
    return done.stdout.strip()
