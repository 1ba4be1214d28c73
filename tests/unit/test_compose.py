"""What can be checked of the Docker Compose deployment without a Docker engine."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from pghad.config.model import DockerNodeConfig, parse_config

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_services_and_container_names_are_the_manuals() -> None:
    assert set(SERVICES) == {"postgres_master", "postgres_slave", "redis", "pghad"}
    for name in ("postgres_master", "postgres_slave", "redis"):
        assert SERVICES[name]["container_name"] == name


def test_every_service_has_a_health_check() -> None:
    assert all("healthcheck" in service for service in SERVICES.values())


def test_postgres_is_the_official_18_image() -> None:
    assert SERVICES["postgres_master"]["image"] == "postgres:18"
    assert SERVICES["postgres_slave"]["image"] == "postgres:18"


def test_api_is_published_on_loopback_only_and_the_docker_socket_is_mounted() -> None:
    pghad = SERVICES["pghad"]
    assert pghad["ports"] == ["127.0.0.1:${PGHAD_API_PORT:-8088}:8088"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in pghad["volumes"]


def test_named_volumes_are_declared_and_backups_are_on_the_host() -> None:
    declared = set(COMPOSE["volumes"])
    used = {
        volume.split(":")[0]
        for service in SERVICES.values()
        for volume in service.get("volumes", [])
        if not volume.startswith(("./", "/"))
    }
    assert used <= declared
    assert "./backups:/var/lib/pghad/backups" in SERVICES["pghad"]["volumes"]


def test_every_referenced_file_exists_and_scripts_are_valid_bash() -> None:
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./") and not volume.startswith("./backups:"):
                path = REPO / volume.split(":")[0]
                assert path.exists(), f"{volume} refers to a missing file"
                if path.suffix == ".sh":
                    assert path.stat().st_mode & 0o111, f"{path} is not executable"
                    subprocess.run(["bash", "-n", str(path)], check=True)
    assert (REPO / SERVICES["pghad"]["build"] / "Dockerfile").exists()


def test_mounted_config_validates_and_matches_the_containers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("PGHAD_PG_PASSWORD", "PGHAD_REPLICATION_PASSWORD", "PGHAD_API_TOKEN"):
        monkeypatch.setenv(variable, "from-env")
        assert variable in SERVICES["pghad"]["environment"]
    mount = next(
        v for v in SERVICES["pghad"]["volumes"] if v.endswith(":/etc/pghad/config.toml:ro")
    )
    config = parse_config((REPO / mount.split(":")[0]).read_text(), "config/pghad.toml")
    assert all(isinstance(n, DockerNodeConfig) for n in config.nodes)
    docker_nodes = [n for n in config.nodes if isinstance(n, DockerNodeConfig)]
    containers = {n.container for n in docker_nodes}
    assert containers == {"postgres_master", "postgres_slave"}
    assert all(n.host == n.container for n in docker_nodes)  # compose DNS names
    assert config.api.port == 8088 and config.api.token == "from-env"
    assert config.redis.url.startswith("redis://redis:")
    assert str(config.backup.dir) in " ".join(SERVICES["pghad"]["volumes"])
    assert str(config.state.dir) in " ".join(SERVICES["pghad"]["volumes"])
    pgdata = (
        SERVICES["postgres_master"]["environment"]["PGDATA"]
        if isinstance(SERVICES["postgres_master"]["environment"], dict)
        else None
    )
    assert pgdata in (None, str(config.nodes[0].data_dir))


def test_dockerfile_is_consistent_with_pyproject() -> None:
    python = re.search(r"^FROM python:(\d+)\.(\d+)", DOCKERFILE, re.MULTILINE)
    assert python is not None
    required = PYPROJECT["project"]["requires-python"].removeprefix(">=").split(".")
    assert (int(python[1]), int(python[2])) >= (int(required[0]), int(required[1]))
    extras = re.findall(r"'\.\[(\w+)\]'", DOCKERFILE)
    assert extras and all(e in PYPROJECT["project"]["optional-dependencies"] for e in extras)
    assert 'ENTRYPOINT ["pghad"]' in DOCKERFILE and "pghad" in PYPROJECT["project"]["scripts"]
    assert '"--config", "/etc/pghad/config.toml"' in DOCKERFILE
    assert "EXPOSE 8088" in DOCKERFILE
    for copied in re.findall(r"^COPY (.+) \./?\S*$", DOCKERFILE, re.MULTILINE):
        for item in copied.split():
            assert (REPO / item).exists(), f"Dockerfile copies missing {item}"
