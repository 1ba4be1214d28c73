"""The S3 repository on a real S3 server (SeaweedFS), the real lab and a real Redis: backups and
the WAL archive in the bucket, restored on a fresh host, encrypted, refused when they should be."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis
import tomlkit

from pghad.backup.archive.wal_files import WalName
from pghad.backup.model import BackupStatus
from pghad.backup.planner import Requested
from pghad.backup.repository import store_of
from pghad.backup.retention import apply_retention
from pghad.backup.zstd_tar import ARCHIVE
from pghad.decide.observation import parse_lsn
from pghad.lab.local import free_port, lab_destroy
from pghad.lab.s3 import BUCKET, S3Server
from pghad.system import procs
from tests.support.chaos import (
    WRITER_TABLE,
    Writer,
    connect,
    kill9,
    set_config_value,
    streaming_standbys,
    wait_for,
)
from tests.support.s3 import client, new_key, objects, use_bucket

from ..conftest import REPO, DaemonProcess, Lab, RedisServer, make_lab
from .test_archive import archive_caught_up, port_of, restored_rows
from .test_backups import DAY1, runner_for, write_day

pytestmark = pytest.mark.integration


def pghad(
    config_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [sys.executable, "-m", "pghad", *args, "--config", str(config_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=300,
        env={**clean, **(env or {})},
    )


def fresh_host(lab: Lab, name: str, drop: tuple[str, ...] = (), **changes: str) -> Path:
    """A new config directory holding only the lab's config.toml (its relative backup and
    state directories are new and empty there), with `changes` to [repository] and the keys
    in `drop` removed from it."""
    directory = lab.dir.parent / f"{lab.dir.name}-{name}"
    directory.mkdir(mode=0o700)
    path = directory / "config.toml"
    shutil.copy2(lab.config_path, path)
    set_config_value(path, "backup", "dir", '"backups"')
    set_config_value(path, "state", "dir", '"state"')
    for key, value in changes.items():
        set_config_value(path, "repository", key, value)
    doc = tomlkit.parse(path.read_text())
    for node, table in zip(lab.config.nodes, doc["nodes"], strict=True):
        local = lab.config.local_node(node.name)  # the same servers, named as on any host
        table["data_dir"] = str(local.data_dir)
        table["socket_dir"] = str(local.socket_dir)
    for key in drop:
        del doc["repository"][key]
    path.write_text(tomlkit.dumps(doc))
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
    assert not list((fresh.parent / "backups").rglob(ARCHIVE))  # streamed, never landed here
    acked = [c for c in writer.acked if c.wall < lost_at]
    assert len(acked) > 100
    assert [c.id for c in acked if c.id not in ids] == []  # not one acknowledged commit lost
    hashes = redis.Redis.from_url(private_redis.url, decode_responses=True).keys("backup:*")
    assert sorted(hashes) == sorted(
        f"backup:{rid.replace('-', ':', 1)}" for rid in (body["backup"]["parent"], incremental)
    )


def refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0, result.stdout
    for text in expected:
        assert text in result.stderr, result.stderr


def incremental_on_a_new_host(lab: Lab, parent: str) -> None:
    """A host with only the config takes an incremental on a full it never had: the parent's
    manifest comes from the bucket."""
    host = fresh_host(lab, "incremental-here")
    write_day(lab.config, "node1", 2)
    taken = pghad(host, "backup", "--kind", "incremental")
    assert taken.returncode == 0, taken.stderr
    assert "listed from the repository" in taken.stderr  # the catalog came from the bucket
    listed = pghad(host, "backups", "--json")
    records = {r["id"]: r for r in json.loads(listed.stdout)}
    incremental = next(r for r in records.values() if r["kind"] == "incremental")
    assert incremental["status"] == "ok" and incremental["parent"] == parent
    assert (host.parent / "backups" / parent / "backup_manifest").exists()


def connection_settings(lab: Lab, s3_server: S3Server, backup_id: str) -> list[Path]:
    """Wrong credentials, none, TLS without the CA: each refused naming the setting; from the
    environment, and TLS with repository.ca_file: listed. Returns the refused hosts' configs."""
    bad_secret = lab.dir.parent / "wrong-credentials"
    bad_secret.write_text(
        f"[default]\naws_access_key_id = {s3_server.access_key}\naws_secret_access_key = nope\n"
    )
    wrong_credentials = fresh_host(lab, "wrong-credentials", credentials_file=f'"{bad_secret}"')
    refused(pghad(wrong_credentials, "backups"), "refused the credentials", "credentials_file")
    from_env = fresh_host(lab, "credentials-from-env", drop=("credentials_file",))
    refused(pghad(from_env, "backups"), "repository: no credentials", "AWS_ACCESS_KEY_ID")
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    listed = pghad(from_env, "backups", env=env)
    assert listed.returncode == 0 and backup_id in listed.stdout, listed.stderr
    https = f'"{s3_server.https_endpoint}"'
    untrusted = fresh_host(lab, "tls-unknown-ca", endpoint=https)
    refused(pghad(untrusted, "backups"), "TLS certificate was not accepted", "repository.ca_file")
    trusted = fresh_host(lab, "tls", ca_file=f'"{s3_server.ca_file}"', endpoint=https)
    listed = pghad(trusted, "backups")
    assert listed.returncode == 0 and backup_id in listed.stdout, listed.stderr
    return [wrong_credentials, untrusted]


def test_wrong_key_missing_key_changed_byte_and_wrong_credentials_are_clear_and_change_nothing(
    lab: Lab, s3_server: S3Server
) -> None:
    prefix = f"t2-{time.monotonic_ns()}"
    use_bucket(
        lab.config_path, s3_server, prefix, key_file=new_key(lab.dir.parent), local_copy=False
    )
    lab.set("archive", "enabled", "false")
    write_day(lab.config, "node1", 1)
    _config, runner = runner_for(lab)
    record = asyncio.run(runner.run(DAY1, Requested.FULL))
    assert record.status is BackupStatus.OK, record.error
    assert not (Path(record.path) / ARCHIVE).exists()  # no local copy: only the bucket has it
    verified = pghad(lab.config_path, "verify", record.id)
    assert verified.returncode == 0, verified.stderr
    assert f"read from s3://{BUCKET}/{prefix}" in verified.stdout
    target = lab.dir.parent / f"{lab.dir.name}-target"
    restore = ("restore", record.id, "--target", str(target))

    other_key = f'"{new_key(lab.dir.parent)}"'
    wrong_key = fresh_host(lab, "wrong-key", encryption_key_file=other_key)
    refused(pghad(wrong_key, *restore), "wrong encryption key", f"{prefix}/backups/{record.id}/")
    no_key = fresh_host(lab, "no-key", drop=("encryption_key_file",))
    refused(pghad(no_key, *restore), "is encrypted: set repository.encryption_key_file")
    lost_key = fresh_host(lab, "lost-key", encryption_key_file='"/nonexistent/repo.key"')
    refused(pghad(lost_key, *restore), "repository.encryption_key_file /nonexistent/repo.key")
    incremental_on_a_new_host(lab, record.id)
    refused_hosts = [wrong_key, no_key, lost_key, *connection_settings(lab, s3_server, record.id)]
    for config_path in refused_hosts:
        assert not list((config_path.parent / "backups").glob(f"{record.id}/*"))

    # A FIFO a killed restore left where the archive would be: replaced, the restore streams.
    os.mkfifo(Path(record.path) / ARCHIVE)
    restored = pghad(lab.config_path, *restore)
    assert restored.returncode == 0, restored.stderr
    assert (target / "PG_VERSION").exists()
    shutil.rmtree(target)
    # A restore refused before it reads (the target is not empty): the streams stop, no FIFO
    # is left where the archive would be.
    target.mkdir()
    (target / "keep").write_text("")
    refused(pghad(lab.config_path, *restore), "is not empty")
    assert [p.name for p in Path(record.path).iterdir()] == ["backup_manifest"]
    shutil.rmtree(target)

    # One byte changed in the stored archive: verify and restore name the object, write nothing.
    s3 = client(s3_server)
    name = f"{prefix}/backups/{record.id}/{ARCHIVE}"
    data = bytearray(s3.get_object(Bucket=BUCKET, Key=name)["Body"].read())
    data[len(data) // 2] ^= 0x40
    s3.put_object(Bucket=BUCKET, Key=name, Body=bytes(data))
    refused(pghad(lab.config_path, "verify", record.id), f"{name} was changed or damaged")
    refused(pghad(lab.config_path, *restore), f"{name} was changed or damaged")
    assert not target.exists()
    assert not (Path(record.path) / ARCHIVE).exists()
    assert [p.name for p in Path(record.path).iterdir()] == ["backup_manifest"]


def test_retention_deletes_in_the_bucket_exactly_what_it_deletes_here(
    lab: Lab, s3_server: S3Server
) -> None:
    prefix = f"t3-{time.monotonic_ns()}"
    use_bucket(lab.config_path, s3_server, prefix)
    lab.set("archive", "enabled", "false")
    lab.set("backup", "keep_cycles", "1")
    config, runner = runner_for(lab)
    taken = []
    for day, kind in enumerate((Requested.FULL, Requested.INCREMENTAL, Requested.FULL)):
        write_day(config, "node1", day)
        taken.append(asyncio.run(runner.run(DAY1 + timedelta(days=day), kind)))
        assert taken[-1].status is BackupStatus.OK, taken[-1].error
    store = store_of(config)
    assert store is not None
    kept_start = parse_lsn(taken[2].start_lsn) or 0
    segment = kept_start // (16 << 20)
    fake = [
        WalName(1, n).file_name() + ".zst" for n in (segment - 2, segment - 1, segment, segment + 1)
    ]
    for name in [*fake, "00000002.history"]:
        store.put_bytes(f"wal/{name}", b"x")  # stand-ins: retention reads names, not contents
    before = set(objects(s3_server, prefix))
    closed = f"http://127.0.0.1:{free_port(39000)}"  # nothing listens: the bucket is down
    down = config.model_copy(
        update={"repository": config.repository.model_copy(update={"endpoint": closed})}
    )
    assert apply_retention(down, runner.catalog) == []  # deferred: nothing deleted anywhere
    set_config_value(lab.config_path, "repository", "endpoint", f'"{closed}"')
    listed = pghad(lab.config_path, "backups")  # this host's catalog still lists
    assert listed.returncode == 0 and taken[0].id in listed.stdout, listed.stderr
    assert "cannot reach the bucket" in listed.stderr
    set_config_value(lab.config_path, "repository", "endpoint", f'"{s3_server.endpoint}"')
    assert set(objects(s3_server, prefix)) == before
    assert [r.id for r in runner.catalog.records()] == [r.id for r in taken]

    deleted = runner.apply_retention()

    assert [r.id for r in deleted] == [taken[0].id, taken[1].id]
    after = set(objects(s3_server, prefix))
    gone = before - after
    assert gone == {
        *(
            n
            for n in before
            if n.startswith((f"backups/{taken[0].id}/", f"backups/{taken[1].id}/"))
        ),
        f"wal/{fake[0]}",
        f"wal/{fake[1]}",
    }
    assert f"backups/{taken[2].id}/record.json" in after and "wal/00000002.history" in after
    assert not Path(taken[0].path).exists() and Path(taken[2].path).exists()


def archive_status(daemon: DaemonProcess) -> dict[str, object]:
    code, body = daemon.http("GET", "/status", token=daemon.lab.config.api.token)
    assert code == 200, body
    archive = body.get("archive") or {}
    assert isinstance(archive, dict)
    return archive


def test_the_bucket_down_for_a_minute_under_a_writer_spools_loses_nothing_and_drains(
    lab: Lab, daemon: DaemonProcess, s3_server: S3Server
) -> None:
    prefix = f"t4-{time.monotonic_ns()}"
    use_bucket(lab.config_path, s3_server, prefix)
    config = lab.config
    daemon.start().wait_healthy()
    code, body = daemon.post("/backups?kind=full")
    assert code == 200 and body["backup"]["status"] == "ok", body
    archive_caught_up(daemon)
    writer = Writer(config, pause_s=0.01).start()
    time.sleep(1)
    s3_server.stop()
    down_at = time.monotonic()
    try:
        with connect(config, "node1") as conn:
            while time.monotonic() - down_at < 60:  # finished segments pile up in the spool
                conn.execute("SELECT pg_switch_wal()")
                time.sleep(4)
        daemon.wait_event(lambda e: e.get("event") == "archive_upload_failed", 5, "upload failed")
        spooled = archive_status(daemon)
        assert int(str(spooled["spool_bytes"])) > 0, spooled
        during = [c for c in writer.acked if c.wall > time.time() - 40]
        chosen = during[len(during) // 2]
    finally:
        s3_server.start()
    daemon.wait_event(lambda e: e.get("event") == "archive_upload_resumed", 60, "upload resumed")
    wait_for(lambda: archive_status(daemon)["spool_bytes"] == 0, timeout=60, what="spool drained")
    writer.stop()
    archive_caught_up(daemon)
    local = {p.name for p in config.archive.path(config.backup.dir).iterdir() if p.is_file()}
    in_bucket = {n.removeprefix("wal/") for n in objects(s3_server, prefix) if n.startswith("wal/")}
    segments = {n for n in local if n.endswith(".zst")}
    assert len(segments) >= 15
    assert segments <= in_bucket  # every segment the archive stored reached the bucket
    with connect(config, "node1") as conn:
        live = {int(r[0]) for r in conn.execute(f"SELECT id FROM {WRITER_TABLE}").fetchall()}

    point = datetime.fromtimestamp(chosen.wall + 0.005).astimezone()
    fresh = fresh_host(lab, "pitr")  # the bucket only: no local backup, archive or catalog
    port = free_port(31000)
    target = lab.dir.parent / f"{lab.dir.name}-pitr-target"
    result = pghad(
        fresh, "restore", "--to", point.isoformat(), "--target", str(target), "--port", str(port)
    )
    assert result.returncode == 0, result.stderr
    ids, _timeline = restored_rows(config, target, port_of(result))
    assert ids == {i for i in live if i <= chosen.id}


def test_lab_up_s3_backs_up_to_its_own_bucket_and_destroy_stops_the_server(
    work_root: Path,
) -> None:
    made = make_lab(work_root, "lab-s3")
    try:
        up = subprocess.run(
            [sys.executable, "-m", "pghad", "lab", "up", "--s3", "--dir", str(made.dir)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
            timeout=120,
        )
        assert up.returncode == 0, up.stderr
        server = S3Server.load(made.dir / "s3")
        assert server is not None and server.pid is not None
        config = made.config
        assert config.repository.is_s3 and config.repository.encryption_key_file is not None
        taken = pghad(made.config_path, "backup", "--kind", "full")
        assert taken.returncode == 0, taken.stderr
        backup_id = taken.stdout.split(":")[0]
        assert f"backups/{backup_id}/record.json" in objects(server, "lab")
        verified = pghad(made.config_path, "verify", backup_id)
        assert verified.returncode == 0 and "read from s3://pghad/lab/" in verified.stdout
    finally:
        lab_destroy(made.dir)
    assert (
        not Path(f"/proc/{server.pid}").exists()
        or b"weed" not in Path(f"/proc/{server.pid}/cmdline").read_bytes()
    )
