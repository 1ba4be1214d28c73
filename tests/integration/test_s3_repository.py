"""The S3 repository on a real S3 server (SeaweedFS), the real lab and a real Redis: backups and
the WAL archive in the bucket, restored on a fresh host, encrypted, refused when they should be."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from pghad.lab import free_port
from pghad.lab_s3 import BUCKET, S3Server
from pghad.nodes import procs
from tests.support.chaos import Writer, kill9, streaming_standbys, wait_for
from tests.support.s3 import client, new_key, objects, use_bucket

from ..conftest import REPO, DaemonProcess, Lab, RedisServer
from .test_archive import archive_caught_up, port_of, restored_rows

pytestmark = pytest.mark.integration


def pghad(config_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pghad", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=timeout,
    )


def fresh_host(lab: Lab, name: str, **changes: str) -> Path:
    """A new config directory holding only the lab's config.toml (its relative backup and
    state directories are new and empty there), with `changes` to [repository]."""
    from tests.support.chaos import set_config_value

    directory = lab.dir.parent / f"{lab.dir.name}-{name}"
    directory.mkdir(mode=0o700)
    path = directory / "config.toml"
    shutil.copy2(lab.config_path, path)
    set_config_value(path, "backup", "dir", '"backups"')
    set_config_value(path, "state", "dir", '"state"')
    for key, value in changes.items():
        set_config_value(path, "repository", key, value)
    return path


def test_full_and_incremental_in_the_bucket_everything_lost_restore_latest_on_a_fresh_host(
    lab: Lab, daemon: DaemonProcess, s3_server: S3Server, private_redis: RedisServer
) -> None:
    prefix = f"t1-{time.monotonic_ns()}"
    key = new_key(lab.dir.parent)
    use_bucket(lab.config_path, s3_server, prefix, key_file=key)
    lab.set("archive", "synchronous", "true")
    lab.set("redis", "url", f'"{private_redis.url}"')
    config = lab.config
    daemon.start().wait_healthy()
    code, body = daemon.post("/backups?kind=full")
    assert code == 200 and body["backup"]["status"] == "ok", body
    wait_for(
        lambda: "pghad_archive" in streaming_standbys(config, "node1"),
        timeout=20,
        what="the archive streaming",
    )
    writer = Writer(config, pause_s=0.01).start()
    time.sleep(2)
    code, body = daemon.post("/backups?kind=incremental")
    assert code == 200 and body["backup"]["status"] == "ok", body
    incremental = body["backup"]["id"]
    time.sleep(2)
    archive_caught_up(daemon)
    for node in config.nodes:
        kill9(node)
    lost_at = time.time()
    writer.stop()
    daemon.stop()  # ships what the archive wrote last (the partial segment) on its way out
    procs.reap_postgres_zombies()
    stored = objects(s3_server, prefix)
    assert f"backups/{incremental}/record.json" in stored
    assert any(name.startswith("wal-partial/") for name in stored)
    # Nothing readable in the bucket: the rows' text never appears in any stored object.
    raw = client(s3_server).get_object(
        Bucket=BUCKET, Key=f"{prefix}/backups/{incremental}/record.json"
    )
    assert b"completo" not in raw["Body"].read()

    for node in config.nodes:
        shutil.rmtree(config.local_node(node.name).data_dir)
    shutil.rmtree(config.backup.dir)
    redis.Redis.from_url(private_redis.url).flushall()
    fresh = fresh_host(lab, "fresh")

    listed = pghad(fresh, "backups")
    assert listed.returncode == 0, listed.stderr
    assert incremental in listed.stdout
    port = free_port(31000)
    target = lab.dir.parent / f"{lab.dir.name}-restored"
    result = pghad(fresh, "restore", "--latest", "--target", str(target), "--port", str(port))
    assert result.returncode == 0, result.stderr
    ids, _timeline = restored_rows(config, target, port_of(result))
    acked = [c for c in writer.acked if c.wall < lost_at]
    assert len(acked) > 100
    assert [c.id for c in acked if c.id not in ids] == []  # not one acknowledged commit lost
    hashes = redis.Redis.from_url(private_redis.url).keys("backup:*")
    assert sorted(k.decode() for k in hashes) == sorted(
        f"backup:{rid.replace('-', ':', 1)}" for rid in (body["backup"]["parent"], incremental)
    )
