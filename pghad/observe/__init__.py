"""Observation: probe every node at once and hold a connection that wakes the loop."""
