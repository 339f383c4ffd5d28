"""The store's vocabularies are defined once (`store/vocabulary.py`) and everything else derives from them;
the lease table works on both leased tables."""

from __future__ import annotations

from typing import get_args

from sqlalchemy import CheckConstraint

import carrygate.app.schemas as schemas
from carrygate import store
from carrygate.gate import Decision
from carrygate.store import vocabulary
from carrygate.store.api_tables import WebhookDelivery
from carrygate.store.leases import JOBS, SHARDS, now
from carrygate.store.tables import DECISIONS, Job, JobShard, Verdict


def _check(table: type, name: str) -> str:
    constraint = next(c for c in table.__table__.constraints if isinstance(c, CheckConstraint) and c.name.endswith(name))
    return str(constraint.sqltext)


def test_schemas_use_the_store_vocabularies() -> None:
    assert schemas.JobRead.model_fields["status"].annotation is vocabulary.JobStatus
    assert schemas.ApiKeyCreate.model_fields["scopes"].annotation == list[vocabulary.ApiScope]
    assert schemas.WebhookCreate.model_fields["events"].annotation == list[vocabulary.WebhookEvent]
    assert schemas.WebhookDeliveryRead.model_fields["status"].annotation is vocabulary.DeliveryStatus
    assert schemas.VerdictRead.model_fields["decision"].annotation is Decision


def test_check_constraints_list_every_value_of_their_vocabulary() -> None:
    for table, values in ((Job, vocabulary.JOB_STATUSES), (JobShard, vocabulary.SHARD_STATUSES),
                          (WebhookDelivery, vocabulary.DELIVERY_STATUSES), (Verdict, DECISIONS)):
        sql = _check(table, "status" if table is not Verdict else "decision")
        assert all(f"'{v}'" in sql for v in values), (table, sql)
    assert DECISIONS == get_args(Decision)  # one Literal (models/vocabulary.py): the gate decides with it, the CHECK lists it
    assert set(vocabulary.FINISHED_STATUSES) < set(vocabulary.JOB_STATUSES)


def test_store_metadata_holds_the_job_and_api_tables() -> None:
    assert {"jobs", "job_shards", "verdicts", "api_keys", "webhooks", "webhook_deliveries"} <= set(store.metadata.tables)


def test_one_lease_table_per_leased_table() -> None:
    assert JOBS.table is Job and SHARDS.table is JobShard
    for lease in (JOBS, SHARDS):
        sql = str(lease.claimable(now()).compile())
        assert "status" in sql and "lease_expires_at" in sql

