"""The lab's config pointed at the test's S3 server (SeaweedFS), under a prefix of its own."""

from __future__ import annotations

import secrets
from pathlib import Path

import boto3

from pghad.lab.s3 import BUCKET, S3Server
from tests.support.chaos import set_config_value


def use_bucket(
    config_path: Path,
    server: S3Server,
    prefix: str,
    *,
    key_file: Path | None = None,
    local_copy: bool = True,
) -> None:
    """[repository] in the S3 server's bucket under `prefix`, zstd backups, the archive on."""
    set_config_value(config_path, "backup", "compression", '"zstd"')
    set_config_value(config_path, "backup", "logical_dump", "false")
    set_config_value(config_path, "archive", "enabled", "true")
    values = {
        "type": '"s3"',
        "endpoint": f'"{server.endpoint}"',
        "bucket": f'"{BUCKET}"',
        "prefix": f'"{prefix}"',
        "credentials_file": f'"{server.credentials_file()}"',
        "local_copy": "true" if local_copy else "false",
        "timeout_s": "3",
    }
    if key_file is not None:
        values["encryption_key_file"] = f'"{key_file}"'
    for key, value in values.items():
        set_config_value(config_path, "repository", key, value)


def new_key(directory: Path) -> Path:
    path = directory / f"repository-{secrets.token_hex(3)}.key"
    path.write_text(secrets.token_bytes(32).hex() + "\n")
    path.chmod(0o600)
    return path


def client(server: S3Server):  # type: ignore[no-untyped-def]
    """A plain S3 client on the server (to look at, or damage, what pghad stored)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
    )


def objects(server: S3Server, prefix: str) -> dict[str, int]:
    """Object name (without `prefix/`) -> size."""
    found: dict[str, int] = {}
    pages = (
        client(server).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    )
    for page in pages:
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) + 1 :]] = int(item["Size"])
    return found
