"""Alembic environment: run by `vxtap.store.db.Store.upgrade` on a connection it opens."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from vxtap.store.schema import Base

# Any stable number: the PostgreSQL advisory lock that serializes concurrent upgrades
# when several `vxtap server` processes start on one database at once.
UPGRADE_LOCK = 0x76787461

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    # SQLite runs DDL in transactions too; Alembic's default there is not to, which lets two
    # processes upgrading a fresh file interleave. One transaction (BEGIN IMMEDIATE, as
    # Store.upgrade opens a write connection) serializes them and keeps an upgrade atomic.
    transactional_ddl=True,
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK})
    context.run_migrations()
