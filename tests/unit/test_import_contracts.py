"""The architecture contracts in pyproject.toml (`[tool.importlinter]`) hold: `lint-imports` passes.

Layers `app -> workers -> (store | gate) -> models`, and `models` imports no web, database or
task-queue code (DESIGN.md's rule of the house). Running the real command keeps this test and CI
reading the same contracts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_lint_imports_passes() -> None:
    command = Path(sys.executable).with_name("lint-imports")
    if not command.is_file():
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]' (import-linter)")
    run = subprocess.run([str(command), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout
