"""Carry out decisions: actions, operator procedures, and the requests that start them."""
