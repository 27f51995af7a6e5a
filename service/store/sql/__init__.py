"""The store's SQL, one module per concern; where the dialects differ, their statements stand
side by side (SQLite first, PostgreSQL after) so they can be compared at a glance."""
