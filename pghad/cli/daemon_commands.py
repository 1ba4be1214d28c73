"""Subcommands that run the daemon or talk to it: run, status, operations, pause, events."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from pghad.api.client import format_status
from pghad.cli import common

FOLLOW_POLL_S = 1.0


def cmd_run(args: argparse.Namespace) -> int:
    from pghad.daemon.app import run_daemon

    return run_daemon(common.config_path(args))


def cmd_agent(args: argparse.Namespace) -> int:
    from pghad.agent.run import run_agent

    return run_agent(common.config_path(args), args.node)


def cmd_status(args: argparse.Namespace) -> int:
    status = common.client(args).call("GET", "/status")
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def cmd_operation(args: argparse.Namespace) -> int:
    path = f"/{args.command}" + ("?force=true" if getattr(args, "force", False) else "")
    result = common.client(args).call("POST", path)
    print(f"{result['message']} ({result['duration_s']} s)")
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    print(common.client(args).call("POST", f"/{args.command}")["message"])
    return 0


def _show(event: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(event), flush=True)
        return
    what = event.get("reason") or event.get("detail") or event.get("error") or ""
    label = event.get("code") or event.get("action") or event.get("operation") or ""
    print(f"{event.get('at', '')[:23]}  {event['event']:<20} {label:<24} {what}", flush=True)


def cmd_events(args: argparse.Namespace) -> int:
    client = common.client(args)
    events = client.call("GET", f"/events?limit={args.limit}")["events"]
    for event in events:
        _show(event, args.json)
    seen = events[-1].get("at") if events else ""
    while args.follow:
        time.sleep(FOLLOW_POLL_S)
        for event in client.call("GET", "/events?limit=200")["events"]:
            if str(event.get("at", "")) > str(seen):
                _show(event, args.json)
                seen = event.get("at")
    return 0
