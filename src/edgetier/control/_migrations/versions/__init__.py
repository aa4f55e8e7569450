"""One module per migration, oldest first (``down_revision`` chains them)."""
