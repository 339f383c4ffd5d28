"""Regenerate every generated table and page of the docs from `results/*.json`, or check that they are current.

    python scripts/docs_tables.py            # rewrite what is stale
    python scripts/docs_tables.py --check    # exit 1 and name each stale file; writes nothing
    python scripts/docs_tables.py docs/paper.md [...]   # only these pages

What it owns:

- Regions of `docs/*.md` between a marker pair; the marker names the generator and its result files:

      <!-- generated: sweep results/sudoku-mlp.json -->
      ...output of the generator, never edited by hand...
      <!-- /generated -->

  Generators: `sweep` (`scripts/sweep_table.py`), `ort` (the ONNX Runtime artifact table below),
  `halting` (`scripts/halting_table.py`), `fastexact` (`bench/fast_vs_exact.py`'s verdict comparison),
  `settings` (every `CARRYGATE_*` variable, from the service's `Settings` class) and `zoo` (one row per
  `models/zoo/*/card.json`); the last two take no files.
- The fixed/adaptive table in `docs/halting.md` (the contiguous table under its header row), from
  `scripts/halting_table.py results/sudoku-mlp-adaptive.json`.
- `docs/validity.md`, the whole page, from `scripts/validity_table.py`. Its "Generated <date>" line is
  the only line allowed to differ in `--check`: the page is current if everything else matches.

All of it is deterministic and reads only the JSON files (a second or two), so `tests/unit/test_docs.py`
runs `--check` on every suite run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKER = re.compile(r"(<!-- generated: (?P<gen>[a-z]+)(?: (?P<args>[^>]*?))? -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)
FENCE = re.compile(r"(^```.*?^```[^\n]*$)", re.S | re.M)
HALTING_PAGE, HALTING_RESULT = DOCS / "halting.md", ROOT / "results" / "sudoku-mlp-adaptive.json"
HALTING_HEADER = "| candidate | fixed: fidelity |"
VALIDITY_PAGE = DOCS / "validity.md"
VALIDITY_DATE = re.compile(r"^Generated \d{4}-\d{2}-\d{2} from ", re.M)


def _script(name: str) -> ModuleType:
    """A sibling script imported as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _import(name: str) -> ModuleType:
    """A project module, under the installed namespace when there is one."""
    try:
        return importlib.import_module(f"carrygate.{name}")
    except ImportError:
        return importlib.import_module(name)


def sweep(paths: list[Path]) -> str:
    """The paper-sweep table of each result, exactly as `python scripts/sweep_table.py RESULT.json` prints it."""
    table = _script("sweep_table").table
    return "\n\n".join(table(p) for p in paths)


def halting(paths: list[Path]) -> str:
    """The fixed/adaptive table of each result (`python scripts/halting_table.py RESULT.json`), table rows only."""
    module = _script("halting_table")
    EvaluationResult = _import("carrygate.models.results").EvaluationResult  # noqa: N806

    return "\n\n".join(module.table(EvaluationResult.model_validate_json(p.read_text())) for p in paths)


def _f(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def ort(paths: list[Path]) -> str:
    """One row per candidate of an ONNX Runtime evaluation: fidelity, exactness, the file and its local profile."""
    columns = ["candidate", "fidelity", "p05", "answer agr.", "puzzle exact", "file KB", "step ms p50", "puzzle ms",
               "peak MB", "top two ops: µs/step (calls/step)"]
    out = []
    for path in paths:
        result = json.loads(path.read_text())
        ref = result["reference"]
        lines = [f"`{path.relative_to(ROOT)}`: {result['puzzles']} held-out puzzles; reference puzzle-exact "
                 f"{_f(ref.get('puzzle_exact'), 3)}, cell accuracy {_f(ref.get('cell_accuracy'), 3)}.", "",
                 "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for c in result["candidates"]:
            fid, art, prof = c.get("fidelity") or {}, c.get("artifact") or {}, c.get("profile") or {}
            ops = prof.get("ops") or []
            top = sorted(ops, key=lambda o: -o["us_per_step"])[:2]
            lines.append("| " + " | ".join([
                c["name"] + ("" if art else " (PyTorch)"), _f(fid.get("mean"), 4), _f(fid.get("p05"), 4),
                _f(c.get("answer_agreement"), 3), _f(c.get("puzzle_exact"), 3),
                f"{art['bytes'] / 1024:.0f}" if art.get("bytes") else "—",
                _f(prof.get("step_latency_ms_p50"), 2), _f(prof.get("puzzle_latency_ms_p50"), 1),
                f"{prof['peak_memory_bytes'] / 2**20:.1f}" if prof.get("peak_memory_bytes") else "—",
                ", ".join(f"{o['op_type']} {o['us_per_step']:.0f} ({o['calls_per_step']:.0f})" for o in top) or "—",
            ]) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def settings(paths: list[Path]) -> str:
    """Every service setting: its environment variable, default and description."""
    fields = _import("carrygate.app.settings").Settings.model_fields
    lines = ["| variable | default | |", "|---|---|---|"]
    for name, field in fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "—" if default in (None, "", []) else f"`{default}`"
        if isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `CARRYGATE_{name.upper()}` | {shown} | {description} |")
    return "\n".join(lines)


ZOO = ROOT / "models" / "zoo"


def _architecture(card: dict) -> str:
    c = card["config"]
    mixer = "HRM" if c["arch"] == "hrm" else ("TRM-MLP (mlp_t)" if c.get("mlp_t") else f"TRM-Attention ({c['pos_encodings']})")
    loops = f"H{c['H_cycles']} L{c['L_cycles']}"
    if c["arch"] == "hrm":  # HRM's levels have their own depths
        loops = f"H{c['H_cycles']}x{c['H_layers']} L{c['L_cycles']}x{c['L_layers']}"
    ema = ", EMA" if "EMA" in (card.get("weights") or "") else ""
    return f"{mixer}, D {c['hidden_size']}, {loops}, {c['halt_max_steps']} steps{ema}"


def _task(data_command: str) -> str:
    words = data_command.split()
    option = {k: v for k, v in zip(words, words[1:], strict=False) if k.startswith("--")}
    task = words[2]
    if task == "sudoku":
        side = option.get("--size", "9")
        return f"Sudoku {side}x{side}, {option.get('--givens', '?')} givens"
    if task == "maze":
        side = option.get("--size", "11")
        return f"Maze {side}x{side}, loops {option.get('--loops', '0')}"
    return task


def zoo(paths: list[Path]) -> str:
    """The shipped models, one row per card: accuracy on the held-out split and on the fresh probe, size, training."""
    lines = ["| model | architecture | task | puzzle-exact (held-out) | fresh probe | cell accuracy | reasons | "
             "weights MB | iterations | train wall time |", "|" + "---|" * 10]
    for path in sorted(ZOO.glob("*/card.json")):
        card = json.loads(path.read_text())
        test, probe = card["test"], card.get("probe")
        done, planned = card.get("iterations_done"), card["train"]["iterations"]
        iterations = f"{planned:,}" if done in (None, planned) else f"{done:,} of {planned:,}"
        reasons = _import("carrygate.models.cards").reasons(card)
        weights = (path.parent / "model.safetensors").stat().st_size / 2**20
        lines.append("| " + " | ".join([
            f"`{card['name']}`", _architecture(card), _task(card["data_command"]),
            f"{test['puzzle_exact']:.3f} (n {test['count']})",
            f"{probe['puzzle_exact']:.3f} (n {probe['count']})" if probe else "not measured",
            f"{test['cell_accuracy']:.3f}", "yes" if reasons else "**no**", f"{weights:.2f}", iterations,
            f"{card['wall_seconds'] / 60:.0f} min on {card['torch_threads']} thread(s)",
        ]) + " |")
    return "\n".join(lines)


def fastexact(paths: list[Path]) -> str:
    """Per zoo model: the demo sweep's verdicts under exact and fast numerics (`bench/fast_vs_exact.py`)."""
    lines = ["| model | candidates | verdicts changed | largest difference in a number a rule reads | changed |", "|---|---|---|---|---|"]
    for path in paths:
        body = json.loads(path.read_text())
        for model in dict.fromkeys(r["model"] for r in body["rows"]):
            rows = [r for r in body["rows"] if r["model"] == model]
            changed = [f"{r['candidate']}: {r['exact']} → {r['fast']}" for r in rows if r["exact"] != r["fast"]]
            lines.append(f"| `{model}` | {len(rows)} | {len(changed)} | {max(r['max_abs_difference'] for r in rows):.2g} | "
                         f"{'; '.join(changed) or '—'} |")
        lines.append(f"\n`{body['command']}` ({body['date']}, {body['puzzles']} held-out puzzles per model"
                     f"{', fast path compiled' if body['compiled'] else ', fast path eager'}).")
    return "\n".join(lines)


GENERATORS: dict[str, Callable[[list[Path]], str]] = {"sweep": sweep, "halting": halting, "ort": ort, "settings": settings, "zoo": zoo,
                                                      "fastexact": fastexact}


def render_markers(text: str) -> str:
    def fill(m: re.Match[str]) -> str:
        gen = GENERATORS.get(m["gen"])
        if gen is None:
            raise ValueError(f"unknown generator {m['gen']!r} (known: {', '.join(GENERATORS)})")
        paths = [ROOT / a for a in (m["args"] or "").split()]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"generator {m['gen']}: no such result file {', '.join(missing)}")
        return f"{m[1]}{gen(paths).rstrip()}\n{m[5]}"

    # Markers inside fenced code blocks are examples, not regions: only the text between fences is filled.
    parts = FENCE.split(text)
    return "".join(part if i % 2 else MARKER.sub(fill, part) for i, part in enumerate(parts))


def render_halting_page(text: str) -> str:
    """docs/halting.md with its pasted fixed/adaptive table replaced by the generator's output."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(HALTING_HEADER)), None)
    if start is None:
        raise ValueError(f"{HALTING_PAGE.name}: no table starting with {HALTING_HEADER!r}")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join([*lines[:start], *halting([HALTING_RESULT]).split("\n"), *lines[end:]])


def render_validity_page() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "validity.md"
        subprocess.run([sys.executable, str(ROOT / "scripts" / "validity_table.py"), "--out", str(out)],
                       check=True, capture_output=True, text=True)
        return out.read_text()


def expected() -> dict[Path, tuple[str, str]]:
    """Each generated file: (what is committed, what the generators produce now)."""
    pages: dict[Path, tuple[str, str]] = {}
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        if any(MARKER.search(part) for i, part in enumerate(FENCE.split(text)) if i % 2 == 0):
            pages[page] = (text, render_markers(text))
    if HALTING_PAGE.is_file():
        text = HALTING_PAGE.read_text()
        pages[HALTING_PAGE] = (text, render_halting_page(render_markers(text)))  # its first table, then any regions
    if VALIDITY_PAGE.is_file():
        pages[VALIDITY_PAGE] = (VALIDITY_PAGE.read_text(), render_validity_page())
    return pages


def _same(path: Path, old: str, new: str) -> bool:
    if path == VALIDITY_PAGE:  # the page carries the date it was generated on
        return VALIDITY_DATE.sub("Generated DATE from ", old) == VALIDITY_DATE.sub("Generated DATE from ", new)
    return old == new


def stale() -> list[Path]:
    return [p for p, (old, new) in expected().items() if not _same(p, old, new)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a generated file is stale")
    parser.add_argument("pages", nargs="*", type=Path, help="only these pages (default: every generated page)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    only = {p.resolve() for p in args.pages}
    changed = []
    for path, (old, new) in expected().items():
        if (only and path.resolve() not in only) or _same(path, old, new):
            continue
        changed.append(path)
        if not args.check:
            path.write_text(new)
    for path in changed:
        print(f"{'stale' if args.check else 'wrote'} {path.relative_to(ROOT)}")
    if args.check and changed:
        print("regenerate with: python scripts/docs_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
