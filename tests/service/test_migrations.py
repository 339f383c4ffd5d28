"""Migrations on both backends: up from empty, no drift from the `store` tables, constraints hold, down to base.

Also checks that `Settings` reads its `CARRYGATE_*` variables.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select
from sqlalchemy.exc import IntegrityError, StatementError

from carrygate.app.db import current_revision_is_head, downgrade_to, head_revision, make_engine, session_factory, upgrade_to_head
from carrygate.app.settings import Settings, get_settings
from carrygate.models.compress.spec import CompressionSpec
from carrygate.store.tables import JOB_SCOPE, Base, Candidate, Checkpoint, Job, ProbeSet, Result, Verdict

TABLES = {"checkpoints", "probe_sets", "jobs", "candidates", "results", "verdicts", "api_keys", "webhooks", "webhook_deliveries",
          "webhook_attempts", "job_shards", "drop_calibrations", "rate_limit_hits"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head."""
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _job_chain(engine: Engine) -> str:
    """Insert checkpoint -> probe set -> job -> 2 candidates -> result -> verdicts; return the job id."""
    specs = [CompressionSpec.model_validate({"name": "ref"}), CompressionSpec.model_validate({"name": "bf16", "precision": "bf16"})]
    with session_factory(engine)() as session, session.begin():
        checkpoint = Checkpoint(sha256="ab" * 32, architecture="trm", config={"hidden_size": 16}, size_bytes=5 * 2**32,
                                original_name="step_1", storage_path="/artifacts/ab/abab", source="upload")
        probe_set = ProbeSet(builder="sudoku", builder_args={"givens": 40}, content_hash="cd" * 32, puzzles=8, labels=True)
        job = Job(checkpoint=checkpoint, probe_set=probe_set, policy={"min_fidelity": 0.9}, options={"labels": True},
                  tags=["ci"], puzzles_total=8, idempotency_key="key-1")
        job.candidates = [Candidate(position=i, name=s.name, spec=s.to_dict(), spec_hash=s.content_hash) for i, s in enumerate(specs)]
        job.result = Result(body={"schema_version": 1, "puzzles": 8, "per_puzzle": {"fidelity": [0.5, 1.0]}})
        session.add(job)
        session.flush()
        job.verdicts = [Verdict(decision="go", rules=[], policy=job.policy)] + [
            Verdict(candidate=c, decision="no_go", policy=job.policy,
                    rules=[{"rule": "min_fidelity", "observed": 0.35, "threshold": 0.9, "passed": False, "reason": "low"}])
            for c in job.candidates
        ]
        return job.id


def test_upgrade_from_empty_to_head(db_url: str) -> None:
    empty = make_engine(db_url)
    try:
        assert _tables(empty) == set()
        assert not current_revision_is_head(empty)
        assert upgrade_to_head(db_url) == head_revision() is not None
        assert _tables(empty) == TABLES == set(Base.metadata.tables)
        assert current_revision_is_head(empty)
        upgrade_to_head(db_url)  # idempotent
    finally:
        empty.dispose()


def test_no_drift_between_orm_and_migrations(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True, "render_as_batch": True})
        assert compare_metadata(context, Base.metadata) == []


def test_job_chain_round_trip(engine: Engine) -> None:
    job_id = _job_chain(engine)
    with session_factory(engine)() as session:
        job = session.get_one(Job, job_id)
        assert job.status == "queued" and job.progress == 0.0 and job.attempts == 0 and not job.cancel_requested
        assert job.created_at.tzinfo is not None and job.created_at.utcoffset() == UTC.utcoffset(None)
        assert job.checkpoint.size_bytes == 5 * 2**32 and job.probe_set.labels
        assert [c.name for c in job.candidates] == ["ref", "bf16"]
        assert job.candidates[1].spec == CompressionSpec.model_validate({"name": "bf16", "precision": "bf16"}).to_dict()
        assert job.result is not None and job.result.body["per_puzzle"]["fidelity"] == [0.5, 1.0]
        scopes = {v.scope: v for v in job.verdicts}
        assert set(scopes) == {JOB_SCOPE, *(c.id for c in job.candidates)}
        assert scopes[JOB_SCOPE].candidate_id is None and scopes[JOB_SCOPE].decision == "go"
        assert scopes[job.candidates[0].id].rules[0]["observed"] == 0.35
        assert session.scalars(select(Job.id).where(Job.idempotency_key == "key-1")).one() == job_id


def test_second_result_for_a_job_is_rejected(engine: Engine) -> None:
    job_id = _job_chain(engine)
    with session_factory(engine)() as session:
        session.add(Result(job_id=job_id, body={}))
        with pytest.raises(IntegrityError):
            session.commit()


def test_second_job_level_verdict_is_rejected(engine: Engine) -> None:
    job_id = _job_chain(engine)
    with session_factory(engine)() as session:
        session.add(Verdict(job_id=job_id, decision="inconclusive"))
        with pytest.raises(IntegrityError):
            session.commit()


def test_check_constraints_and_cascade(engine: Engine) -> None:
    job_id = _job_chain(engine)
    factory = session_factory(engine)
    with factory() as session:
        session.get_one(Job, job_id).status = "exploded"
        with pytest.raises(IntegrityError):
            session.commit()
    with factory() as session, session.begin():
        session.delete(session.get_one(Job, job_id))
    with factory() as session:
        assert session.scalars(select(Candidate)).all() == [] and session.scalars(select(Verdict)).all() == []
        assert session.scalars(select(Checkpoint)).one().sha256 == "ab" * 32


def test_naive_datetime_is_refused(engine: Engine) -> None:
    job_id = _job_chain(engine)
    with session_factory(engine)() as session:
        session.get_one(Job, job_id).started_at = datetime(2025, 1, 1)
        with pytest.raises(StatementError, match="naive datetime"):
            session.commit()


def test_downgrade_to_base_leaves_no_tables(db_url: str) -> None:
    upgrade_to_head(db_url)
    downgrade_to(db_url, "base")
    engine = make_engine(db_url)
    try:
        assert _tables(engine) == set()
        assert not current_revision_is_head(engine)
    finally:
        engine.dispose()


def test_settings_read_carrygate_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CARRYGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CARRYGATE_EXECUTOR", "celery")
    monkeypatch.setenv("CARRYGATE_WORKER_CONCURRENCY", "3")
    monkeypatch.setenv("CARRYGATE_API_KEYS", "alpha, beta")
    monkeypatch.delenv("CARRYGATE_DATABASE_URL", raising=False)
    monkeypatch.delenv("CARRYGATE_ARTIFACT_STORE", raising=False)
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert settings.data_dir == tmp_path
        assert settings.database_url == f"sqlite:///{tmp_path / 'carrygate.db'}"
        assert settings.artifact_store == str(tmp_path / "artifacts")
        assert (settings.executor, settings.worker_concurrency, settings.api_keys) == ("celery", 3, ["alpha", "beta"])
        assert get_settings() is settings

        monkeypatch.setenv("CARRYGATE_DATABASE_URL", "postgresql://db/carrygate")
        monkeypatch.setenv("CARRYGATE_API_KEYS", '["gamma"]')
        monkeypatch.setenv("CARRYGATE_EXECUTOR", "threads")
        with pytest.raises(ValueError, match="executor"):
            Settings()
        monkeypatch.setenv("CARRYGATE_EXECUTOR", "local")
        settings = Settings()
        assert settings.database_url == "postgresql://db/carrygate" and settings.api_keys == ["gamma"]
        assert settings.upload_limit_bytes == 4 * 1024**3 and settings.lease_seconds == 60
    finally:
        get_settings.cache_clear()


def test_0005_job_kind_defaults_existing_rows_and_is_reversible(db_url: str) -> None:
    """Rows written before 0005 read as evaluations; the kind is checked; down to 0004 drops the columns and up again works."""
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    try:
        job_id = _job_chain(engine)
        downgrade_to(db_url, "0004")
        assert {"kind", "stage"}.isdisjoint(c["name"] for c in inspect(engine).get_columns("jobs"))
        upgrade_to_head(db_url)
        with session_factory(engine)() as session:
            job = session.get_one(Job, job_id)
            assert (job.kind, job.stage) == ("evaluate", None)
            job.kind = "train"
            with pytest.raises(IntegrityError):
                session.commit()
    finally:
        engine.dispose()


def test_0006_backfills_builder_probes_with_their_task_and_is_reversible(db_url: str) -> None:
    """A builder probe written before 0006 gets its builder as its task; a dataset probe stays unknown (NULL)."""
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    try:
        job_id = _job_chain(engine)
        with session_factory(engine)() as session, session.begin():
            session.get_one(Job, job_id).probe_set.task = None
            session.add(ProbeSet(builder=None, builder_args={"split": "test"}, dataset_path="/data/maze", content_hash="ef" * 32,
                                 puzzles=0, labels=True))
        downgrade_to(db_url, "0005")
        assert "task" not in {c["name"] for c in inspect(engine).get_columns("probe_sets")}
        upgrade_to_head(db_url)
        with session_factory(engine)() as session:
            assert session.get_one(Job, job_id).probe_set.task == "sudoku"
            tasks = {p.dataset_path: p.task for p in session.query(ProbeSet)}
            assert tasks == {None: "sudoku", "/data/maze": None}
    finally:
        engine.dispose()
