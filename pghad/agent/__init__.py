"""`pghad agent`: the process work on a database host, and its own view of the other node."""
