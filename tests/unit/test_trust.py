"""What root trusts, with real files, links, users and sockets (run as root, like pghad)."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pghad.api.guard import RequestGuard
from pghad.cli.check import redacted_url
from pghad.config.model import AuthConfig
from pghad.config.nodes import DockerNodeConfig
from pghad.errors import ConfigError, NodeError, OperationRefused, SetupError
from pghad.nodes.agent import AgentClient
from pghad.nodes.agent_api import Done, Health
from pghad.nodes.docker import DockerDriver
from pghad.system import beneath, trust
from pghad.system.state_store import read_json

OTHER = "nobody"


def _as_other(*argv: str) -> None:
    subprocess.run(["runuser", "-u", OTHER, "--", *argv], check=True, capture_output=True)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory like /tmp: anyone may create entries, only their owner may remove them."""
    root = Path(tempfile.mkdtemp(prefix="pghad-trust-", dir="/tmp"))
    root.chmod(0o755)
    where = root / "shared"
    where.mkdir()
    where.chmod(0o1777)
    yield where
    shutil.rmtree(root)


def test_a_directory_behind_another_users_link_is_refused(shared: Path) -> None:
    (shared.parent / "real").mkdir()
    _as_other("ln", "-s", str(shared.parent / "real"), str(shared / "state"))
    with pytest.raises(SetupError, match="a link owned by uid"):
        trust.require_trusted_dir(shared / "state" / "inner", "state.dir")
    own = shared / "own"
    own.mkdir(mode=0o777)
    own.chmod(0o777)
    trust.require_trusted_dir(own, "state.dir")  # root's: accepted, and made private
    assert own.stat().st_mode & 0o777 == 0o700


def test_a_directory_another_user_owns_is_refused(shared: Path) -> None:
    _as_other("mkdir", str(shared / "theirs"))
    with pytest.raises(SetupError, match=r"backup.dir .* owned by uid .*install -d"):
        trust.require_trusted_dir(shared / "theirs" / "backups", "backup.dir")


def test_a_link_target_is_refused_and_a_new_one_is_root_private(shared: Path) -> None:
    _as_other("ln", "-s", "/etc", str(shared / "planted"))
    with pytest.raises(OperationRefused, match="--target"):
        trust.claim_target(shared / "planted")
    assert trust.claim_target(shared / "new") is False
    info = (shared / "new").lstat()
    assert info.st_uid == 0 and info.st_mode & 0o777 == 0o700


def test_chown_tree_changes_links_never_their_targets(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.write_text("root's")
    (tree / "sub" / "link").symlink_to(outside)
    (tree / "sub" / "file").write_text("x")
    entry = pwd.getpwnam(OTHER)
    trust.chown_tree(tree, entry.pw_uid, entry.pw_gid)
    assert outside.stat().st_uid == 0
    assert (tree / "sub" / "link").lstat().st_uid == entry.pw_uid
    assert (tree / "sub" / "file").stat().st_uid == entry.pw_uid
    assert tree.stat().st_uid == entry.pw_uid


def test_is_inside_sees_through_dot_dot() -> None:
    assert trust.is_inside(Path("/b/completo-1"), Path("/b"))
    assert not trust.is_inside(Path("/b/../etc"), Path("/b"))
    assert not trust.is_inside(Path("/b"), Path("/b"))


def test_a_state_file_another_user_wrote_is_not_read(shared: Path) -> None:
    _as_other("sh", "-c", f"echo '{{\"paused\": true}}' > {shared}/state.json")
    assert read_json(shared / "state.json") is None
    (shared / "mine.json").write_text(json.dumps({"paused": True}))
    assert read_json(shared / "mine.json") == {"paused": True}


def test_the_origin_must_match_scheme_host_and_port() -> None:
    guard = RequestGuard("127.0.0.1", 8088, (), ("/",), lambda _request: True)
    assert guard._same_origin("http://127.0.0.1:8088")
    assert guard._same_origin("http://localhost:8088")
    assert not guard._same_origin("http://localhost:3000")  # another site on the machine
    assert not guard._same_origin("https://localhost:8088")
    assert not guard._same_origin("null")


def test_no_password_on_a_docker_one_offs_command_line() -> None:
    auth = AuthConfig(password="pw-one", replication_password="pw-two")
    node = DockerNodeConfig(name="n1", host="n1", port=5432, driver="docker", data_dir=Path("/d"))
    driver = DockerDriver(node, auth, client=None)
    primary = node.model_copy(update={"name": "n2", "host": "n2"})
    assert "pw-two" in driver._node_conf(primary)  # it travels in the environment
    assert "pw-" not in driver._node_conf_command(True)


def test_a_redis_url_is_printed_without_its_password() -> None:
    assert redacted_url("redis://:s3cret@db:6379/0") == "redis://:***@db:6379/0"


def test_an_agent_url_carrying_the_token_in_clear_is_refused() -> None:
    with pytest.raises(ConfigError, match="https"):
        AgentClient("http://10.0.0.5:8089", "tok", None, "h")
    AgentClient("http://127.0.0.1:8089", "tok", None, "h")  # loopback
    AgentClient("http://10.0.0.5:8089", "tok", None, "h", plain_http=True)  # said so


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str | None] = []  # noqa: RUF012 -- one test's record of what arrived
    port = 0

    def do_GET(self) -> None:
        if self.path == "/health":
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{_Recorder.port}/elsewhere")
            self.end_headers()
            return
        _Recorder.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def redirecting() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_port
    server.shutdown()
    server.server_close()


def test_the_agent_client_follows_no_redirect_and_no_proxy(
    redirecting: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("no_proxy", "")
    client = AgentClient(f"http://127.0.0.1:{redirecting}", "tok", None, "h")
    with pytest.raises(NodeError, match="302"):
        asyncio.run(client.call("GET", "/health", Health, timeout=5))
    assert _Recorder.seen == []  # the token went nowhere else
    asyncio.run(client.call("GET", "/direct", Done, timeout=5))  # reached without the proxy
    assert _Recorder.seen == ["Bearer tok"]
    os.environ.pop("http_proxy", None)


def test_a_link_anywhere_below_another_users_directory_is_refused(shared: Path) -> None:
    _as_other("mkdir", "-p", str(shared / "theirs" / "real" / "deeper"))
    _as_other("ln", "-s", "/etc", str(shared / "theirs" / "link"))
    for planted in (shared / "theirs" / "link", shared / "theirs" / "link" / "ssh"):
        with pytest.raises(OSError):
            beneath.open_directory(planted)
    os.close(beneath.open_directory(shared / "theirs" / "real" / "deeper"))
    os.close(beneath.open_directory(Path("/proc/self/..")))  # root's links are followed
