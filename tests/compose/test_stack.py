"""The compose stack on a real engine: what the manual's users type, and faults under a writer."""

from __future__ import annotations

import subprocess
import time

from tests.support.chaos import Writer, wait_for
from tests.support.compose_stack import API_PORT, Stack, healthy_pair, run


def test_up_from_nothing_is_healthy_and_lists_the_commands(stack: Stack) -> None:
    assert stack.up_seconds < 60 + 120  # image build included on a first run
    ps = stack.compose("ps", "--format", "{{.Name}} {{.Health}}")
    health = dict(line.split() for line in ps.splitlines())
    assert health == {n: "healthy" for n in ("pghad", "postgres_master", "postgres_slave", "redis")}
    plain = run("curl", "-s", f"http://127.0.0.1:{API_PORT}/")
    assert '"commands"' in plain and "/switchover" in plain
    psql = run("docker", "exec", "postgres_master", "psql", "-U", "postgres", "-Atc", "SELECT 1")
    assert psql.strip() == "1"
    status = stack.compose(
        "exec", "-T", "pghad", "pghad", "status", "--config", "/etc/pghad/config.toml"
    )
    assert "postgres_master" in status and "primary" in status


def _kill_and_failover(stack: Stack, how: list[str]) -> None:
    config = stack.config()
    writer = Writer(config).start()
    try:
        time.sleep(1.0)
        killed = time.monotonic()
        run("docker", *how, "postgres_master", timeout=60)
        wait_for(
            lambda: writer.first_commit_on("postgres_slave", killed) is not None,
            timeout=30,
            what="commits on postgres_slave",
        )
        promoted_after = (writer.first_commit_on("postgres_slave", killed) or 0) - killed
        stack.wait_status(healthy_pair("postgres_slave"), 120, "postgres_master rejoined")
        code, body = stack.api("POST", "/failback")
        assert code == 200, body
        stack.wait_status(healthy_pair("postgres_master"), 60, "failed back")
        back = time.monotonic()
        wait_for(
            lambda: writer.first_commit_on("postgres_master", back) is not None,
            timeout=20,
            what="commits on postgres_master again",
        )
    finally:
        writer.stop()
    assert writer.missing_on("postgres_master") == []
    assert promoted_after < 30


def test_docker_kill_of_the_primary_fails_over_rejoins_and_fails_back(stack: Stack) -> None:
    """With a leftover of a killed daemon: a throwaway container still holding postgres_master's
    data volume, as a rewind or a copy would go on without the daemon. The rejoin removes it
    before its own pg_rewind touches the data."""
    label = "pghad.one-off=postgres_master"
    run("docker", "run", "-d", "--label", label, "--volumes-from", "postgres_master",
        "--entrypoint", "sleep", "postgres:18", "600")  # fmt: skip
    try:
        _kill_and_failover(stack, ["kill"])
        assert run("docker", "ps", "-q", "--filter", f"label={label}").strip() == ""
    finally:
        for leftover in run("docker", "ps", "-aq", "--filter", f"label={label}").split():
            run("docker", "rm", "-f", leftover)


def test_docker_stop_of_the_primary_fails_over_too(stack: Stack) -> None:
    _kill_and_failover(stack, ["stop", "-t", "30"])


def test_switchover_keeps_every_commit(stack: Stack) -> None:
    config = stack.config()
    writer = Writer(config).start()
    try:
        time.sleep(1.0)
        started = time.monotonic()
        code, body = stack.api("POST", "/switchover")
        assert code == 200, body
        ended = time.monotonic()
        stack.wait_status(healthy_pair("postgres_slave"), 60, "switched over")
        code, body = stack.api("POST", "/failback")
        assert code == 200, body
        stack.wait_status(healthy_pair("postgres_master"), 60, "failed back")
        time.sleep(1.0)
    finally:
        writer.stop()
    assert writer.missing_on("postgres_master") == []
    assert writer.longest_gap(started, ended + 1.0) < 5.0


def test_a_backup_reaches_the_host_redis_and_restores(stack: Stack) -> None:
    code, body = stack.api("POST", "/backups?kind=full")
    assert code == 200, body
    record = body["backup"]
    on_host = stack.dir / "backups"
    names = {p.name for p in on_host.iterdir()}
    assert record["id"] in names
    assert any(n.startswith("backup_completo_") and n.endswith(".sql.gz") for n in names)
    keys = run("docker", "exec", "redis", "redis-cli", "KEYS", "backup:*")
    assert f"backup:completo:{record['day']}" in keys.split()
    fields = run(
        "docker", "exec", "redis", "redis-cli", "HGETALL", f"backup:completo:{record['day']}"
    )
    assert "ok" in fields.split()
    restored = stack.compose(
        "exec",
        "-T",
        "pghad",
        "pghad",
        "restore",
        record["id"],
        "--target",
        "/tmp/restored",
        "--config",
        "/etc/pghad/config.toml",
    )
    assert "verified" in restored


def test_restarting_pghad_during_a_switchover_converges(stack: Stack) -> None:
    request = subprocess.Popen(
        [
            "curl",
            "-s",
            "-X",
            "POST",
            "-H",
            f"Authorization: Bearer {stack.env['PGHAD_API_TOKEN']}",
            f"http://127.0.0.1:{API_PORT}/switchover",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.15)
    run("docker", "restart", "pghad", timeout=60)
    request.wait(timeout=60)
    status = stack.wait_status(
        lambda s: s["state"] == "healthy" and s["primary"] in ("postgres_master", "postgres_slave"),
        120,
        "one primary and a streaming standby",
    )
    if status["primary"] != "postgres_master":
        code, body = stack.api("POST", "/failback")
        assert code == 200, body
        stack.wait_status(healthy_pair("postgres_master"), 60, "failed back")


def test_down_then_up_keeps_data_and_roles(stack: Stack) -> None:
    config = stack.config()
    writer = Writer(config).start()
    time.sleep(1.0)
    writer.stop()
    stack.compose("down")
    stack.compose("up", "-d", "--wait", "--wait-timeout", "180")
    stack.wait_status(healthy_pair("postgres_master"), 90, "the same roles after down and up")
    assert writer.missing_on("postgres_master") == []
