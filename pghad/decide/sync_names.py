"""synchronous_standby_names as pghad writes it, and the names a commit waits for.

pghad writes one of: '' (none), '"node2"' (the standby), '"pghad_archive"' (the WAL archive
alone, while the standby is away), or 'FIRST 2 ("node2", "pghad_archive")': a commit then waits
for both. A name counts as waited for only when every listed name is required.
"""

from __future__ import annotations

import re

ARCHIVE = "pghad_archive"  # the archiver's application_name
_FORM = re.compile(r"^\s*(?:(FIRST|ANY)\s+)?(\d+)\s*\((.*)\)\s*$", re.I)


def waited_for(value: str) -> frozenset[str]:
    """The names every commit waits for under `value` (empty when any of them may be skipped)."""
    match = _FORM.match(value)
    if match is not None:
        count, listed = int(match.group(2)), match.group(3)
    else:
        count, listed = -1, value
    names = [n.strip().strip('"') for n in listed.split(",") if n.strip()]
    if count == -1:
        count = 1  # a plain list: FIRST 1, only one of them is waited for
    return frozenset(names) if count >= len(names) else frozenset()


def render(standby: str | None, archive: bool) -> str:
    names = [n for n in (standby, ARCHIVE if archive else None) if n]
    quoted = [f'"{n}"' for n in names]
    if len(quoted) == 2:
        return f"FIRST 2 ({', '.join(quoted)})"
    return quoted[0] if quoted else ""
