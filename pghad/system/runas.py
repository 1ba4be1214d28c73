"""Run PostgreSQL programs as an unprivileged user: postgres refuses to run as root."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from pghad.errors import SetupError

LAB_USER = "pghad"
SHARED_PG_DIR = Path("/opt/pghad")


def is_root() -> bool:
    return os.geteuid() == 0


def ensure_lab_user() -> str:
    """The OS user that owns lab data directories: a system user made once when run as root."""
    if not is_root():
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam(LAB_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", LAB_USER],
            check=True,
            capture_output=True,
        )
    return LAB_USER


def owner_of(path: Path) -> str:
    return pwd.getpwuid(path.stat().st_uid).pw_name


def prefix_for(user: str) -> list[str]:
    """Command prefix that runs a program as `user` (nothing when we already are that user)."""
    if pwd.getpwuid(os.geteuid()).pw_name == user:
        return []
    if not is_root():
        raise SetupError(f"cannot act as {user!r}: run pghad as {user!r} or as root")
    return ["runuser", "-u", user, "--"]


def chown_to(path: Path, user: str) -> None:
    """Give `path` itself to `user`; a symlink is changed itself, never what it points to."""
    if is_root():
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def usable_bin_dir(bin_dir: Path, user: str) -> Path:
    """Return a copy of the PostgreSQL install that `user` can execute, making one if needed.

    A virtualenv under /root (mode 700) holds programs the unprivileged user cannot reach; a
    child started there fails, sometimes silently. Copy the install to /opt/pghad in that case.
    """
    if _can_run(bin_dir, user):
        return bin_dir
    install = bin_dir.parent
    target = SHARED_PG_DIR / f"pginstall-{install.stat().st_mtime_ns}"
    if not target.exists():
        SHARED_PG_DIR.mkdir(parents=True, exist_ok=True)
        SHARED_PG_DIR.chmod(0o755)
        staging = target.with_suffix(".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(install, staging, symlinks=True)
        for root, dirs, _files in os.walk(staging):
            for name in dirs:
                Path(root, name).chmod(0o755)
        staging.chmod(0o755)
        staging.rename(target)
    copied = target / bin_dir.name
    if not _can_run(copied, user):
        raise SetupError(
            f"user {user!r} cannot run {bin_dir / 'postgres'}: every directory on that path must "
            "be traversable (chmod o+x) by that user"
        )
    return copied


def _can_run(bin_dir: Path, user: str) -> bool:
    result = subprocess.run(
        [*prefix_for(user), str(bin_dir / "postgres"), "--version"],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0
