"""The docs stay true: the site builds with every link and anchor resolved, generated tables match the
result files they come from, and the README's map names files that exist."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _docs_tables():
    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "scripts" / "docs_tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    # Never -q: mkdocs then drops the warnings that --strict counts, and a broken link passes.
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}, timeout=300)


def test_generated_tables_and_pages_match_the_result_files() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_tables.py"), "--check"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, f"stale generated docs; run `python scripts/docs_tables.py`:\n{run.stdout}{run.stderr}"


def test_the_check_sees_a_hand_edited_table() -> None:
    docs_tables = _docs_tables()
    page = (ROOT / "docs" / "paper.md").read_text()
    assert "<!-- generated: sweep " in page
    edited = page.replace("| int8-dynamic | ", "| int8-dynamic (edited) | ", 1)
    assert edited != page
    assert docs_tables.render_markers(edited) == docs_tables.render_markers(page)  # the generator restores it
    with pytest.raises(ValueError, match="unknown generator"):
        docs_tables.render_markers("<!-- generated: nope results/x.json -->\n<!-- /generated -->")


def test_the_site_builds_strict(tmp_path: Path) -> None:
    run = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with (tmp_path / "docs" / "gate.md").open("a") as f:
        f.write("\n[gone](no-such-page.md) and [no anchor](cli.md#no-such-anchor)\n")
    run = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert run.returncode != 0
    assert "no-such-page.md" in run.stdout + run.stderr and "no-such-anchor" in run.stdout + run.stderr


def test_every_readme_link_names_a_file_that_exists() -> None:
    text = README.read_text()
    targets = [t for t in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text) if "://" not in t]
    assert len(targets) >= 20  # the job map and the docs index
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, f"README links to paths that do not exist: {missing}"


def test_readme_is_short_and_keeps_the_two_commands() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert "make demo    #" in text and "make test    #" in text
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "mkdocs build --strict" in makefile and "mkdocs build --strict -q" not in makefile
