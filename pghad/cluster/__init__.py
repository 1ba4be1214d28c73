"""Observation, decision and procedures for a primary/standby pair."""
