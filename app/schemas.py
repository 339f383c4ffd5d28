"""API schemas (pydantic), separate from the ORM tables in `store/`.

Families follow `XCreate / XRead / XList{data, count}`. Compression specs and gate policies are the
library's own pydantic models, so a malformed spec is a 422 that names the field.

Over 400 lines on purpose: every request and response body of the API, one section per router in the
order of the routes, so the OpenAPI document is read (and reviewed) from one file. Nothing here has logic
beyond field validation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from carrygate.gate import Decision, GatePolicy
from carrygate.models.aihub import AiHubOptions
from carrygate.models.compress.spec import CompressionSpec
from carrygate.models.halting import Halting
from carrygate.models.recommend.results import Budget, Finalist, Point, SensitivityMap, Tolerance
from carrygate.models.tasks.arc import ArcVersion
from carrygate.models.tasks.probes import Builder
from carrygate.models.vocabulary import Numerics
from carrygate.store.vocabulary import ApiScope, DeliveryStatus, JobStatus, WebhookEvent


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Input(_Schema):
    """A request body: strict types, so `true` is not a number and `"5"` not an integer (schemathesis'
    negative mode found both accepted). Compression specs and gate policies keep their own configs."""

    model_config = ConfigDict(extra="forbid", strict=True)


PATH_MAX = 4096  # Linux PATH_MAX
NAME_MAX = 200


class CheckpointRegister(_Input):
    path: str = Field(description="A path or fsspec URL the workers can read: a zoo folder, a step_N file or an HRM checkpoint file.",
                      examples=["/models/trm-sudoku/step_9765"], min_length=1, max_length=PATH_MAX)
    name: str | None = Field(None, max_length=NAME_MAX)


class CheckpointRead(_Schema):
    model_config = ConfigDict(from_attributes=True, extra="forbid", json_schema_extra={"examples": [{
        "id": "0b6f7c0e4a8d4c1f9e2a7b3c5d6e8f01", "sha256": "9c1e…e07a", "architecture": "trm",
        "config": {"format": "carrygate", "weights_name": "model.safetensors", "config_json": {"arch": "trm", "hidden_size": 128}},
        "size_bytes": 1303552, "original_name": "sudoku-mlp", "source": "upload", "created_at": "2026-11-29T05:40:00Z"}]})

    id: str
    sha256: str
    architecture: str | None
    config: dict[str, Any]
    size_bytes: int
    original_name: str
    source: str
    created_at: datetime


class CheckpointList(_Schema):
    data: list[CheckpointRead]
    count: int


class SudokuArgs(_Input):
    givens: int = Field(30, ge=17, le=81, description="filled cells per puzzle")


class MazeArgs(_Input):
    size_side: int = Field(30, ge=3, le=64, description="maze side; when left out: sqrt of the checkpoint's seq_len")
    loops: float = Field(0.1, ge=0.0, le=1.0, allow_inf_nan=False)


class ArcArgs(_Input):
    version: ArcVersion = "arc1"


BUILDER_ARGS: dict[str, type[_Input]] = {"sudoku": SudokuArgs, "maze": MazeArgs, "arc": ArcArgs}


class BuilderProbe(_Input):
    """Probe puzzles made by one of the offline builders (held out from any training data)."""

    builder: Builder
    size: int = Field(64, ge=1, le=100_000, description="number of probe puzzles")
    seed: int = Field(1234, ge=0, le=2**32 - 1)
    args: dict[str, Any] = Field(default_factory=dict, examples=[{"givens": 30}],
                                 description="sudoku: givens (17..81); maze: size_side (3..64), loops (0..1); arc: version")

    @model_validator(mode="after")
    def _known_args(self) -> BuilderProbe:
        # The builders size their arrays from these: an unchecked size_side of 10^9 was a memory bomb in the worker.
        BUILDER_ARGS[self.builder].model_validate(self.args)
        return self


class DatasetProbe(_Input):
    """Probe puzzles from an official dataset folder the workers can read (or the checkpoint's own `data/`)."""

    dataset_path: str | None = Field(None, description="official dataset folder; null = the zoo checkpoint's shipped data/",
                                     examples=["/data/sudoku-extreme-1k-aug-1000"], min_length=1, max_length=PATH_MAX)
    split: str = Field("test", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$", description="a folder name inside dataset_path")


class JobOptions(_Input):
    labels: bool = Field(True, description="also score cell accuracy and puzzle-exact (needs labels in the probe set)")
    limit: int | None = Field(None, ge=1, le=1_000_000, description="use only the first N probe puzzles")
    batch_size: int = Field(64, ge=1, le=4096)
    profile: bool = Field(False, description="also profile the deployable artifact (ONNX Runtime; later AI Hub)")
    aihub: AiHubOptions | None = Field(None, description="profile onnxruntime candidates on Qualcomm AI Hub devices (needs a token)")
    shards: int = Field(1, ge=1, le=256, description="Celery executor: split the probe puzzles into this many contiguous shards "
                        "(on batch boundaries) run by several workers and reduced exactly; the result equals an unsharded run")
    halting: Halting = Field(default_factory=Halting, description="fixed (the official evaluation) or adaptive: also each "
                             "puzzle stopped at its own first halting step, as a device host loop runs it (models/halting.py)")
    numerics: Numerics = Field("fast", description="fast: models/fast.py, the same maths as the official step with rounding "
                               "differences only (docs/benchmarks.md measures them); exact: the official eager step, bit for bit")


class JobCreate(_Input):
    checkpoint_id: str = Field(max_length=64)
    candidates: list[CompressionSpec] = Field(min_length=1, max_length=64)
    probe: Annotated[BuilderProbe | DatasetProbe, Field(union_mode="left_to_right")] = Field(default_factory=DatasetProbe)
    policy: GatePolicy = Field(default_factory=GatePolicy)
    options: JobOptions = Field(default_factory=JobOptions)
    tags: list[Annotated[str, Field(max_length=NAME_MAX)]] = Field(default_factory=list, max_length=32)

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [
                {
                    "checkpoint_id": "5f0c…",
                    "candidates": [{"name": "int8", "weights": {"method": "int8-channel"}},
                                   {"name": "int4-naive", "weights": {"method": "int4", "granularity": "per_tensor", "symmetric": True}}],
                    "probe": {"builder": "sudoku", "size": 64},
                    "policy": {"max_predicted_exact_drop": 0.02, "max_puzzle_exact_drop": 0.02},
                    "options": {"labels": True},
                    "tags": ["release-1.4"],
                }
            ]
        },
    )

    @model_validator(mode="after")
    def _unique_names(self) -> JobCreate:
        names = [c.name for c in self.candidates if c.name]
        if len(names) != len(set(names)):
            raise ValueError("candidates: names must be unique")
        return self


class CandidateRead(_Schema):
    model_config = ConfigDict(from_attributes=True, extra="forbid")

    id: str
    position: int
    name: str
    spec: dict[str, Any]
    spec_hash: str


class RuleRead(_Schema):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"rule": "min_fidelity_mean", "observed": 0.9492, "threshold": 0.99, "passed": False,
         "reason": "fidelity mean 0.9492 < 0.99"}]})

    rule: str
    observed: float | None
    threshold: float | None
    passed: bool | None
    reason: str
    interval: tuple[float, float] | None = Field(None, description="interval rules: the interval that was judged (gate/policy.py)")


class VerdictRead(_Schema):
    model_config = ConfigDict(from_attributes=True, extra="forbid", json_schema_extra={"examples": [{
        "job_id": "3d2c…", "scope": "job", "candidate": None, "decision": "no_go", "created_at": "2026-11-29T05:44:10Z",
        "rules": [{"rule": "candidates", "observed": 1, "threshold": 0, "passed": False,
                   "reason": "1 of 2 candidates no_go: int4-naive"}]}]})

    job_id: str
    scope: str = Field(description="'job' for the job-level verdict, else the candidate id")
    candidate: str | None = None
    decision: Decision
    rules: list[RuleRead]
    created_at: datetime


class VerdictList(_Schema):
    data: list[VerdictRead]
    count: int


class JobRead(_Schema):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "id": "3d2c…", "url": "http://127.0.0.1:8000/jobs/3d2c…", "status": "running", "progress": 0.5, "puzzles_done": 32,
        "puzzles_total": 64, "attempts": 1, "error": None, "checkpoint_id": "0b6f…", "task": "sudoku",
        "candidates": [{"id": "a1…", "position": 0, "name": "int8", "spec": {"name": "int8", "weights": {"method": "int8-channel"}},
                        "spec_hash": "5e0d…"}],
        "policy": {"max_predicted_exact_drop": 0.02}, "options": {"labels": True, "limit": None, "batch_size": 64, "profile": False},
        "tags": ["release-1.4"], "created_at": "2026-11-29T05:40:00Z", "started_at": "2026-11-29T05:40:01Z", "finished_at": None,
        "verdict": None, "candidate_verdicts": [], "result": None}]})

    id: str
    url: str
    status: JobStatus
    progress: float
    puzzles_done: int
    puzzles_total: int
    attempts: int
    error: str | None
    checkpoint_id: str
    task: Builder | None = Field(None, description="what the probe set holds (its builder, or what its dataset says); null = unknown")
    candidates: list[CandidateRead]
    policy: dict[str, Any]
    options: dict[str, Any]
    tags: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    verdict: VerdictRead | None = None
    candidate_verdicts: list[VerdictRead] = Field(default_factory=list)
    result: dict[str, Any] | None = Field(None, description="models/results.py EvaluationResult once the job succeeded")


class JobList(_Schema):
    data: list[JobRead]
    count: int


# -- recommendations (app/routes/recommendations.py) ---------------------------------------------------


class RecommendBudget(Budget):
    """Exactly one bound, as `carrygate recommend` takes one of its budget options."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="after")
    def _exactly_one(self) -> RecommendBudget:
        given = [name for name, value in self.model_dump().items() if value is not None]
        if len(given) != 1:
            raise ValueError(f"budget: give exactly one of {', '.join(Budget.model_fields)} (got {', '.join(given) or 'none'})")
        return self


class RecommendTolerance(Tolerance):
    """The predicted puzzle-exact drop's 90% upper end (default 0.02), or a fidelity floor instead."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _default_drop(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("max_predicted_drop") is None and data.get("min_fidelity") is None:
            return {**data, "max_predicted_drop": 0.02}
        return data


class RecommendOptions(_Input):
    limit: int | None = Field(None, ge=1, le=1_000_000, description="the full probe: its first N puzzles (finalists are confirmed on it)")
    search_puzzles: int = Field(128, ge=1, le=100_000, description="probe puzzles each search evaluation runs on (the first ones)")
    batch_size: int = Field(64, ge=1, le=4096)
    require_go: bool = Field(False, description="confirm a finalist only when the gate policy says go")
    onnxruntime: bool = Field(True, description="also try ONNX Runtime dynamic INT8 (when the worker has onnxruntime; "
                                                "its export costs seconds per candidate)")


class RecommendationCreate(_Input):
    checkpoint_id: str = Field(max_length=64)
    budget: RecommendBudget
    tolerance: RecommendTolerance = Field(default_factory=lambda: RecommendTolerance(max_predicted_drop=0.02))
    probe: Annotated[BuilderProbe | DatasetProbe, Field(union_mode="left_to_right")] = Field(default_factory=DatasetProbe)
    policy: GatePolicy = Field(default_factory=GatePolicy, description="the gate policy the finalists (and so the recommended spec) "
                               "are judged by")
    options: RecommendOptions = Field(default_factory=RecommendOptions)
    tags: list[Annotated[str, Field(max_length=NAME_MAX)]] = Field(default_factory=list, max_length=32)

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{
        "checkpoint_id": "5f0c…", "budget": {"max_weight_fraction": 0.25}, "tolerance": {"max_predicted_drop": 0.02},
        "options": {"limit": 500, "search_puzzles": 128}, "tags": ["release-1.4"]}]})


class Progress(_Schema):
    fraction: float = Field(ge=0.0, le=1.0)
    stage: str | None = Field(None, description="the search stage that ran last, and the candidate evaluations so far")


class RecommendedSpec(_Schema):
    name: str
    spec: dict[str, Any] = Field(description="the CompressionSpec (to_dict)")
    yaml: str = Field(description="the spec as YAML: `carrygate gate --spec best.yaml` accepts it as it is")
    finalist: Finalist = Field(description="its cost and its damage on the full probe")


class RecommendationVerdict(_Schema):
    decision: Decision = Field(description="the gate policy's decision on the recommended spec alone, on the full probe")
    rules: list[RuleRead]
    policy: dict[str, Any]


class RecommendationRead(_Schema):
    id: str
    url: str
    status: JobStatus
    progress: Progress
    attempts: int
    error: str | None
    checkpoint_id: str
    budget: dict[str, Any]
    tolerance: dict[str, Any]
    policy: dict[str, Any]
    options: dict[str, Any]
    tags: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    recommended: RecommendedSpec | None = Field(None, description="null until it succeeded, or when nothing met the tolerance")
    verdict: RecommendationVerdict | None = None
    front: list[Point] | None = Field(None, description="the Pareto front (weight bytes vs damage, search probe), cheapest first")
    sensitivity: SensitivityMap | None = None
    finalists: list[Finalist] | None = None
    notes: list[str] = Field(default_factory=list)
    evaluations: int | None = Field(None, description="candidate evaluations the search ran")
    result: dict[str, Any] | None = Field(None, description="the whole models/recommend Recommendation (every point evaluated)")


class RecommendationList(_Schema):
    data: list[RecommendationRead]
    count: int


# -- API keys and webhooks (app/routes/keys.py, app/routes/webhooks.py) -------------------------------


class ApiKeyCreate(_Input):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[ApiScope] = Field(min_length=1, description="admin includes submit, submit includes read")
    rate_limit_per_minute: int | None = Field(None, ge=1, le=100_000, description="job submissions per minute; null: the server default")


class ApiKeyRead(_Schema):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str = Field(description="the key's visible start, e.g. cg_1a2b3c4d")
    scopes: list[str]
    rate_limit_per_minute: int | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="the secret key; shown only in this response")


class ApiKeyList(_Schema):
    data: list[ApiKeyRead]
    count: int


class WebhookCreate(_Input):
    url: str = Field(min_length=1, max_length=2000, examples=["https://hooks.example.com/carrygate"])
    secret: str | None = Field(None, min_length=16, max_length=256, description="HMAC key; generated (and returned once) when omitted")
    events: list[WebhookEvent] = Field(min_length=1)
    fidelity_threshold: float | None = Field(None, ge=0, le=1, description="for fidelity.below_threshold: a candidate's mean "
                                             "trajectory fidelity below this fires the event")
    checkpoint_id: str | None = Field(None, max_length=36, description="only jobs on this checkpoint")
    tag: str | None = Field(None, max_length=200, description="only jobs carrying this tag")

    @model_validator(mode="after")
    def _threshold_with_event(self) -> WebhookCreate:
        if "fidelity.below_threshold" in self.events and self.fidelity_threshold is None:
            raise ValueError("fidelity_threshold: required with the fidelity.below_threshold event")
        return self


class WebhookRead(_Schema):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str
    events: list[str]
    fidelity_threshold: float | None
    checkpoint_id: str | None
    tag: str | None
    active: bool
    created_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(description="the signing secret; shown only in this response")


class WebhookList(_Schema):
    data: list[WebhookRead]
    count: int


class WebhookAttemptRead(_Schema):
    model_config = ConfigDict(from_attributes=True)

    number: int
    at: datetime
    status_code: int | None = Field(description="the receiver's HTTP status; null when no response came")
    error: str | None
    duration_ms: float


class WebhookDeliveryRead(_Schema):
    model_config = ConfigDict(from_attributes=True)

    id: str
    webhook_id: str
    event_id: str = Field(description="the idempotency id (also in the Carrygate-Event-Id header)")
    event: str
    job_id: str | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    expires_at: datetime
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    payload: dict[str, Any]
    attempt_log: list[WebhookAttemptRead]


class WebhookDeliveryList(_Schema):
    data: list[WebhookDeliveryRead]
    count: int
