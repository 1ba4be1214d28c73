"""The `pghad` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pghad.backup import restore as restore_mod
from pghad.backup.catalog import Catalog
from pghad.backup.model import BackupStatus
from pghad.backup.planner import Requested
from pghad.backup.runner import BackupRunner
from pghad.client import ApiClient, ApiUnreachable, format_status
from pghad.config import Config, load_config
from pghad.errors import PghadError
from pghad.loop import local_now
from pghad.pgbin import find_bin_dir

DEFAULT_LAB_DIR = Path("lab")


def _print_lab(config: Config, lab_dir: Path) -> None:
    print(f"lab {config.cluster.name} is up in {lab_dir.resolve()}")
    for node in config.nodes:
        # Over the node's socket the lab trusts local connections: no password on the screen.
        host = getattr(node, "socket_dir", None) or node.host
        print(f'  {node.name}: psql "host={host} port={node.port} user={node.user}"')
    config_path = lab_dir / "config.toml"
    print("next:")
    print(
        f"  pghad run --config {config_path}        # the daemon, API on "
        f"http://{config.api.bind}:{config.api.port}/"
    )
    print(f"  pghad lab status --dir {lab_dir}")
    print(f"  pghad lab down --dir {lab_dir}          # stop, keep data")
    print(f"  pghad lab destroy --dir {lab_dir}       # stop and remove everything")


def _cmd_lab(args: argparse.Namespace) -> int:
    from pghad import lab

    lab_dir: Path = args.dir
    if args.action == "up":
        config = lab.lab_up(lab_dir, args.port, args.api_port)
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


def _cmd_run(args: argparse.Namespace) -> int:
    from pghad.daemon import run_daemon

    return run_daemon(args.config)


def _client(args: argparse.Namespace) -> ApiClient:
    url = args.url
    token = os.environ.get("PGHAD_API_TOKEN", "")
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    if url is None:
        config = load_config(args.config)
        url = f"http://{config.api.bind}:{config.api.port}"
        token = token or config.api.token
    return ApiClient(url, token)


def _cmd_status(args: argparse.Namespace) -> int:
    status = _client(args).call("GET", "/status")
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    print(_client(args).call("POST", f"/{args.command}")["message"])
    return 0


def _cmd_operation(args: argparse.Namespace) -> int:
    path = f"/{args.command}" + ("?force=true" if getattr(args, "force", False) else "")
    result = _client(args).call("POST", path)
    print(f"{result['message']} ({result['duration_s']} s)")
    return 0


def _cmd_events(args: argparse.Namespace) -> int:
    for event in _client(args).call("GET", f"/events?limit={args.limit}")["events"]:
        if args.json:
            print(json.dumps(event))
            continue
        what = event.get("reason") or event.get("detail") or event.get("error") or ""
        label = event.get("code") or event.get("action") or event.get("operation") or ""
        print(f"{event.get('at', '')[:23]}  {event['event']:<20} {label:<24} {what}")
    return 0


def _backup_parts(args: argparse.Namespace) -> tuple[Config, Catalog, Path]:
    config = load_config(args.config)
    return config, Catalog(config.backup.dir, config.redis.url), find_bin_dir(config.pg_bin)


def _cmd_backup(args: argparse.Namespace) -> int:
    """The running daemon takes the backup (one owner: events, metrics, one at a time); with no
    daemon, this process takes it itself."""
    try:
        answer = _client(args).call("POST", f"/backups?kind={args.kind}")
    except ApiUnreachable as exc:
        print(f"{exc}; taking the backup here instead", file=sys.stderr)
        return _backup_here(args)
    record = answer["backup"]
    size_mb = (record.get("size_bytes") or 0) / 1e6
    print(
        f"{record['id']}: {record['kind']}, {size_mb:.1f} MB, {record['duration_s']} s, "
        f"from {record['source_node']} ({record['reason']}; taken by the daemon)"
    )
    return 0


def _backup_here(args: argparse.Namespace) -> int:
    from pghad.runtime import make_nodes

    config, catalog, bin_dir = _backup_parts(args)
    runner = BackupRunner(
        config, catalog, bin_dir, make_nodes(config), progress=sys.stderr.isatty()
    )
    print(f"taking a backup ({args.kind}) into {config.backup.dir} ...", file=sys.stderr)
    record = asyncio.run(runner.run(local_now(), Requested(args.kind)))
    if record.status is not BackupStatus.OK:
        print(f"pghad: error: backup {record.id} failed: {record.error}", file=sys.stderr)
        return 1
    deleted = runner.apply_retention()
    size_mb = (record.size_bytes or 0) / 1e6
    print(
        f"{record.id}: {record.kind.value}, {size_mb:.1f} MB, {record.duration_s} s, "
        f"from {record.source_node} ({record.reason})"
    )
    for old in deleted:
        print(f"retention: removed {old.id}")
    return 0


def _cmd_backups(args: argparse.Namespace) -> int:
    _config, catalog, _bin = _backup_parts(args)
    records = catalog.records()
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    print(f"{'ID':<28} {'KIND':<12} {'STATUS':<8} {'SIZE_MB':>9} {'SECONDS':>8}  CHAIN / ERROR")
    for r in records:
        size = f"{(r.size_bytes or 0) / 1e6:.1f}" if r.size_bytes else "-"
        tail = r.error or " <- ".join(reversed(r.chain))
        print(
            f"{r.id:<28} {r.kind.value:<12} {r.status.value:<8} {size:>9} "
            f"{r.duration_s or 0:>8}  {tail}"
        )
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    _config, catalog, bin_dir = _backup_parts(args)
    record = restore_mod.find(catalog, args.id)
    asyncio.run(restore_mod.verify(bin_dir, record))
    print(f"{record.id}: backup successfully verified")
    return 0


def _cmd_restore(args: argparse.Namespace) -> int:
    _config, catalog, bin_dir = _backup_parts(args)
    restored = asyncio.run(
        restore_mod.restore(catalog, bin_dir, args.id, args.target.resolve(), port=args.port)
    )
    print(
        f"restored {restored.record.id} (chain {' + '.join(restored.chain)}) into "
        f"{restored.target}; verified"
    )
    if restored.port is not None:
        print(
            f"started on 127.0.0.1:{restored.port}; stop it with: pg_ctl stop -D {restored.target}"
        )
    return 0


def _api_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("config.toml"),
        help="read the API address and token from this file",
    )
    parser.add_argument("--url", help="API base URL (default: from the config file)")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="read the API token from this file (default: PGHAD_API_TOKEN, then the config "
        "file; a token is never taken on the command line, where `ps` would show it)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pghad", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the HA daemon in the foreground")
    run.add_argument("--config", type=Path, default=Path("config.toml"))
    run.set_defaults(handler=_cmd_run)

    status = commands.add_parser("status", help="the cluster at a glance")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    _api_options(status)
    status.set_defaults(handler=_cmd_status)

    failover = commands.add_parser("failover", help="make the standby the primary now")
    failover.add_argument(
        "--force",
        action="store_true",
        help="promote even a standby that may lack acknowledged commits",
    )
    _api_options(failover)
    failover.set_defaults(handler=_cmd_operation)

    for name, text in (
        ("switchover", "planned swap of primary and standby"),
        ("failback", "make the preferred node the primary again"),
    ):
        command = commands.add_parser(name, help=text)
        _api_options(command)
        command.set_defaults(handler=_cmd_operation)

    for name, text in (
        ("pause", "maintenance mode: no automatic action until resume (survives a restart)"),
        ("resume", "end maintenance mode"),
    ):
        command = commands.add_parser(name, help=text)
        _api_options(command)
        command.set_defaults(handler=_cmd_pause)

    events = commands.add_parser("events", help="recent decisions and actions")
    events.add_argument("--limit", type=int, default=20)
    events.add_argument("--json", action="store_true")
    _api_options(events)
    events.set_defaults(handler=_cmd_events)

    backup = commands.add_parser(
        "backup", help="take a backup now (by the running daemon; by this process without one)"
    )
    backup.add_argument("--kind", choices=[k.value for k in Requested], default="auto")
    _api_options(backup)
    backup.set_defaults(handler=_cmd_backup)

    backups = commands.add_parser("backups", help="list backups (from the local catalog)")
    backups.add_argument("--json", action="store_true")
    backups.add_argument("--config", type=Path, default=Path("config.toml"))
    backups.set_defaults(handler=_cmd_backups)

    verify = commands.add_parser("verify", help="check a backup with pg_verifybackup")
    verify.add_argument("id")
    verify.add_argument("--config", type=Path, default=Path("config.toml"))
    verify.set_defaults(handler=_cmd_verify)

    restore = commands.add_parser("restore", help="rebuild a backup's data directory")
    restore.add_argument("id")
    restore.add_argument("--target", type=Path, required=True, help="a new, empty directory")
    restore.add_argument("--port", type=int, help="also start it on 127.0.0.1:PORT")
    restore.add_argument("--config", type=Path, default=Path("config.toml"))
    restore.set_defaults(handler=_cmd_restore)

    lab = commands.add_parser("lab", help="a local two-server PostgreSQL 18 lab")
    lab.add_argument("action", choices=["up", "status", "down", "destroy"])
    lab.add_argument(
        "--dir", type=Path, default=DEFAULT_LAB_DIR, help="lab directory (default: ./lab)"
    )
    lab.add_argument(
        "--port", type=int, default=None, help="first PostgreSQL port to try (default 15432)"
    )
    lab.add_argument(
        "--api-port", type=int, default=8088, help="API port written to the lab's config.toml"
    )
    lab.set_defaults(handler=_cmd_lab)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except PghadError as exc:
        print(f"pghad: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
