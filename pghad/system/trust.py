"""Directories root may trust, and trees root hands over without following links.

pghad runs as root. A directory another user can write (or a link another user owns on the way
to it) lets that user swap what root opens for a link to any file of root's. So root's own
directories (state, backups, archive) and restore targets are checked component by component
before use, and a restored tree is given to its server's user through directory descriptors.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pghad.errors import OperationRefused, SetupError

NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _trusted_owner(uid: int) -> bool:
    return uid in (0, os.geteuid())


def untrusted_component(path: Path, *, open_last: bool = False) -> str | None:
    """Why some component of `path` (absolute) could be replaced by another user, or None.

    Every existing component must be root's (or this process's user's) and, when a directory,
    writable by nobody else unless sticky (/tmp: others cannot rename what root made there). A
    link is followed only when it is root's too. `open_last`: the last directory may be writable
    by others (pghad makes it private).
    """
    current = Path("/")
    parts = list(path.absolute().parts[1:])
    hops = 0
    while True:
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return None  # the rest is made by root
        if stat.S_ISLNK(info.st_mode):
            if not _trusted_owner(info.st_uid):
                return f"{current} is a link owned by uid {info.st_uid}"
            hops += 1
            if hops > 40:
                return f"{current}: too many links"
            current = (current.parent / os.readlink(current)).absolute()
            parts = list(current.parts[1:]) + parts
            current = Path("/")
            continue
        if not _trusted_owner(info.st_uid):
            return f"{current} is owned by uid {info.st_uid}"
        if stat.S_ISDIR(info.st_mode) and not (open_last and not parts):
            open_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            if open_write and not info.st_mode & stat.S_ISVTX:
                return f"{current} is writable by other users (mode {info.st_mode & 0o7777:o})"
        if not parts:
            return None
        current = current / parts.pop(0)


def require_trusted_dir(path: Path, setting: str) -> None:
    """Refuse a directory of pghad's that another user could write or redirect, naming the fix.

    The directory itself, when pghad's, is made 0700 (as the backups directory always was):
    what other users could put there before is refused as each file is opened.
    """
    problem = untrusted_component(path, open_last=True)
    if problem is None:
        _private(path)
        return
    raise SetupError(
        f"{setting} = {str(path)!r} is not safe for pghad (run as root) to use: {problem}. "
        f"Use a directory only root can write, outside the PostgreSQL user's directories "
        f"(e.g. `install -d -o root -m 700 {path}`)"
    )


def _private(path: Path) -> None:
    try:
        fd = os.open(path, NOFOLLOW_DIR)
    except FileNotFoundError:
        return  # made 0700 when pghad creates it
    try:
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def claim_target(target: Path) -> bool:
    """Make `target` a new directory of root's (0700), or accept an empty one root owns that
    is not a link; True when it existed. Refused when a component could be swapped by another
    user: root then writes nothing there."""
    problem = untrusted_component(target.parent)
    if problem is not None:
        raise OperationRefused(
            f"--target {target}: {problem}; root must not write where another user could "
            "plant a link: choose a target under a directory only root can write"
        )
    os.makedirs(target.parent, mode=0o755, exist_ok=True)
    try:
        os.mkdir(target, 0o700)  # never follows a link at `target`: EEXIST
        return False
    except FileExistsError:
        pass
    info = os.lstat(target)
    if stat.S_ISREG(info.st_mode):
        raise OperationRefused(f"{target} is a file: --target must be a new or empty directory")
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise OperationRefused(
            f"--target {target} exists and is not a directory of root's (a link or another "
            "user's file?): choose a new path, pghad creates it"
        )
    fd = os.open(target, NOFOLLOW_DIR)
    try:
        if os.listdir(fd):
            raise OperationRefused(f"{target} is not empty: choose a new directory for --target")
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return True


def chown_tree(target: Path, uid: int, gid: int) -> None:
    """Give `target` and everything in it to uid:gid, through descriptors opened without
    following links (a link is changed itself, never what it points to)."""
    fd = os.open(target, NOFOLLOW_DIR)
    try:
        _chown_from(fd, uid, gid)
    finally:
        os.close(fd)


def _chown_from(dir_fd: int, uid: int, gid: int) -> None:
    for entry in os.scandir(dir_fd):
        if entry.is_dir(follow_symlinks=False):
            child = os.open(entry.name, NOFOLLOW_DIR, dir_fd=dir_fd)
            try:
                _chown_from(child, uid, gid)
            finally:
                os.close(child)
        else:
            os.chown(entry.name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    os.fchown(dir_fd, uid, gid)


def require_own_dirs(state_dir: Path, backup_dir: Path, archive_dir: Path) -> None:
    """The state, backup and archive directories: root's alone, or pghad refuses to use them."""
    for setting, path in (
        ("state.dir", state_dir),
        ("backup.dir", backup_dir),
        ("archive.dir", archive_dir),
    ):
        require_trusted_dir(path, setting)


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path` names something under `root` (no `..`, compared without resolving)."""
    candidate = Path(os.path.normpath(path.absolute()))
    return candidate.is_relative_to(Path(os.path.normpath(root.absolute()))) and candidate != root
