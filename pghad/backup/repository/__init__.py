"""Where backups and archived WAL are kept besides the local directory: an S3 bucket."""

from __future__ import annotations

import functools

from pghad.backup.repository.store import Store
from pghad.config.model import Config
from pghad.config.sections import RepositoryConfig


@functools.cache
def _store(config: RepositoryConfig) -> Store:
    return Store.of(config)


def store_of(config: Config) -> Store | None:
    """The bucket's client when the repository is S3 (one per repository setting), else None."""
    return _store(config.repository) if config.repository.is_s3 else None
