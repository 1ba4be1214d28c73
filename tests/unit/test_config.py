"""Config loading: every mistake names the file and the key; nothing half-loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from pghad.config.model import load_config, parse_config
from pghad.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

VALID = """
[cluster]
failover_threshold = 5

[[nodes]]
name = "alpha"
port = 5432
data_dir = "/srv/alpha"

[[nodes]]
name = "beta"
port = 5433
data_dir = "/srv/beta"
"""


def test_valid_minimal_config_gets_defaults() -> None:
    config = parse_config(VALID)
    assert config.cluster.failover_threshold == 5
    assert config.cluster.probe_interval == 1.0
    assert config.api.port == 8088 and config.api.bind == "127.0.0.1"
    assert config.preferred_primary == "alpha"
    assert config.other("alpha").name == "beta"


def test_the_repository_is_local_unless_a_bucket_is_configured(tmp_path: Path) -> None:
    assert parse_config(VALID).repository.type == "local"
    path = tmp_path / "c.toml"
    path.write_text(
        VALID + '\n[backup]\ncompression = "zstd"\n[repository]\ntype = "s3"\nbucket = "b"\n'
        'encryption_key_file = "repo.key"\n'
    )
    config = load_config(path)
    assert (
        config.repository.is_s3 and config.repository.encryption_key_file == tmp_path / "repo.key"
    )


def test_repository_example_config_is_valid() -> None:
    config = load_config(REPO / "config.toml")
    assert [n.name for n in config.nodes] == ["master", "slave"]


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(VALID.replace('"/srv/alpha"', '"data/alpha"'))
    assert load_config(path).nodes[0].data_dir == tmp_path / "data" / "alpha"


def test_missing_file_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such config file.*pghad lab up"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[cluster\nname = 1", r"c\.toml: TOML syntax error", id="syntax"),
        pytest.param(
            VALID.replace("failover_threshold = 5", "failover_treshold = 5"),
            r"c\.toml: cluster\.failover_treshold: unknown key",
            id="unknown-key",
        ),
        pytest.param(
            VALID.replace("port = 5432", 'port = "five"'),
            r"c\.toml: nodes\[0\] \(alpha\)\.port: .*integer",
            id="wrong-type",
        ),
        pytest.param(
            VALID.replace("failover_threshold = 5", "failover_threshold = 0.2"),
            r"c\.toml: cluster\.failover_threshold: .*greater than or equal to 1",
            id="threshold-out-of-range",
        ),
        pytest.param(
            VALID.replace('name = "beta"', 'name = "alpha"'),
            r"c\.toml: nodes: .*duplicate node names",
            id="duplicate-names",
        ),
        pytest.param(
            VALID.split("[[nodes]]", maxsplit=1)[0] + "[[nodes]]" + VALID.split("[[nodes]]")[1],
            r"c\.toml: nodes: .*at least 2",
            id="one-node",
        ),
        pytest.param(
            VALID.replace('data_dir = "/srv/beta"', ""),
            r"c\.toml: nodes\[1\] \(beta\)\.data_dir: required key is missing",
            id="missing-key",
        ),
        pytest.param(
            VALID + "\n[api]\nport = 70000\n",
            r"c\.toml: api\.port: .*less than",
            id="port-out-of-range",
        ),
        pytest.param(
            VALID.replace("[cluster]", '[cluster]\npreferred_primary = "gamma"'),
            r"preferred_primary 'gamma' is not one of",
            id="unknown-preferred",
        ),
        pytest.param(
            VALID.replace('data_dir = "/srv/alpha"', 'data_dir = "/srv/alpha"\ncontainer = "pg"'),
            r"c\.toml: nodes\[0\] \(alpha\)\.container: unknown key",
            id="docker-field-on-a-local-node",
        ),
        pytest.param(
            VALID.replace('data_dir = "/srv/alpha"', 'data_dir = "/srv/alpha"\ndriver = "ssh"'),
            r"c\.toml: nodes\[0\] \(alpha\): .*'ssh'.*'local', 'docker'",
            id="unknown-driver",
        ),
        pytest.param(
            VALID + '\n[repository]\ntype = "s3"\n',
            r"repository\.bucket is required",
            id="s3-without-bucket",
        ),
        pytest.param(
            VALID + '\n[repository]\ntype = "s3"\nbucket = "b"\n',
            r"set backup\.compression = \"zstd\"",
            id="s3-with-plain-backups",
        ),
        pytest.param(
            VALID + '\n[repository]\ntype = "gcs"\n',
            r"c\.toml: repository\.type: .*'local' or 's3'",
            id="unknown-repository",
        ),
        pytest.param(
            VALID + '\n[backup]\ncompression = "zstd"\n[repository]\ntype = "s3"\nbucket = "b"'
            '\nencryption_key_file = "k"\nencryption_key_env = "K"\n',
            r"encryption_key_file or encryption_key_env, not both",
            id="two-keys",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)


def test_bad_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(VALID.encode() + b"\n# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid UTF-8"):
        load_config(path)


def test_secrets_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHAD_API_TOKEN", "from-env")
    monkeypatch.setenv("PGHAD_REPLICATION_PASSWORD", "repl-env")
    config = parse_config(VALID)
    assert config.api.token == "from-env"
    assert config.auth.replication_password == "repl-env"


def test_config_is_immutable() -> None:
    config = parse_config(VALID)
    with pytest.raises(ValueError, match="frozen"):
        config.cluster.failover_threshold = 1  # type: ignore[misc]


def test_cli_exits_2_on_bad_config(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "c.toml"
    path.write_text(VALID.replace("failover_threshold = 5", "failover_threshold = -1"))
    result = subprocess.run(
        [sys.executable, "-m", "pghad", "run", "--config", str(path)],
        capture_output=True,
        check=False,
        text=True,
    )
    assert result.returncode == 2
    assert "cluster.failover_threshold" in result.stderr
