"""The continuous WAL archive and point-in-time restore."""
