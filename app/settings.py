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

from pydantic import Field, field_validator, model_validator
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
    lease_seconds: int = Field(60, ge=1)
    heartbeat_seconds: float = Field(5.0, gt=0)

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

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
        resolved = Path(path).expanduser().resolve()
        roots = [root.expanduser().resolve() for root in self.register_roots]
        if roots and not any(resolved.is_relative_to(root) for root in roots):
            raise ValueError(f"{path} is outside the allowed folders (CARRYGATE_REGISTER_ROOTS)")
        return resolved

    @model_validator(mode="after")
    def _derived_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'carrygate.db'}"
        if not self.artifact_store:
            self.artifact_store = str(self.data_dir / "artifacts")
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError(f"heartbeat_seconds ({self.heartbeat_seconds}) must be below lease_seconds ({self.lease_seconds})")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
