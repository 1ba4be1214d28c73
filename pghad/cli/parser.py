"""pghad: a PostgreSQL high-availability daemon for a primary/standby pair.

Run `pghad COMMAND --help` for what a command does and its options. Commands that talk to the
daemon find its address and token in the config file: --config FILE, else $PGHAD_CONFIG, else
/etc/pghad/config.toml.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pghad.backup.planner import Requested
from pghad.cli import backup_commands as backups
from pghad.cli import daemon_commands as daemon
from pghad.cli import other_commands as other
from pghad.cli.common import add_api_options, add_config_option
from pghad.errors import PghadError

DEFAULT_LAB_DIR = Path("lab")
Handler = Callable[[argparse.Namespace], int]


def _version() -> str:
    try:
        return version("pghad")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown"


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    description: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=summary, description=description)
    parser.set_defaults(handler=handler)
    return parser


def _daemon_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = _command(
        commands,
        "run",
        "run the HA daemon in the foreground",
        "Probe both servers, fail over, rejoin, take scheduled backups, serve the "
        "API. Stops on SIGTERM or Ctrl-C; SIGHUP reloads the config.",
        daemon.cmd_run,
    )
    add_config_option(run)
    agent = _command(
        commands,
        "agent",
        "run the agent of one database host in the foreground",
        "On each database host of a two-host deployment: start, stop, fence, rewind and "
        "clone this host's node for the daemon holding its lease, watch the other node "
        "(the daemon's second witness), fence a primary cut off from daemon and standby, "
        "and answer GET /primary and /replica for HAProxy. Stops on SIGTERM or Ctrl-C.",
        daemon.cmd_agent,
    )
    agent.add_argument("--node", help="this host's node (default: agent.node in the config)")
    add_config_option(agent)
    status = _command(
        commands,
        "status",
        "the cluster at a glance",
        "Roles, timelines, LSNs, lag and the daemon's last decision, from the running daemon.",
        daemon.cmd_status,
    )
    status.add_argument("--json", action="store_true", help="print the API's JSON as it is")
    add_api_options(status)
    failover = _command(
        commands,
        "failover",
        "make the standby the primary now",
        "With a healthy primary: a planned switchover. With the primary down: "
        "fence it and promote the standby if it is eligible.",
        daemon.cmd_operation,
    )
    failover.add_argument(
        "--force",
        action="store_true",
        help="promote even a standby that may lack acknowledged commits",
    )
    add_api_options(failover)
    for name, summary in (
        ("switchover", "planned swap of primary and standby (no commit lost)"),
        ("failback", "make the preferred node (cluster.preferred_primary) the primary again"),
    ):
        add_api_options(_command(commands, name, summary, summary + ".", daemon.cmd_operation))
    for name, summary in (
        ("pause", "maintenance mode: no automatic action until resume (survives a restart)"),
        ("resume", "end maintenance mode"),
    ):
        add_api_options(_command(commands, name, summary, summary + ".", daemon.cmd_pause))
    events = _command(
        commands,
        "events",
        "recent decisions and actions, with their reasons",
        "The daemon's event journal: every decision and action with its reason.",
        daemon.cmd_events,
    )
    events.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    add_api_options(events)
    check = _command(
        commands,
        "check",
        "check everything, exit 0 ok / 1 warn / 2 fail",
        "Config, nodes, replication, lag, WAL summarizer, backups and free space, "
        "Redis and its catalog, the API token, the daemon: each ok, warn or fail "
        "with what to do. For cron and monitoring agents.",
        other.cmd_check,
    )
    check.add_argument("--json", action="store_true", help="the checks as a JSON list")
    add_config_option(check)


def _backup_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = _command(
        commands,
        "backup",
        "take a backup now",
        "The running daemon takes it (events, metrics, one at a time); without a "
        "daemon, this process does.",
        backups.cmd_backup,
    )
    backup.add_argument(
        "--kind",
        choices=[k.value for k in Requested],
        default="auto",
        help="auto: what the cycle says is due (default); full; incremental",
    )
    add_api_options(backup)
    listing = _command(
        commands,
        "backups",
        "list backups (from the local catalog)",
        "Every backup with kind, status, size, duration and its chain.",
        backups.cmd_backups,
    )
    listing.add_argument("--json", action="store_true", help="the records as JSON")
    add_config_option(listing)
    verify = _command(
        commands,
        "verify",
        "check a backup with pg_verifybackup",
        "Check every file of a backup against its manifest.",
        backups.cmd_verify,
    )
    verify.add_argument("id", help="a backup id, as `pghad backups` lists them")
    add_config_option(verify)
    restore = _command(
        commands,
        "restore",
        "rebuild a backup's data directory",
        "Verify the chain, combine it with pg_combinebackup, verify the result, "
        "detach it from the cluster; optionally start it. With --to, --to-lsn or --latest: "
        "the newest backup before that point, then WAL from the archive up to it "
        "(point-in-time recovery), promoted.",
        backups.cmd_restore,
    )
    restore.add_argument(
        "id", nargs="?", help="a backup id, as `pghad backups` lists them (or a point below)"
    )
    restore.add_argument("--target", type=Path, required=True, help="a new, empty directory")
    restore.add_argument("--port", type=int, help="also start it on 127.0.0.1:PORT")
    point = restore.add_mutually_exclusive_group()
    point.add_argument(
        "--to",
        metavar="TIME",
        help="recover from the WAL archive to this moment (ISO 8601, e.g. "
        "'2026-11-26 14:05:00'; without a zone: this machine's local time)",
    )
    point.add_argument("--to-lsn", metavar="LSN", help="recover to this WAL position (0/3000060)")
    point.add_argument("--latest", action="store_true", help="recover every commit the archive has")
    add_config_option(restore)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pghad", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"pghad {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _daemon_commands(commands)
    _backup_commands(commands)
    lab = _command(
        commands,
        "lab",
        "a local two-server PostgreSQL 18 lab (no Docker)",
        "up: create or start a primary and a streaming standby on 127.0.0.1 with a "
        "config.toml for them; status; down: stop, keep data; destroy: remove all.",
        other.cmd_lab,
    )
    lab.add_argument("action", choices=["up", "status", "down", "destroy"], help="what to do")
    lab.add_argument(
        "--dir", type=Path, default=DEFAULT_LAB_DIR, help="the lab's directory (default: ./lab)"
    )
    lab.add_argument(
        "--port", type=int, default=None, help="first PostgreSQL port to try (default 15432)"
    )
    lab.add_argument(
        "--api-port",
        type=int,
        default=8088,
        help="the API port written to the lab's config.toml (default 8088)",
    )
    lab.add_argument(
        "--hosts",
        action="store_true",
        help="up: node1, node2 and the daemon on three hosts (network namespaces and a "
        "bridge, an agent on each node host; needs root); `lab destroy` removes them",
    )
    lab.add_argument(
        "--s3",
        action="store_true",
        help="up: also an S3 server (SeaweedFS) on 127.0.0.1, and backups and the WAL archive "
        "in its bucket, encrypted (`lab down` stops it, `lab destroy` removes it)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except PghadError as exc:
        print(f"pghad: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
