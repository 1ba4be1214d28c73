"""What every subcommand shares: finding the config file, and a client of the daemon's API."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from pghad.api.client import ApiClient
from pghad.config.model import Config, load_config
from pghad.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/pghad/config.toml")


def config_path(args: argparse.Namespace) -> Path:
    """--config, else $PGHAD_CONFIG, else /etc/pghad/config.toml; never the working directory's
    example config.toml (it names 127.0.0.1:5432, where another PostgreSQL may listen)."""
    if args.config is not None:
        return Path(args.config)
    from_env = os.environ.get("PGHAD_CONFIG")
    if from_env:
        return Path(from_env)
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG
    raise ConfigError(
        "no config file: --config not given, $PGHAD_CONFIG not set, and no "
        f"{SYSTEM_CONFIG}; pass --config FILE (after `pghad lab up`, the lab's is "
        "lab/config.toml)"
    )


def config(args: argparse.Namespace) -> Config:
    return load_config(config_path(args))


def client(args: argparse.Namespace) -> ApiClient:
    url = args.url
    token = os.environ.get("PGHAD_API_TOKEN", "")
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    if url is None:
        path = config_path(args)
        loaded = load_config(path)
        url = f"http://{loaded.api.bind}:{loaded.api.port}"
        token = token or loaded.api.token
        return ApiClient(url, token, source=str(path))
    return ApiClient(url, token)


def pghad_command() -> str:
    """How to run pghad again from this shell: `pghad` when PATH finds this program, else its
    full path (a virtualenv's bin is often not on PATH), else `python -m pghad`."""
    program = Path(sys.argv[0])
    if program.name != "pghad":
        return f"{sys.executable} -m pghad"
    on_path = shutil.which("pghad")
    if on_path is not None and Path(on_path).resolve() == program.resolve():
        return "pghad"
    return str(program.resolve())


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="the config file (default: $PGHAD_CONFIG, else /etc/pghad/config.toml)",
    )


def add_api_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument(
        "--url", help="the API's base URL, e.g. http://127.0.0.1:8088 (default: from the config)"
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        help="read the API token from FILE (default: $PGHAD_API_TOKEN, then the config file; "
        "a token is never taken on the command line, where `ps` would show it)",
    )
