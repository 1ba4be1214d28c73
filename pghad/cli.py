"""The `pghad` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pghad.config import Config
from pghad.conninfo import admin_conninfo
from pghad.errors import PghadError

DEFAULT_LAB_DIR = Path("lab")


def _print_lab(config: Config, lab_dir: Path) -> None:
    print(f"lab {config.cluster.name} is up in {lab_dir.resolve()}")
    for node in config.nodes:
        print(f'  {node.name}: psql "{admin_conninfo(node, config.auth)}"')
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pghad", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the HA daemon in the foreground")
    run.add_argument("--config", type=Path, default=Path("config.toml"))
    run.set_defaults(handler=_cmd_run)

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
