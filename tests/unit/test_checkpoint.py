"""Loading official-layout files and our own format; refusing hostile or broken ones."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

from carrygate.models import build_model
from carrygate.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.conftest import tiny_trm

ARCH_TRM = {
    "name": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
    "loss": {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"},
    "halt_exploration_prob": 0.1, "halt_max_steps": 3, "H_cycles": 2, "L_cycles": 2, "H_layers": 0, "L_layers": 2,
    "hidden_size": 16, "num_heads": 2, "expansion": 2, "puzzle_emb_ndim": 16, "pos_encodings": "rope",
    "forward_dtype": "float32", "mlp_t": False, "puzzle_emb_len": 2, "no_ACT_continue": True,
}


def write_official(folder: Path, state: dict[str, torch.Tensor], arch: dict[str, object], prefix: str = "_orig_mod.model.inner.",
                   name: str = "step_42", **top: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({prefix + k: v for k, v in state.items()}, folder / name)
    (folder / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch, "data_paths": ["data/x"], **top}))
    return folder / name


def _outputs(model: torch.nn.Module, seq_len: int = 9) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    inputs = torch.randint(0, 5, (2, seq_len), generator=g)
    return torch.stack([o.logits for o in model.steps(inputs, torch.tensor([1, 2]))])


@pytest.mark.parametrize("prefix", ["_orig_mod.model.inner.", "model.inner.", "inner.", ""])
def test_official_prefixes_load_to_identical_outputs(tmp_path: Path, prefix: str) -> None:
    model = build_model(tiny_trm())
    path = write_official(tmp_path, model.state_dict(), ARCH_TRM, prefix=prefix)
    loaded = load_checkpoint(path, seq_len=9)
    assert loaded.source_format == "official-trm"
    assert loaded.config.vocab_size == 5 and loaded.config.num_puzzle_identifiers == 3  # from tensor shapes
    with torch.inference_mode():
        assert torch.equal(_outputs(loaded.model), _outputs(model))


def test_folder_resolves_to_latest_step(tmp_path: Path) -> None:
    model = build_model(tiny_trm())
    write_official(tmp_path, build_model(tiny_trm()).state_dict(), ARCH_TRM, name="step_7")
    write_official(tmp_path, model.state_dict(), ARCH_TRM, name="step_100")
    loaded = load_checkpoint(tmp_path, seq_len=9)
    assert loaded.path.name == "step_100"
    assert torch.equal(loaded.model.lm_head.weight, model.lm_head.weight)


def test_seq_len_from_mlp_t_shapes_and_learned_positions(tmp_path: Path) -> None:
    arch = ARCH_TRM | {"mlp_t": True, "pos_encodings": "none"}
    model = build_model(tiny_trm(mlp_t=True, pos_encodings="none"))
    assert load_checkpoint(write_official(tmp_path / "a", model.state_dict(), arch)).config.seq_len == 9
    arch = ARCH_TRM | {"pos_encodings": "learned", "forward_dtype": "bfloat16"}
    model = build_model(tiny_trm(pos_encodings="learned", forward_dtype="bfloat16"))
    loaded = load_checkpoint(write_official(tmp_path / "b", model.state_dict(), arch))
    assert loaded.config.seq_len == 9 and loaded.model.H_init.dtype == torch.bfloat16


def test_seq_len_from_dataset_json_beside_checkpoint(tmp_path: Path) -> None:
    path = write_official(tmp_path, build_model(tiny_trm()).state_dict(), ARCH_TRM)
    (tmp_path / "dataset.json").write_text(json.dumps({"seq_len": 9, "vocab_size": 5, "num_puzzle_identifiers": 3}))
    assert load_checkpoint(path).config.seq_len == 9


def test_seq_len_from_data_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_official(tmp_path / "ckpt", build_model(tiny_trm()).state_dict(), ARCH_TRM)
    (tmp_path / "data" / "x" / "test").mkdir(parents=True)
    (tmp_path / "data" / "x" / "test" / "dataset.json").write_text(json.dumps({"seq_len": 9}))
    monkeypatch.chdir(tmp_path)
    assert load_checkpoint(path).config.seq_len == 9


def test_unknown_seq_len_is_a_clear_error(tmp_path: Path) -> None:
    path = write_official(tmp_path, build_model(tiny_trm()).state_dict(), ARCH_TRM)
    with pytest.raises(CheckpointError, match="seq_len cannot be determined"):
        load_checkpoint(path)


def test_conflicting_seq_len_is_a_clear_error(tmp_path: Path) -> None:
    model = build_model(tiny_trm(mlp_t=True, pos_encodings="none"))
    path = write_official(tmp_path, model.state_dict(), ARCH_TRM | {"mlp_t": True})
    with pytest.raises(CheckpointError, match="seq_len disagrees"):
        load_checkpoint(path, seq_len=10)


def test_misshaped_missing_and_extra_tensors_are_named(tmp_path: Path) -> None:
    state = build_model(tiny_trm()).state_dict()
    state["L_level.layers.1.mlp.down_proj.weight"] = torch.zeros(16, 257)
    del state["lm_head.weight"]
    state["bogus.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(write_official(tmp_path, state, ARCH_TRM), seq_len=9)
    message = str(err.value)
    assert "L_level.layers.1.mlp.down_proj.weight: checkpoint (16, 257) != model (16, 256)" in message
    assert "missing tensors ['lm_head.weight']" in message and "unexpected tensors ['bogus.weight']" in message


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"lm_head.weight": torch.zeros(1), "payload": _Exploit(marker)}, folder / "step_1")  # type: ignore[dict-item]
    (folder / "all_config.yaml").write_text(yaml.safe_dump({"arch": ARCH_TRM}))
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(folder / "step_1", seq_len=9)
    assert not marker.exists()
    # a bare pickle (not a torch zip) with code is refused too
    (folder / "step_2").write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(CheckpointError):
        load_checkpoint(folder / "step_2", seq_len=9)
    assert not marker.exists()


def test_corrupt_files_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "step_1").write_bytes(b"\x00garbage" * 10)
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump({"arch": ARCH_TRM}))
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint|refused"):
        load_checkpoint(tmp_path / "step_1", seq_len=9)
    own = tmp_path / "own"
    save_checkpoint(build_model(tiny_trm()), own)
    (own / "model.safetensors").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(own)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing")


def test_official_file_needs_all_config(tmp_path: Path) -> None:
    torch.save(build_model(tiny_trm()).state_dict(), tmp_path / "step_1")
    with pytest.raises(CheckpointError, match="all_config.yaml"):
        load_checkpoint(tmp_path / "step_1", seq_len=9)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    model = build_model(tiny_trm(forward_dtype="bfloat16", pos_encodings="learned"))
    save_checkpoint(model, tmp_path)
    loaded = load_checkpoint(tmp_path)
    assert loaded.source_format == "carrygate" and loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    with torch.inference_mode():
        assert torch.equal(_outputs(loaded.model), _outputs(model))


def test_hrm_checkpoint_file(tmp_path: Path) -> None:
    from carrygate.models import HRMConfig

    config = HRMConfig(seq_len=9, vocab_size=5, num_puzzle_identifiers=3, puzzle_emb_ndim=16, H_cycles=2, L_cycles=2, H_layers=2,
                       L_layers=2, hidden_size=16, expansion=2, num_heads=2, halt_max_steps=2, forward_dtype="float32")
    model = build_model(config)
    arch = {"name": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", **config.model_dump(exclude={"arch", "seq_len", "vocab_size",
                                                                                                    "num_puzzle_identifiers"})}
    path = write_official(tmp_path, model.state_dict(), arch, name="checkpoint")
    loaded = load_checkpoint(tmp_path, seq_len=9)
    assert loaded.source_format == "official-hrm" and loaded.path == path
    with torch.inference_mode():
        assert torch.equal(_outputs(loaded.model), _outputs(model))
