"""Open a directory without following any link another user could have planted on the way.

The part of the path only root can change (root's directories, root's links such as /var/run)
is opened as usual; from the first component another user owns, the rest is resolved beneath
it with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel has it (Linux 5.6+),
and otherwise one component at a time with O_NOFOLLOW: a link anywhere there is refused.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
from pathlib import Path

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR = _DIR | os.O_NOFOLLOW
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
# openat2's number is the same on every architecture that has it (unified syscall table).
_SYS_OPENAT2 = 437 if platform.machine() in ("x86_64", "aarch64", "riscv64") else None


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works = _SYS_OPENAT2 is not None


def _openat2(dir_fd: int, relative: str) -> int:
    how = _OpenHow(_DIR, 0, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
    fd = int(
        _libc.syscall(
            _SYS_OPENAT2,
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(os.fsencode(relative)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), relative)
    return fd


def _walk(dir_fd: int, parts: list[str]) -> int:
    """O_NOFOLLOW one component at a time: the same refusal as openat2, on older kernels."""
    current = os.dup(dir_fd)
    try:
        for part in parts:
            following = os.open(part, _NOFOLLOW_DIR, dir_fd=current)
            os.close(current)
            current = following
    except BaseException:
        os.close(current)
        raise
    return current


def _trusted_prefix(path: Path) -> tuple[Path, list[str]]:
    """The longest leading part of `path` whose components are root's (or this user's)."""
    trusted = Path("/")
    parts = list(path.absolute().parts[1:])
    while parts:
        try:
            info = os.lstat(trusted / parts[0])
        except OSError:
            break
        if info.st_uid not in (0, os.geteuid()):
            break
        if stat.S_ISLNK(info.st_mode):
            # A link of root's: follow it, and go on from where it leads.
            trusted = Path(os.path.realpath(trusted / parts.pop(0)))
            continue
        trusted = trusted / parts.pop(0)
    return trusted, parts


def open_directory(path: Path) -> int:
    """A descriptor of the directory at `path`; OSError (ELOOP, ENOTDIR, EXDEV...) when a link
    another user could have planted lies on the way, at any component."""
    global _openat2_works  # noqa: PLW0603 -- learnt once per process: has the kernel openat2?
    trusted, rest = _trusted_prefix(path)
    base = os.open(trusted, _DIR)
    if not rest:
        # Root's all the way: the last component still must not be a link.
        os.close(base)
        return os.open(path, _NOFOLLOW_DIR)
    try:
        if _openat2_works:
            try:
                return _openat2(base, "/".join(rest))
            except OSError as exc:
                if exc.errno not in (errno.ENOSYS, errno.EPERM):  # EPERM: seccomp filters
                    raise
                _openat2_works = False
        return _walk(base, rest)
    finally:
        os.close(base)
