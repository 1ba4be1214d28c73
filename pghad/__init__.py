"""pghad: a PostgreSQL high-availability daemon for a primary/standby pair."""

__version__ = "0.1.0"
