"""Paths a request names (a registered checkpoint, a candidate's `checkpoint`), confined to the register roots."""

from __future__ import annotations

from pathlib import Path

from carrygate.app.errors import Unprocessable
from carrygate.app.settings import Settings
from carrygate.models.checkpoint import OWN_CONFIG, CheckpointError, resolve_weights
from carrygate.models.files import UnsafeFile

CONFIG_FILES = (OWN_CONFIG, "all_config.yaml")


def confined_checkpoint(settings: Settings, path: str, field: str) -> tuple[Path, Path]:
    """-> (the path resolved, its weights file resolved) for a checkpoint a request names (registration, a
    candidate's `checkpoint`). Both, and the config files beside the weights, must resolve under the register
    roots, so a symlinked weights file or config inside a root that points out of it is refused; the weights
    must be a regular, non-empty file under `register_limit_bytes` (a FIFO, device or /proc entry is refused
    before anything opens it). A 422 naming `field` otherwise."""
    try:
        resolved = settings.readable_path(path)
        weights = settings.readable_path(resolve_weights(resolved, limit=settings.register_limit_bytes)[1])
        for name in CONFIG_FILES:
            if (weights.parent / name).exists() or (weights.parent / name).is_symlink():
                settings.readable_path(weights.parent / name)
    except (UnsafeFile, CheckpointError, ValueError) as err:
        named = "" if str(path) in str(err) else f" ({path} resolves to it)"  # a symlink: name what the request said too
        raise Unprocessable(f"{field}: {err}{named}") from err
    return resolved, weights
