"""Subcommands that need neither a daemon nor backups: check, and the lab."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from pghad.cli import common
from pghad.cli.check import Level, run_checks
from pghad.config.model import Config, load_config
from pghad.errors import ConfigError
from pghad.system.clock import local_now

MARKS = {Level.OK: "ok  ", Level.WARN: "warn", Level.FAIL: "FAIL"}


def cmd_check(args: argparse.Namespace) -> int:
    path = common.config_path(args)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(
            json.dumps([{"name": "config", "level": "fail", "detail": str(exc)}])
            if args.json
            else f"FAIL  config  {exc}"
        )
        return int(Level.FAIL)
    checks = asyncio.run(run_checks(config, local_now()))
    if args.json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        print(f"ok    config  {path}")
        for check in checks:
            todo = f"  -> {check.todo}" if check.todo and check.level else ""
            print(f"{MARKS[check.level]}  {check.name}: {check.detail}{todo}")
    return int(max((c.level for c in checks), default=Level.OK))


def _print_lab(config: Config, lab_dir: Path) -> None:
    print(f"lab {config.cluster.name} is up in {lab_dir.resolve()}")
    for node in config.nodes:
        # Over the node's socket the lab trusts local connections: no password on the screen.
        host = getattr(node, "socket_dir", None) or node.host
        print(f'  {node.name}: psql "host={host} port={node.port} user={node.user}"')
    config_path = lab_dir / "config.toml"
    pghad = common.pghad_command()
    print("next:")
    print(
        f"  {pghad} run --config {config_path}        # the daemon, API on "
        f"http://{config.api.bind}:{config.api.port}/"
    )
    print(f"  {pghad} lab status --dir {lab_dir}")
    print(f"  {pghad} lab down --dir {lab_dir}          # stop, keep data")
    print(f"  {pghad} lab destroy --dir {lab_dir}       # stop and remove everything")


def cmd_lab(args: argparse.Namespace) -> int:
    from pghad.lab import local as lab
    from pghad.lab.s3 import BUCKET, LAB_S3_DIR, lab_s3_up

    lab_dir: Path = args.dir
    if args.action == "up" and args.hosts:
        return _lab_up_hosts(lab_dir, args.port)
    if args.action == "up":
        config = lab.lab_up(lab_dir, args.port, args.api_port)
        if args.s3 or (lab_dir / LAB_S3_DIR).is_dir():
            server = lab_s3_up(lab_dir)
            config = lab.lab_config(lab_dir)
            print(f"S3 (SeaweedFS) on {server.endpoint}: backups and WAL in s3://{BUCKET}/lab/")
        _print_lab(config, lab_dir)
    elif args.action == "status":
        for status in lab.lab_status(lab_dir):
            state = "running" if status.running else "stopped"
            print(f"{status.name:<8} port {status.port:<6} {status.role.value:<8} {state}")
    elif args.action == "down":
        lab.lab_down(lab_dir)
        print(f"lab in {lab_dir} stopped; data kept (start it again with `pghad lab up`)")
    else:
        lab.lab_destroy(lab_dir)
        print(f"lab in {lab_dir} destroyed")
    return 0


def _lab_up_hosts(lab_dir: Path, port: int | None) -> int:
    from pghad.lab.hosts import lab_up_hosts

    net = lab_up_hosts(lab_dir, port)
    witness = net["hosts"]["witness"]
    config = (lab_dir / "config.toml").resolve()
    print(f"lab in {lab_dir.resolve()}: three hosts (network namespaces) on bridge {net['bridge']}")
    for name, host in net["hosts"].items():
        role = "the daemon's host" if name == "witness" else "agent and PostgreSQL"
        print(f"  {name:<8} {host['address']:<14} netns {host['netns']:<18} {role}")
    print("Next, the daemon on the witness host:")
    print(f"  ip netns exec {witness['netns']} {common.pghad_command()} run --config {config}")
    return 0
