"""The checkpoint loader against hostile files: random bytes, truncated zips, tensors larger than their
storage, giant shapes in headers and configs (memory bombs refused before any allocation).
Pickles carrying code: tests/unit/test_checkpoint.py."""

from __future__ import annotations

import json
import resource
import struct
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carrygate.models import build_model
from carrygate.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.conftest import tiny_trm
from tests.unit.test_checkpoint import ARCH_TRM, write_official

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a valid official step_N file for tiny_trm()."""
    path = write_official(tmp_path_factory.mktemp("official"), build_model(tiny_trm()).state_dict(), ARCH_TRM)
    return path.read_bytes()


@FUZZ
@given(blob=st.binary(max_size=4096))
def test_random_bytes_are_refused(tmp_path: Path, blob: bytes) -> None:
    folder = tmp_path / "random"
    folder.mkdir(exist_ok=True)
    (folder / "all_config.yaml").write_text(yaml.safe_dump({"arch": ARCH_TRM}))
    (folder / "step_1").write_bytes(blob)
    with pytest.raises(CheckpointError):
        load_checkpoint(folder / "step_1", seq_len=9)
    (folder / "model.safetensors").write_bytes(blob)
    (folder / "config.json").write_text(json.dumps(tiny_trm().model_dump()))
    with pytest.raises(CheckpointError):
        load_checkpoint(folder / "model.safetensors")


@FUZZ
@given(fraction=st.floats(0.0, 0.999))
def test_truncated_zips_are_refused(tmp_path: Path, official: bytes, fraction: float) -> None:
    folder = tmp_path / "truncated"
    folder.mkdir(exist_ok=True)
    (folder / "all_config.yaml").write_text(yaml.safe_dump({"arch": ARCH_TRM}))
    (folder / "step_1").write_bytes(official[: int(len(official) * fraction)])
    with pytest.raises(CheckpointError):
        load_checkpoint(folder / "step_1", seq_len=9)


def test_flipped_bytes_never_crash_the_loader(tmp_path: Path, official: bytes) -> None:
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump({"arch": ARCH_TRM}))
    generator = torch.Generator().manual_seed(0)
    for i in range(40):
        blob = bytearray(official)
        for position in torch.randint(0, len(blob), (8,), generator=generator).tolist():
            blob[position] ^= 0xFF
        (tmp_path / f"step_{i}").write_bytes(bytes(blob))
        try:
            load_checkpoint(tmp_path / f"step_{i}", seq_len=9)
        except CheckpointError:
            pass  # refused with a message, or (bytes inside tensor data) loaded: both are fine


def test_config_claiming_a_giant_model_is_refused_before_allocation(tmp_path: Path) -> None:
    folder = save_checkpoint(build_model(tiny_trm()), tmp_path / "bomb")
    config = json.loads((folder / "config.json").read_text())
    before = _max_rss_mb()
    (folder / "config.json").write_text(json.dumps(config | {"hidden_size": 2**18, "num_heads": 2**12}))  # ~1 TB of weights
    with pytest.raises(CheckpointError, match="does not match the weights"):
        load_checkpoint(folder)
    (folder / "config.json").write_text(json.dumps(config | {"seq_len": 2**31}))  # a rope cache of 2**31 positions
    with pytest.raises(CheckpointError, match="does not match the weights|GiB of buffers"):
        load_checkpoint(folder)
    assert _max_rss_mb() - before < 200


def test_safetensors_header_with_giant_shape_is_refused(tmp_path: Path) -> None:
    folder = save_checkpoint(build_model(tiny_trm()), tmp_path / "header")
    header = json.dumps({"lm_head.weight": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 16]}}).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    before = _max_rss_mb()
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(folder)
    header = b"{" + b" " * 64
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 2**60) + header)  # a header length of 2**60 bytes
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(folder)
    assert _max_rss_mb() - before < 200


def test_tensor_larger_than_its_storage_is_refused(tmp_path: Path) -> None:
    state = build_model(tiny_trm()).state_dict()
    # a view claiming 2**40 elements over a 16-element storage
    state["lm_head.weight"] = torch.zeros(16).as_strided((2**20, 2**20), (0, 0))
    path = write_official(tmp_path, state, ARCH_TRM)
    before = _max_rss_mb()
    with pytest.raises(CheckpointError):
        load_checkpoint(path, seq_len=9)
    assert _max_rss_mb() - before < 200
