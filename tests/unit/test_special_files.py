"""Special files, bounded reads and non-finite weights at the loader (issue 13, classes 2, 4 and 6).

Every case must answer at once: a FIFO opened the ordinary way blocks until a writer appears, so each
call runs in a thread with a deadline and a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from carrygate.models import build_model
from carrygate.models.checkpoint import CheckpointError, load_checkpoint, resolve_weights, save_checkpoint
from carrygate.models.files import UnsafeFile, check_regular, confine, read_bytes, read_text, sha256_regular
from tests.conftest import tiny_trm


def within(seconds: float, call: Callable[[], Any]) -> BaseException | Any:
    """Run `call` in a thread; fail if it has not returned after `seconds`. Returns its result or exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as err:  # handed back to the test
            out.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"blocked for more than {seconds} s"
    return out[0]


@pytest.fixture
def zoo(tmp_path: Path) -> Path:
    return save_checkpoint(build_model(tiny_trm()), tmp_path / "tiny")


SPECIAL = {
    "fifo": lambda p: os.mkfifo(p),
    "dev_zero": lambda p: p.symlink_to("/dev/zero"),
    "dev_null": lambda p: p.symlink_to("/dev/null"),
    "proc_entry": lambda p: p.symlink_to("/proc/self/status"),
    "folder": lambda p: p.mkdir(),
}


@pytest.mark.parametrize("kind", sorted(SPECIAL))
def test_special_files_are_refused_without_blocking(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "special"
    SPECIAL[kind](path)
    for call in (lambda: read_bytes(path), lambda: read_text(path), lambda: sha256_regular(path, limit=1 << 30),
                 lambda: check_regular(path, limit=1 << 30)):
        err = within(5, call)
        assert isinstance(err, UnsafeFile) and str(path) in str(err), err


@pytest.mark.parametrize("kind", sorted(set(SPECIAL) - {"folder"}))
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_special_file_in_a_checkpoint_folder_is_a_checkpoint_error(zoo: Path, kind: str, name: str) -> None:
    (zoo / name).unlink()
    SPECIAL[kind](zoo / name)
    err = within(10, lambda: load_checkpoint(zoo))
    assert isinstance(err, CheckpointError) and name in str(err), err


def test_a_fifo_named_step_n_is_refused_by_resolve_weights(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "step_7")
    err = within(5, lambda: resolve_weights(tmp_path))
    assert isinstance(err, CheckpointError) and "FIFO" in str(err)


def test_reads_are_bounded_and_empty_weights_refused(tmp_path: Path, zoo: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 1001)
    with pytest.raises(UnsafeFile, match="over the limit of 1000"):
        read_bytes(big, limit=1000)
    assert read_bytes(big, limit=1001) == b"x" * 1001
    with pytest.raises(UnsafeFile, match="over the limit"):
        sha256_regular(big, limit=1000)
    (zoo / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(zoo)
    with pytest.raises(UnsafeFile, match="empty"):
        sha256_regular(zoo / "model.safetensors", limit=1 << 20)


@pytest.mark.parametrize(("content", "message"), [(b"{not json", "invalid JSON"), (b"\xff\xfe{}", "not UTF-8"),
                                                  (b"[1, 2]", "expected a JSON object")])
def test_malformed_config_json_names_the_file(zoo: Path, content: bytes, message: str) -> None:
    (zoo / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as raised:
        load_checkpoint(zoo)
    assert str(zoo / "config.json") in str(raised.value)


def test_confine_resolves_symlinks_before_checking_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "w").write_bytes(b"x")
    (root / "link").symlink_to(outside / "w")
    (root / "real").write_bytes(b"x")
    assert confine(root / "real", [root]) == (root / "real").resolve()
    for escaping in (root / "link", root / ".." / "outside" / "w", outside / "w"):
        with pytest.raises(UnsafeFile, match="outside the allowed folders"):
            confine(escaping, [root])
    assert confine(outside / "w", []) == (outside / "w").resolve()  # no roots: the embedded single-user default


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_every_tensor_is_checked_for_finiteness_at_load(tmp_path: Path, value: float) -> None:
    model = build_model(tiny_trm())
    with torch.no_grad():
        model.L_level.layers[1].mlp.down_proj.weight[3, 2] = value
    folder = save_checkpoint(model, tmp_path / "broken")
    loaded = load_checkpoint(folder)  # a candidate's weights: loaded, the offenders named (the gate says no_go)
    assert loaded.non_finite == ("L_level.layers.1.mlp.down_proj.weight",)
    with pytest.raises(CheckpointError, match=r"non-finite weights .* L_level\.layers\.1\.mlp\.down_proj\.weight"):
        load_checkpoint(folder, require_finite=True)  # a reference: refused, the job fails with this reason
    assert load_checkpoint(save_checkpoint(build_model(tiny_trm()), tmp_path / "fine"), require_finite=True).non_finite == ()


def test_config_json_is_read_with_a_limit(zoo: Path) -> None:
    fields = json.loads((zoo / "config.json").read_text())
    (zoo / "config.json").write_text(json.dumps(fields | {"padding": "x" * (17 << 20)}))
    with pytest.raises(CheckpointError, match="over the limit"):
        load_checkpoint(zoo)
