"""Alembic migrations of the store's schema; run at start by `exposuremon.store.migrate`."""
