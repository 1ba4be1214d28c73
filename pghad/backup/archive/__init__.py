"""The WAL archive: receiving, shipping and replaying WAL."""
