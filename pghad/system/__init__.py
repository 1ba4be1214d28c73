"""Operating-system helpers: safe files, programs run as the data owner, PostgreSQL's programs."""
