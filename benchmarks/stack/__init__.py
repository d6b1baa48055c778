"""The stack connbench starts: PostgreSQL, PgBouncer, the connection path, target processes, containers."""
