"""Backups: PostgreSQL's native full and incremental backups, a catalog, verify, restore."""
