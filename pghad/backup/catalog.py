"""The backup catalog: a local manifest (written atomically) mirrored to Redis hashes.

The manifest is the source of truth, so listing, retention and restore work while Redis is down;
records saved meanwhile are pushed when Redis is back (flush).
"""

from __future__ import annotations

import json
from pathlib import Path

import redis
import structlog
from redis.exceptions import RedisError

from pghad.backup.model import BackupRecord
from pghad.config.model import Config
from pghad.system.state_store import read_json, write_atomic

MANIFEST = "catalog.json"
log = structlog.get_logger("pghad")


class Catalog:
    def __init__(
        self, backup_dir: Path, redis_url: str | None, key_prefix: str = "", cluster: str = ""
    ) -> None:
        """`key_prefix` goes before the manual's key names (clusters sharing a Redis); every
        hash carries `cluster`, and a hash another cluster wrote is never overwritten."""
        self.dir = backup_dir
        self.path = backup_dir / MANIFEST
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.cluster = cluster

    @classmethod
    def of(cls, config: Config) -> Catalog:
        redis_config = config.redis
        return cls(
            config.backup.dir, redis_config.url, redis_config.key_prefix, config.cluster.name
        )

    def key(self, record: BackupRecord) -> str:
        return self.key_prefix + record.redis_key

    def _fields(self, record: BackupRecord) -> dict[str, str]:
        return {**record.redis_fields(), "cluster": self.cluster}

    def _ours(self, client: redis.Redis, key: str) -> bool:
        """Whether `key` is free or this cluster's; another cluster's hash is left alone."""
        raw = client.hget(key, "cluster")
        owner = raw.decode() if isinstance(raw, bytes) else raw
        if owner is None or owner == self.cluster:
            return True
        log.warning("redis_key_conflict", key=key, owner=owner, cluster=self.cluster)
        return False

    def other_clusters(self) -> set[str]:
        """Clusters whose backup hashes live under this catalog's key names (same prefix)."""
        client = redis.Redis.from_url(self.redis_url or "", socket_timeout=2)
        try:
            owners = {
                raw.decode() if isinstance(raw, bytes) else str(raw)
                for key in client.scan_iter(match=f"{self.key_prefix}backup:*", count=500)
                if (raw := client.hget(key, "cluster")) is not None
            }
        finally:
            client.close()
        return owners - {self.cluster}

    def _load(self) -> dict[str, object]:
        return read_json(self.path) or {"records": [], "redis_pending": [], "redis_deleted": []}

    def records(self) -> list[BackupRecord]:
        raw = self._load().get("records", [])
        assert isinstance(raw, list)
        return sorted((BackupRecord.from_dict(r) for r in raw), key=lambda r: r.started)

    def get(self, backup_id: str) -> BackupRecord | None:
        return next((r for r in self.records() if r.id == backup_id), None)

    def _write(self, records: list[BackupRecord], pending: list[str], deleted: list[str]) -> None:
        data = {
            "records": [r.to_dict() for r in records],
            "redis_pending": sorted(set(pending)),
            "redis_deleted": sorted(set(deleted)),
        }
        write_atomic(self.path, json.dumps(data, indent=2) + "\n")

    def _lists(self) -> tuple[list[str], list[str]]:
        data = self._load()
        pending, deleted = data.get("redis_pending", []), data.get("redis_deleted", [])
        assert isinstance(pending, list) and isinstance(deleted, list)
        return [str(p) for p in pending], [str(d) for d in deleted]

    def save(self, record: BackupRecord) -> bool:
        """Write the record to the manifest now, and to Redis when it can.

        Returns False when the manifest cannot be written (the record then goes to Redis only).
        """
        try:
            records = [r for r in self.records() if r.id != record.id] + [record]
            pending, deleted = self._lists()
            self._write(records, [*pending, record.id], deleted)
        except OSError:
            self._push([record])
            return False
        self.flush()
        return True

    def _push(self, records: list[BackupRecord]) -> None:
        client = redis.Redis.from_url(
            self.redis_url or "", socket_timeout=1.0, socket_connect_timeout=1.0
        )
        try:
            for record in records:
                self._write_hash(client, record)
        except (RedisError, OSError):
            pass
        finally:
            client.close()

    def _write_hash(self, client: redis.Redis, record: BackupRecord) -> None:
        key = self.key(record)
        if not self._ours(client, key):
            return
        pipe = client.pipeline()
        pipe.delete(key)
        # redis stubs type the mapping key invariantly; str keys are accepted.
        pipe.hset(key, mapping=self._fields(record))  # type: ignore[arg-type]
        pipe.execute()

    def delete(self, record: BackupRecord) -> None:
        records = [r for r in self.records() if r.id != record.id]
        pending, deleted = self._lists()
        self._write(records, [p for p in pending if p != record.id], [*deleted, self.key(record)])
        self.flush()

    def flush(self) -> int:
        """Make Redis match the manifest: push pending and missing records (a Redis restarted
        empty gets every record back), delete removed ones. Returns how many are still pending.
        """
        pending, deleted = self._lists()
        if not self.redis_url:
            return len(pending) + len(deleted)
        by_id = {r.id: r for r in self.records()}
        client = redis.Redis.from_url(
            self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        try:
            probe = client.pipeline()
            for record in by_id.values():
                probe.exists(self.key(record))
            present = probe.execute()
            missing = [r.id for r, found in zip(by_id.values(), present, strict=True) if not found]
            for record_id in dict.fromkeys([*pending, *missing]):
                found = by_id.get(record_id)
                if found is not None:
                    self._write_hash(client, found)
                if record_id in pending:
                    pending.remove(record_id)
            for key in list(deleted):
                if self._ours(client, key):
                    client.delete(key)
                deleted.remove(key)
        except (RedisError, OSError):
            pass
        finally:
            client.close()
            self._write(list(by_id.values()), pending, deleted)
        return len(pending) + len(deleted)
