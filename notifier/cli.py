"""`notifier serve` runs the service; `notifier token` prints a token it will accept."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError

from .auth import Role, issue_token, signing_algorithm, verification_key
from .errors import StartupError
from .settings import Settings, describe_validation_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notifier", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", help="overrides NOTIFIER_HOST")
    serve.add_argument("--port", type=int, help="overrides NOTIFIER_PORT")

    token = commands.add_parser("token", help="print a signed token for a user")
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--project", action="append", default=[], help="project id (repeatable)")
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.USER.value)
    token.add_argument("--ttl", type=float, default=3600, help="lifetime in seconds")
    token.add_argument("--private-key", type=Path, help="PEM private key for RS*/ES* algorithms")

    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(describe_validation_error(exc), file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    return _token(settings, args)


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    from .app import serve
    from .logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # the service runs on the default loop where uvloop is unavailable
        uvloop = None
    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        asyncio.run(serve(settings, host or settings.host, settings.port if port is None else port))
    except StartupError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    if settings.uses_public_key:
        if args.private_key is None:
            print("--private-key is required for RS*/ES* algorithms", file=sys.stderr)
            return 2
        key = args.private_key.read_text()
    else:
        key = verification_key(settings)
    print(issue_token(
        key,
        signing_algorithm(settings),
        args.sub,
        role=Role(args.role),
        projects=args.project,
        ttl_seconds=args.ttl,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    ))
    return 0
