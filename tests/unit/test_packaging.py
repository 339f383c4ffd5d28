"""carrygate installs under one namespace and lives beside the official TRM / HRM code.

The official code's top-level package is `models`; ours installs as `carrygate.models` (pyproject's
`package-dir`). These tests check the package list against the folders, that nothing in the suite
imports a folder by its bare name (which would load a second copy of every module), and, end to
end, that a wheel installed into a fresh environment runs `carrygate predict` from inside a
checkout whose own `models` package would shadow ours if the names collided.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("app", "workers", "store", "gate", "models", "migrations")


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_code_folder_is_a_listed_package() -> None:
    config = _setuptools()
    on_disk = set()
    for folder in FOLDERS:
        for directory in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in directory.parts or not any(directory.glob("*.py")):
                continue
            on_disk.add("carrygate." + ".".join(directory.relative_to(ROOT).parts))
    missing = on_disk - set(config["packages"])
    assert not missing, f"folders with code missing from [tool.setuptools] packages: {missing}"
    assert {config["package-dir"][f"carrygate.{f}"] for f in FOLDERS} == set(FOLDERS)


def test_the_suite_never_imports_a_folder_by_its_bare_name() -> None:
    import carrygate.app.main  # noqa: F401  (pulls in every layer)
    import carrygate.workers.pipeline  # noqa: F401

    bare = sorted(name for name in sys.modules if name.split(".")[0] in FOLDERS)
    assert bare == [], f"second copies under bare names: {bare[:10]}"


def test_no_process_is_started_under_a_bare_folder_name() -> None:
    # `python -m app` from the checkout imports the folder as a top-level package beside the installed one
    import re

    bare_main = re.compile(r'"-m",\s*"(' + "|".join(FOLDERS) + r')[".]')
    offenders = [f"{path.relative_to(ROOT)}:{n}" for folder in ("tests", "scripts", "bench", "app", "workers")
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if bare_main.search(line)]
    assert offenders == []


def _source_copy(to: Path) -> Path:
    """The checkout's files as git sees them (an in-tree build would leave build/ in the checkout)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        if (ROOT / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, to / name)
    return to


@pytest.mark.slow
def test_wheel_runs_predict_inside_an_official_checkout(tmp_path: Path) -> None:
    """`pip install .` into a fresh environment, then `import carrygate.models` and `carrygate predict`
    from inside a folder that holds an official-layout `models` package."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # Dependencies come from the suite's environment through a plain path entry: a path added by a .pth
    # line does not have its own .pth files run, so the checkout's editable mapping stays out.
    (site / "suite-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-build-isolation", str(_source_copy(tmp_path / "src"))], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stdout + install.stderr
    official = tmp_path / "TinyRecursiveModels"
    (official / "models" / "recursive_reasoning").mkdir(parents=True)
    (official / "models" / "__init__.py").write_text("OFFICIAL = True\n")
    (official / "models" / "recursive_reasoning" / "trm.py").write_text("class TinyRecursiveReasoningModel_ACTV1: ...\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARRYGATE_", "PYTHON"))}

    probe = subprocess.run([str(python), "-c", "import carrygate.models, models; print(carrygate.models.__file__); print(models.OFFICIAL)"],
                           cwd=official, capture_output=True, text=True, env=env, timeout=300)
    assert probe.returncode == 0, probe.stderr
    ours, theirs = probe.stdout.split()
    assert Path(ours).is_relative_to(site), f"carrygate.models came from {ours}, not the installed wheel"
    assert theirs == "True"

    zoo = site / "carrygate" / "models" / "zoo" / "sudoku6-mlp"
    out = official / "answers.npz"
    run = subprocess.run([str(venv / "bin" / "carrygate"), "predict", str(zoo), "--data", str(zoo / "data"), "--limit", "16",
                          "--out", str(out)], cwd=official, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    labels = np.load(zoo / "data" / "test" / "all__labels.npy")[:16]
    predictions = np.load(out)["preds"]
    assert predictions.shape == labels.shape
    assert (predictions == labels).all(axis=1).mean() >= 0.9  # the shipped model solves its own split


def test_a_module_over_400_lines_says_why_in_its_docstring() -> None:
    """STYLE.md: modules stay readable in one sitting; a longer one names its reason ("Over 400 lines on purpose")."""
    import ast

    long_without_reason = []
    for folder in ("app", "workers", "models", "store", "gate"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if text.count("\n") > 400 and "Over 400 lines on purpose" not in (ast.get_docstring(ast.parse(text)) or ""):
                long_without_reason.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert long_without_reason == []
