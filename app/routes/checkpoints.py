"""Checkpoints: streamed upload (content-addressed, deduplicated), registration by path, listing."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi import Path as Path_
from sqlalchemy.orm import Session

from carrygate.app.deps import SessionDep, SettingsDep, StoreDep
from carrygate.app.errors import PayloadTooLarge, Unprocessable
from carrygate.app.schemas import CheckpointList, CheckpointRead, CheckpointRegister
from carrygate.app.services import checkpoints
from carrygate.app.services.paths import confined_checkpoint
from carrygate.models.checkpoint import OWN_CONFIG, CheckpointError, read_config_json, read_config_text
from carrygate.models.files import SMALL_FILE_LIMIT, UnsafeFile, sha256_regular
from carrygate.store.tables import Checkpoint
from carrygate.workers.artifacts import CHUNK, StoredArtifact, TooLarge

router = APIRouter(prefix="/checkpoints", tags=["checkpoints"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CheckpointRead,
             responses={200: {"description": "the same content was uploaded before"}, 413: {"description": "over the upload limit"},
                        409: {"description": "the same weights were stored with a different config"}})
def upload_checkpoint(
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="weights: an official step_N / HRM checkpoint file, or model.safetensors")],
    config: Annotated[UploadFile | None, File(description="all_config.yaml (official) or config.json (carrygate format)")] = None,
    dataset_json: Annotated[UploadFile | None, File(description="optional dataset.json fixing seq_len etc.")] = None,
    name: Annotated[str | None, Form()] = None,
) -> Checkpoint:
    """Upload a checkpoint. The body is streamed to the artifact store in 1 MiB chunks while hashing.
    (A plain `def`: FastAPI runs it in the thread pool, so a long upload never blocks the event loop.)"""
    _refuse_declared_oversize(request, settings.upload_limit_bytes + 1_000_000)
    filename = file.filename or "checkpoint"
    meta = _upload_meta(filename, _read_small(config, "config"), _read_small(dataset_json, "dataset_json"))
    try:
        stored = store.put_stream(_nonempty(iter(lambda: file.file.read(CHUNK), b"")), limit=settings.upload_limit_bytes)
    except TooLarge as err:
        raise PayloadTooLarge(str(err)) from err
    return _record_upload(session, response, stored, meta, name or filename)


@router.put("/raw/{filename}", status_code=status.HTTP_201_CREATED, response_model=CheckpointRead,
            responses={200: {"description": "the same content was uploaded before"}, 413: {"description": "over the upload limit"},
                       409: {"description": "the same weights were stored with a different config"}})
async def upload_checkpoint_raw(
    filename: Annotated[str, Path_(description="the weights' file name: step_N, checkpoint (HRM) or model.safetensors")],
    request: Request,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    name: str | None = None,
    x_carrygate_config: Annotated[str | None, Header(description="base64 of all_config.yaml or config.json")] = None,
    x_carrygate_dataset_json: Annotated[str | None, Header(description="base64 of dataset.json")] = None,
) -> Checkpoint:
    """Upload the weights as the raw request body (`application/octet-stream`), the small config files in
    headers. One pass from socket to artifact store while hashing: no multipart parsing and no spooled
    temporary copy, which is what bounds `POST /checkpoints` for GB-sized ARC checkpoints."""
    _refuse_declared_oversize(request, settings.upload_limit_bytes)
    meta = _upload_meta(filename, _b64(x_carrygate_config, "x-carrygate-config"),
                        _b64(x_carrygate_dataset_json, "x-carrygate-dataset-json"))
    body = request.stream()

    def chunks() -> Iterator[bytes]:  # runs in a worker thread; each chunk is awaited on the event loop
        while True:
            try:
                chunk = anyio.from_thread.run(body.__anext__)
            except StopAsyncIteration:
                return
            if chunk:
                yield chunk

    try:
        stored = await anyio.to_thread.run_sync(partial(store.put_stream, _nonempty(chunks()), limit=settings.upload_limit_bytes))
    except TooLarge as err:
        raise PayloadTooLarge(str(err)) from err
    return await anyio.to_thread.run_sync(_record_upload, session, response, stored, meta, name or filename)


def _read_small(upload: UploadFile | None, field: str) -> bytes | None:
    """A config-sized part of a multipart upload, read with a limit (the part is spooled already, but
    reading it whole into memory is ours to bound)."""
    if upload is None:
        return None
    data = upload.file.read(SMALL_FILE_LIMIT + 1)
    if len(data) > SMALL_FILE_LIMIT:
        raise PayloadTooLarge(f"{field}: over the limit of {SMALL_FILE_LIMIT} bytes")
    return data


def _nonempty(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`chunks`, refusing (422) a stream that ends without a byte; raised inside `put_stream`, which then
    removes its temporary file, so a 0-byte upload leaves nothing behind."""
    empty = True
    for chunk in chunks:
        empty = empty and not chunk
        yield chunk
    if empty:
        raise Unprocessable("file: the weights file is empty (0 bytes)")


def _refuse_declared_oversize(request: Request, limit: int) -> None:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"upload of {length} bytes exceeds the limit of {limit}")


def _b64(value: str | None, header: str) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as err:
        raise Unprocessable(f"{header}: not base64: {err}") from err


def _upload_meta(filename: str, config: bytes | None, dataset_json: bytes | None) -> dict[str, Any]:
    """What the loader will need beside the weights, validated now so a bad upload is a 422, not a failed job."""
    meta: dict[str, Any] = {"weights_name": Path(filename).name}
    if filename.endswith(".safetensors"):
        if config is None:
            raise Unprocessable("config: a carrygate-format upload (model.safetensors) needs its config.json")
        try:
            meta |= {"format": "carrygate", "config_json": json.loads(config)}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise Unprocessable(f"config: invalid JSON: {err}") from err
        if not isinstance(meta["config_json"], dict):
            raise Unprocessable("config: config.json must hold an object")
        return meta
    meta["format"] = "official"
    if config is not None:
        try:
            meta["all_config_yaml"] = config.decode("utf-8")
        except UnicodeDecodeError as err:
            raise Unprocessable(f"config: all_config.yaml is not UTF-8 text ({err.reason} at byte {err.start})") from err
    if dataset_json is not None:
        try:
            meta["dataset_json"] = json.loads(dataset_json)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise Unprocessable(f"dataset_json: invalid JSON: {err}") from err
    return meta


def _record_upload(session: Session, response: Response, stored: StoredArtifact, meta: dict[str, Any], original_name: str) -> Checkpoint:
    recorded = checkpoints.record_checkpoint(session=session, sha256=stored.sha256, size_bytes=stored.size, meta=meta,
                                             original_name=original_name, storage_path=stored.path, source="upload")
    if not recorded.created:
        response.status_code = status.HTTP_200_OK
    return recorded.checkpoint


def _registered_meta(path: Path, weights: Path) -> dict[str, Any]:
    """The config files beside registered weights, read with a size limit; invalid JSON, a non-object or
    bytes that are not UTF-8 are a 422 naming the file."""
    meta: dict[str, Any] = {"format": "carrygate" if weights.suffix == ".safetensors" else "official", "path": str(path)}
    try:
        if (weights.parent / OWN_CONFIG).exists():
            meta["config_json"] = read_config_json(weights.parent / OWN_CONFIG)
        elif (weights.parent / "all_config.yaml").exists():
            meta["all_config_yaml"] = read_config_text(weights.parent / "all_config.yaml")
    except CheckpointError as err:
        raise Unprocessable(f"path: {err}") from err
    return meta


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=CheckpointRead,
             responses={200: {"description": "already registered"}, 422: {"description": "path not readable or outside the register roots"},
                        409: {"description": "the same weights were stored with a different config"}})
def register_checkpoint(body: CheckpointRegister, response: Response, session: SessionDep, settings: SettingsDep) -> Checkpoint:
    """Register a checkpoint the workers can read where it is (a shared path under `register_roots`).
    Workers hash the file again before loading it, so a file changed after registration fails its job."""
    path, weights = confined_checkpoint(settings, body.path, "path")
    try:
        sha256, size = sha256_regular(weights, limit=settings.register_limit_bytes)
    except UnsafeFile as err:
        raise Unprocessable(f"path: {err}") from err
    recorded = checkpoints.record_checkpoint(session=session, sha256=sha256, size_bytes=size, meta=_registered_meta(path, weights),
                                             original_name=body.name or path.name, storage_path=str(path), source="registered")
    if not recorded.created:
        response.status_code = status.HTTP_200_OK
    return recorded.checkpoint


@router.get("", response_model=CheckpointList)
def list_checkpoints(session: SessionDep, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                     offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> CheckpointList:
    page = checkpoints.list_checkpoints(session=session, limit=limit, offset=offset)
    return CheckpointList(data=[CheckpointRead.model_validate(r) for r in page.rows], count=page.count)


@router.get("/{checkpoint_id}", response_model=CheckpointRead, responses={404: {"description": "no such checkpoint"}})
def get_checkpoint(checkpoint_id: str, session: SessionDep) -> Checkpoint:
    return checkpoints.get_checkpoint(session=session, checkpoint_id=checkpoint_id)
