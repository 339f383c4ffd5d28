"""The job store, below both the API and the workers: tables, sessions, vocabularies and leases.

- `store/tables.py`      the job tables (checkpoints, probe sets, jobs, candidates, results, verdicts, shards)
- `store/api_tables.py`  API keys, webhook subscriptions, deliveries and attempts
- `store/vocabulary.py`  every closed vocabulary (statuses, scopes, events) as one `Literal` each
- `store/sessions.py`    engines and sessions for SQLite and PostgreSQL
- `store/leases.py`      claim, renew, release and settle a leased row (jobs and shards)

`metadata` holds every table (both table modules are imported here): Alembic's env and the migration
drift test read it.
"""

from carrygate.store import api_tables, tables  # noqa: F401  (each table module registers its tables on Base.metadata)
from carrygate.store.tables import Base

metadata = Base.metadata
