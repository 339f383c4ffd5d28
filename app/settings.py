"""Service configuration: one `Settings` object read from `CARRYGATE_*` environment variables.

This is the only place that reads the environment. Routes receive it through a dependency, workers
call `get_settings()` once at start-up, and tests override it (or call `get_settings.cache_clear()`).
Derived defaults (database URL, artifact store) follow `data_dir` unless set explicitly.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

GIB = 1024**3


class Settings(BaseSettings):
    """Everything the API, the workers and the CLI need to know about their environment."""

    model_config = SettingsConfigDict(env_prefix="CARRYGATE_", env_ignore_empty=True, extra="ignore")

    data_dir: Path = Field(default=Path("~/.carrygate"), description="Root of the embedded set-up's files.")
    database_url: str = Field("", description="SQLAlchemy URL; default: a SQLite file in data_dir.")
    artifact_store: str = Field("", description="Local directory or any fsspec URL; default: data_dir/artifacts.")
    executor: Literal["local", "celery"] = "local"
    worker_concurrency: int = Field(1, ge=1)
    upload_limit_bytes: int = Field(4 * GIB, ge=1)
    default_policy: str | None = Field(None, description="Gate policy as a JSON string or a path to a JSON/YAML file.")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Accepted API keys (JSON list or comma-separated); empty disables authentication."
    )
    register_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders under which POST /checkpoints/register and probe dataset_path may point (JSON list or "
        "comma-separated); empty allows any path the server can read (the single-user embedded default).",
    )
    register_limit_bytes: int = Field(64 * GIB, ge=1, description="Largest weights file POST /checkpoints/register reads.")
    lease_seconds: int = Field(60, ge=1)
    heartbeat_seconds: float = Field(5.0, gt=0)
    # -- compute budget (models/budget.py, app/services/jobs.py, workers/pipeline.py) --
    max_job_gflop: float = Field(
        1e7, gt=0, allow_inf_nan=False,
        description="Largest job accepted, in GFLOPs: gflops per puzzle x puzzles, summed over the reference and every "
        "candidate (depth overrides included). 1e7 (10 PFLOP) fits a 400-puzzle ARC probe with a few candidates.")
    max_job_seconds: float = Field(
        6 * 3600.0, gt=0, allow_inf_nan=False,
        description="A running job is stopped and failed after this many seconds (checked before every ACT step).")
    public_docs: bool = Field(
        False, description="Serve /docs, /redoc and /openapi.json without a key once keys exist (off: they need a read key).")
    # -- API keys (app/auth.py) --
    submit_rate_limit_per_minute: int = Field(60, ge=1, description="Job submissions per API key per minute (a key may override it).")
    rate_limit_storage: str = Field(
        "database", description="Where the submission rate limit keeps its state, shared by every API process (app/ratelimit.py): "
        "'database' (the rate_limit_hits table of CARRYGATE_DATABASE_URL) or a Redis URL (redis://host:6379/0).")
    # -- the API processes (app/cli/service.py) --
    api_workers: int = Field(1, ge=1, description="uvicorn worker processes serving the API on one port (`carrygate serve "
                                                  "--api-workers` overrides it); the job workers and dispatchers run once, beside them.")
    # -- webhooks (workers/webhooks.py) --
    webhook_allow_private: bool = Field(
        False, description="Allow webhook URLs that resolve to loopback, link-local or private addresses (off: SSRF guard).")
    webhook_retry_window_seconds: float = Field(24 * 3600.0, gt=0, description="How long a failing delivery is retried.")
    webhook_backoff_seconds: float = Field(10.0, gt=0, description="Delay before the first retry; doubles with each attempt.")
    webhook_backoff_max_seconds: float = Field(900.0, gt=0, description="Longest delay between two attempts.")
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_poll_seconds: float = Field(1.0, gt=0)
    # -- Celery executor (workers/celery_app.py) --
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker for CARRYGATE_EXECUTOR=celery.")
    celery_queue: str = Field("carrygate", description="Queue the API sends jobs to (workers pick queues with --queues).")
    celery_visibility_timeout_seconds: int = Field(
        12 * 3600, ge=60, description="Redis redelivers an unacknowledged task after this; keep it above the longest job.")
    dispatch_poll_seconds: float = Field(1.0, gt=0, description="How often the API sends queued jobs to the broker.")
    redispatch_after_seconds: float = Field(
        600.0, gt=0, description="A queued job whose task was lost (broker flushed) is sent again after this long.")
    # -- the engine (models/fast.py, models/reference_cache.py, models/devices.py) --
    device: str = Field("cpu", description="Where workers run models: cpu, cuda or cuda:N. Checked when a worker starts; a missing "
                                           "or unusable device stops it with that reason, never a silent CPU run.")
    reference_cache_dir: Path | None = Field(
        None, description="Reference cache across jobs (one trace per checkpoint, probe and settings); default: data_dir/reference-cache.")
    reference_cache_entry_bytes: int = Field(
        2 * GIB, ge=0, description="Largest trace kept (per-step reference states); a larger reference is recomputed. "
                                   "0 turns the cache off.")
    reference_cache_total_bytes: int = Field(8 * GIB, ge=0, description="The cache is trimmed to this, least recently used first.")
    validity_dir: Path | None = Field(
        None, description="Folder of `validity-<model>.json` files (carrygate validate --json) for /dashboard/validity; default: the "
                          "repository's results/ folder when it exists.")
    aihub_token: SecretStr | None = Field(None, description="Qualcomm AI Hub API token for jobs with options.aihub and no token_ref; "
                                                            "workers read CARRYGATE_AIHUB_TOKEN from their own environment")

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_limit_storage(cls, value: str) -> str:
        if value != "database" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"rate_limit_storage: 'database' or a Redis URL (redis://, rediss://, unix://), got {value!r}")
        return value

    @field_validator("api_keys", "register_roots", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    def readable_path(self, path: str | Path) -> Path:
        """`path` resolved (symlinks followed) if it lies under a register root; ValueError otherwise."""
        from carrygate.models.files import confine

        return confine(path, self.register_roots)

    @model_validator(mode="after")
    def _derived_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'carrygate.db'}"
        if not self.artifact_store:
            self.artifact_store = str(self.data_dir / "artifacts")
        if self.reference_cache_dir is None:
            self.reference_cache_dir = self.data_dir / "reference-cache"
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(f"heartbeat_seconds ({self.heartbeat_seconds}) must be below lease_seconds ({self.lease_seconds})")
        if self.celery_visibility_timeout_seconds <= self.lease_seconds:
            raise ValueError("celery_visibility_timeout_seconds must exceed lease_seconds (a task must outlive its lease)")
        if self.executor == "celery" and self.celery_visibility_timeout_seconds <= self.max_job_seconds:
            # Redis would hand a job that is still (legitimately) running to a second worker.
            raise ValueError(f"celery_visibility_timeout_seconds ({self.celery_visibility_timeout_seconds}) must exceed "
                             f"max_job_seconds ({self.max_job_seconds:g})")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
