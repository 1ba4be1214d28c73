"""The exception tree: each category maps to one outcome in the loop and one CLI exit status."""


class PghadError(Exception):
    """Base of every error pghad raises on purpose; the message says what to do."""

    exit_status = 1


class ConfigError(PghadError):
    """The config file is missing or invalid; nothing was changed."""

    exit_status = 2


class SetupError(PghadError):
    """The machine lacks something pghad needs (binaries, a user, a readable path)."""

    exit_status = 3


class NodeError(PghadError):
    """A node driver action (start, stop, rewind, clone) failed."""


class OperationRefused(PghadError):
    """A request cannot run now (busy, wrong state, unknown node); nothing was changed."""


class OperationBusy(OperationRefused):
    """Another operation is running; nothing was changed."""
