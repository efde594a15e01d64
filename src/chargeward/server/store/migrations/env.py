"""Alembic environment: migrations run on a connection handed in by ``server.db``."""

from __future__ import annotations

from alembic import context

from chargeward.server.store.tables import SCHEMA

config = context.config
target_metadata = SCHEMA


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        context.configure(
            url=config.get_main_option("sqlalchemy.url"),
            target_metadata=target_metadata,
            literal_binds=True,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
