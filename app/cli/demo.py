"""`carrygate demo`: the main job, through the real service path, on the shipped zoo models.

It starts the API with the embedded worker on the default SQLite database (zero set-up), registers
the zoo models that reason (`models/cards.py`: puzzle-exact ≥ 0.6 held-out and on a fresh probe; the
undertrained ones sit near a fixed point where every candidate looks faithful, so their verdicts are
noise; `--all-models` adds them), submits one job per model with the demo sweep and the default gate policy, follows
the progress, prints each job's table and verdicts, and keeps serving on 127.0.0.1 (the URL is
printed) until Ctrl-C — or exits with `--no-serve`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from carrygate.app.cli.console import console

ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"  # app/cli/demo.py -> the repository root
GRID_MODEL = "sudoku-mlp"  # the zoo model that reasons well: its depth x precision grid is worth a look
DEMO_SPECS = ["bf16", "fp16", "int8-channel", "int8-dynamic", "int4-naive", "int4-calibrated", "prune-50", "depth-h1", "carry-int8"]


def zoo_models(*, reasoning_only: bool = True) -> list[Path]:
    from carrygate.models.cards import read_card, reasons

    folders = sorted(p for p in ZOO.iterdir() if (p / "model.safetensors").is_file())
    return [p for p in folders if reasons(read_card(p))] if reasoning_only else folders


def _start_server(host: str, port: int) -> tuple[Any, threading.Thread]:
    import uvicorn

    from carrygate.app.main import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True, name="carrygate-api")
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the API did not start on {host}:{port} (port taken?)")
        time.sleep(0.1)
    return server, thread


def demo_command(
    probe: Annotated[int, typer.Option(help="Probe puzzles per model.")] = 32,
    host: str = "127.0.0.1",
    port: int = 8000,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Keep serving the API after the sweep.")] = True,
    grid: Annotated[bool, typer.Option("--grid/--no-grid", help=f"Also run the depth x precision grid on {GRID_MODEL}.")] = True,
    all_models: Annotated[bool, typer.Option("--all-models", help="Also the zoo models that do not reason (verdicts are noise).")] = False,
) -> None:
    """Run the demo sweep on every zoo model through the API and the embedded worker."""
    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from carrygate.app.cli.service import print_verdicts
    from carrygate.app.settings import get_settings
    from carrygate.models.compress.grids import PAPER, precision_depth_grid
    from carrygate.models.config import ModelConfig

    models = zoo_models(reasoning_only=not all_models)
    if not models:
        console.print(f"[red]no {'' if all_models else 'reasoning '}zoo models under {ZOO}[/]")
        raise typer.Exit(2)
    skipped = sorted({p.name for p in zoo_models(reasoning_only=False)} - {p.name for p in models})
    if skipped:
        console.print(f"not reasoning, left out (--all-models adds them): {', '.join(skipped)}")
    settings = get_settings()
    console.print(f"database {settings.database_url}, artifacts {settings.artifact_store}")
    server, thread = _start_server(host, port)
    url = f"http://{host}:{port}"
    console.print(f"dashboard: {url}/dashboard  (live progress; the charts fill in as jobs finish)")
    candidates = [{"name": name, **PAPER[name]} for name in DEMO_SPECS]
    grid_model = next((m for m in models if m.name == GRID_MODEL), models[0])
    decisions: dict[str, str] = {}
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            jobs = {}
            for folder in models:
                ckpt = client.post("/checkpoints/register", json={"path": str(folder), "name": folder.name}).json()
                body = {"checkpoint_id": ckpt["id"], "candidates": candidates, "options": {"limit": probe}, "tags": ["demo"]}
                response = client.post("/jobs", json=body, headers={"Idempotency-Key": f"demo-{ckpt['sha256'][:16]}-{probe}"})
                response.raise_for_status()
                jobs[folder.name] = response.json()["id"]
                if grid and folder == grid_model:
                    from pydantic import TypeAdapter

                    config = TypeAdapter(ModelConfig).validate_python(ckpt["config"]["config_json"])
                    body = {**body, "candidates": [spec.to_dict() for spec in precision_depth_grid(config)], "tags": ["demo", "grid"]}
                    response = client.post("/jobs", json=body, headers={"Idempotency-Key": f"demo-grid-{ckpt['sha256'][:16]}-{probe}"})
                    response.raise_for_status()
                    jobs[f"{folder.name} grid"] = response.json()["id"]
            with Progress(TextColumn("{task.description:12}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                          TimeElapsedColumn(), console=console) as progress:
                tasks = {name: progress.add_task(name, total=probe, status="queued") for name in jobs}
                pending = dict(jobs)
                while pending:
                    time.sleep(0.5)
                    for name, job_id in list(pending.items()):
                        job = client.get(f"/jobs/{job_id}").json()
                        total = job["puzzles_total"] or probe
                        progress.update(tasks[name], completed=job["puzzles_done"], total=total, status=job["status"])
                        if job["status"] in ("succeeded", "failed", "cancelled"):
                            del pending[name]
            for name, job_id in jobs.items():
                job = client.get(f"/jobs/{job_id}").json()
                console.rule(name)
                decisions[name] = print_verdicts(job, f"{url}/dashboard/jobs/{job_id}")
        console.print("verdicts: " + ", ".join(f"{n}: {d}" for n, d in decisions.items()))
        if serve:
            console.print(f"\ndashboard: {url}/dashboard   API: {url}   docs: {url}/docs   (Ctrl-C to stop)")
            while thread.is_alive():
                time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(timeout=30)


commands = typer.Typer()
commands.command("demo")(demo_command)
