"""The deployable artifact: one ACT step as an ONNX graph, and the host loop that drives it.

What ships to a phone is not a PyTorch module: it is a graph for one ACT step, run by a device
runtime, with the recursion loop on the host (the paper's App. L/M). `export_step` writes that graph:

    inputs : z_H (B, T, D) f32, z_L (B, T, D) f32, inputs (B, seq_len) i32,
             puzzle_identifiers (B,) i32            -- or, with `flash_row`, puzzle_embedding (B, E) f32
    outputs: z_H_next, z_L_next (B, T, D) f32, logits (B, seq_len, vocab) f32,
             q_halt_logits (B,) f32, q_continue_logits (B,) f32

It is the inner step the lockstep engine runs (`RecursiveReasoner.step`): evaluation never halts
early and never resets the carry, so halting is the host's business — the graph only reports
`q_halt_logits`. With `flash_row` the puzzle-embedding table stays in flash on the host, which
streams one row per puzzle into the graph instead of the graph holding the whole table.

Batch: `batch_size=None` exports a dynamic batch axis; an int fixes it (what NPUs and AI Hub
compile). The graph always computes in float32 (a bf16 reference is exported at fp32; ORT's CPU
provider has no bf16 matmuls) — the comparison against the reference shows what that costs.

Opset: 17 with the TorchScript exporter (the default: ~1 s per export on this CPU, every op the
blocks use exists at 17 — our RMSNorm is written out, so there is no aten::rms_norm to lower);
18 with `exporter="dynamo"` (torch.export + onnxscript; ~10x slower to export, fewer nodes).

`OrtReasoner` runs an exported (and possibly ORT-quantised) file behind the interface the lockstep
engine drives (`input_embeddings`, `initial_carry`, `step`), so fidelity is that of the exact file.

Over 400 lines on purpose: the export, the graph fix-ups, the runner and the check against PyTorch
must agree on one input/output layout, which this module alone defines.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import torch
from torch import nn

from carrygate.models.config import ModelConfig
from carrygate.models.reasoner import Carry, RecursiveReasoner, StepOutput, SteppedModel, host_loop
from carrygate.models.vocabulary import Exporter

OPSET = 17
DYNAMO_OPSET = 18
INPUT_NAMES = ("z_H", "z_L", "inputs", "puzzle_identifiers")
FLASH_ROW_INPUT = "puzzle_embedding"
OUTPUT_NAMES = ("z_H_next", "z_L_next", "logits", "q_halt_logits", "q_continue_logits")


class StepGraph(nn.Module):
    """The exported function: (z_H, z_L, inputs, puzzle ids | puzzle row) -> one ACT step's outputs."""

    def __init__(self, model: RecursiveReasoner, flash_row: bool = False) -> None:
        super().__init__()
        self.model = model
        self.flash_row = flash_row

    def forward(self, z_H: torch.Tensor, z_L: torch.Tensor, inputs: torch.Tensor, puzzle: torch.Tensor) -> tuple[torch.Tensor, ...]:
        model = self.model
        if self.flash_row:
            x = model.embed_with_puzzle_rows(inputs, puzzle)
        else:
            x = model.input_embeddings(inputs, puzzle)
        cos_sin = model.rotary_emb() if model.rotary_emb is not None else None
        new = model.recurse(z_H, z_L, x, cos_sin)
        logits, q_halt, q_continue = model.heads(new.z_H)
        return new.z_H, new.z_L, logits, q_halt, q_continue


@dataclass(frozen=True)
class ExportedStep:
    path: Path
    opset: int
    batch_size: int | None  # None: dynamic batch axis
    flash_row: bool
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    bytes: int
    sha256: str
    exporter: str
    notes: list[str] = field(default_factory=list)


def float32_model(model: RecursiveReasoner) -> RecursiveReasoner:
    """The model computing in float32 (bf16 references are exported at fp32)."""
    if model.dtype == torch.float32:
        return model
    from carrygate.models.compress.structure import rebuild

    return rebuild(model, forward_dtype="float32").eval()


def example_inputs(model: RecursiveReasoner, batch: int, flash_row: bool) -> tuple[torch.Tensor, ...]:
    carry = model.initial_carry(batch)
    inputs = torch.zeros(batch, model.config.seq_len, dtype=torch.int32)
    if flash_row:
        if model.puzzle_emb is None:
            raise ValueError("flash_row: this model has no puzzle-embedding table to stream")
        puzzle = torch.zeros(batch, model.config.puzzle_emb_ndim, dtype=torch.float32)
    else:
        puzzle = torch.zeros(batch, dtype=torch.int32)
    return carry.z_H.float(), carry.z_L.float(), inputs, puzzle


def _inline_initializer_identities(proto: onnx.ModelProto) -> int:
    """The TorchScript exporter routes every reuse of a weight (the blocks run H x (L+1) times per
    step) through an Identity node; quantizers only see a MatMul whose weight *is* an initializer, so
    wire those consumers to the initializer itself. Returns the number of nodes removed."""
    graph = proto.graph
    initializers = {init.name for init in graph.initializer}
    graph_outputs = {out.name for out in graph.output}
    rename = {n.output[0]: n.input[0] for n in graph.node
              if n.op_type == "Identity" and n.input[0] in initializers and n.output[0] not in graph_outputs}
    if not rename:
        return 0
    keep = [n for n in graph.node if not (n.op_type == "Identity" and n.output[0] in rename)]
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    return len(rename)


def _fold_initializer_transposes(proto: onnx.ModelProto) -> int:
    """The dynamo exporter feeds each Linear weight to its MatMul through a Transpose node; ORT's
    quantisers then see an activation, not a weight (the file keeps fp32 weights). Fold every
    Transpose of an initializer into a transposed initializer. Returns the number folded."""
    graph = proto.graph
    inits = {init.name: init for init in graph.initializer}
    folded, keep = 0, []
    for node in graph.node:
        if node.op_type == "Transpose" and node.input[0] in inits:
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            array = onnx.numpy_helper.to_array(inits[node.input[0]])
            tensor = onnx.numpy_helper.from_array(np.ascontiguousarray(np.transpose(array, perm)), node.output[0])
            graph.initializer.append(tensor)
            folded += 1
            continue
        keep.append(node)
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        kept = [init for init in graph.initializer if init.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return folded


def _dedupe_constants(proto: onnx.ModelProto) -> int:
    """Every application of an attention block bakes its own copy of the RoPE tables into Constant
    nodes (~0.75 MB on maze-att, more than half the weights); keep one node (or initializer) per
    distinct value. The first copy precedes every later copy's consumers, so rewiring keeps the order."""
    first: dict[bytes, str] = {}
    rename: dict[str, str] = {}
    keep = []
    for node in proto.graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            key = node.attribute[0].t.SerializeToString(deterministic=True)
            if key in first:
                rename[node.output[0]] = first[key]
                continue
            first[key] = node.output[0]
        keep.append(node)
    graph_outputs = {out.name for out in proto.graph.output}
    # The dynamo exporter stores those tables as initializers instead: the same, by content.
    first_init: dict[bytes, str] = {}
    kept_inits = []
    for init in proto.graph.initializer:
        anonymous = onnx.TensorProto()
        anonymous.CopyFrom(init)
        anonymous.name = ""
        key = anonymous.SerializeToString(deterministic=True)
        if key in first_init and init.name not in graph_outputs:
            rename[init.name] = first_init[key]
            continue
        first_init.setdefault(key, init.name)
        kept_inits.append(init)
    if not rename or graph_outputs & set(rename):
        return 0
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept_inits)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del proto.graph.node[:]
    proto.graph.node.extend(keep)
    return len(rename)


def _name_weights(proto: onnx.ModelProto, model: nn.Module) -> None:
    """Give anonymous weight initializers (`onnx::MatMul_1840`) the parameter name they came from,
    matched by value (the exporter stores Linear weights transposed), so per-tensor reports read."""
    by_bytes: dict[bytes, str] = {}
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        array = tensor.detach().float().numpy()
        by_bytes.setdefault(np.ascontiguousarray(array).tobytes(), name)
        if array.ndim == 2:
            by_bytes.setdefault(np.ascontiguousarray(array.T).tobytes(), name + ".T")
    renames: dict[str, str] = {}
    taken = {init.name for init in proto.graph.initializer}
    for init in proto.graph.initializer:
        if not init.name.startswith("onnx::"):
            continue
        array = onnx.numpy_helper.to_array(init)
        if array.dtype != np.float32:
            continue
        found = by_bytes.get(np.ascontiguousarray(array).tobytes())
        if found and found not in taken:
            renames[init.name] = found
            taken.add(found)
    if not renames:
        return
    for init in proto.graph.initializer:
        init.name = renames.get(init.name, init.name)
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]


def export_step(
    model: RecursiveReasoner,
    out: str | Path,
    *,
    batch_size: int | None = None,
    flash_row: bool = False,
    exporter: Exporter = "torchscript",
) -> ExportedStep:
    """Write one ACT step of `model` as ONNX to `out`.

    Args:
        batch_size: None for a dynamic batch axis, else the fixed batch the graph is specialised to.
        flash_row: take the puzzle-embedding row as an input (the table stays on the host).
        exporter: "torchscript" (opset 17, fast) or "dynamo" (opset 18, torch.export).
    Raises:
        ValueError: the model cannot be exported (e.g. a quantised module with no ONNX lowering).
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fp32 = float32_model(model)
    graph = StepGraph(fp32, flash_row).eval()
    input_names = (*INPUT_NAMES[:3], FLASH_ROW_INPUT if flash_row else INPUT_NAMES[3])
    args = example_inputs(fp32, batch_size or 2, flash_row)
    notes = [] if model.dtype == torch.float32 else [f"exported at float32 from a {model.config.forward_dtype} model"]
    opset = OPSET if exporter == "torchscript" else DYNAMO_OPSET
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            if exporter == "torchscript":
                dynamic = None if batch_size is not None else {n: {0: "batch"} for n in (*input_names, *OUTPUT_NAMES)}
                torch.onnx.export(graph, args, str(out), dynamo=False, input_names=list(input_names), output_names=list(OUTPUT_NAMES),
                                  dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True)
            elif exporter == "dynamo":
                batch = torch.export.Dim("batch", min=1)
                shapes = None if batch_size is not None else {name: {0: batch} for name in ("z_H", "z_L", "inputs", "puzzle")}
                torch.onnx.export(graph, args, str(out), dynamo=True, input_names=list(input_names), output_names=list(OUTPUT_NAMES),
                                  dynamic_shapes=shapes, opset_version=opset, external_data=False)
            else:
                raise ValueError(f"exporter: must be 'torchscript' or 'dynamo', got {exporter!r}")
    except (RuntimeError, TypeError, torch.onnx.errors.OnnxExporterError) as err:  # type: ignore[attr-defined]
        raise ValueError(f"export: {type(err).__name__}: {str(err)[:400]}") from err
    proto = onnx.load(str(out))
    _inline_initializer_identities(proto)
    _fold_initializer_transposes(proto)
    _dedupe_constants(proto)
    _name_weights(proto, fp32)
    meta = {
        "carrygate.config": fp32.config.model_dump_json(),
        "carrygate.flash_row": json.dumps(flash_row),
        "carrygate.batch_size": json.dumps(batch_size),
        "carrygate.exporter": exporter,
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = "carrygate: one ACT step of a recursive reasoner; the host loops it halt_max_steps times"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    data = out.read_bytes()
    return ExportedStep(path=out, opset=opset, batch_size=batch_size, flash_row=flash_row, input_names=input_names,
                        output_names=OUTPUT_NAMES, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(), exporter=exporter,
                        notes=notes)


def read_metadata(path: str | Path) -> dict[str, str]:
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


# -- the host loop ---------------------------------------------------------------------------------
class HostInputs(NamedTuple):
    """What the host feeds every step besides the carry (computed once per batch)."""

    inputs: np.ndarray  # (B, seq_len) int32
    puzzle: np.ndarray  # (B,) int32 puzzle ids, or (B, E) float32 rows with flash_row


def ort_providers(device: str | torch.device = "cpu") -> list[Any]:
    """ORT's CUDA provider for a CUDA device where this onnxruntime build has it, else the CPU provider."""
    import onnxruntime as ort

    device = torch.device(device)
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def ort_session(path: str | Path, threads: int = 1, profile_prefix: str | None = None,
                device: str | torch.device = "cpu"):  # -> onnxruntime.InferenceSession
    """A session that does not spin idle threads (it shares the cores with torch), on `device`'s provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=ort_providers(device))


class OrtReasoner:
    """An exported step file run by ONNX Runtime with the host loop in Python.

    Exposes what the lockstep engine uses of a `RecursiveReasoner`: `config`, `dtype`,
    `input_embeddings`, `initial_carry`, `step`, `steps`. A fixed-batch file runs larger batches in
    chunks (the last one padded). The host-side carry codec of a spec is the candidate's
    (`models.compress.candidate.CompressedCandidate.step`), not this runner's.
    """

    dtype = torch.float32

    def __init__(self, path: str | Path, H_init: np.ndarray, L_init: np.ndarray, puzzle_table: np.ndarray | None = None,
                 *, threads: int = 1, device: str | torch.device = "cpu") -> None:
        from pydantic import TypeAdapter

        self.path = Path(path)
        meta = read_metadata(self.path)
        if "carrygate.config" not in meta:
            raise ValueError(f"{self.path}: not a carrygate step export (no carrygate.config metadata)")
        self.config = TypeAdapter(ModelConfig).validate_json(meta["carrygate.config"])
        self.flash_row = json.loads(meta.get("carrygate.flash_row", "false"))
        self.batch_size: int | None = json.loads(meta.get("carrygate.batch_size", "null"))
        if self.flash_row and puzzle_table is None:
            raise ValueError("flash_row: the host needs the puzzle-embedding table to stream rows from")
        self.H_init, self.L_init = np.asarray(H_init, np.float32), np.asarray(L_init, np.float32)
        self.puzzle_table = None if puzzle_table is None else np.asarray(puzzle_table, np.float32)
        self.session = ort_session(self.path, threads, device=device)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.step_seconds: list[float] = []  # wall time of each session.run, for the engine's own timing

    @classmethod
    def from_model(cls, path: str | Path, model: RecursiveReasoner, **kwargs: object) -> OrtReasoner:
        table = model.puzzle_emb.weights.detach().float().cpu().numpy() if model.puzzle_emb is not None else None
        kwargs.setdefault("device", model.device)
        return cls(path, model.H_init.detach().float().cpu().numpy(), model.L_init.detach().float().cpu().numpy(), table,  # type: ignore[arg-type]
                   **kwargs)

    def input_embeddings(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> HostInputs:
        tokens = np.ascontiguousarray(inputs.numpy(), dtype=np.int32)
        ids = np.ascontiguousarray(puzzle_identifiers.numpy(), dtype=np.int32)
        if self.flash_row:
            assert self.puzzle_table is not None
            return HostInputs(tokens, self.puzzle_table[ids])
        return HostInputs(tokens, ids)

    def initial_carry(self, batch_size: int) -> Carry:
        T, D = self.config.total_len, self.config.hidden_size
        return Carry(torch.from_numpy(np.broadcast_to(self.H_init, (batch_size, T, D)).copy()),
                     torch.from_numpy(np.broadcast_to(self.L_init, (batch_size, T, D)).copy()))

    def run_arrays(self, z_H: np.ndarray, z_L: np.ndarray, x: HostInputs) -> list[np.ndarray]:
        """One step on numpy arrays, chunked to the file's fixed batch if it has one."""
        feeds = (z_H, z_L, x.inputs, x.puzzle)
        B, fixed = z_H.shape[0], self.batch_size
        start = time.perf_counter()
        if fixed is None or fixed == B:
            outs = self.session.run(None, dict(zip(self.input_names, feeds, strict=True)))
        else:
            parts: list[list[np.ndarray]] = []
            for lo in range(0, B, fixed):
                chunk = [a[lo:lo + fixed] for a in feeds]
                n = chunk[0].shape[0]
                if n < fixed:  # pad the last chunk by repeating its first row
                    chunk = [np.concatenate([a, np.repeat(a[:1], fixed - n, axis=0)]) for a in chunk]
                parts.append([o[:n] for o in self.session.run(None, dict(zip(self.input_names, chunk, strict=True)))])
            outs = [np.concatenate(column) for column in zip(*parts, strict=True)]
        self.step_seconds.append(time.perf_counter() - start)
        return outs

    def step(self, carry: Carry, x: HostInputs, step_index: int = 0) -> StepOutput:
        del step_index  # every step runs the same graph
        z_H, z_L = (np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in carry)
        new_H, new_L, logits, q_halt, q_continue = self.run_arrays(z_H, z_L, x)
        return StepOutput(Carry(torch.from_numpy(new_H), torch.from_numpy(new_L)), torch.from_numpy(logits),
                          torch.from_numpy(q_halt), torch.from_numpy(q_continue))

    def steps(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor, n_steps: int | None = None) -> Iterator[StepOutput]:
        return host_loop(self, inputs, puzzle_identifiers, n_steps)


# -- the check against PyTorch ---------------------------------------------------------------------
@dataclass(frozen=True)
class ExportCheck:
    """Max |ONNX - PyTorch| per output. `step` feeds both the same (reference) carry at every step, so
    it measures the graph alone; `trajectory` lets each run free, so it includes the recursion's own
    amplification of float rounding (a chaotic carry can grow 1e-5 into 1e-1 over 8 steps)."""

    step: dict[str, float]
    trajectory: dict[str, float]
    steps: int
    puzzles: int


@torch.no_grad()
def check_export(model: SteppedModel, runner: SteppedModel, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor,
                 n_steps: int | None = None) -> ExportCheck:
    """Compare the file `runner` holds with `model` on the given puzzles, step by step. Either may be
    a `CompressedCandidate` over the model or the runner, so a host-side carry codec runs in both loops."""
    n = n_steps or model.config.halt_max_steps
    x_ref = model.input_embeddings(inputs, puzzle_identifiers)
    x_onnx = runner.input_embeddings(inputs, puzzle_identifiers)
    ref = model.initial_carry(inputs.shape[0])
    free = runner.initial_carry(inputs.shape[0])
    step_diff = dict.fromkeys(OUTPUT_NAMES, 0.0)
    traj_diff = dict.fromkeys(OUTPUT_NAMES, 0.0)

    def outputs(out: StepOutput) -> list[np.ndarray]:
        return [t.float().numpy() for t in (out.carry.z_H, out.carry.z_L, out.logits, out.q_halt_logits, out.q_continue_logits)]

    for t in range(n):
        ref_out = model.step(ref, x_ref, t)
        forced = runner.step(Carry(ref.z_H.float(), ref.z_L.float()), x_onnx, t)
        free_out = runner.step(free, x_onnx, t)
        for name, a, b, c in zip(OUTPUT_NAMES, outputs(ref_out), outputs(forced), outputs(free_out), strict=True):
            step_diff[name] = max(step_diff[name], float(np.abs(a - b).max()))
            traj_diff[name] = max(traj_diff[name], float(np.abs(a - c).max()))
        ref, free = ref_out.carry, free_out.carry
    return ExportCheck(step=step_diff, trajectory=traj_diff, steps=n, puzzles=int(inputs.shape[0]))
