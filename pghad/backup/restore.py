"""Verify a backup, and rebuild a data directory from its chain with pg_combinebackup."""

from __future__ import annotations

import asyncio
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupRecord, BackupStatus
from pghad.backup.steps import StepFailed, read_manifest, verify_args
from pghad.backup.zstd_tar import ARCHIVE, unpack_archive, verify_archive
from pghad.config.model import AuthConfig, LocalNodeConfig
from pghad.errors import OperationRefused
from pghad.nodes.base import Role
from pghad.nodes.local import LocalDriver
from pghad.system import files, runas, trust
from pghad.system.commands import run_command

T = TypeVar("T")
TIMEOUT_S = 6 * 3600
# Settings copied from the node the backup was taken on that would tie a restored, independent
# server to the cluster (streaming from it, or waiting for its synchronous standby).
# Settings of the cluster the backup came from: a restored copy must neither follow that primary,
# wait for its standby, nor archive into its archive.
CLUSTER_SETTINGS = (
    "primary_conninfo",
    "primary_slot_name",
    "synchronous_standby_names",
    "archive_command",
    "archive_mode",
)


@dataclass(frozen=True)
class Restored:
    record: BackupRecord
    target: Path
    chain: tuple[str, ...]
    port: int | None
    owner: str | None = None  # the OS user a started copy runs as


def find(catalog: Catalog, backup_id: str) -> BackupRecord:
    record = catalog.get(backup_id)
    if record is None:
        known = ", ".join(r.id for r in catalog.records()) or "none"
        raise OperationRefused(f"no backup {backup_id!r} in {catalog.path} (known: {known})")
    return record


async def verify(bin_dir: Path, record: BackupRecord) -> None:
    if not Path(record.path).is_dir():
        raise StepFailed("verify", f"{record.id}: {record.path} is missing")
    if record.compression == "zstd":
        with tempfile.TemporaryDirectory(prefix="pghad-verify-") as scratch:
            try:
                await asyncio.to_thread(verify_archive, Path(record.path), Path(scratch))
            except StepFailed as exc:
                raise StepFailed("verify", f"{record.id} is damaged: {exc.detail}") from exc
            await _parse_wal(bin_dir, record, Path(scratch) / "pg_wal")
        return
    result = await run_command([str(bin_dir / "pg_verifybackup"), *verify_args(record)], TIMEOUT_S)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise StepFailed("verify", f"{record.id} is damaged: {' / '.join(lines[:5])}")


async def _parse_wal(bin_dir: Path, record: BackupRecord, wal_dir: Path) -> None:
    """The backup's WAL parsed record by record, from its start to its end, as pg_verifybackup
    does for a plain backup (the manifest does not list WAL files: no checksum covers them)."""
    manifest = await asyncio.to_thread(read_manifest, Path(record.path))
    for wal in manifest["WAL-Ranges"]:
        result = await run_command(
            [str(bin_dir / "pg_waldump"), "--quiet", f"--path={wal_dir}",
             f"--timeline={wal['Timeline']}", f"--start={wal['Start-LSN']}",
             f"--end={wal['End-LSN']}"],
            TIMEOUT_S,
        )  # fmt: skip
        if result.returncode != 0:
            problem = " / ".join(result.stderr.strip().splitlines()[:3])
            raise StepFailed("verify", f"{record.id} is damaged: its WAL does not parse: {problem}")


def _chain(catalog: Catalog, record: BackupRecord) -> list[BackupRecord]:
    chain = []
    for member in record.chain:
        found = catalog.get(member)
        if found is None or found.status is not BackupStatus.OK:
            raise OperationRefused(f"{record.id} needs {member}, which is missing or failed")
        chain.append(found)
    return chain


def _raise_failure(result: T | BaseException) -> T:
    """One result of gather(return_exceptions=True): raised if it is a failure."""
    if isinstance(result, BaseException):
        raise result
    return result


async def _plain_dir(record: BackupRecord, into: Path) -> Path:
    """pg_combinebackup reads plain directories: unpack a tar-format backup into `into` first."""
    if not record.is_tar:
        return Path(record.path)
    if record.compression == "zstd":
        try:
            # Every file is checked against the manifest as it is unpacked.
            await asyncio.to_thread(unpack_archive, Path(record.path) / ARCHIVE, into)
        except StepFailed as exc:
            if exc.step == "unpack":
                raise
            raise StepFailed("verify", f"{record.id} is damaged: {exc.detail}") from exc
        return into
    (into / "pg_wal").mkdir(parents=True)
    source = Path(record.path)
    for archive, where in (("base", into), ("pg_wal", into / "pg_wal")):
        found = sorted(source.glob(f"{archive}.tar*"))
        if not found:
            raise StepFailed("unpack", f"{record.id}: no {archive}.tar* in {source}")
        result = await run_command(["tar", "-xf", str(found[0]), "-C", str(where)], TIMEOUT_S)
        if result.returncode != 0:
            raise StepFailed("unpack", f"{record.id}: tar failed: {result.stderr.strip()}")
    await asyncio.to_thread(shutil.copy2, source / "backup_manifest", into / "backup_manifest")
    return into


async def _combine(bin_dir: Path, chain: list[BackupRecord], target: Path) -> bool:
    """Rebuild `target` from the chain; True when its files were checked on the way in (unpacked
    here, then linked) rather than copied by pg_combinebackup."""
    if len(chain) == 1 and chain[0].compression == "zstd":
        await _plain_dir(chain[0], target)  # a full alone: unpacked in place
        return True
    # A private directory of our own (mode 0700, a name nobody can guess) for unpacked tar files.
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        # Unpacked side by side: a small incremental's cost is creating its files, not data.
        unpacked = await asyncio.gather(
            *(_plain_dir(m, scratch / m.id) for m in chain), return_exceptions=True
        )
        inputs = [_raise_failure(result) for result in unpacked]
        # Unpacked copies are ours to give away: link their files rather than copy them again.
        # (Never the backups' own files: the restored server would change them in place.)
        linked = all(p.is_relative_to(scratch) for p in inputs)
        checked = linked and all(m.compression == "zstd" for m in chain)
        options = ["--link"] if linked else []
        # Checked files are not read again (pg_verifybackup --skip-checksums): no checksums
        # to compute for them.
        options += ["--manifest-checksums=NONE"] if checked else []
        result = await run_command(
            [str(bin_dir / "pg_combinebackup"), *options, *map(str, inputs), "-o", str(target)],
            TIMEOUT_S,
        )
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
    if result.returncode != 0:
        raise StepFailed("combine", f"pg_combinebackup failed: {result.stderr.strip()[-800:]}")
    return checked


async def _rebuild(bin_dir: Path, chain: list[BackupRecord], target: Path) -> None:
    checked = await _combine(bin_dir, chain, target)
    # The result: every file there with its size, and the WAL it needs parsed; its contents
    # read again only where pg_combinebackup copied them after they were checked.
    skip = ["--skip-checksums"] if checked else []
    result = await run_command(
        [str(bin_dir / "pg_verifybackup"), "--quiet", *skip, str(target)], TIMEOUT_S
    )
    if result.returncode != 0:
        raise StepFailed("verify-restored", result.stderr.strip()[-800:])


def _empty(target: Path, *, remove: bool) -> None:
    if remove or not target.is_dir():
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _detach(target: Path) -> None:
    """Make the restored directory an independent server, not a standby of the cluster.

    Done as root while the tree is still root's; nothing there is followed if it is a link.
    """
    for signal_file in ("standby.signal", "recovery.signal"):
        files.remove_in(target, signal_file)
    auto = target / "postgresql.auto.conf"
    text = files.read_text(auto)
    if text is not None:
        lines = text.splitlines(keepends=True)
        kept = "".join(ln for ln in lines if ln.split("=", 1)[0].strip() not in CLUSTER_SETTINGS)
        files.write_file(auto, kept.encode(), None)


def chown_tree(target: Path, user: str) -> None:
    """Hand the restored tree to `user`, through descriptors, after every edit of root's."""
    if not runas.is_root():
        return
    entry = pwd.getpwnam(user)
    trust.chown_tree(target, entry.pw_uid, entry.pw_gid)


def restored_node(target: Path, port: int) -> LocalNodeConfig:
    """The restored server's settings: its socket in its own directory (never /tmp, where
    anyone can plant a lock file), unless that path is too long for a socket."""
    socket_dir = target if len(str(target)) < 90 else None
    return LocalNodeConfig(
        name="restored", host="127.0.0.1", port=port, data_dir=target, socket_dir=socket_dir
    )


async def restore(
    catalog: Catalog,
    bin_dir: Path,
    backup_id: str,
    target: Path,
    *,
    port: int | None = None,
    owner: str | None = None,
) -> Restored:
    """Combine the chain into `target`, verify it, and optionally start it on `port`."""
    record = find(catalog, backup_id)
    if record.status is not BackupStatus.OK:
        raise OperationRefused(f"{record.id} is {record.status.value}: only ok backups restore")
    chain = _chain(catalog, record)
    # Root makes the target itself (or takes an empty one of its own): never a path another
    # user could have planted, at any component.
    existed = trust.claim_target(target)
    try:
        # A zstd backup is checked as it is unpacked (one read instead of two).
        checks = await asyncio.gather(
            *(verify(bin_dir, m) for m in chain if m.compression != "zstd"),
            return_exceptions=True,
        )
        for check in checks:
            _raise_failure(check)
        await _rebuild(bin_dir, chain, target)
        _detach(target)
    except BaseException:
        # A failed restore leaves the target as it found it: absent or empty.
        await asyncio.to_thread(_empty, target, remove=not existed)
        raise
    user = None
    if port is not None:
        user = owner or runas.ensure_lab_user()
        await asyncio.to_thread(chown_tree, target, user)
        node = restored_node(target, port)
        # The restored server's log stays inside what was restored, not beside it.
        log = target / "restore-postgresql.log"
        driver = LocalDriver(node, AuthConfig(), bin_dir, os_user=user, log_path=log)
        await driver.start(Role.PRIMARY)
    return Restored(record, target, record.chain, port, user)
