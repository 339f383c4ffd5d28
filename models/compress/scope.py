"""Which Linear layers a spec's `include` / `exclude` globs select."""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn


def matches(name: str, patterns: list[str]) -> bool:
    """A dotted module name matches a glob if the whole name or any dotted suffix of it does, so
    `lm_head`, `mlp_t.*` and `L_level.layers.0.*` all work as written."""
    parts = name.split(".")
    suffixes = [".".join(parts[i:]) for i in range(len(parts))]
    return any(fnmatchcase(s, p) for p in patterns for s in suffixes)


def select_linears(model: nn.Module, include: list[str], exclude: list[str], within: str | None = None) -> dict[str, nn.Linear]:
    """Every nn.Linear (our CastedLinear included) selected by the globs, optionally only those under
    the module named `within`."""
    prefix = f"{within}." if within else ""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.startswith(prefix) and matches(name, include) and not matches(name, exclude)
    }
