"""What pghad tells the world: events, logs, metrics and the status document."""
