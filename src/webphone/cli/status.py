"""`webphone status`: the members of a group and their roles, without joining it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from webphone.shared.group import group_name, group_status

from ._common import (
    EXIT_OK,
    UsageError,
    add_sip_info_options,
    error_line,
    exit_code_for,
    hub_argument,
    resolve_sip_info,
    setup_logging,
)

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_sip_info_options(parser, required=False)
    parser.add_argument("--group", metavar="NAME",
                        help="the group's name (default: authorizationId@domain of the sipInfo)")
    parser.add_argument("--runtime-dir", metavar="DIR",
                        help="the groups' runtime directory (as given to `webphone phone`)")
    parser.add_argument("--hub", metavar="local|redis://...", default="local", type=hub_argument,
                        help="where the group meets: \"local\" (a hub process per group on "
                        "this host, the default) or "
                        "a Redis URL such as redis://10.0.0.5:6379/0 (groups across hosts)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--debug", action="store_true", help="log details, tracebacks")


async def _status(args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    if args.group:
        if args.sip_info or args.sandbox:
            raise UsageError("give --group NAME or a sipInfo (--sip-info/--sandbox), not both")
        group = args.group
    elif args.sip_info or args.sandbox:
        group = group_name(await resolve_sip_info(args))
    else:
        raise UsageError("say which group: --group NAME, --sip-info FILE or --sandbox URL "
                         "--user EXT")
    return group, await group_status(group, hub=args.hub, runtime_dir=args.runtime_dir)


def format_members(group: str, members: list[dict[str, Any]]) -> str:
    if not members:
        return f"group {group}: no members (no hub runs for it)"
    now = time.time()
    lines = [f"group {group}: {len(members)} member(s)",
             f"  {'PID':>7}  {'ROLE':<6} {'FOR':>7}  {'HOST':<16} MEMBER"]
    for m in members:
        role = m["role"] + ("*" if m.get("leaving") else "")
        lines.append(f"  {m['pid']:>7}  {role:<6} {now - m['since']:>6.1f}s  "
                     f"{str(m['host'])[:16]:<16} {m['member_id']}")
    if any(m.get("leaving") for m in members):
        lines.append("  * handing over (leaving)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """`webphone status`; exit 0 with the members (an empty list when no hub runs)."""
    setup_logging(args.debug)
    try:
        group, members = asyncio.run(_status(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        print(error_line("webphone status", exc), file=sys.stderr)
        return exit_code_for(exc)
    if args.json:
        print(json.dumps({"group": group, "members": members}))
    else:
        print(format_members(group, members))
    return EXIT_OK
