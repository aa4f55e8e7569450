"""Alembic's entry point: migrate the connection the controller hands over, or, offline
(``alembic upgrade head --sql``), print the SQL for the configured URL's dialect."""

from __future__ import annotations

from alembic import context

from edgetier.control._db import Base

config = context.config
target = Base.metadata

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes["connection"]
    # batch mode: SQLite alters a table by copying it, so later migrations stay portable
    context.configure(connection=connection, target_metadata=target, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
