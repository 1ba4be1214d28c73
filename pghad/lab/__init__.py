"""The lab: two PostgreSQL servers on one machine, as one host or as three namespace hosts."""
