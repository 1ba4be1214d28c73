"""The bucket: put, get, list and delete objects under the repository's prefix (boto3).

Every object goes through the chunked cipher when a key is configured. Uploads are multipart
with parts sent in parallel (boto3's transfer manager reads the stream once, in order); reads
stream and decrypt as they arrive. Errors name the object or the setting at fault.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import boto3
import botocore.config
import botocore.exceptions
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig

from pghad.backup.repository.crypto import EncryptingReader, decrypt_stream, load_key
from pghad.config.sections import RepositoryConfig
from pghad.errors import ConfigError, PghadError

AUTH_ERRORS = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "Forbidden", "403"}
MISSING = {"NoSuchKey", "404", "NotFound"}


class RepositoryError(PghadError):
    """The bucket cannot be reached or refused a request."""


class ObjectMissing(RepositoryError):
    pass


def _credentials(config: RepositoryConfig) -> tuple[str, str]:
    path = config.credentials_file
    if path is None:
        access = os.environ.get("AWS_ACCESS_KEY_ID")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise ConfigError(
                "repository: no credentials: set repository.credentials_file, or "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment"
            )
        return access, secret
    parser = configparser.ConfigParser()
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
        section = parser["default"]
        return section["aws_access_key_id"], section["aws_secret_access_key"]
    except OSError as exc:
        raise ConfigError(
            f"repository.credentials_file {path}: cannot read it: {exc.strerror}"
        ) from exc
    except (KeyError, configparser.Error) as exc:
        raise ConfigError(
            f"repository.credentials_file {path}: needs a [default] section with "
            f"aws_access_key_id and aws_secret_access_key ({exc})"
        ) from exc


@dataclass
class Store:
    config: RepositoryConfig
    client: Any
    key: bytes | None

    @classmethod
    def of(cls, config: RepositoryConfig) -> Store:
        settings = botocore.config.Config(
            connect_timeout=config.timeout_s,
            read_timeout=config.timeout_s,
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=max(10, config.parallel * 2),
            s3={"addressing_style": "path"},
        )
        verify: str | bool = str(config.ca_file) if config.ca_file else True
        if config.ca_file is not None and not config.ca_file.is_file():
            raise ConfigError(f"repository.ca_file {config.ca_file}: no such file")
        access, secret = _credentials(config)
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint,
            region_name=config.region,
            config=settings,
            verify=verify,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
        )
        key = load_key(config.encryption_key_file, config.encryption_key_env)
        return cls(config, client, key)

    @property
    def where(self) -> str:
        return f"s3://{self.config.bucket}/{self._key('')}"

    def _key(self, name: str) -> str:
        prefix = self.config.prefix.strip("/")
        return f"{prefix}/{name}" if prefix else name

    def _transfer(self) -> TransferConfig:
        size = self.config.part_size_mb << 20
        return TransferConfig(
            multipart_threshold=size,
            multipart_chunksize=size,
            max_concurrency=self.config.parallel,
            use_threads=True,
        )

    @contextlib.contextmanager
    def _errors(self, name: str, doing: str) -> Iterator[None]:
        try:
            yield
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING:
                raise ObjectMissing(f"{self.where}{name}: no such object") from exc
            if code in AUTH_ERRORS:
                raise RepositoryError(
                    f"repository: the bucket refused the credentials ({code}) while {doing} "
                    f"{name}: check repository.credentials_file or AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY"
                ) from exc
            if code == "NoSuchBucket":
                raise RepositoryError(
                    f"repository.bucket {self.config.bucket!r}: no such bucket"
                ) from exc
            raise RepositoryError(f"{doing} {self.where}{name} failed: {exc}") from exc
        except botocore.exceptions.SSLError as exc:
            raise RepositoryError(
                f"repository.endpoint {self.config.endpoint}: the TLS certificate was not "
                f"accepted while {doing} {name} (set repository.ca_file to the CA that signed "
                f"it): {exc}"
            ) from exc
        except (botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError, OSError) as exc:
            raise RepositoryError(
                f"repository.endpoint {self.config.endpoint or 'AWS'}: cannot reach the bucket "
                f"while {doing} {name}: {exc}"
            ) from exc

    def put_stream(self, name: str, source: IO[bytes]) -> None:
        """Upload `source` (read once, in order) as object `name`, encrypted if configured."""
        body: IO[bytes] = source
        if self.key is not None:
            body = io.BufferedReader(EncryptingReader(source, self.key, name), 1 << 20)
        with self._errors(name, "uploading"):
            self.client.upload_fileobj(
                body, self.config.bucket, self._key(name), Config=self._transfer()
            )

    def put_file(self, name: str, path: Path) -> None:
        with path.open("rb") as source:
            self.put_stream(name, source)

    def put_bytes(self, name: str, data: bytes) -> None:
        self.put_stream(name, io.BytesIO(data))

    def get_stream(self, name: str, target: IO[bytes]) -> int:
        """Write the plain content of object `name` to `target`; returns its size."""
        with self._errors(name, "reading"):
            answer = self.client.get_object(Bucket=self.config.bucket, Key=self._key(name))
            body = answer["Body"]
            try:
                return decrypt_stream(body, target, self.key, name, f"{self.where}{name}")
            finally:
                body.close()

    def get_file(self, name: str, path: Path) -> None:
        """Object `name` into `path` (a temp file renamed once complete: never half-written)."""
        tmp = path.with_name(f".{path.name}.part")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                self.get_stream(name, out)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_bytes(self, name: str) -> bytes:
        out = io.BytesIO()
        self.get_stream(name, out)
        return out.getvalue()

    def names(self, under: str) -> dict[str, int]:
        """Objects whose names start with `under`: name (without the prefix) -> size."""
        found: dict[str, int] = {}
        strip = len(self._key(""))
        with self._errors(under, "listing"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.config.bucket, Prefix=self._key(under)
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found[item["Key"][strip:]] = int(item["Size"])
        return found

    def delete(self, names: Sequence[str]) -> None:
        for start in range(0, len(names), 1000):
            batch = [{"Key": self._key(n)} for n in names[start : start + 1000]]
            with self._errors(names[start], "deleting"):
                self.client.delete_objects(
                    Bucket=self.config.bucket, Delete={"Objects": batch, "Quiet": True}
                )
