"""The HTTP control API, what guards it, and the CLI's client of it."""
