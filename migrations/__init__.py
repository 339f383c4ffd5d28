"""Alembic migrations of the service database; run them with `carrygate migrate` or `app.db.upgrade_to_head`."""
