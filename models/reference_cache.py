"""The reference's trajectory, kept across jobs: a job whose reference is cached runs only its candidates.

What the lockstep engine needs of the reference to judge a candidate is, per probe batch, the
reference's carry `(z_H, z_L)` after every ACT step (step fidelity), its last step's logits and
`q_halt` (agreement, KL, halting), and the reference's own accumulator (its accuracy, consecutive
similarity, q_halt per puzzle). The noise floor is the reference under a fixed perturbation, so
its accumulator is cached with it. `ReferenceTrace` holds exactly that; states are stored in the
reference's own dtype, so a cached run gives the same numbers as an uncached one, bit for bit.

The key (`trace_key`) is the sha256 of everything the trace depends on: the model's tensors and
config (hashed from the loaded model, so a changed weight can never hit an old entry, whatever
file it came from), the probe's tokens, ids and labels, batch size, depth, numerics, whether the
step was compiled, the noise floor's spec, the device type, the torch version and `ENGINE_VERSION`
(bump it whenever the engine's reference arithmetic or the trace layout changes).

A trace larger than the cache's `max_entry_bytes` is not kept (the reference is recomputed next
time); the whole cache is trimmed to `max_total_bytes`, least recently used first.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

ENGINE_VERSION = "2026-12-07.1"
GIB = 1024**3


def model_digest(model: torch.nn.Module, config: Any) -> str:
    """sha256 of a model's config and every state-dict tensor (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().contiguous().cpu()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def trace_key(model_sha: str, inputs: np.ndarray, ids: np.ndarray, labels: np.ndarray | None, **options: Any) -> str:
    """The cache key of one reference run; `options` are the run's settings (batch size, depth, ...)."""
    digest = hashlib.sha256(model_sha.encode())
    for array in (inputs, ids, labels):
        digest.update(b"none" if array is None else f"{array.dtype}|{array.shape}|".encode() + np.ascontiguousarray(array).tobytes())
    settings = options | {"engine": ENGINE_VERSION, "torch": torch.__version__}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


@dataclass
class ReferenceTrace:
    """The reference's side of a lockstep run (see the module docstring); tensors on the CPU."""

    steps: int
    z_H: list[list[torch.Tensor]] = field(default_factory=list)  # [batch][step]: (B, T, D)
    z_L: list[list[torch.Tensor]] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)  # [batch]: the last step's (B, seq_len, vocab)
    q_halt: list[torch.Tensor] = field(default_factory=list)  # [batch]: the last step's (B,)
    reference: dict[str, Any] | None = None  # the reference's accumulator (`_Accumulator.to_json`)
    noise_floor: dict[str, Any] | None = None  # the noise floor's accumulator, when the run had one
    limit: int | None = None  # recording stops (and the trace is dropped) past this many bytes
    nbytes: int = 0
    overflowed: bool = False

    @property
    def batches(self) -> int:
        return len(self.logits)

    def _fits(self, more: int) -> bool:
        if self.limit is not None and self.nbytes + more > self.limit:
            self.overflowed = True
            self.z_H, self.z_L, self.logits, self.q_halt = [], [], [], []  # free it: this trace will not be stored
        return not self.overflowed

    def add_state(self, batch: int, z_H: torch.Tensor, z_L: torch.Tensor) -> None:
        if not self._fits(2 * z_H.numel() * z_H.element_size()):
            return
        if batch == len(self.z_H):
            self.z_H.append([])
            self.z_L.append([])
        self.z_H[batch].append(z_H.detach().cpu())
        self.z_L[batch].append(z_L.detach().cpu())
        self.nbytes += 2 * z_H.numel() * z_H.element_size()

    def add_final(self, logits: torch.Tensor, q_halt: torch.Tensor) -> None:
        if not self._fits(logits.numel() * logits.element_size() + q_halt.numel() * q_halt.element_size()):
            return
        self.logits.append(logits.detach().cpu())
        self.q_halt.append(q_halt.detach().cpu())
        self.nbytes += logits.numel() * logits.element_size() + q_halt.numel() * q_halt.element_size()

    def state(self, batch: int, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.z_H[batch][step].to(device), self.z_L[batch][step].to(device)

    def final(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.logits[batch].to(device), self.q_halt[batch].to(device)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        for b in range(self.batches):
            for t in range(self.steps):
                yield f"{b}.{t}.z_H", self.z_H[b][t]
                yield f"{b}.{t}.z_L", self.z_L[b][t]
            yield f"{b}.logits", self.logits[b]
            yield f"{b}.q_halt", self.q_halt[b]


class ReferenceCache:
    """A directory of `ReferenceTrace`s, one safetensors file per key (written whole, then renamed)."""

    def __init__(self, root: str | Path, *, max_entry_bytes: int = 2 * GIB, max_total_bytes: int = 8 * GIB) -> None:
        self.root = Path(root)
        self.max_entry_bytes = max_entry_bytes
        self.max_total_bytes = max_total_bytes

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def get(self, key: str) -> ReferenceTrace | None:
        """The trace stored under `key`, its tensors memory-mapped; None on a miss or an unreadable entry."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as reader:
                meta = reader.metadata() or {}
                if meta.get("key") != key:
                    return None
                trace = ReferenceTrace(int(meta["steps"]), reference=json.loads(meta["reference"]),
                                       noise_floor=json.loads(meta["noise_floor"]) if meta.get("noise_floor") else None)
                for b in range(int(meta["batches"])):
                    trace.z_H.append([reader.get_tensor(f"{b}.{t}.z_H") for t in range(trace.steps)])
                    trace.z_L.append([reader.get_tensor(f"{b}.{t}.z_L") for t in range(trace.steps)])
                    trace.logits.append(reader.get_tensor(f"{b}.logits"))
                    trace.q_halt.append(reader.get_tensor(f"{b}.q_halt"))
        except (OSError, ValueError, KeyError, SafetensorError):
            return None  # a damaged entry is a miss; the run recomputes and overwrites it
        os.utime(path)  # least recently *used* is what the trim removes first
        return trace

    def put(self, key: str, trace: ReferenceTrace) -> bool:
        """Store `trace` under `key`; False (nothing stored) when it is over `max_entry_bytes` or incomplete."""
        if trace.reference is None or trace.overflowed or trace.nbytes > self.max_entry_bytes or not trace.batches:
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"key": key, "steps": str(trace.steps), "batches": str(trace.batches), "reference": json.dumps(trace.reference),
                "noise_floor": json.dumps(trace.noise_floor) if trace.noise_floor is not None else ""}
        tmp = self.root / f".{key}.{uuid.uuid4().hex}.tmp"
        save_file({name: t.contiguous() for name, t in trace.tensors()}, str(tmp), metadata=meta)
        os.replace(tmp, self._path(key))
        self.trim()
        return True

    def trim(self) -> None:
        entries = sorted(self.root.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for path in entries:
            total += path.stat().st_size
            if total > self.max_total_bytes:
                path.unlink(missing_ok=True)

