"""synchronous_standby_names with the WAL archive in it: what commits wait for, and when it
changes (pure functions, no servers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pghad.config.model import Config, parse_config
from pghad.decide.model import SetSynchronous
from pghad.decide.observation import NodeObservation, ReplicaInfo
from pghad.decide.sync_archive import ArchiveSync, archive_member, compose
from pghad.decide.sync_names import ARCHIVE, render, waited_for
from pghad.testing import fake_config_text


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("", set()),
        ('"b"', {"b"}),
        ('FIRST 2 ("b", "pghad_archive")', {"b", ARCHIVE}),
        ("ANY 2 (b, x)", {"b", "x"}),
        ("FIRST 1 (b)", {"b"}),
        ("ANY 1 (b, x)", set()),  # either may acknowledge: neither is sure to have a commit
        ("FIRST 1 (b, x)", set()),
        ("b, x", set()),
    ],
)
def test_only_names_every_commit_waits_for_count(value: str, names: set[str]) -> None:
    assert waited_for(value) == names


def test_rendered_values_read_back_as_written() -> None:
    for standby in ("b", None):
        for archive in (True, False):
            expected = {n for n in (standby, ARCHIVE if archive else None) if n}
            assert waited_for(render(standby, archive)) == expected
    assert render("b", True) == 'FIRST 2 ("b", "pghad_archive")'
    assert render(None, False) == ""


def _config(tmp_path: Path, synchronous: bool = True) -> Config:
    extra = f"[archive]\nenabled = true\nsynchronous = {str(synchronous).lower()}\n"
    return parse_config(fake_config_text(tmp_path, extra=extra))


def _primary(names: str, archive: str | None, archive_flush: int = 1000) -> NodeObservation:
    replicas = [ReplicaInfo("b", "streaming", "sync", 1000, 1000, 0.0)]
    if archive is not None:
        replicas.append(ReplicaInfo(ARCHIVE, archive, "sync", archive_flush, None, None))
    return NodeObservation(
        "a",
        True,
        in_recovery=False,
        current_lsn=1000,
        sync_standby_names=names,
        replicas=tuple(replicas),
    )


def test_a_streaming_archive_joins_and_commits_wait_for_both(tmp_path: Path) -> None:
    config = _config(tmp_path)
    obs = _primary('"b"', "streaming")
    member = archive_member(config, obs, None, now=10.0)
    assert member is not None and member.member
    change = compose(obs, "b", None, member)
    assert change == SetSynchronous("a", "b", change.reason if change else "", archive=True)


def test_an_archive_far_behind_joins_only_when_caught_up(tmp_path: Path) -> None:
    config = _config(tmp_path)
    obs = _primary('"b"', "streaming", archive_flush=0)
    obs = NodeObservation(**{**obs.__dict__, "current_lsn": 64 * 1024 * 1024})
    member = archive_member(config, obs, None, now=10.0)
    assert member is not None and not member.member
    assert compose(obs, "b", None, member) is None


def test_a_missing_archive_holds_commits_until_relax_then_leaves(tmp_path: Path) -> None:
    config = _config(tmp_path)  # sync_relax_after 3 s
    both = render("b", True)
    obs = _primary(both, archive=None)
    early = archive_member(config, obs, None, now=100.0)
    assert early == ArchiveSync(True, 100.0, early.reason if early else "")
    assert compose(obs, "b", None, early) is None
    late = archive_member(config, obs, 100.0, now=103.5)
    assert late is not None and not late.member
    change = compose(obs, "b", None, late)
    assert change is not None and (change.standby, change.archive) == ("b", False)
    assert change.relax  # it drops a member: run beside any operation, like the standby's


def test_a_change_that_only_adds_a_member_is_no_relax(tmp_path: Path) -> None:
    config = _config(tmp_path)
    obs = _primary('"b"', "streaming")
    change = compose(obs, "b", None, archive_member(config, obs, None, now=1.0))
    assert change is not None and change.archive and not change.relax


def test_when_the_standby_is_relaxed_the_archive_alone_still_holds_commits(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    obs = _primary(render("b", True), "streaming")
    relax = SetSynchronous("a", None, "b down for 3.1 s")
    change = compose(obs, "b", relax, archive_member(config, obs, None, now=5.0))
    assert change is not None and (change.standby, change.archive) == (None, True)
    assert change.relax
    assert "b down" in change.reason


def test_without_a_synchronous_archive_the_standby_verdict_is_unchanged(tmp_path: Path) -> None:
    config = _config(tmp_path, synchronous=False)
    obs = _primary('"b"', "streaming")
    assert archive_member(config, obs, None, now=1.0) is None
    enable = SetSynchronous("a", "b", "b caught up")
    assert compose(obs, "b", enable, None) is enable
    leftover = _primary(render("b", True), "streaming")  # synchronous archive switched off
    change = compose(leftover, "b", None, None)
    assert change is not None and (change.standby, change.archive) == ("b", False)
