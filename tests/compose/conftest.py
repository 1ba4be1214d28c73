"""The manual's deployment on a real Docker engine: the compose stack, brought up from nothing
(`docker compose up -d --wait`) once for the suite and torn down with `down -v` at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.compose_stack import Stack, down, prepare_engine, project_copy, up


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "compose" in item.path.parts:
            item.add_marker(pytest.mark.compose)


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    try:
        prepare_engine()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    root = Path(tempfile.mkdtemp(prefix="pghad-compose-"))
    made = project_copy(root)
    try:
        up(made)
        yield made
    finally:
        down(made, root / "compose.log")
        if os.environ.get("PGHAD_KEEP_TEST_DIR") is None:
            shutil.rmtree(root, ignore_errors=True)
