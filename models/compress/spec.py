"""`CompressionSpec`: a candidate compression as data — validated, serialisable, content-hashed.

A spec names *what* to do; `models.compress.apply(spec, model)` does it and returns a new
`CompressedCandidate` (the reference is never touched). Every part is optional; an empty spec is the
reference itself.

    name: int4-calibrated
    weights: {method: int4, granularity: per_channel, symmetric: false}
    exclude: [lm_head, q_head, embed_tokens]

Parts and the order they are applied in:
1. `checkpoint` — candidate weights of the same architecture (QAT, fine-tuned), instead of the reference's;
2. `depth`      — H_cycles / L_cycles / halt_max_steps overrides;
3. `prune`      — structured magnitude pruning;
   `noise`      — seeded Gaussian weight noise (a damage probe for signal validity, not a format);
4. `puzzle_embedding` — INT8 / SVD rank-k table, or flash-row streaming (numerically exact);
5. `weights`    — weight quantisation of the Linear layers selected by `include` / `exclude`;
6. `activations`— activation fake-quantisation, calibrated on probe puzzles (per recursion step or pooled);
7. `precision`  — the forward (activation and carry) dtype;
8. `carry`      — INT8 quantise/dequantise of z_H, z_L between ACT steps (host-side carry storage);
9. `onnxruntime`— export the PyTorch candidate built so far and run it as an ONNX Runtime file.

How they run (`models.compress.parts`): the forward dtype of `precision` is part of the one config
rebuild with `depth`; a half precision this CPU emulates (`half.py`) rounds the model after the puzzle
table and before `layers` / `weights`, so quantised layers keep their own storage.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from carrygate.models.files import yaml_mapping
from carrygate.models.vocabulary import Exporter, Granularity

Precision = Literal["fp32", "bf16", "fp16"]
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Int8BnbWeights(_Part):
    """bitsandbytes LLM.int8 (`Linear8bitLt`): int8 weights, fp16 outlier columns above `threshold`."""

    method: Literal["int8-bnb"] = "int8-bnb"
    threshold: float = Field(6.0, ge=0.0, description="Outlier threshold; 0 disables the mixed-precision decomposition.")


class Int8ChannelWeights(_Part):
    """Native weight-only INT8, per-output-channel symmetric scales."""

    method: Literal["int8-channel"] = "int8-channel"


class Int8DynamicWeights(_Part):
    """PyTorch dynamic quantisation of Linear layers: int8 weights, activations quantised per batch at run time."""

    method: Literal["int8-dynamic"] = "int8-dynamic"


class IntWeights(_Part):
    """Weight-only integer quantisation to `bits` (2..8), our own codes (`quant.py`).

    - `per_tensor` + symmetric: one scale per matrix, no calibration (the paper's *naive* INT4 at 4 bits);
    - `per_channel` + asymmetric: min/max per output channel (the paper's *calibrated* INT4 at 4 bits);
    - `group` with `group_size`: one scale (and zero point) per group of input columns; a width that
      `group_size` does not divide ends in a shorter group, as in torchao.
    """

    method: Literal["int"] = "int"
    bits: int = Field(4, ge=2, le=8)
    granularity: Granularity = "per_channel"
    symmetric: bool = False
    group_size: int | None = Field(None, ge=2, le=65_536)

    @model_validator(mode="after")
    def _group_size_iff_group(self) -> IntWeights:
        if (self.granularity == "group") != (self.group_size is not None):
            raise ValueError("group_size is required with granularity 'group' and only with it")
        return self


class Int4Weights(IntWeights):
    """`IntWeights` at 4 bits under its historical name (`method: int4`); `bits` is fixed and left
    out of the serialised form, so int4 specs keep the content hash they always had."""

    method: Literal["int4"] = "int4"  # type: ignore[assignment]
    bits: Literal[4] = Field(4, exclude=True)  # type: ignore[assignment]


class BnbFourBitWeights(_Part):
    """bitsandbytes 4-bit (`Linear4bit`): NF4 or FP4 with per-block absmax scales."""

    method: Literal["nf4", "fp4"] = "nf4"
    blocksize: Literal[64, 128, 256] = 64


WeightSpec = Annotated[
    Int8BnbWeights | Int8ChannelWeights | Int8DynamicWeights | IntWeights | Int4Weights | BnbFourBitWeights, Field(discriminator="method")
]


class ActivationSpec(_Part):
    """Fake-quantise the inputs of the selected Linear layers to `bits`, calibrated on probe puzzles.

    The blocks are weight-shared and run H x (L+1) times per step: `per_step` keeps one range per ACT
    step (the observer records every step); `pooled` uses one range over all steps, as generic tools do."""

    bits: int = Field(8, ge=2, le=16)
    symmetric: bool = False
    calibration_puzzles: int = Field(32, ge=1, le=100_000)
    ranges: Literal["per_step", "pooled"] = "per_step"


class PruneSpec(_Part):
    """Structured magnitude pruning: remove the lowest-L2-norm units of the given structure."""

    sparsity: float = Field(gt=0.0, lt=1.0)
    structure: Literal["intermediate", "heads", "channels"] = "intermediate"


class DepthSpec(_Part):
    H_cycles: int | None = Field(None, ge=1, le=64)
    L_cycles: int | None = Field(None, ge=1, le=64)
    halt_max_steps: int | None = Field(None, ge=1, le=1024)

    @model_validator(mode="after")
    def _something_set(self) -> DepthSpec:
        if self.H_cycles is None and self.L_cycles is None and self.halt_max_steps is None:
            raise ValueError("depth needs at least one of H_cycles, L_cycles, halt_max_steps")
        return self


class PuzzleEmbeddingSpec(_Part):
    """`int8`: per-row symmetric INT8 table. `svd`: rank-`rank` factorisation. `flash_row`: the table
    stays in flash and one row is streamed per puzzle — numerically exact, changes only the footprint."""

    method: Literal["int8", "svd", "flash_row"]
    rank: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _rank_iff_svd(self) -> PuzzleEmbeddingSpec:
        if (self.method == "svd") != (self.rank is not None):
            raise ValueError("rank is required with method 'svd' and only with it")
        return self


class NoiseSpec(_Part):
    """Seeded Gaussian noise on the selected Linear weights: W + sigma * rms(W) * N(0, 1), per matrix.

    Not a deployment format: a controlled, finely graded damage for measuring how well a label-free
    signal tracks the task loss (`carrygate validate`)."""

    sigma: float = Field(gt=0.0, le=10.0, allow_inf_nan=False, description="noise std as a share of each matrix's RMS")
    seed: int = Field(0, ge=0, le=2**31 - 1)


class CarrySpec(_Part):
    """Store z_H / z_L between ACT steps as `bits`-bit integers with one symmetric scale per token
    (quantise + dequantise)."""

    bits: int = Field(8, ge=2, le=16)
    states: list[Literal["z_H", "z_L"]] = ["z_H", "z_L"]


class OnnxRuntimeSpec(_Part):
    """Ship the candidate as the exported ONNX step (`models/export.py`) run by ONNX Runtime on CPU,
    optionally quantised by ORT; the lockstep engine runs that exact file against the reference.

    - `none`: the fp32 export itself; `dynamic`: `quantize_dynamic` (int8 weights, activations
      quantised per call); `static`: `quantize_static` in QDQ format, activations calibrated on the
      first `calibration_puzzles` probe puzzles' real carries (every ACT step); `int4`: weight-only
      `MatMulNBits` with one scale per `block_size` input columns.
    - `op_types_to_quantize` / `nodes_to_exclude` go to ORT; `nodes_to_exclude` entries are glob
      patterns over the graph's node names (`*lm_head*`, `*self_attn/MatMul*`) and each must match.
    """

    quantization: Literal["none", "dynamic", "static", "int4"] = "dynamic"
    per_channel: bool = Field(False, description="dynamic/static: one weight scale per output channel")
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_puzzles: int = Field(8, ge=1, le=10_000)
    op_types_to_quantize: list[str] = Field(["MatMul", "Gemm"], min_length=1)
    nodes_to_exclude: list[str] = Field([], description="glob patterns over ONNX node names kept in float")
    block_size: Literal[16, 32, 64, 128] = Field(32, description="int4: input columns per scale")
    symmetric: bool = Field(True, description="int4: symmetric (no zero point)")
    batch_size: int | None = Field(None, ge=1, description="fixed batch of the exported graph; null = dynamic batch axis")
    flash_row: bool = Field(False, description="the puzzle-embedding row is a graph input; the table stays on the host")
    exporter: Exporter = "torchscript"
    profile_repeats: int = Field(20, ge=0, le=10_000, description="local ORT profile: timed puzzles (0 = no profile)")

    @model_validator(mode="after")
    def _int4_is_matmul_only(self) -> OnnxRuntimeSpec:
        if self.quantization == "int4" and set(self.op_types_to_quantize) - {"MatMul"}:
            raise ValueError("op_types_to_quantize: int4 (MatMulNBits) quantizes MatMul only")
        return self


class LayerWeights(_Part):
    """Mixed precision: the Linear layers matching `include` (and not the spec's `exclude`) get these
    weights instead of the spec's `weights`. The first entry that matches a layer wins."""

    include: list[str] = Field(min_length=1, description="globs over module names, e.g. L_level.layers.0.mlp_t.*")
    weights: WeightSpec


class CompressionSpec(_Part):
    """One candidate. See the module docstring for the parts and their order."""

    version: Literal[1] = 1
    name: str | None = Field(None, max_length=200, description="Display name; not part of the content hash.")
    checkpoint: str | None = Field(None, description="Candidate weights (same architecture) instead of the reference's.")
    depth: DepthSpec | None = None
    prune: PruneSpec | None = None
    noise: NoiseSpec | None = None
    puzzle_embedding: PuzzleEmbeddingSpec | None = None
    weights: WeightSpec | None = None
    activations: ActivationSpec | None = None
    precision: Precision | None = None
    carry: CarrySpec | None = None
    onnxruntime: OnnxRuntimeSpec | None = Field(None, description="Run the candidate as an ONNX Runtime artifact.")
    include: list[str] = Field(["*"], description="Glob patterns over module names that weight/activation quantisation applies to.")
    exclude: list[str] = Field([], description="Glob patterns kept in full precision (e.g. lm_head, q_head, *mlp_t*).")
    layers: list[LayerWeights] = Field([], description="Per-group weight overrides (mixed precision), applied before `weights`; "
                                       "`weights` then covers the selected layers no entry matched.")

    @model_validator(mode="after")
    def _compatible(self) -> CompressionSpec:
        if self.activations is not None and self.weights is not None and self.weights.method in ("int8-bnb", "int8-dynamic", "nf4", "fp4"):
            raise ValueError(f"activations: fake activation quantisation cannot wrap {self.weights.method} layers; "
                             "use int8-channel or int4 weights with it")
        if self.precision == "fp16" and self.weights is not None and self.weights.method == "int8-dynamic":
            raise ValueError("precision: int8-dynamic runs float32 activations; it cannot be combined with fp16")
        if not self.include:
            raise ValueError("include: must name at least one pattern")
        if self.layers and self.activations is not None:
            raise ValueError("layers: per-group weights cannot be combined with activation quantisation yet")
        if self.onnxruntime is not None:
            torch_only = [part for part in ("weights", "activations") if getattr(self, part) is not None]
            torch_only += ["layers"] if self.layers else []
            if self.precision in ("bf16", "fp16"):
                torch_only.append("precision")
            if torch_only:
                raise ValueError(f"onnxruntime: {', '.join(torch_only)} is PyTorch-side quantisation; with the onnxruntime "
                                 "backend ONNX Runtime quantises the exported fp32 graph (onnxruntime.quantization)")
        return self

    # -- identity -------------------------------------------------------------------------------
    def canonical_json(self) -> str:
        data = self.model_dump(mode="json", exclude={"name"})
        for later in ("onnxruntime", "noise", "layers"):  # added later: specs without them keep the hash they always had
            if not data.get(later):
                data.pop(later, None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON without `name`: equal specs hash equal, whatever their order or name."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def display_name(self) -> str:
        return self.name or describe(self)

    # -- files ----------------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, text: str) -> CompressionSpec:
        return cls.model_validate(yaml_mapping(text, "a spec file"))

    def to_dict(self) -> dict[str, Any]:
        """Compact JSON-able form: unset parts and top-level defaults left out; every part keeps
        all its fields (so discriminators like `method` survive)."""
        data = self.model_dump(mode="json", exclude_none=True)
        defaults = {name: field.get_default(call_default_factory=True) for name, field in type(self).model_fields.items()}
        return {k: v for k, v in data.items() if v != defaults.get(k)}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def describe(spec: CompressionSpec) -> str:
    """A short name from the parts, e.g. `int4/per_channel+carry-int8`."""
    parts = []
    if spec.checkpoint:
        parts.append("ckpt")
    if spec.depth:
        parts.append("depth-" + ",".join(f"{k}={v}" for k, v in spec.depth.model_dump(exclude_none=True).items()))
    if spec.prune:
        parts.append(f"prune-{spec.prune.structure}-{spec.prune.sparsity:g}")
    if spec.noise:
        parts.append(f"noise-{spec.noise.sigma:g}")
    if spec.puzzle_embedding:
        parts.append(f"emb-{spec.puzzle_embedding.method}{spec.puzzle_embedding.rank or ''}")
    if spec.weights:
        w = spec.weights
        parts.append(f"int{w.bits}/{w.granularity}{w.group_size or ''}" if isinstance(w, IntWeights) else w.method)
    if spec.layers:
        parts.append(f"mixed{len(spec.layers)}")
    if spec.activations:
        parts.append(f"act{spec.activations.bits}-{spec.activations.ranges}")
    if spec.precision:
        parts.append(spec.precision)
    if spec.carry:
        parts.append(f"carry-int{spec.carry.bits}")
    if spec.onnxruntime:
        parts.append(f"ort-{spec.onnxruntime.quantization}")
    return "+".join(parts) or "reference"


Family = Literal["depth", "prune", "noise", "carry", "activations", "scope", "weights", "precision", "puzzle_embedding",
                 "onnxruntime", "checkpoint", "reference"]


def family(spec: CompressionSpec) -> Family:
    """The method family a candidate belongs to, for leave-one-family-out validation: its most
    structural part wins (depth over prune over noise, ...); weights applied to a subset of the
    modules (`include` other than `*`) are the `scope` family."""
    if spec.depth:
        return "depth"
    if spec.prune:
        return "prune"
    if spec.noise:
        return "noise"
    if spec.carry:
        return "carry"
    if spec.activations:
        return "activations"
    if spec.weights or spec.layers:
        return "scope" if spec.include != ["*"] or spec.layers else "weights"
    if spec.onnxruntime:
        return "onnxruntime"
    if spec.puzzle_embedding:
        return "puzzle_embedding"
    if spec.checkpoint:
        return "checkpoint"
    if spec.precision and spec.precision != "fp32":
        return "precision"
    return "reference"
