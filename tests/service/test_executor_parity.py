"""Issue 5's acceptance check: the demo sweep gives identical verdicts (and fidelities) through the
embedded executor and through two Celery workers on real Redis (`scripts/executor_parity.sh`)."""

from __future__ import annotations

import subprocess

from tests.conftest import REPO


def test_demo_sweep_is_identical_embedded_and_on_two_celery_workers() -> None:
    run = subprocess.run(["bash", "scripts/executor_parity.sh", "4"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    line = run.stdout.strip().splitlines()[-1]
    assert "identical: True" in line and "fidelity means identical: True" in line and "celery workers used: 2" in line, line
