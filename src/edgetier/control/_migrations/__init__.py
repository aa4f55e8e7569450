"""The controller's Alembic migrations (run by ``Database.migrate`` at every start)."""
