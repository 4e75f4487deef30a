"""`webphone sandbox`: run the sandbox, or make one of its parties call a user.

    webphone sandbox [--host 127.0.0.1] [--port 0] [--users FILE | --generate N]
                     [--domain sandbox.webphone] [--cert PEM --key PEM] [--max-expires 60]
                     [--ring-timeout 60] [--tone-hz 440] [--no-parties] [-v]
    webphone sandbox call USER [--from tone|echo|voicemail|NUMBER] (--url URL | --port PORT)
                     [--auto-answer] [--header "Name: value"]... [--duration SECONDS]

The first form prints the URL, the parties, and one ready-to-use sipInfo JSON per user (one per
line, so `head -n`/`jq` can take them), then serves until Ctrl-C or SIGTERM. The second form
talks to a running sandbox over its loopback control channel, prints the call's progress, and
hangs up after `--duration` (or on Ctrl-C). `python -m webphone.sandbox` is the same command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from webphone.errors import CallError
from webphone.sip.validate import check_headers

from .sandbox import Sandbox
from .server import CONTROL_SUBPROTOCOL

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run `webphone sandbox ...` with `argv` (without the program name); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sandbox"]:  # tolerate being handed the subcommand name too
        args = args[1:]
    try:
        if args[:1] == ["call"]:
            options = _call_parser().parse_args(args[1:])
            return asyncio.run(_call(options))
        options = _serve_parser().parse_args(args)
        return asyncio.run(_serve(options))
    except KeyboardInterrupt:
        return 130


# -- serving -------------------------------------------------------------------------------------


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webphone sandbox",
        description="A local SIP-over-WebSocket server with RingCentral's rules. "
        "Subcommand: 'webphone sandbox call USER --from tone --url URL'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  webphone sandbox --port 5066                          # users 101-105, prints their sipInfo
  echo '{"101": "pw101"}' > users.json && webphone sandbox --port 5066 --users users.json
  webphone sandbox call 101 --from tone --url ws://127.0.0.1:5066   # a party calls 101
  webphone sandbox call 101 --from echo --port 5066 --auto-answer --duration 5""",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; others expose it!)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    users = parser.add_mutually_exclusive_group()
    users.add_argument("--users", metavar="FILE", help="users file (JSON or TOML)")
    users.add_argument("--generate", type=int, default=5, metavar="N",
                       help="generate N users 101.. with random passwords (default 5)")
    parser.add_argument("--domain", default="sandbox.webphone", help="SIP domain")
    parser.add_argument("--cert", metavar="PEM", help="TLS certificate: serve wss://")
    parser.add_argument("--key", metavar="PEM", help="TLS private key (with --cert)")
    parser.add_argument("--max-expires", type=int, default=60,
                        help="longest registration granted, seconds (RingCentral: 60)")
    parser.add_argument("--ring-timeout", type=float, default=60.0,
                        help="seconds before an unanswered call gets 480")
    parser.add_argument("--refuse-reused-nonce", type=int, choices=(401, 403, 400),
                        metavar="{401,403,400}",
                        help="answer a digest nonce used a second time with this status, like "
                        "registrars with single-use nonces (default: accept it, RFC 7616 §3.4)")
    parser.add_argument("--tone-hz", type=float, default=440.0, help="frequency of party 901")
    parser.add_argument("--no-parties", action="store_true", help="no built-in parties")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log SIP decisions (-vv: every message)")
    return parser


async def _serve(options: argparse.Namespace) -> int:
    level = logging.WARNING - 10 * min(options.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sandbox = Sandbox(
        host=options.host,
        port=options.port,
        users=options.users,
        domain=options.domain,
        certfile=options.cert,
        keyfile=options.key,
        generate=options.generate,
        max_expires=options.max_expires,
        ring_timeout=options.ring_timeout,
        refuse_reused_nonce=options.refuse_reused_nonce,
        parties=not options.no_parties,
        tone_hz=options.tone_hz,
    )
    if options.verbose >= 2:
        sandbox.on_message(_print_message)
    try:
        await sandbox.start()
    except OSError as exc:
        print(f"webphone sandbox: cannot listen on {options.host}:{options.port}: {exc}",
              file=sys.stderr)
        return 2
    try:
        _print_banner(sandbox)
        await _until_stopped()
    finally:
        await sandbox.close()
    return 0


def _print_banner(sandbox: Sandbox) -> None:
    parties = ", ".join(f"{n} {k}" for n, k in sandbox.party_numbers.items()) or "none"
    print(f"webphone sandbox listening on {sandbox.url} (domain {sandbox.domain})")
    print(f"parties: {parties}")
    print("users (sipInfo JSON, one per line):")
    for user in sandbox.users:
        print(json.dumps(sandbox.sip_info(user.extension)))
    if sandbox.users and sandbox.party_numbers:
        first = sandbox.users[0].extension
        print(f"make a party call: webphone sandbox call {first} --from tone --url {sandbox.url}")
    print("Ctrl-C stops it.", flush=True)


def _print_message(record: Any) -> None:
    arrow = "<-" if record.direction == "in" else "->"
    print(f"{arrow} [{record.user or '?'}] {record.message}", file=sys.stderr, flush=True)


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


# -- calling -------------------------------------------------------------------------------------


def _call_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webphone sandbox call",
        description="Make a built-in party of a running sandbox call USER.",
    )
    parser.add_argument("user", help="extension to call, e.g. 101")
    parser.add_argument("--from", dest="party", default="tone",
                        help="party: tone, echo, voicemail or its number (default tone)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="the sandbox URL it printed, e.g. ws://127.0.0.1:5066")
    where.add_argument("--port", type=int, help="port of a sandbox on 127.0.0.1")
    parser.add_argument("--auto-answer", action="store_true",
                        help="send Alert-Info: Auto Answer and Call-Info Answer-After=0")
    parser.add_argument("--header", action="append", default=[], metavar="'Name: value'",
                        help="extra INVITE header (repeatable)")
    parser.add_argument("--duration", type=float, default=None,
                        help="hang up this many seconds after the answer (default: never)")
    return parser


async def _call(options: argparse.Namespace) -> int:
    url = options.url or f"ws://127.0.0.1:{options.port}"
    headers = []
    for item in options.header:
        name, colon, value = item.partition(":")
        if not colon or not name.strip():
            print(f"--header {item!r}: expected 'Name: value'", file=sys.stderr)
            return 2
        headers.append((name.strip(), value.strip()))
    try:  # too long or core header names: one line here, not a closed control channel later
        headers = check_headers(headers)
    except CallError as exc:
        print(f"webphone sandbox call: --header: {exc}", file=sys.stderr)
        return 2
    request = {"action": "call", "user": options.user, "party": options.party,
               "auto_answer": options.auto_answer, "headers": headers}
    try:
        async with connect(url, subprotocols=[CONTROL_SUBPROTOCOL], open_timeout=5) as ws:
            await ws.send(json.dumps(request))
            return await _follow(ws, options.duration)
    except (OSError, InvalidHandshake, InvalidStatus, TimeoutError) as exc:
        print(f"webphone sandbox call: cannot reach the sandbox at {url}: {exc}", file=sys.stderr)
        return 2
    except ConnectionClosed as exc:  # the sandbox stopped (or refused the frame) mid-call
        print(f"webphone sandbox call: the sandbox at {url} closed the connection: {exc}",
              file=sys.stderr)
        return 1


async def _follow(ws: Any, duration: float | None) -> int:
    answered = False
    timer: asyncio.Task[None] | None = None
    try:
        async for frame in ws:
            event = json.loads(frame)
            name = event.get("event")
            print(_describe(event), flush=True)
            if name == "error":
                return 2
            if name == "answered":
                answered = True
                if duration is not None:
                    timer = asyncio.create_task(_hang_up_later(ws, duration))
            if name == "ended":
                return 0 if answered else 1
    finally:
        if timer is not None:
            timer.cancel()
    print("webphone sandbox call: the sandbox closed the connection before the call ended",
          file=sys.stderr)
    return 1


async def _hang_up_later(ws: Any, delay: float) -> None:
    await asyncio.sleep(delay)
    await ws.send(json.dumps({"action": "hangup"}))


def _describe(event: dict[str, Any]) -> str:
    name = event.get("event")
    if name == "calling":
        return f"calling {event.get('user')} from party {event.get('party')} " \
               f"(Call-ID {event.get('call_id')})"
    if name == "ended":
        status = event.get("status")
        return f"ended: {event.get('reason')}" + (f" (INVITE {status})" if status else "")
    if name == "error":
        return f"error: {event.get('error')}"
    return str(name)
