"""The `webphone` command (also `python -m webphone`).

    webphone demo                  a group of phones on a sandbox: a call, a failover, narrated
    webphone phone ...             an interactive phone that joins its extension's group
    webphone status ...            a group's members and roles
    webphone sandbox ...           the local RingCentral-like SIP server

Exit codes (every subcommand): 0 ok, 1 runtime failure, 2 usage error (bad arguments, unreadable
or invalid sipInfo), 3 registration refused (authentication, 603 Too Many Contacts), 4 server
unreachable or not answering, 130 interrupted. Errors are one line on stderr,
``webphone <command>: error: <Type>: <message>``; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._common import EXIT_USAGE

__all__ = ["main"]

_EPILOG = """examples:
  webphone demo                                   # the whole story in ~3 seconds
  webphone sandbox --port 5066                    # a local SIP server; prints sipInfo JSON
  webphone phone --sandbox ws://127.0.0.1:5066 --user 101     # run it in 2-3 terminals
  webphone phone --sip-info sip-info.json --json  # scripted: JSON lines out, commands in
  webphone status --sip-info sip-info.json        # who is in the group, who is real

exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 registration refused,
            4 server unreachable, 130 interrupted.  See docs/cli.md."""

_PHONE_EPILOG = """examples:
  webphone sandbox --port 5066 &                                    # the server, prints sipInfos
  webphone phone --sandbox ws://127.0.0.1:5066 --user 101           # terminal 1: the real
  webphone phone --sandbox ws://127.0.0.1:5066 --user 101           # terminal 2: a dummy
  webphone sandbox call 101 --from tone --url ws://127.0.0.1:5066   # both show it ringing
  printf 'status\\ncall 901\\n' | webphone phone --sip-info sip-info.json --json

commands: call N, answer [CALL], decline [CALL], hangup [CALL], hold, unhold, mute, unmute,
dtmf DIGITS [CALL], transfer N [CALL], status, members, help, quit (EOF = quit).

--json events (one object per line, each with "event" and "t" = time.monotonic()):
  ready {role, epoch, member_id, pid, group, user, instance_id, hub_pid}
  role {role, epoch}            registered {expires}      registration {state, reason}
  call {ref, call_id, direction, state, remote, remote_name, held, muted[, reason]}
  result {seq, line, cmd, ok, [call_id, ref | status | members] or [error, message]}
  notice {message}   fatal {error, message, exit_code}   bye
  binding_conflict {contacts, message}   another group of the extension took the registration

Ctrl-C (SIGINT) leaves and exits 130; SIGTERM and SIGHUP leave like quit.
exit codes: 0 left normally, 1 failure, 2 usage, 3 registration refused, 4 server unreachable,
            130 interrupted."""

_STATUS_EPILOG = """examples:
  webphone status --sip-info sip-info.json
  webphone status --sandbox ws://127.0.0.1:5066 --user 101 --json
  webphone status --group 101@sandbox.webphone

Prints nothing but "no members" (exit 0) when no hub runs for the group."""

_DEMO_EPILOG = """What it does: starts a sandbox and N phone processes of extension 101 (one group:
the first is the real phone, the others dummies), a tone party calls 101, a dummy answers,
the real is SIGKILLed, a dummy is promoted and re-registers, a second call is answered from a
dummy and hung up; then every process is stopped. Exit 0 when the story went as told.

examples:
  webphone demo
  webphone demo --members 4 --debug"""


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (`webphone phone: error: ...`), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from webphone import __version__

    from . import demo, phone, status

    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="webphone", formatter_class=fmt, epilog=_EPILOG,
        description="A SIP-over-WebSocket phone where many processes of one extension share "
        "one registration.")
    parser.add_argument("--version", action="version", version=f"webphone {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_arguments(sub.add_parser(
        "demo", formatter_class=fmt, epilog=_DEMO_EPILOG,
        help="a group of phones on a sandbox: a call, a failover, narrated",
        description="Run the whole story on a local sandbox, narrated step by step."))
    phone.add_arguments(sub.add_parser(
        "phone", formatter_class=fmt, epilog=_PHONE_EPILOG,
        help="an interactive phone that joins its extension's group",
        description="A phone for a terminal (or a script). Every `webphone phone` of one "
        "extension joins one group that holds ONE registration: the first is the real phone, "
        "the others dummies; when the real one goes, a dummy takes over."))
    status.add_arguments(sub.add_parser(
        "status", formatter_class=fmt, epilog=_STATUS_EPILOG,
        help="a group's members and roles",
        description="Show the members of a group and their roles, without joining it."))
    sub.add_parser("sandbox", add_help=False,
                   help="the local RingCentral-like SIP server (see: webphone sandbox --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `webphone` with `argv` (without the program name); return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["sandbox"]:
        from webphone.sandbox.cli import main as sandbox_main

        return sandbox_main(args[1:])
    parser = build_parser()
    try:
        options = parser.parse_args(args)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if options.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if options.command == "demo":
        from . import demo

        return demo.run(options)
    if options.command == "phone":
        from . import phone

        return phone.run(options)
    from . import status

    return status.run(options)
