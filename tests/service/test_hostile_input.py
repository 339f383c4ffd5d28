"""Hostile and careless input, round two (issue 13), over a real HTTP server on 127.0.0.1.

- class 1: NaN, Infinity, -Infinity and 1e400 in *every* numeric field of every JSON body (found by
  walking the OpenAPI spec) and every numeric query parameter: a 422 whose body is strict JSON;
- class 2: a malformed config.json / all_config.yaml in a registered folder: a 422 naming the file;
- class 5: every path a request names stays inside CARRYGATE_REGISTER_ROOTS, symlinks included, and
  the worker checks candidate checkpoints again;
- class 6: FIFOs, devices and /proc entries as weights, configs or probe files: refused at once;
- class 7: /openapi.json, /docs and /redoc need a key once keys exist, unless CARRYGATE_PUBLIC_DOCS;
- smaller: JSON string length, 0-byte checkpoints, 405 with the full `Allow`.

Each request has a 15 s client timeout, so a request that hangs fails its test instead of the suite.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest

from carrygate.app.guard import MAX_JSON_STRING, json_safe, validation_error_handler
from carrygate.app.main import create_app
from tests.conftest import make_tiny_zoo_model
from tests.service.live_server import live_server
from tests.service.test_api import INT8, settings_for, start_worker
from tests.service.waiting import FINISHED

BAD_NUMBERS = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity", "1e400": "1e400", "-1e400": "-1e400"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_zoo_model(tmp_path_factory.mktemp("zoo") / "tiny", steps=3, puzzles=8, seed=0)


@pytest.fixture
def roots(tmp_path: Path, tiny: Path) -> tuple[Path, Path]:
    """(an allowed root holding a copy of the tiny checkpoint at root/tiny, a folder outside it)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    shutil.copytree(tiny, root / "tiny")
    shutil.copytree(tiny, outside / "tiny")
    return root, outside


def strict_json(response: httpx.Response) -> Any:
    """The body, parsed as RFC 8259 JSON: NaN and Infinity would raise here."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant} in a response")

    return json.loads(response.content, parse_constant=refuse)


# -- class 1: non-finite numbers -------------------------------------------------------------------
def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def numeric_paths(schema: dict[str, Any], spec: dict[str, Any], prefix: tuple[Any, ...] = (), depth: int = 0) -> set[tuple[Any, ...]]:
    """Every path (keys, 0 for list items) at which `schema` admits a number."""
    schema = _resolve(schema, spec)
    if depth > 8:
        return set()
    out: set[tuple[Any, ...]] = set()
    if schema.get("type") in ("number", "integer"):
        out.add(prefix)
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            out |= numeric_paths(option, spec, prefix, depth + 1)
    for name, field in schema.get("properties", {}).items():
        out |= numeric_paths(field, spec, (*prefix, name), depth + 1)
    if isinstance(schema.get("items"), dict):
        out |= numeric_paths(schema["items"], spec, (*prefix, 0), depth + 1)
    return out


def body_with(path: tuple[Any, ...], literal: str) -> bytes:
    """A JSON body holding `literal` (raw, e.g. NaN) at `path`, every container on the way made up."""
    placeholder = "__HOSTILE_NUMBER__"
    value: Any = placeholder
    for key in reversed(path):
        value = [value] if key == 0 else {key: value}
    return json.dumps(value).replace(f'"{placeholder}"', literal).encode()


def json_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                out.append((method.upper(), path.replace("{", "").replace("}", ""), content["application/json"]["schema"]))
    return out


def test_non_finite_numbers_in_every_numeric_field_are_a_serialisable_422(database_url: str, tmp_path: Path) -> None:
    with live_server(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        spec = client.get("/openapi.json").json()
        operations = json_operations(spec)
        tried = 0
        for method, url, schema in operations:
            for path in sorted(numeric_paths(schema, spec), key=str):
                for literal in BAD_NUMBERS.values():
                    response = client.request(method, url, content=body_with(path, literal), headers={"content-type": "application/json"})
                    assert response.status_code == 422, (method, url, path, literal, response.text)
                    detail = strict_json(response)["detail"]
                    assert detail[0]["loc"] == ["body", *path] and detail[0]["type"] == "non_finite_number", detail
                    tried += 1
        # the walk reached the nested spec, policy and webhook fields (a regression in the walk would pass vacuously)
        assert tried >= 5 * 30, tried
        for literal in BAD_NUMBERS.values():  # also with a body FastAPI parses as JSON without a content type
            response = client.post("/webhooks", content=f'{{"url": "http://x", "events": ["job.failed"], "fidelity_threshold": {literal}}}')
            assert response.status_code == 422 and strict_json(response)["detail"][0]["loc"] == ["body", "fidelity_threshold"]


def test_non_finite_and_huge_numbers_in_every_numeric_query_parameter(database_url: str, tmp_path: Path) -> None:
    with live_server(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        spec = client.get("/openapi.json").json()
        tried = 0
        for path, operations in spec["paths"].items():
            for method, operation in operations.items():
                for parameter in operation.get("parameters", []):
                    if parameter["in"] != "query" or not numeric_paths(parameter["schema"], spec):
                        continue
                    url = path.replace("{", "").replace("}", "")
                    for value in ("nan", "inf", "-inf", "1e400", "9" * 5000):
                        response = client.request(method.upper(), url, params={parameter["name"]: value})
                        assert response.status_code in (404, 422), (url, parameter["name"], value, response.text)
                        strict_json(response)
                        tried += 1
        assert tried >= 5 * 6, tried


def test_the_validation_handler_serialises_non_finite_inputs() -> None:
    """The other half of class 1: whatever reaches validation (a float NaN from a query string, a future
    route that parses its own body) is echoed JSON-safe, never as a 500."""
    import asyncio

    from fastapi.exceptions import RequestValidationError

    nan, inf = float("nan"), float("inf")
    error = RequestValidationError([{"type": "less_than_equal", "loc": ("body", "x"), "msg": "m", "input": [nan, {"y": inf}],
                                     "ctx": {"le": -inf, "raw": b"\xff"}}])
    response = asyncio.run(validation_error_handler(None, error))  # type: ignore[arg-type]
    body = json.loads(response.body, parse_constant=lambda c: pytest.fail(c))
    assert response.status_code == 422 and body["detail"][0]["input"] == ["nan", {"y": "inf"}]
    assert json_safe({"a": (1.5, -inf, None, object)})["a"][:3] == [1.5, "-inf", None]
    assert math.isfinite(json_safe(1e308))


def test_json_strings_have_a_length_limit(database_url: str, tmp_path: Path, tiny: Path) -> None:
    with live_server(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        long = "x" * (MAX_JSON_STRING + 1)
        for url, body in [("/jobs", {"checkpoint_id": "c", "candidates": [{"include": [long]}]}),
                          ("/checkpoints/register", {"path": long}), ("/keys", {"name": "k", "scopes": ["read"], long: 1})]:
            response = client.post(url, json=body)
            assert response.status_code == 422 and strict_json(response)["detail"][0]["type"] == "string_too_long", response.text
        # fields with their own, tighter limit keep it
        ckpt = client.post("/checkpoints/register", json={"path": str(tiny)}).json()["id"]
        response = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8], "tags": ["t" * 201]})
        assert response.status_code == 422 and "tags" in response.text
        assert client.post("/jobs", content=b"[" * 10 + b"1" * 2_000_000, headers={"content-type": "application/json"}).status_code == 413


# -- class 2: malformed config files ----------------------------------------------------------------
@pytest.mark.parametrize(("name", "content", "message"), [
    ("config.json", b"{not json", "invalid JSON"), ("config.json", b"\xff\xfe\x00{", "not UTF-8"),
    ("config.json", b"[1, 2, 3]", "expected a JSON object"), ("all_config.yaml", b"arch: {name: \xff\xfe}\n", "not UTF-8"),
])
def test_a_malformed_config_in_a_registered_folder_is_a_422_naming_the_file(database_url: str, tmp_path: Path, tiny: Path, name: str,
                                                                             content: bytes, message: str) -> None:
    folder = tmp_path / "ckpt"
    if name == "config.json":
        shutil.copytree(tiny, folder)
    else:  # an official layout: step_N + all_config.yaml
        folder.mkdir()
        (folder / "step_1").write_bytes(b"weights")
    (folder / name).write_bytes(content)
    with live_server(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        response = client.post("/checkpoints/register", json={"path": str(folder)})
        assert response.status_code == 422, response.text
        assert message in response.text and str(folder / name) in strict_json(response)["detail"]
        malformed_upload = client.post("/checkpoints", files={"file": ("step_1", b"weights"), "config": ("all_config.yaml", b"\xff\xfe")})
        assert malformed_upload.status_code == 422 and "not UTF-8" in malformed_upload.text


# -- class 5: register roots ---------------------------------------------------------------------------
def test_every_named_path_stays_inside_the_register_roots(database_url: str, tmp_path: Path, roots: tuple[Path, Path]) -> None:
    root, outside = roots
    (root / "linked-weights").mkdir()  # a symlinked weights file inside the root that points out of it
    shutil.copy(root / "tiny" / "config.json", root / "linked-weights" / "config.json")
    (root / "linked-weights" / "model.safetensors").symlink_to(outside / "tiny" / "model.safetensors")
    (root / "linked-config").mkdir()  # real weights, config symlinked out
    shutil.copy(root / "tiny" / "model.safetensors", root / "linked-config" / "model.safetensors")
    (root / "linked-config" / "config.json").symlink_to(outside / "tiny" / "config.json")
    (root / "linked-folder").symlink_to(outside / "tiny", target_is_directory=True)
    (root / "linked-data").mkdir()
    (root / "linked-data" / "test").symlink_to(outside / "tiny" / "data" / "test", target_is_directory=True)
    settings = settings_for(database_url, tmp_path, register_roots=[root])
    with live_server(create_app(settings, start_workers=False)) as client:
        for bad in ("linked-weights", "linked-config", "linked-folder", "../outside/tiny"):
            response = client.post("/checkpoints/register", json={"path": str(root / bad)})
            assert response.status_code == 422 and "outside the allowed folders" in response.text, (bad, response.text)
        ckpt = client.post("/checkpoints/register", json={"path": str(root / "tiny")}).json()["id"]
        cases = [
            ({"candidates": [{"name": "qat", "checkpoint": str(outside / "tiny")}]}, "candidates[0].checkpoint"),
            ({"candidates": [INT8, {"name": "qat", "checkpoint": str(root / "linked-weights")}]}, "candidates[1].checkpoint"),
            ({"candidates": [{"name": "qat", "checkpoint": str(root / "linked-folder")}]}, "candidates[0].checkpoint"),
            ({"candidates": [INT8], "probe": {"dataset_path": str(outside / "tiny" / "data")}}, "probe.dataset_path"),
            ({"candidates": [INT8], "probe": {"dataset_path": str(root / "linked-data")}}, "probe.dataset_path"),
        ]
        for body, field in cases:
            response = client.post("/jobs", json={"checkpoint_id": ckpt, **body})
            assert response.status_code == 422 and field in response.text and "outside the allowed folders" in response.text, response.text
        probe = {"dataset_path": str(root / "tiny" / "data"), "split": "../../outside/tiny/data/test"}
        traversal = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8], "probe": probe})
        assert traversal.status_code == 422 and "split" in traversal.text
        inside = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [{"name": "qat", "checkpoint": str(root / "tiny")}]})
        assert inside.status_code == 202, inside.text


def test_unusable_paths_are_a_422(database_url: str, tmp_path: Path) -> None:
    """Found by schemathesis: `~0` made expanduser raise RuntimeError (a 500); symlink loops and NUL bytes likewise."""
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    with live_server(create_app(settings_for(database_url, tmp_path, register_roots=[tmp_path]), start_workers=False)) as client:
        for path in ("~0", "~no-such-user/x", "a\x00b", str(tmp_path / "loop-a"), ""):
            response = client.post("/checkpoints/register", json={"path": path})
            assert response.status_code == 422, (path, response.text)
            strict_json(response)
            body = {"checkpoint_id": "c", "candidates": [{"checkpoint": path}], "probe": {"dataset_path": path}}
            assert client.post("/jobs", json=body).status_code in (404, 422), path


def test_the_worker_checks_candidate_and_probe_paths_again(database_url: str, tmp_path: Path, roots: tuple[Path, Path]) -> None:
    """Jobs accepted by an API without roots (or stored before a check existed) are refused by a worker
    that has them; a probe file swapped for a FIFO after submission fails the job instead of hanging it."""
    root, outside = roots
    open_api = settings_for(database_url, tmp_path)
    with live_server(create_app(open_api, start_workers=False)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(root / "tiny")}).json()["id"]
        escaping = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [{"name": "qat", "checkpoint": str(outside / "tiny")}]})
        shutil.copytree(root / "tiny" / "data", root / "fifo-data")
        fifo_probe = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8],
                                                "probe": {"dataset_path": str(root / "fifo-data")}})
        assert escaping.status_code == fifo_probe.status_code == 202
        os.unlink(root / "fifo-data" / "test" / "all__inputs.npy")
        os.mkfifo(root / "fifo-data" / "test" / "all__inputs.npy")
        worker = start_worker(open_api, CARRYGATE_REGISTER_ROOTS=str(root))
        try:
            jobs = {name: _wait(client, response.json()["id"]) for name, response in (("escaping", escaping), ("fifo", fifo_probe))}
        finally:
            worker.kill()
        assert jobs["escaping"]["status"] == "failed", jobs["escaping"]
        assert "candidates[0] (qat).checkpoint" in jobs["escaping"]["error"] and "outside the allowed folders" in jobs["escaping"]["error"]
        assert jobs["fifo"]["status"] == "failed" and "FIFO" in jobs["fifo"]["error"], jobs["fifo"]


# -- class 4: non-finite weights in the reference ------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_reference_weights_fail_the_job_naming_the_tensor(database_url: str, tmp_path: Path, tiny: Path, value: float) -> None:
    import torch

    from carrygate.models.checkpoint import load_checkpoint, save_checkpoint

    broken = load_checkpoint(tiny).model
    with torch.no_grad():
        broken.L_level.layers[0].mlp.down_proj.weight[0, 0] = value
    folder = save_checkpoint(broken, tmp_path / "broken")
    shutil.copytree(tiny / "data", folder / "data")
    settings = settings_for(database_url, tmp_path)
    with live_server(create_app(settings, start_workers=False)) as client:
        ckpt = client.post("/checkpoints/register", json={"path": str(folder)}).json()["id"]
        job_id = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8]}).json()["id"]
        worker = start_worker(settings)
        try:
            job = _wait(client, job_id)
        finally:
            worker.kill()
    assert job["status"] == "failed" and job["verdict"] is None, job
    assert "non-finite weights (NaN or Inf) in L_level.layers.0.mlp.down_proj.weight" in job["error"], job["error"]


def _wait(client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in FINISHED:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s")


# -- class 6: special files ---------------------------------------------------------------------------
SPECIAL = {
    "fifo": lambda p: os.mkfifo(p),
    "dev_zero": lambda p: p.symlink_to("/dev/zero"),
    "proc_entry": lambda p: p.symlink_to("/proc/self/environ"),
    "empty": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_special_files_are_refused_before_they_are_opened(database_url: str, tmp_path: Path, tiny: Path, kind: str) -> None:
    weights = tmp_path / "weights"  # a special file in place of the weights
    shutil.copytree(tiny, weights)
    (weights / "model.safetensors").unlink()
    SPECIAL[kind](weights / "model.safetensors")
    official = tmp_path / "official"  # ... named step_N in an official folder
    official.mkdir()
    (official / "all_config.yaml").write_text("arch: {name: trm}\n")
    SPECIAL[kind](official / "step_5")
    config = tmp_path / "config"  # ... or in place of the config beside real weights
    shutil.copytree(tiny, config)
    (config / "config.json").unlink()
    SPECIAL[kind](config / "config.json")
    with live_server(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        for path, named in ((weights, "model.safetensors"), (weights / "model.safetensors", "model.safetensors"),
                            (official, "step_5"), (config, "config.json")):
            response = client.post("/checkpoints/register", json={"path": str(path)})
            if kind == "empty" and named == "config.json":  # an empty config.json is a regular file holding invalid JSON
                assert response.status_code == 422 and "invalid JSON" in response.text
                continue
            assert response.status_code == 422 and named in response.text, (path, response.text)
        ckpt = client.post("/checkpoints/register", json={"path": str(tiny)}).json()["id"]
        probe = tmp_path / "probe"
        shutil.copytree(tiny / "data", probe)
        (probe / "test" / "dataset.json").unlink()
        SPECIAL[kind](probe / "test" / "dataset.json")
        response = client.post("/jobs", json={"checkpoint_id": ckpt, "candidates": [INT8], "probe": {"dataset_path": str(probe)}})
        if kind != "empty":
            assert response.status_code == 422 and "probe.dataset_path" in response.text, response.text


def test_a_0_byte_upload_is_refused_and_nothing_is_stored(database_url: str, tmp_path: Path, tiny: Path) -> None:
    settings = settings_for(database_url, tmp_path)
    config = (tiny / "config.json").read_bytes()
    with live_server(create_app(settings, start_workers=False)) as client:
        multipart = client.post("/checkpoints", files={"file": ("model.safetensors", b""), "config": ("config.json", config)})
        assert multipart.status_code == 422 and "empty" in multipart.text
        import base64

        raw = client.put("/checkpoints/raw/step_1", content=b"", headers={"X-Carrygate-Config": base64.b64encode(b"arch: {}").decode()})
        assert raw.status_code == 422 and "empty" in raw.text
        assert client.get("/checkpoints").json()["count"] == 0
    assert not [p for p in Path(settings.artifact_store).rglob("*") if p.is_file()]


# -- class 7: the docs ---------------------------------------------------------------------------------
DOCS = ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect")


@pytest.mark.parametrize("public", [False, True])
def test_docs_need_a_key_once_keys_exist_unless_public_docs(database_url: str, tmp_path: Path, public: bool) -> None:
    with live_server(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        assert all(client.get(path).status_code == 200 for path in DOCS)  # open mode: no key exists yet
    settings = settings_for(database_url, tmp_path, api_keys=["s3cret"], public_docs=public)
    with live_server(create_app(settings, start_workers=False)) as client:
        for path in DOCS:
            assert client.get(path).status_code == (200 if public else 401), path
            assert client.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
        assert client.get("/healthz").status_code == 200
        assert client.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()["paths"]["/jobs"]


# -- smaller: 405 ------------------------------------------------------------------------------------
def test_405_names_every_method_of_the_path(database_url: str, tmp_path: Path) -> None:
    with live_server(create_app(settings_for(database_url, tmp_path), start_workers=False)) as client:
        spec = client.get("/openapi.json").json()
        for path, operations in spec["paths"].items():
            documented = sorted(m.upper() for m in operations)
            unsupported = next(m for m in ("PATCH", "PUT", "DELETE", "POST") if m not in documented)
            response = client.request(unsupported, path.replace("{", "x").replace("}", ""))
            assert response.status_code == 405, (path, unsupported)
            assert sorted(response.headers["allow"].split(", ")) == documented, (path, response.headers.get("allow"))
