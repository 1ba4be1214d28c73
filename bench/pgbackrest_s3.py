"""pgBackRest (Debian's package) to the same SeaweedFS bucket, for `backup.py --repository s3`.

Debian's pgBackRest 2.45 refuses PostgreSQL 18 (it knows control versions up to 15's), so it runs
here on Debian's PostgreSQL 15 with the same pgbench data (same scale, same 1% update before the
incremental): zstd, process-max 2, an S3 repository over TLS (SeaweedFS's HTTPS port, its CA),
WAL archived with archive-push as pgBackRest requires. Full, incremental and restore (full +
incremental), medians of 3; encrypted (AES-256-CBC), as pghad's side is.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from pghad.lab.local import free_port
from pghad.lab.s3 import BUCKET, S3Server
from pghad.system import runas

PG15 = Path("/usr/lib/postgresql/15/bin")
REPEATS = 3


class PgBackRest:
    def __init__(self, root: Path, server: S3Server) -> None:
        self.root = root
        self.user = runas.ensure_lab_user()
        self.data = root / "data"
        self.socket = root / "run"
        self.port = free_port(27800)
        self.conf = root / "pgbackrest.conf"
        for path in (root, self.socket, root / "log", root / "spool"):
            path.mkdir(mode=0o700, exist_ok=True)
            runas.chown_to(path, self.user)
        # The CA must be readable by the PostgreSQL user (the server's own copy is root's).
        shutil.copy(server.ca_file, root / "ca.pem")
        runas.chown_to(root / "ca.pem", self.user)
        self.conf.write_text(
            "[global]\n"
            # The certificate names localhost (pgBackRest checks names, not addresses).
            "repo1-type=s3\nrepo1-s3-endpoint=localhost\n"
            f"repo1-storage-port={server.ports['s3.port.https']}\n"
            f"repo1-storage-ca-file={root / 'ca.pem'}\n"
            f"repo1-s3-bucket={BUCKET}\nrepo1-s3-region=us-east-1\nrepo1-s3-uri-style=path\n"
            f"repo1-s3-key={server.access_key}\nrepo1-s3-key-secret={server.secret_key}\n"
            f"repo1-path=/pgbackrest-{int(time.time())}\nrepo1-retention-full=10\n"
            "compress-type=zst\ncompress-level=1\nprocess-max=2\nstart-fast=y\n"
            # Encrypted too, as pghad's side is (pgBackRest's cipher: AES-256-CBC).
            f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={secrets.token_hex(24)}\n"
            f"log-path={root / 'log'}\nlock-path={root / 'log'}\nspool-path={root / 'spool'}\n"
            "log-level-console=warn\n"
            f"[bench]\npg1-path={self.data}\npg1-port={self.port}\npg1-user=postgres\n"
            f"pg1-socket-path={self.socket}\n"
        )
        self.conf.chmod(0o600)
        runas.chown_to(self.conf, self.user)

    def run(self, *argv: str, timeout: float = 1800) -> float:
        started = time.monotonic()
        result = subprocess.run(
            [*runas.prefix_for(self.user), *argv],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])}: {result.stderr.strip()[-800:]}")
        return time.monotonic() - started

    def pgbackrest(self, *args: str) -> float:
        return self.run("pgbackrest", f"--config={self.conf}", "--stanza=bench", *args)

    def psql(self, sql: str) -> None:
        self.run(str(PG15 / "psql"), "-h", str(self.socket), "-p", str(self.port), "-U",
                 "postgres", "-d", "postgres", "-qAt", "-c", sql)  # fmt: skip

    def create(self, scale: int) -> None:
        self.run(str(PG15 / "initdb"), "-D", str(self.data), "-U", "postgres", "-k", "-A", "trust")
        command = f"pgbackrest --config={self.conf} --stanza=bench archive-push %p"
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = ''\nunix_socket_directories = "
                f"'{self.socket}'\narchive_mode = on\narchive_command = '{command}'\n"
                "wal_level = replica\nmax_wal_size = 4GB\n"
            )
        self.run(str(PG15 / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
                 "-w", "start")  # fmt: skip
        self.run(str(PG15 / "pgbench"), "-i", "-s", str(scale), "-q", "-h", str(self.socket),
                 "-p", str(self.port), "-U", "postgres", "postgres")  # fmt: skip
        self.psql("CHECKPOINT")
        self.pgbackrest("stanza-create")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with_result = [str(PG15 / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]
            subprocess.run(
                [*runas.prefix_for(self.user), *with_result], capture_output=True, check=False
            )


def measure(root: Path, server: S3Server, scale: int) -> dict[str, object]:
    """pgBackRest's full, incremental and restore times on PostgreSQL 15 to the bucket."""
    if shutil.which("pgbackrest") is None or not (PG15 / "postgres").exists():
        return {"pgbackrest": "needs Debian's pgbackrest and postgresql-15 (apt-get install)"}
    bench = PgBackRest(root, server)
    try:
        bench.create(scale)
        fulls = [bench.pgbackrest("--type=full", "backup") for _ in range(REPEATS)]
        bench.psql(
            f"UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= {scale * 1000}"
        )
        incremental = bench.pgbackrest("--type=incr", "backup")
        restores = []
        for attempt in range(REPEATS):
            target = root / f"restored-{attempt}"
            target.mkdir(mode=0o700)
            runas.chown_to(target, bench.user)
            os.sync()
            restores.append(bench.pgbackrest(f"--pg1-path={target}", "restore"))
            shutil.rmtree(target)
    finally:
        bench.stop()
    return {
        "pgbackrest_postgresql": "15 (Debian; 2.45 does not support 18)",
        "pgbackrest_per_run_full_s": [round(t, 3) for t in fulls],
        "pgbackrest_full_s": round(statistics.median(fulls), 3),
        "pgbackrest_incremental_s": round(incremental, 3),
        "pgbackrest_per_run_restore_s": [round(t, 3) for t in restores],
        "pgbackrest_restore_s": round(statistics.median(restores), 3),
    }
