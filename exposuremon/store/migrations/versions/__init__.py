"""Revision scripts, one per schema version (Alembic loads them by path, not by import)."""
