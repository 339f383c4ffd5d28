"""`options.aihub` of a job, as data: which Qualcomm AI Hub devices, which token reference, how long to wait.

The API validates it (`app/schemas.py`) and the worker runs it (`workers/profile/aihub.py`, the
client); it sits below both because it is plain pydantic data, like the compression specs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AiHubOptions(BaseModel):
    """`options.aihub` of a job: which phones, which token, how long to wait."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[str] = Field(min_length=1, max_length=8, description="AI Hub device names, e.g. 'Samsung Galaxy S24 (Family)'")
    token_ref: str | None = Field(None, description="env:NAME or file:/path read on the worker; default CARRYGATE_AIHUB_TOKEN")
    puzzles: int = Field(1, ge=1, le=64, description="probe puzzles whose per-step carries are sent")
    compile_options: str = Field("", max_length=500, description="AI Hub compile options, e.g. '--target_runtime qnn_context_binary'")
    connect_timeout_seconds: float = Field(20.0, gt=0, le=600)
    job_timeout_seconds: float = Field(1800.0, gt=0, le=6 * 3600)

    @field_validator("token_ref")
    @classmethod
    def _reference_form(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("env:") or value.startswith("file:")):
            raise ValueError("must be env:NAME or file:/path (a reference to the secret, never the token itself)")
        return value
