"""`carrygate serve | worker | migrate | gate`: the service and the release-pipeline client."""

from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from carrygate.app.cli.console import console, stdout_console

EXIT = {"go": 0, "no_go": 1, "inconclusive": 2}


def serve_command(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[bool, typer.Option("--workers/--no-workers", help="Start the embedded worker processes.")] = True,
    insecure: Annotated[bool, typer.Option("--insecure", help="Listen on a non-loopback address without any API key.")] = False,
    api_workers: Annotated[int | None, typer.Option("--api-workers", min=1, help="uvicorn worker processes serving the API on "
                                                    "this port (default CARRYGATE_API_WORKERS, 1); job workers and "
                                                    "dispatchers still run once.")] = None,
) -> None:
    """Start the API (and the embedded workers) with uvicorn."""
    import uvicorn

    from carrygate.app.main import create_app
    from carrygate.app.settings import get_settings
    from carrygate.app.supervisor import serve_processes

    if not insecure and not is_loopback(host) and not keys_configured():
        console.print(f"[red]error:[/] refusing to listen on {host} without API keys: anyone who can reach it could submit "
                      "and read jobs. Create one (`carrygate keys create --name ci --scope admin`), listen on 127.0.0.1, or "
                      "pass --insecure.")
        raise typer.Exit(2)
    processes = api_workers or get_settings().api_workers
    console.print(f"carrygate API on http://{host}:{port}  (docs: http://{host}:{port}/docs)"
                  + (f", {processes} API processes" if processes > 1 else ""))
    if processes > 1:  # the workers and dispatchers run here, once; the API processes run none (app/supervisor.py)
        serve_processes(get_settings(), host=host, port=port, api_workers=processes, workers=workers)
        return
    # --no-workers leaves out the embedded worker processes only: Celery dispatch and webhook delivery still run here
    uvicorn.run(create_app(start_workers=workers, start_dispatchers=True), host=host, port=port, log_level="info")


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def keys_configured() -> bool:
    """Whether any API key exists (CARRYGATE_API_KEYS or a key created in the database)."""
    from carrygate.app.auth import key_exists
    from carrygate.app.db import make_engine, session_factory, upgrade_to_head
    from carrygate.app.settings import get_settings

    settings = get_settings()
    if settings.api_keys:
        return True
    upgrade_to_head(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            return key_exists(session)
    finally:
        engine.dispose()


def worker_command(
    max_jobs: Annotated[int | None, typer.Option(help="Exit after this many jobs.")] = None,
    idle_exit: Annotated[float | None, typer.Option(help="Exit after this many idle seconds.")] = None,
    queues: Annotated[str | None, typer.Option(help="Celery: comma-separated queues (default CARRYGATE_CELERY_QUEUE).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Celery: worker processes (default CARRYGATE_WORKER_CONCURRENCY).")] = None,
    device: Annotated[str | None, typer.Option(help="Celery: cpu or cuda:N (sets CUDA_VISIBLE_DEVICES).")] = None,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, solo or threads.")] = "prefork",
) -> None:
    """Run a worker: with CARRYGATE_EXECUTOR=celery a Celery worker on the broker, else one embedded worker process."""
    from carrygate.app.settings import get_settings

    if get_settings().executor == "celery":
        _celery_worker(queues, concurrency, device, pool)
        return
    import logging
    import os
    import socket

    from carrygate.app.db import upgrade_to_head
    from carrygate.app.main import worker_config
    from carrygate.app.settings import get_settings
    from carrygate.workers.local import worker_loop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    upgrade_to_head(settings.database_url)
    ran = worker_loop(worker_config(settings), f"{socket.gethostname()}:{os.getpid()}", max_jobs=max_jobs, idle_exit=idle_exit)
    console.print(f"worker ran {ran} job(s)")


def _celery_worker(queues: str | None, concurrency: int | None, device: str | None, pool: str) -> None:
    import logging

    from carrygate.app.db import upgrade_to_head
    from carrygate.app.main import celery_config, worker_config
    from carrygate.app.settings import get_settings
    from carrygate.workers.celery_app import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    for attempt in range(5):  # workers started together race to migrate a fresh database: the losers retry
        try:
            upgrade_to_head(settings.database_url)
            break
        except Exception:
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)
    names = [q.strip() for q in (queues or settings.celery_queue).split(",") if q.strip()]
    if device is not None and not (device == "cpu" or (device.startswith("cuda:") and device[5:].isdigit())):
        console.print(f"[red]error:[/] --device: expected cpu or cuda:N, got {device!r}")
        raise typer.Exit(2)
    try:
        run_worker(worker_config(settings), celery_config(settings), queues=names, concurrency=concurrency or settings.worker_concurrency,
                   pool=pool, device=device)
    except ValueError as err:  # the device is missing or unusable: refuse to start rather than run on the CPU
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from err


def migrate_command() -> None:
    """Apply all pending database migrations (SQLite file in the data dir unless CARRYGATE_DATABASE_URL is set).

    The server also migrates on start; this is for release steps and containers that migrate separately."""
    from sqlalchemy.engine import make_url

    from carrygate.app.db import upgrade_to_head
    from carrygate.app.settings import get_settings

    url = get_settings().database_url
    revision = upgrade_to_head(url)
    typer.echo(f"database {make_url(url).render_as_string(hide_password=True)} at revision {revision}")


# -- gate: the release-pipeline client -------------------------------------------------------------
def print_verdicts(job: dict[str, Any], dashboard_url: str | None = None) -> str:
    """One row per candidate with the rules as columns (`app/cli/verdicts.py`); -> the job's decision."""
    from carrygate.app.cli.verdicts import print_job_verdicts

    decision = print_job_verdicts(stdout_console(), job, dashboard_url)
    if job.get("error"):
        console.print(f"[red]{job['error']}[/]")
    return decision


class ReportFiles:
    """Where `gate` writes its reports (`--summary-md`, `--report-html`); a run without a verdict still writes the
    Markdown, saying why, so the CI summary or PR comment never silently goes missing."""

    def __init__(self, markdown: Path | None, html: Path | None, subject: str) -> None:
        self.markdown, self.html, self.subject = markdown, html, subject

    def verdict(self, report: Any) -> None:  # report: app.reports.Report
        from carrygate.app.reports import render_html, render_markdown

        self._write(self.markdown, render_markdown(report), "summary")
        if self.html is not None:
            self._write(self.html, render_html(report), "HTML report")

    def failure(self, message: str, job_id: str | None = None, dashboard_url: str | None = None) -> None:
        from carrygate.app.reports import render_failure_markdown

        self._write(self.markdown, render_failure_markdown(self.subject, message, job_id=job_id, dashboard_url=dashboard_url), "summary")

    def _write(self, path: Path | None, text: str, what: str) -> None:
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            console.print(f"wrote the {what} to {path}")
        except OSError as err:  # the verdict stands and decides the exit code; a report that cannot be written is a warning
            console.print(f"[yellow]warning:[/] cannot write the {what} to {path}: {err}")


def _job_body(checkpoint_id: str, specs: list[Any], policy: Any, probe: dict[str, Any], limit: int | None,
              halting: Any = None) -> dict[str, Any]:
    options: dict[str, Any] = {"limit": limit, "labels": True}
    if halting is not None and (halting.adaptive or halting.max_steps):
        options["halting"] = halting.model_dump(mode="json")  # only when asked: a fixed job's body (and key) stays as before
    return {"checkpoint_id": checkpoint_id, "candidates": [s.to_dict() | ({"name": s.name} if s.name else {}) for s in specs],
            "policy": policy.model_dump(mode="json"), "probe": probe, "options": options}


def gate_command(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint file or zoo folder.")],
    spec: Annotated[list[Path], typer.Option("--spec", help="Candidate spec YAML (repeat).")],
    server: Annotated[str | None, typer.Option(help="carrygate server URL, e.g. http://127.0.0.1:8000")] = None,
    local: Annotated[bool, typer.Option("--local", help="Run in-process, no server.")] = False,
    policy: Annotated[Path | None, typer.Option(help="Gate policy YAML.")] = None,
    builder: Annotated[str | None, typer.Option(help="Probe puzzles from a builder: sudoku, maze, arc (default: data/).")] = None,
    probe_size: int = 64,
    limit: int | None = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the verdict.")] = 1800.0,
    api_key: Annotated[str | None, typer.Option(envvar="CARRYGATE_API_KEY")] = None,
    summary_md: Annotated[Path | None, typer.Option("--summary-md", help="Write the verdict as Markdown here (for "
                                                   "$GITHUB_STEP_SUMMARY or a PR comment); written on errors too.")] = None,
    report_html: Annotated[Path | None, typer.Option("--report-html", help="Write the self-contained HTML report here "
                                                    "(plots inline, opens offline).")] = None,
    halting: Annotated[str, typer.Option(help="fixed, or adaptive: also judge each model halting per puzzle as deployed "
                                         "(policy rules max_steps_used_increase, max_adaptive_exact_drop).")] = "fixed",
    max_steps: Annotated[int | None, typer.Option(help="ACT steps per puzzle at most (fixed: exactly).")] = None,
) -> None:
    """Gate a release: exit 0 on go, 1 on no_go, 2 on inconclusive or error."""
    from carrygate.app.cli.evaluate import load_specs
    from carrygate.gate import GatePolicy
    from carrygate.models.halting import Halting

    files = ReportFiles(summary_md, report_html, str(checkpoint))
    try:
        specs = load_specs(spec)
        gate_policy = GatePolicy.from_yaml(policy.read_text()) if policy else GatePolicy()
        halting_policy = Halting(mode=halting, max_steps=max_steps)  # type: ignore[arg-type]
    except typer.Exit:
        files.failure("a --spec file could not be read (see the log)")
        raise
    except (OSError, ValueError) as err:
        console.print(f"[red]error:[/] {err}")
        files.failure(str(err))
        raise typer.Exit(2) from None
    probe = {"builder": builder, "size": probe_size} if builder else {"dataset_path": None}
    if local == (server is not None):
        console.print("[red]error:[/] give exactly one of --server URL or --local")
        files.failure("give exactly one of --server URL or --local")
        raise typer.Exit(2)
    decision = _gate_local(checkpoint, specs, gate_policy, builder, probe_size, limit, files, halting_policy) if local else \
        _gate_remote(server or "", checkpoint, specs, gate_policy, probe, limit, wait, timeout, api_key, files, halting_policy)
    raise typer.Exit(EXIT.get(decision, 2))


def _gate_local(checkpoint: Path, specs: list[Any], policy: Any, builder: str | None, probe_size: int, limit: int | None,
                files: ReportFiles, halting: Any = None) -> str:
    from carrygate.app.cli.evaluate import build_probe_folder
    from carrygate.app.cli.verdicts import print_verdict_table
    from carrygate.app.reports import DECISION_WORDS, Report
    from carrygate.gate import judge
    from carrygate.models.checkpoint import CheckpointError, load_checkpoint
    from carrygate.models.evaluate import Probe, evaluate
    from carrygate.models.tasks.dataset import read_split

    try:
        ckpt = load_checkpoint(checkpoint)
        folder = build_probe_folder(builder, ckpt.config.seq_len, probe_size, 1234) if builder else checkpoint / "data"
        probe = Probe.from_split(read_split(folder, "test"), limit)
        result = evaluate(ckpt.model, specs, probe, halting=halting)
    except (CheckpointError, ValueError, OSError) as err:
        console.print(f"[red]error:[/] {err}")
        files.failure(str(err))
        return "inconclusive"
    verdict = judge(result, policy)
    report = Report.from_verdict(result, verdict, files.subject)
    files.verdict(report)
    print_verdict_table(stdout_console(), report, f"local run: {DECISION_WORDS[verdict.decision].upper()}")
    return verdict.decision


def _gate_remote(server: str, checkpoint: Path, specs: list[Any], policy: Any, probe: dict[str, Any], limit: int | None,
                 wait: bool, timeout: float, api_key: str | None, files: ReportFiles, halting: Any = None) -> str:
    import httpx

    from carrygate.app.reports import Report
    from carrygate.models.checkpoint import CheckpointError, resolve_weights

    headers = {"X-API-Key": api_key} if api_key else {}
    try:
        with httpx.Client(base_url=server.rstrip("/"), headers=headers, timeout=60.0) as client:
            _, weights = resolve_weights(checkpoint)
            config_file = weights.parent / ("config.json" if weights.suffix == ".safetensors" else "all_config.yaml")
            upload_headers = {"X-Carrygate-Config": base64.b64encode(config_file.read_bytes()).decode()} if config_file.is_file() else {}
            with open(weights, "rb") as body:  # the raw route: streamed in one pass (README, Benchmarks)
                uploaded = client.put(f"/checkpoints/raw/{weights.name}", content=iter(lambda: body.read(1 << 20), b""),
                                      headers=upload_headers, timeout=None)
            uploaded.raise_for_status()
            if probe.get("dataset_path", "x") is None and (checkpoint / "data").is_dir():
                probe = {"dataset_path": str((checkpoint / "data").resolve())}
            body = _job_body(uploaded.json()["id"], specs, policy, probe, limit, halting)
            key = uuid.uuid5(uuid.NAMESPACE_URL, uploaded.json()["sha256"] + json.dumps(body, sort_keys=True)).hex
            submitted = client.post("/jobs", json=body, headers={"Idempotency-Key": key})
            if submitted.status_code == 422:
                console.print(f"[red]rejected:[/] {submitted.json().get('detail')}")
                files.failure(f"the server rejected the job: {submitted.json().get('detail')}")
                return "inconclusive"
            submitted.raise_for_status()
            job = submitted.json()
            console.print(f"job {job['id']} submitted: {job['url']}")
            deadline = time.monotonic() + timeout
            while wait and job["status"] in ("queued", "running") and time.monotonic() < deadline:
                time.sleep(1.0)
                polled = client.get(f"/jobs/{job['id']}")
                polled.raise_for_status()
                job = polled.json()
                console.print(f"  {job['status']} {job['progress'] * 100:5.1f} % ({job['puzzles_done']}/{job['puzzles_total']} puzzles)",
                              end="\r")
            console.print()
    except (httpx.HTTPError, CheckpointError, OSError, ValueError, KeyError) as err:  # any failure is "error" (exit 2), never no_go
        console.print(f"[red]error:[/] {type(err).__name__}: {err}")
        files.failure(f"{type(err).__name__}: {err}")
        return "inconclusive"
    # The server's own dashboard page, under the URL the client reached it by (which a proxy may not rewrite).
    dashboard = f"{server.rstrip('/')}/dashboard/jobs/{job['id']}"
    if job["status"] != "succeeded":
        console.print(f"[yellow]job {job['status']}[/] {job.get('error') or ''}")
        still = "still " if job["status"] in ("queued", "running") else ""
        files.failure(f"job {still}{job['status']}" + (f": {job['error']}" if job.get("error") else ""), job["id"], dashboard)
        return "inconclusive"
    decision = print_verdicts(job, dashboard)
    try:
        files.verdict(Report.from_job(job, files.subject, dashboard))
    except ValueError as err:  # succeeded without a verdict should not happen; say so instead of failing the gate
        files.failure(str(err), job["id"], dashboard)
    return decision


commands = typer.Typer()
commands.command("serve")(serve_command)
commands.command("worker")(worker_command)
commands.command("migrate")(migrate_command)
commands.command("gate")(gate_command)
