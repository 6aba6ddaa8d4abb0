"""`fraud console`: the analysts' web application (workers/console/).

fraud console [--host H] [--port P] [--database FILE] [--worker-urls URLS]
fraud console add-user NAME --role viewer|analyst|admin [--password-file FILE]

add-user reads the password from --password-file (its first line), else from standard
input when it is not a terminal (`... < file`, a pipe), else asks twice at a prompt: never
from the command line, where other users and the shell's history would see it.
"""

# Handlers import the application inside themselves, so that `fraud --help` stays fast:
# the one deliberate kind of function-local import.

import argparse
import getpass
import sys
from pathlib import Path

from fraud.config import Settings
from fraud.errors import ConfigError
from workers.cli.common import COMMON, KAFKA

ROLES = ("viewer", "analyst", "admin")  # workers/console/auth.py's, listed for --help


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    from workers.console import run_console

    run_console(settings)
    return 0


def read_password(path: Path | None) -> str:
    """The new user's password: from `path`, from a piped stdin, or asked twice."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"password file {path}: cannot be read ({e})") from None
        return lines[0] if lines else ""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("the two passwords differ: nothing changed")
    return first


def cmd_add_user(args: argparse.Namespace, settings: Settings) -> int:
    from workers.console import open_store

    password = read_password(args.password_file)
    store, users = open_store(settings)
    try:
        new = users.add(args.name, args.role, password)
    finally:
        store.close()
    what = "added" if new else "updated (signed out everywhere)"
    print(f"user {args.name} ({args.role}) {what} in {settings.console.database}")
    return 0


def register(subparsers) -> None:
    """`fraud console` and `fraud console add-user`."""
    p = subparsers.add_parser(
        "console",
        parents=[COMMON, KAFKA],
        help="the analysts' web console: review alerts, give verdicts, manage the bank",
    )
    p.add_argument("--host", dest="console_host", help="FRAUD_CONSOLE__HOST (default 127.0.0.1)")
    p.add_argument("--port", dest="console_port", type=int, help="FRAUD_CONSOLE__PORT (8080)")
    p.add_argument("--database", dest="console_database", type=Path, help="FRAUD_CONSOLE__DATABASE")
    p.add_argument(
        "--worker-urls",
        dest="console_worker_urls",
        help="the workers' metrics addresses, comma-separated (FRAUD_CONSOLE__WORKER_URLS)",
    )
    p.set_defaults(func=cmd_console)
    sub = p.add_subparsers(dest="console_command", metavar="add-user")
    # No abbreviations: `--password SECRET` must not pass for --password-file.
    user = sub.add_parser(
        "add-user", help="add a user, or change one's role and password", allow_abbrev=False
    )
    user.add_argument("name")
    user.add_argument("--role", required=True, choices=ROLES)
    user.add_argument("--password-file", type=Path, help="first line: the password")
    user.set_defaults(func=cmd_add_user)
