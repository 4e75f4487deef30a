"""What every `webphone` subcommand shares: exit codes, errors a script can rely on, logging,
and where a sipInfo comes from (a file, or a running sandbox)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from webphone.errors import (
    RegistrationError,
    SipInfoError,
    SipTimeoutError,
    TransportError,
)
from webphone.sip_info import SipInfo

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_RUNTIME",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CliError",
    "UsageError",
    "add_sip_info_options",
    "exit_code_for",
    "fetch_sandbox_sip_info",
    "hub_arg",
    "is_loopback_server",
    "load_sip_info_file",
    "resolve_sip_info",
    "setup_logging",
]

#: exit codes of every `webphone` subcommand (documented in docs/cli.md)
EXIT_OK = 0
EXIT_RUNTIME = 1  # something failed while running
EXIT_USAGE = 2  # bad arguments, unreadable or invalid sipInfo, unknown user (argparse uses 2)
EXIT_REFUSED = 3  # the SIP server refused the registration (auth, 603 Too Many Contacts, ...)
EXIT_UNREACHABLE = 4  # the SIP server or the sandbox could not be reached, or did not answer
EXIT_INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """An error the command reports as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


class UsageError(CliError):
    """Bad arguments or input files (exit code 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


def exit_code_for(exc: BaseException) -> int:
    """The exit code a command returns when it ends with `exc`."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, SipInfoError):
        return EXIT_USAGE
    if isinstance(exc, RegistrationError):
        return EXIT_REFUSED
    if isinstance(exc, (TransportError, SipTimeoutError, ConnectionError, TimeoutError)):
        return EXIT_UNREACHABLE
    return EXIT_RUNTIME


def error_line(prog: str, exc: BaseException) -> str:
    """`prog: ErrorType: message` on one line (a multi-line message is joined)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, CliError):
        return f"{prog}: error: {text}"
    return f"{prog}: error: {type(exc).__name__}: {text}"


def hub_arg(value: str) -> str:
    """argparse type of --hub: "local" or a Redis hub URL, checked before anything starts."""
    from webphone.shared.group import validate_hub

    try:
        return validate_hub(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def setup_logging(debug: bool, stream: Any = None) -> None:
    """WARNING and up to stderr; with --debug, DEBUG (the SIP trace included)."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        stream=stream or sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if debug:
        for noisy in ("aioice", "aiortc", "websockets", "asyncio"):
            logging.getLogger(noisy).setLevel(logging.INFO)


# -- where the sipInfo comes from ------------------------------------------------------------


def add_sip_info_options(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    """--sip-info FILE | --sandbox URL --user EXT [--password PW --domain D]."""
    where = parser.add_argument_group("which extension")
    source = where.add_mutually_exclusive_group(required=required)
    source.add_argument("--sip-info", metavar="FILE",
                        help="a sipInfo JSON file (RingCentral's Device SIP Registration "
                        "sipInfo object, or the same keys for another server)")
    source.add_argument("--sandbox", metavar="URL",
                        help="a running `webphone sandbox` (e.g. ws://127.0.0.1:5066): the "
                        "user's sipInfo is fetched from its control channel")
    where.add_argument("--user", metavar="EXT", help="with --sandbox: the extension, e.g. 101")
    where.add_argument("--password", metavar="PW",
                       help="with --sandbox: build the sipInfo from this password instead of "
                       "asking the sandbox (sandbox test users only: a command line is visible "
                       "to every local user; real credentials go in a 0600 --sip-info file)")
    where.add_argument("--domain", metavar="DOMAIN", default="sandbox.webphone",
                       help="with --sandbox --password: the SIP domain (default %(default)s)")


def load_sip_info_file(path: str | Path) -> SipInfo:
    """A sipInfo from a JSON file: the object itself, or RingCentral's whole sip-provision
    answer ({"sipInfo": [{...}, ...]}: the first entry)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the sipInfo file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not a sipInfo JSON file: not UTF-8 text at byte "
                         f"{exc.start}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    return _sip_info_from(data, str(path))


def _sip_info_from(data: Any, where: str) -> SipInfo:
    if isinstance(data, Mapping) and "sipInfo" in data:
        entries = data["sipInfo"]
        if isinstance(entries, list) and entries:
            data = entries[0]
        elif isinstance(entries, Mapping):
            data = entries
    try:
        return SipInfo.from_dict(data)
    except SipInfoError as exc:
        raise UsageError(f"{where}: {exc}") from None


async def fetch_sandbox_sip_info(url: str, user: str, timeout: float = 5.0) -> SipInfo:
    """Ask a running sandbox (its loopback control channel) for `user`'s sipInfo."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake, InvalidURI, WebSocketException
    from websockets.typing import Subprotocol

    from webphone.sandbox.server import CONTROL_SUBPROTOCOL

    try:
        async with asyncio.timeout(timeout):
            async with connect(url, subprotocols=[Subprotocol(CONTROL_SUBPROTOCOL)],
                               open_timeout=timeout) as ws:
                await ws.send(json.dumps({"action": "users"}))
                answer = json.loads(await ws.recv())
    except InvalidURI:
        raise UsageError(f"--sandbox {url!r} is not a ws:// or wss:// URL") from None
    except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
        raise CliError(f"cannot reach the sandbox at {url}: {exc or type(exc).__name__}",
                       EXIT_UNREACHABLE) from None
    users = answer.get("users") if isinstance(answer, Mapping) else None
    if not isinstance(users, list):
        raise CliError(f"the sandbox at {url} answered without a user list: {answer!r:.200}")
    for info in users:
        if isinstance(info, Mapping) and user in (info.get("username"),
                                                  info.get("authorizationId")):
            return _sip_info_from(info, f"the sandbox's sipInfo of {user}")
    known = ", ".join(str(i.get("username")) for i in users if isinstance(i, Mapping))
    raise UsageError(f"the sandbox at {url} has no user {user!r} (users: {known or 'none'})")


def sandbox_sip_info(url: str, user: str, password: str, domain: str) -> SipInfo:
    """A sipInfo for a sandbox user built from its password (no round trip)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise UsageError(f"--sandbox {url!r} is not a ws:// or wss:// URL")
    return _sip_info_from({
        "username": user, "password": password, "authorizationId": user, "domain": domain,
        "outboundProxy": parts.netloc, "transport": parts.scheme.upper(), "stunServers": [],
    }, "--sandbox/--user/--password")


async def resolve_sip_info(args: argparse.Namespace) -> SipInfo:
    """The sipInfo the options name (see `add_sip_info_options`)."""
    if getattr(args, "sip_info", None):
        if args.user or args.password:
            raise UsageError("--user/--password go with --sandbox, not with --sip-info")
        return load_sip_info_file(args.sip_info)
    if getattr(args, "sandbox", None):
        if not args.user:
            raise UsageError("--sandbox needs --user EXT (e.g. --user 101)")
        if args.password:
            return sandbox_sip_info(args.sandbox, args.user, args.password, args.domain)
        return await fetch_sandbox_sip_info(args.sandbox, args.user)
    raise UsageError("say which extension: --sip-info FILE or --sandbox URL --user EXT")


def is_loopback_server(info: SipInfo) -> bool:
    """True when the outbound proxy is on this machine (127.0.0.0/8, ::1, localhost): media then
    uses loopback ICE candidates only."""
    target = info.outbound_proxy
    host = urlsplit(target).hostname if "://" in target else urlsplit("//" + target).hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fail(message: str, code: int = EXIT_RUNTIME) -> NoReturn:
    raise CliError(message, code)
