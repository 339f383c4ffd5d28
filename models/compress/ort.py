"""The `onnxruntime` backend: export the candidate's step, quantise it with ONNX Runtime, run that file.

    candidate (structural parts applied in PyTorch: checkpoint, depth, prune, puzzle table)
      -> export_step (fp32 ONNX, checked against PyTorch)
      -> onnxruntime.quantization: quantize_dynamic | quantize_static (QDQ) | MatMulNBits (int4)
      -> a `CompressedCandidate` over the `OrtReasoner` (the host loop, with the spec's carry codec),
         which the lockstep engine runs against the reference.

Static calibration feeds are *real probe carries*: the float candidate is run over the first
`calibration_puzzles` probe puzzles and the carry entering every ACT step is one calibration
sample, so the activation ranges cover the whole trajectory (pooled over steps, which is all a
single static graph can hold — the paper's per-step ranges need one graph per step).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import logging
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch

from carrygate.models.compress.candidate import CompressedCandidate
from carrygate.models.compress.spec import OnnxRuntimeSpec
from carrygate.models.export import OrtReasoner, check_export, export_step
from carrygate.models.reasoner import Carry, RecursiveReasoner
from carrygate.models.results import OnnxArtifact


def slug(name: str) -> str:
    """A file-name-safe form of a candidate name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "candidate"


def resolve_nodes(path: Path, patterns: list[str]) -> list[str]:
    """Expand glob patterns to the graph's node names; a pattern matching nothing is an error."""
    names = [node.name for node in onnx.load(str(path), load_external_data=False).graph.node]
    selected: list[str] = []
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits:
            examples = ", ".join(n for n in names if "MatMul" in n or "Gemm" in n)[:300]
            raise ValueError(f"onnxruntime.nodes_to_exclude: {pattern!r} matches no node of the exported graph "
                             f"(nodes look like: {examples})")
        selected.extend(h for h in hits if h not in selected)
    return selected


class ProbeCarryReader:
    """`onnxruntime.quantization.CalibrationDataReader` over real probe carries: one feed per ACT step
    per batch, the carry the float candidate had entering that step."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)


@torch.no_grad()
def probe_carry_feeds(candidate: CompressedCandidate, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      puzzles: int) -> tuple[list[dict[str, np.ndarray]], int]:
    """Run the float export (`candidate.model`, an `OrtReasoner`, stepped by the candidate so its carry
    codec runs) over the first `puzzles` puzzles and record every step's input feed: the carry as
    the previous step returned it. Returns (feeds, puzzles used)."""
    runner = candidate.model
    assert isinstance(runner, OrtReasoner)
    feeds: list[dict[str, np.ndarray]] = []
    taken = 0
    fixed = runner.batch_size
    for inputs, ids in batches:
        if taken >= puzzles:
            break
        inputs, ids = inputs[: puzzles - taken], ids[: puzzles - taken]
        taken += inputs.shape[0]
        x = runner.input_embeddings(inputs, ids)
        carry = runner.initial_carry(inputs.shape[0])
        for t in range(runner.config.halt_max_steps):
            arrays = [carry.z_H.numpy(), carry.z_L.numpy(), x.inputs, x.puzzle]
            chunk = fixed or arrays[0].shape[0]
            for lo in range(0, arrays[0].shape[0], chunk):
                part = [a[lo:lo + chunk] for a in arrays]
                if part[0].shape[0] < chunk:
                    part = [np.concatenate([a, np.repeat(a[:1], chunk - a.shape[0], axis=0)]) for a in part]
                feeds.append(dict(zip(runner.input_names, (np.ascontiguousarray(a) for a in part), strict=True)))
            out = candidate.step(carry, x, t)
            carry = Carry(out.carry.z_H, out.carry.z_L)
    if not feeds:
        raise ValueError("onnxruntime.calibration_puzzles: static quantisation needs probe puzzles to calibrate on")
    return feeds, taken


_CALIBRATION = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


class _DropPreprocessHint(logging.Filter):
    """ORT logs "consider to run pre-processing" on the root logger for every quantisation; we
    quantise the exporter's graph on purpose (node names must stay those `nodes_to_exclude` matched)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def quantize_file(spec: OnnxRuntimeSpec, fp32: Path, out: Path, excluded: list[str], feeds: list[dict[str, np.ndarray]] | None) -> None:
    """Write `fp32` quantised per `spec` to `out` (ONNX Runtime's own quantisers). Their progress
    prints go to stderr, so stdout stays the caller's (tables, JSON)."""
    hint = _DropPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            _quantize(spec, fp32, out, excluded, feeds)
    finally:
        logging.getLogger().removeFilter(hint)


def _quantize(spec: OnnxRuntimeSpec, fp32: Path, out: Path, excluded: list[str], feeds: list[dict[str, np.ndarray]] | None) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if spec.quantization == "none":
        shutil.copyfile(fp32, out)
    elif spec.quantization == "dynamic":
        quantize_dynamic(fp32, out, op_types_to_quantize=spec.op_types_to_quantize, per_channel=spec.per_channel,
                         weight_type=QuantType.QInt8, nodes_to_exclude=excluded)
    elif spec.quantization == "static":
        assert feeds is not None
        quantize_static(fp32, out, ProbeCarryReader(feeds), quant_format=QuantFormat.QDQ, op_types_to_quantize=spec.op_types_to_quantize,
                        per_channel=spec.per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        # Not CalibMaxIntermediateOutputs: in onnxruntime 1.32 MinMax drops each full chunk without
                        # folding it into the ranges ("No data is collected"); calibration_puzzles bounds memory instead.
                        nodes_to_exclude=excluded, calibrate_method=getattr(CalibrationMethod, _CALIBRATION[spec.calibration]))
    elif spec.quantization == "int4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=spec.block_size, is_symmetric=spec.symmetric,
                                         nodes_to_exclude=excluded, op_types_to_quantize=("MatMul",))
        quantizer.process()
        quantizer.model.save_model_to_file(str(out))
    else:  # pragma: no cover - the spec's Literal forbids it
        raise ValueError(f"onnxruntime.quantization: unknown method {spec.quantization!r}")


def build_ort_candidate(
    spec: OnnxRuntimeSpec,
    candidate: CompressedCandidate,
    workdir: str | Path,
    name: str,
    probe_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    threads: int = 1,
) -> CompressedCandidate:
    """Export `candidate.model` (the structurally compressed PyTorch candidate), quantise with ORT,
    load the session.

    Args:
        spec: the `onnxruntime` part of the candidate's spec.
        candidate: the candidate as PyTorch (checkpoint/depth/prune/puzzle-table/carry parts applied).
        workdir: where the files go (`<name>.fp32.onnx`, `<name>.onnx`; the latter is `artifact.filename`).
        probe_batches: (inputs, puzzle ids) batches; the first few check the export and calibrate.
    Returns:
        The candidate over the ORT file: `model` the `OrtReasoner`, `artifact` the file's record,
        `float_model` the PyTorch model it was built from; carry codec and storage as given.
    Raises:
        ValueError: naming the `onnxruntime.*` field at fault.
    """
    model = candidate.model
    assert isinstance(model, RecursiveReasoner), "an ORT file is built from a PyTorch candidate"
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    base = slug(name)
    while (workdir / f"{base}.onnx").exists():  # two names that slug alike ("a/b", "a_b") keep separate files
        base += "_"
    try:
        exported = export_step(model, workdir / f"{base}.fp32.onnx", batch_size=spec.batch_size, flash_row=spec.flash_row,
                               exporter=spec.exporter)
    except ValueError as err:
        raise ValueError(f"onnxruntime: {err}") from err
    # The host-side carry codec (spec `carry`) belongs to the host loop of every file built here:
    # each runner is stepped through a candidate that keeps `candidate`'s codec.
    float_file = replace(candidate, model=OrtReasoner.from_model(exported.path, model, threads=threads))
    batches = iter(probe_batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("onnxruntime: no probe puzzles to check the export on")
    check_inputs, check_ids = first[0][:4], first[1][:4]
    check = check_export(candidate, float_file, check_inputs, check_ids)
    excluded = resolve_nodes(exported.path, spec.nodes_to_exclude)
    feeds, calibrated = None, 0
    if spec.quantization == "static":
        def again() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            yield first
            yield from batches
        feeds, calibrated = probe_carry_feeds(float_file, again(), spec.calibration_puzzles)
    path = workdir / f"{base}.onnx"
    quantize_file(spec, exported.path, path, excluded, feeds)
    runner = OrtReasoner.from_model(path, model, threads=threads)
    data = path.read_bytes()
    notes = list(exported.notes)
    if feeds is not None:
        notes.append(f"static ranges calibrated ({spec.calibration}) on {calibrated} probe puzzles x {model.config.halt_max_steps} "
                     f"ACT steps ({len(feeds)} feeds), pooled over steps")
    artifact = OnnxArtifact(
        filename=path.name, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), quantization=spec.quantization,
        opset=exported.opset, exporter=exported.exporter, batch_size=spec.batch_size, flash_row=spec.flash_row,
        input_names=list(exported.input_names), output_names=list(exported.output_names),
        export_max_abs_diff=check.step, export_trajectory_max_abs_diff=check.trajectory, nodes_excluded=excluded, notes=notes,
    )
    return replace(candidate, model=runner, artifact=artifact, float_model=model)
