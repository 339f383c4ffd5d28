"""Load and save reasoner checkpoints without ever executing pickled code.

Formats read (TRM_FACTS §4):
- official TRM `step_N` files: a `torch.save`d state_dict, keys prefixed by any of `_orig_mod.`,
  `model.`, `inner.`, with `all_config.yaml` beside it (its `arch:` block);
- official HRM `checkpoint` files, the same layout;
- carrygate's own format: a folder with `model.safetensors` + `config.json` (and `card.md` for the
  zoo). `save_checkpoint` writes it.

Pickles are read with `torch.load(weights_only=True)` only, so a file carrying code is refused.

The official `all_config.yaml` lacks `vocab_size`, `seq_len` and `num_puzzle_identifiers`; they are
completed from tensor shapes, from a `dataset.json` (beside the checkpoint, in its `data_paths`, or
passed explicitly) or from the caller's inputs. Whatever stays unknown is an error that names it.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models import build_model
from models.config import HRMConfig, ModelConfig, TRMConfig
from models.reasoner import RecursiveReasoner

OWN_WEIGHTS = "model.safetensors"
OWN_CONFIG = "config.json"
OFFICIAL_PREFIXES = ("_orig_mod.", "model.", "inner.")
_CONFIG_ADAPTER: TypeAdapter[TRMConfig | HRMConfig] = TypeAdapter(ModelConfig)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says which file, key or field is wrong."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: RecursiveReasoner
    config: TRMConfig | HRMConfig
    source_format: str  # "carrygate" | "official-trm" | "official-hrm"
    path: Path


# -- reading tensors -------------------------------------------------------------------------------
def _torch_load_safely(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(f"{path}: refused to unpickle (weights_only=True): {str(err).splitlines()[0]}") from err
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {str(err).splitlines()[0]}") from err
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path}: expected a state_dict (str -> Tensor), got {type(obj).__name__}")
    return dict(obj)


def _safetensors_load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from err


def strip_official_prefixes(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`_orig_mod.model.inner.X` (or any suffix of that chain) -> `X`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key
        for prefix in OFFICIAL_PREFIXES:
            name = name.removeprefix(prefix)
        if name in out:
            raise CheckpointError(f"two keys map to {name!r} after stripping {OFFICIAL_PREFIXES}")
        out[name] = value
    return out


# -- completing the official config ----------------------------------------------------------------
def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a mapping")
    return data


def _find_dataset_json(ckpt_dir: Path, all_config: Mapping[str, Any]) -> Path | None:
    candidates = [ckpt_dir / "dataset.json"]
    paths = all_config.get("data_paths") or all_config.get("data_path") or []
    for p in [paths] if isinstance(paths, str) else list(paths):
        for base in (Path.cwd(), ckpt_dir, *ckpt_dir.parents):
            for split in ("test", "train"):
                candidates.append(base / str(p) / split / "dataset.json")
    return next((c for c in candidates if c.is_file()), None)


def _arch_fields(arch: Mapping[str, Any], is_hrm: bool) -> dict[str, Any]:
    """The official `arch:` block -> our config fields. Training-only keys are dropped."""
    fields = set((HRMConfig if is_hrm else TRMConfig).model_fields)
    out = {k: v for k, v in arch.items() if k in fields and k != "arch"}
    if not is_hrm and out.get("pos_encodings") not in ("rope", "learned"):
        out["pos_encodings"] = "none"  # the official TRM treats any other string as no positions
    return out


def complete_config(
    fields: dict[str, Any],
    state: Mapping[str, torch.Tensor],
    *,
    is_hrm: bool,
    dataset_json: Path | None = None,
    seq_len: int | None = None,
) -> TRMConfig | HRMConfig:
    """Fill `vocab_size`, `num_puzzle_identifiers`, `seq_len` and validate."""
    fields = dict(fields)
    meta: dict[str, Any] = {}
    if dataset_json is not None:
        try:
            meta = json.loads(dataset_json.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{dataset_json}: unreadable dataset.json: {err}") from err

    if "embed_tokens.embedding_weight" in state:
        fields["vocab_size"] = state["embed_tokens.embedding_weight"].shape[0]
    elif "vocab_size" in meta:
        fields["vocab_size"] = meta["vocab_size"]
    if fields.get("puzzle_emb_ndim", 0) > 0 and "puzzle_emb.weights" in state:
        fields["num_puzzle_identifiers"] = state["puzzle_emb.weights"].shape[0]
    elif "num_puzzle_identifiers" in meta:
        fields["num_puzzle_identifiers"] = meta["num_puzzle_identifiers"]
    else:
        fields.setdefault("num_puzzle_identifiers", 1)

    hidden = int(fields.get("hidden_size", 0)) or 1
    ndim = int(fields.get("puzzle_emb_ndim", 0))
    prefix = math.ceil(ndim / hidden) if is_hrm or fields.get("puzzle_emb_len", 16) == 0 else fields.get("puzzle_emb_len", 16)
    from_shapes: int | None = None
    if "L_level.layers.0.mlp_t.down_proj.weight" in state:
        from_shapes = state["L_level.layers.0.mlp_t.down_proj.weight"].shape[0] - prefix
    elif "embed_pos.embedding_weight" in state:
        from_shapes = state["embed_pos.embedding_weight"].shape[0] - prefix
    known = {"checkpoint tensor shapes": from_shapes, "dataset.json": meta.get("seq_len"), "the inputs given": seq_len}
    known = {k: v for k, v in known.items() if v is not None}
    if len(set(known.values())) > 1:
        raise CheckpointError(f"seq_len disagrees between sources: {known}")
    if known:
        fields["seq_len"] = next(iter(known.values()))
    elif "seq_len" not in fields:
        raise CheckpointError(
            "seq_len cannot be determined: the checkpoint's shapes do not fix it (attention with rope/none), "
            "and no dataset.json was found next to it or in its data_paths; pass --data or --inputs"
        )
    fields["arch"] = "hrm" if is_hrm else "trm"
    try:
        return _CONFIG_ADAPTER.validate_python(fields)
    except ValidationError as err:
        raise CheckpointError(f"invalid model config: {err}") from err


# -- matching a state_dict to a model --------------------------------------------------------------
def _state_problems(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], limit: int | None = None) -> list[str]:
    """Missing, unexpected and mis-shaped tensors (at most `limit` of each), in words."""
    missing = sorted(set(expected) - set(state))[:limit]
    extra = sorted(set(state) - set(expected))[:limit]
    misshaped = [f"{k}: checkpoint {tuple(state[k].shape)} != model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape][:limit]
    return (([f"missing tensors {missing}"] if missing else []) + ([f"unexpected tensors {extra}"] if extra else [])
            + (["mis-shaped tensors [" + "; ".join(misshaped) + "]"] if misshaped else []))


def load_state_into(model: RecursiveReasoner, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load: every missing, extra or mis-shaped tensor is named in the error."""
    expected = model.state_dict()
    problems = _state_problems(expected, state)
    if problems:
        raise CheckpointError(f"{source}: " + ", ".join(problems))
    # Cast to the model's dtypes (fp32 weights; H_init/L_init in the forward dtype), as the
    # official load_state_dict into bf16 buffers does.
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in expected.items()}, strict=True, assign=True)


MAX_BUFFER_BYTES = 1 << 30
"""Cap on the buffers a config implies beyond the checkpoint's own tensors (e.g. a rope cache sized by seq_len)."""


def check_fits(config: TRMConfig | HRMConfig, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Refuse a config/state pair before any allocation: the model is built on the meta device (shapes only),
    every tensor must match the checkpoint's, and derived buffers must stay under `MAX_BUFFER_BYTES`. So a
    config.json claiming a giant model (a memory bomb) fails here instead of exhausting memory."""
    with torch.device("meta"):
        shell = build_model(config)
    expected = shell.state_dict()
    problems = _state_problems(expected, state, limit=10)
    if problems:
        raise CheckpointError(f"{source}: the config does not match the weights: " + ", ".join(problems))
    buffers = sum(b.numel() * b.element_size() for name, b in shell.named_buffers() if name not in expected)
    if buffers > MAX_BUFFER_BYTES:
        raise CheckpointError(f"{source}: the config implies {buffers / 2**30:.1f} GiB of buffers "
                              f"(limit {MAX_BUFFER_BYTES / 2**30:.0f} GiB)")


# -- public API ------------------------------------------------------------------------------------
def resolve_weights(path: Path) -> tuple[str, Path]:
    """-> (format, weights file)."""
    if path.is_dir():
        if (path / OWN_WEIGHTS).is_file():
            return "carrygate", path / OWN_WEIGHTS
        for name in ("checkpoint",):
            if (path / name).is_file():
                return "official", path / name
        steps = sorted(path.glob("step_*"), key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else -1)
        steps = [s for s in steps if s.name.split("_")[1].isdigit()]
        if steps:
            return "official", steps[-1]
        raise CheckpointError(f"{path}: no {OWN_WEIGHTS}, `checkpoint` or `step_N` file in this folder")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.suffix == ".safetensors":
        return "carrygate", path
    return "official", path


def load_checkpoint(
    path: str | Path,
    *,
    dataset_json: str | Path | None = None,
    seq_len: int | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedCheckpoint:
    """Load any supported checkpoint into an eval-mode model.

    Args:
        path: a zoo/own-format folder, an official `step_N` / `checkpoint` file, or its folder.
        dataset_json: an official `dataset.json` to take `seq_len` etc. from.
        seq_len: the width of the inputs that will be fed (used when nothing else fixes it).
        overrides: config fields to replace (e.g. `{"forward_dtype": "float32"}`).
    Raises:
        CheckpointError: with a message naming the file, field or tensor at fault.
    """
    path = Path(path)
    fmt, weights = resolve_weights(path)
    if fmt == "carrygate":
        config_path = weights.parent / OWN_CONFIG
        if not config_path.is_file():
            raise CheckpointError(f"{weights}: missing {OWN_CONFIG} beside it")
        try:
            fields = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_path}: invalid JSON: {err}") from err
        fields.update(overrides or {})
        try:
            config = _CONFIG_ADAPTER.validate_python(fields)
        except ValidationError as err:
            raise CheckpointError(f"{config_path}: invalid model config: {err}") from err
        state = _safetensors_load(weights)
        source_format = "carrygate"
    else:
        state = strip_official_prefixes(_torch_load_safely(weights))
        yaml_path = weights.parent / "all_config.yaml"
        if not yaml_path.is_file():
            raise CheckpointError(f"{weights}: official checkpoints need all_config.yaml beside them (not found)")
        all_config = _read_yaml(yaml_path)
        arch = all_config.get("arch")
        if not isinstance(arch, dict):
            raise CheckpointError(f"{yaml_path}: no `arch:` mapping")
        is_hrm = any(k.startswith("H_level.") for k in state) or "hrm_act" in str(arch.get("name", ""))
        fields = _arch_fields(arch, is_hrm) | dict(overrides or {})
        ds = Path(dataset_json) if dataset_json else _find_dataset_json(weights.parent, all_config)
        config = complete_config(fields, state, is_hrm=is_hrm, dataset_json=ds, seq_len=seq_len)
        source_format = "official-hrm" if is_hrm else "official-trm"
    if seq_len is not None and seq_len != config.seq_len:
        raise CheckpointError(f"inputs have {seq_len} tokens per example but the model's seq_len is {config.seq_len}")
    check_fits(config, state, str(weights))
    model = build_model(config)
    load_state_into(model, state, str(weights))
    return LoadedCheckpoint(model=model.eval(), config=config, source_format=source_format, path=weights)


def save_checkpoint(model: RecursiveReasoner, folder: str | Path) -> Path:
    """Write carrygate's own format: `model.safetensors` (official names) + `config.json`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / OWN_WEIGHTS))
    (folder / OWN_CONFIG).write_text(json.dumps(model.config.model_dump(), indent=2) + "\n")
    return folder
