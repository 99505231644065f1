"""`notifier serve` runs the service; `notifier token` prints a token it will accept;
`notifier config` prints the effective configuration, secrets masked."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from pydantic import ValidationError

from .auth import (
    Role,
    dev_secret_path,
    issue_token,
    load_or_create_dev_secret,
    signing_algorithm,
    verification_key,
)
from .errors import StartupError
from .keys_pem import private_key_algorithm
from .settings import (
    HMAC_ALGORITHMS,
    Settings,
    describe_validation_error,
    described,
    unknown_variables,
)
from .worker_routing import WorkerRole


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="notifier", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--host", help="overrides NOTIFIER_HOST")
    serve.add_argument("--port", type=int, help="overrides NOTIFIER_PORT")
    serve.add_argument("--internal-port", type=int, help="overrides NOTIFIER_INTERNAL_PORT")
    serve.add_argument(
        "--workers",
        type=_worker_count,
        help="N worker processes on the port, or 'auto' (one per usable core); needs a shared "
        "broker (NOTIFIER_BROKER_URL)",
    )
    # How the supervisor starts each of its workers (not for people).
    serve.add_argument("--worker", help=argparse.SUPPRESS)
    serve.add_argument("--channel-fd", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--worker-directory", type=Path, help=argparse.SUPPRESS)

    token = commands.add_parser("token", help="print a signed token for a user")
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--project", action="append", default=[], help="project id (repeatable)")
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.USER.value)
    token.add_argument("--ttl", type=float, default=3600, help="lifetime in seconds")
    token.add_argument(
        "--private-key",
        type=Path,
        help="PEM private key (RSA or EC): signs with its algorithm (RS256, ES256...)",
    )
    token.add_argument("--aud", help="audience claim (default: NOTIFIER_JWT_AUDIENCE)")
    token.add_argument("--iss", help="issuer claim (default: NOTIFIER_JWT_ISSUER)")

    commands.add_parser("config", help="print the effective configuration, secrets masked")

    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(describe_validation_error(exc), file=sys.stderr)
        return 2
    except ValueError as exc:  # a settings source's own refusal (a *_FILE variable)
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        if args.internal_port is not None:
            settings = settings.model_copy(update={"internal_port": args.internal_port})
        if args.workers is not None:
            return _supervise(settings, args)
        return _serve(settings, args.host, args.port, _worker_role(args))
    if args.command == "config":
        return _config(settings)
    return _token(settings, args)


def _worker_count(value: str) -> int:
    if value == "auto":
        from .supervisor import usable_cores

        return usable_cores()
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a number of workers, or 'auto'") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError("between 1 and 256 workers")
    return count


def _worker_role(args: argparse.Namespace) -> WorkerRole | None:
    if args.worker is None:
        return None
    index, count = (int(part) for part in args.worker.split("/"))
    return WorkerRole(index, count, args.channel_fd, args.worker_directory)


def _prepare(settings: Settings, *, report_unknown: bool = True) -> None:
    from .logs import configure_logging, get_logger

    configure_logging(settings.log_level, settings.log_format)
    for variable in unknown_variables() if report_unknown else []:
        get_logger("notifier.settings").warning("unknown_setting", variable=variable)
    try:
        import uvloop
    except ImportError:  # the service runs on the default loop where uvloop is unavailable
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _serve(settings: Settings, host: str | None, port: int | None, worker: WorkerRole | None) -> int:
    from .app import serve

    _prepare(settings, report_unknown=worker is None)  # (a supervisor reported them already)
    try:
        asyncio.run(serve(settings, host or settings.host, settings.port if port is None else port, worker))
    except StartupError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


def _supervise(settings: Settings, args: argparse.Namespace) -> int:
    """`serve --workers N`: the supervisor (notifier.supervisor)."""
    from .app import listen_public
    from .supervisor import Supervisor, worker_command

    if not settings.broker_url:
        print(
            f"cannot start: --workers {args.workers}: workers share histories, fan-out and presence "
            "through a broker; set NOTIFIER_BROKER_URL (redis://... or postgresql://...) and "
            "NOTIFIER_STORE_URL=postgresql://...",
            file=sys.stderr,
        )
        return 2
    _prepare(settings)
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    try:
        listener = listen_public(host, port)
    except StartupError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2
    command = worker_command()
    if args.internal_port is not None:
        command += ["--internal-port", str(args.internal_port)]

    async def supervise() -> int:
        supervisor = Supervisor(listener, args.workers, command, drain_seconds=settings.drain_seconds)
        return await supervisor.run()

    return asyncio.run(supervise())


def _config(settings: Settings) -> int:
    for variable, value in described(settings).items():
        print(f"{variable}={value}")
    for variable in unknown_variables():
        print(f"unknown setting: {variable}", file=sys.stderr)
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    try:
        if args.private_key is not None:
            key, algorithm = private_key_algorithm(args.private_key)
        elif settings.uses_public_key:
            print("--private-key is required: NOTIFIER_JWT_ALGORITHMS are RS*/ES*", file=sys.stderr)
            return 2
        elif settings.jwt_secret is not None:
            key, algorithm = verification_key(settings), signing_algorithm(settings)
        else:
            key, created = load_or_create_dev_secret(settings.data_dir)
            algorithm = next(a for a in settings.jwt_algorithms if a in HMAC_ALGORITHMS)
            state = "created now" if created else "existing"
            print(
                f"signed with the development secret {dev_secret_path(settings.data_dir)} "
                f"({state}); a server started from this directory uses the same one",
                file=sys.stderr,
            )
    except (ValueError, StartupError) as exc:
        print(f"cannot sign: {exc}", file=sys.stderr)
        return 2
    print(
        issue_token(
            key,
            algorithm,
            args.sub,
            role=Role(args.role),
            projects=args.project,
            ttl_seconds=args.ttl,
            audience=args.aud or settings.jwt_audience,
            issuer=args.iss or settings.jwt_issuer,
        )
    )
    return 0
