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
import os
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

from carrygate.models import build_model
from carrygate.models.config import HRMConfig, ModelConfig, TRMConfig
from carrygate.models.files import GIB, UnsafeFile, check_regular, read_text
from carrygate.models.reasoner import RecursiveReasoner

OWN_WEIGHTS = "model.safetensors"
OWN_CONFIG = "config.json"
OFFICIAL_PREFIXES = ("_orig_mod.", "model.", "inner.")
_CONFIG_ADAPTER: TypeAdapter[TRMConfig | HRMConfig] = TypeAdapter(ModelConfig)
WEIGHTS_LIMIT = 64 * GIB
"""Largest weights file read (official ARC checkpoints are about 2 GB): a bound, so no read is unbounded."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says which file, key or field is wrong."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: RecursiveReasoner
    config: TRMConfig | HRMConfig
    source_format: str  # "carrygate" | "official-trm" | "official-hrm"
    path: Path
    non_finite: tuple[str, ...] = ()  # tensors holding NaN/Inf (at most 10 named), found at load time


def non_finite_tensors(state: Mapping[str, torch.Tensor], limit: int = 10) -> list[str]:
    """Names of the floating-point tensors holding NaN or Inf (at most `limit`). Checked in chunks, so
    a GB-sized mmapped table never needs a same-sized boolean copy."""
    found: list[str] = []
    for name, tensor in state.items():
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        flat = tensor.reshape(-1)
        step = 1 << 24
        if any(not bool(torch.isfinite(flat[i : i + step]).all()) for i in range(0, flat.numel(), step)):
            found.append(name)
            if len(found) >= limit:
                break
    return found


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
def read_config_text(path: Path) -> str:
    """A small config file beside a checkpoint: a regular UTF-8 file under `SMALL_FILE_LIMIT`, else CheckpointError naming it."""
    try:
        return read_text(path)
    except UnsafeFile as err:
        raise CheckpointError(str(err)) from err


def read_config_json(path: Path) -> dict[str, Any]:
    """`config.json` (or `dataset.json`) as an object; invalid JSON, non-UTF-8 bytes or a non-object
    are a CheckpointError naming the file."""
    try:
        data = json.loads(read_config_text(path))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: invalid JSON: {err}") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(read_config_text(path))
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
    return next((c for c in candidates if _is_regular(c)), None)


def _is_regular(path: Path) -> bool:
    """A regular file (symlinks followed); never opens it, so a FIFO or device cannot block."""
    try:
        check_regular(path, limit=WEIGHTS_LIMIT)
    except UnsafeFile:
        return False
    return True


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
            meta = read_config_json(dataset_json)
        except CheckpointError as err:
            raise CheckpointError(f"unreadable dataset.json: {err}") from err

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
def check_weights_file(path: Path, limit: int = WEIGHTS_LIMIT) -> os.stat_result:
    """A weights file must be a regular, non-empty file of at most `limit` bytes (checked without opening it)."""
    try:
        return check_regular(path, limit=limit, allow_empty=False)
    except UnsafeFile as err:
        raise CheckpointError(str(err)) from err


def resolve_weights(path: Path, limit: int = WEIGHTS_LIMIT) -> tuple[str, Path]:
    """-> (format, weights file). The weights file is a regular, non-empty file of at most `limit` bytes:
    a FIFO, device or /proc entry (whatever its name, whatever a symlink points at) is refused here,
    before anything opens it."""
    if path.is_dir():
        if (path / OWN_WEIGHTS).exists():
            check_weights_file(path / OWN_WEIGHTS, limit)
            return "carrygate", path / OWN_WEIGHTS
        for name in ("checkpoint",):
            if (path / name).exists():
                check_weights_file(path / name, limit)
                return "official", path / name
        steps = sorted(path.glob("step_*"), key=lambda p: int(p.name.split("_")[1]) if p.name.split("_")[1].isdigit() else -1)
        steps = [s for s in steps if s.name.split("_")[1].isdigit()]
        if steps:
            check_weights_file(steps[-1], limit)
            return "official", steps[-1]
        raise CheckpointError(f"{path}: no {OWN_WEIGHTS}, `checkpoint` or `step_N` file in this folder")
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    check_weights_file(path, limit)
    if path.suffix == ".safetensors":
        return "carrygate", path
    return "official", path


def load_checkpoint(
    path: str | Path,
    *,
    dataset_json: str | Path | None = None,
    seq_len: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    require_finite: bool = False,
) -> LoadedCheckpoint:
    """Load any supported checkpoint into an eval-mode model.

    Args:
        path: a zoo/own-format folder, an official `step_N` / `checkpoint` file, or its folder.
        dataset_json: an official `dataset.json` to take `seq_len` etc. from.
        seq_len: the width of the inputs that will be fed (used when nothing else fixes it).
        overrides: config fields to replace (e.g. `{"forward_dtype": "float32"}`).
        require_finite: refuse a checkpoint whose tensors hold NaN/Inf (a reference must; a candidate's
            non-finite weights are instead measured and gated `no_go`). Either way every tensor is
            checked and the offenders are named in `LoadedCheckpoint.non_finite`.
    Raises:
        CheckpointError: with a message naming the file, field or tensor at fault.
    """
    path = Path(path)
    fmt, weights = resolve_weights(path)
    if fmt == "carrygate":
        config_path = weights.parent / OWN_CONFIG
        if not config_path.exists():
            raise CheckpointError(f"{weights}: missing {OWN_CONFIG} beside it")
        fields = read_config_json(config_path)
        fields.update(overrides or {})
        try:
            config = _CONFIG_ADAPTER.validate_python(fields)
        except ValidationError as err:
            raise CheckpointError(f"{config_path}: invalid model config: {err}") from err
        check_weights_file(weights)  # again right before reading: the folder may have changed since resolve_weights
        state = _safetensors_load(weights)
        source_format = "carrygate"
    else:
        check_weights_file(weights)
        state = strip_official_prefixes(_torch_load_safely(weights))
        yaml_path = weights.parent / "all_config.yaml"
        if not yaml_path.exists():
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
    non_finite = non_finite_tensors(state)
    if non_finite and require_finite:
        raise CheckpointError(f"{weights}: non-finite weights (NaN or Inf) in {', '.join(non_finite)}")
    model = build_model(config)
    load_state_into(model, state, str(weights))
    return LoadedCheckpoint(model=model.eval(), config=config, source_format=source_format, path=weights,
                            non_finite=tuple(non_finite))


def save_checkpoint(model: RecursiveReasoner, folder: str | Path) -> Path:
    """Write carrygate's own format: `model.safetensors` (official names) + `config.json`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / OWN_WEIGHTS))
    (folder / OWN_CONFIG).write_text(json.dumps(model.config.model_dump(), indent=2) + "\n")
    return folder
