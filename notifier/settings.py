"""Configuration: one pydantic-settings model, read from NOTIFIER_* environment variables.

Secrets may also come from files: `NOTIFIER_JWT_SECRET_FILE=/run/secrets/jwt` (and the same
for the store and broker URLs, which carry passwords). Unknown NOTIFIER_* variables are
reported at start (`unknown_variables`).
"""

from __future__ import annotations

import difflib
import os
import re
import resource
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})
# RFC 7518 section 3.2: an HMAC key at least as long as the hash's output (HS256: 32 bytes).
MIN_HMAC_SECRET_BYTES = 32
# Settings that may be given as `<NAME>_FILE`: secrets, or values that carry one.
SECRET_FILE_FIELDS = (
    "jwt_secret",
    "store_url",
    "broker_url",
    "outbox_url",
    "webhook_secret",
    "vapid_private_key",
    "smtp_url",
)

CommaList = Annotated[list[str], NoDecode]
ENV_PREFIX = "NOTIFIER_"


class _SecretFiles(PydanticBaseSettingsSource):
    """`NOTIFIER_<NAME>_FILE`: the setting's value is that file's content (trailing newline
    dropped), so secrets need not sit in the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(variable)
        if path is None or field_name not in SECRET_FILE_FIELDS:
            return None, field_name, False
        if f"{ENV_PREFIX}{field_name.upper()}" in os.environ:
            raise ValueError(f"set {ENV_PREFIX}{field_name.upper()} or {variable}, not both")
        try:
            return Path(path).read_text().rstrip("\r\n"), field_name, False
        except OSError as exc:
            raise ValueError(f"{variable}: cannot read {path}: {exc.strerror}") from exc

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


# An origin as browsers send it: scheme, host, an optional port; nothing after.
_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?")


class Settings(BaseSettings):
    """Everything the service can be told. Defaults are safe for a single local process."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # /metrics for Prometheus on a listener of its own (not exposed to the clients' port);
    # unset: no such listener, and /metrics on the main port answers admin tokens only.
    internal_host: str = "127.0.0.1"
    internal_port: int | None = Field(None, ge=0, le=65535)
    # One log line per HTTP request (method, path, status, duration, peer).
    access_log: bool = False
    # Proxies (nginx) whose X-Forwarded-For names the client in logs.
    trusted_proxies: CommaList = []
    # After SIGTERM: /readyz answers 503 for this long, while connections are still served,
    # so that a load balancer stops sending new clients before they are closed.
    drain_seconds: float = Field(0.0, ge=0, le=300)
    data_dir: Path = Path("notifier-data")
    # memory://, sqlite:///path or postgresql://...; empty means sqlite in data_dir.
    store_url: str = ""
    # Empty: one process, room histories in the store's SQLite database. redis://host:port/db
    # (also rediss://, unix://): histories and delivery across processes in Redis.
    broker_url: str = ""
    # Empty: applications publish in their transactions through the PostgreSQL store's own
    # database. postgresql://...: the outbox lives in that database (the application's).
    outbox_url: str = ""
    # SQLite's synchronous pragma: NORMAL survives a killed process, FULL also a power loss.
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"

    jwt_secret: SecretStr | None = None
    # PEM text, or the path of a PEM file, for RS*/ES* algorithms.
    jwt_public_key: str | None = None
    jwt_algorithms: CommaList = ["HS256"]
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway_seconds: float = Field(10.0, ge=0, le=300)
    jwt_max_token_bytes: int = Field(8192, ge=256, le=65536)
    allow_query_token: bool = False
    # `auth.expiring` is sent this long before a token expires (at half its remaining
    # lifetime, for shorter tokens), so the client can renew it in-band with `auth.refresh`.
    token_notice_seconds: float = Field(60.0, ge=0)
    # After POST /api/v1/users/{id}/disconnect, the user's older tokens are refused this long:
    # make it at least your tokens' lifetime.
    revocation_seconds: float = Field(3600.0, gt=0)

    # Presence: a user whose last connection went is still present this long (a reconnect
    # causes no leave/join); a node that stops renewing its entries loses them after the TTL.
    presence_grace_seconds: float = Field(5.0, ge=0, le=3600)
    presence_ttl_seconds: float = Field(15.0, ge=3, le=3600)

    # Origins allowed to open a Socket.IO connection (checked on the websocket handshake too).
    # Empty: same origin only. "*": any origin (development only).
    cors_origins: CommaList = []

    # Whole seconds: Engine.IO announces the interval to clients truncated to a second.
    ping_interval_seconds: int = Field(25, ge=1, le=300)
    ping_timeout_seconds: int = Field(20, ge=1, le=120)
    max_payload_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    # Events queued for one connection that has stopped reading before it is disconnected.
    max_backlog_events: int = Field(2000, ge=10)
    # A long-polling client polls again as soon as a poll is answered: one that has not for
    # this long is gone (a closed tab, or moved to another node), and its session ends, so
    # that presence tells within this plus the presence grace.
    polling_gap_seconds: float = Field(5.0, ge=0.5, le=300)
    # An Engine.IO session that has not connected a Socket.IO namespace by then is closed.
    connect_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # Request headers that have not all arrived by then get 408 and the connection closes.
    http_header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # New Engine.IO sessions are refused (503, retried by clients) while the event loop runs
    # later than this: set-ups of a reconnect storm wait, the connections already here don't.
    # 0 admits every session.
    admission_max_lag_ms: float = Field(200.0, ge=0)
    # PostgreSQL: the schema notifier's tables live in (the role should own it); unset: the
    # role's search path (usually `public`, where PostgreSQL 15+ grants no CREATE).
    postgres_schema: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Every TCP connection of the process (HTTP and websockets). Unset: the open-files limit
    # less a reserve (1 in 40, at least 64) kept for health checks, metrics and the store.
    max_connections: int | None = Field(None, ge=1)
    # Socket.IO connections of one user (token subject) on this process.
    max_connections_per_user: int = Field(100, ge=1)
    # Engine.IO sessions from one address that have not connected a namespace yet, and open
    # HTTP connections from one address (trusted proxies are exempt: their clients are many).
    max_pending_sessions_per_peer: int = Field(1000, ge=1)
    max_http_connections_per_peer: int = Field(1000, ge=1)
    # Rooms one connection may be in (`*` tokens, publishers and admins: the second figure).
    max_rooms_per_connection: int = Field(1000, ge=3)
    max_rooms_per_privileged_connection: int = Field(100_000, ge=3)

    user_rate_per_second: float = Field(100.0, gt=0)
    user_rate_burst: int = Field(50, ge=1)
    worker_rate_per_second: float = Field(20000.0, gt=0)
    worker_rate_burst: int = Field(5000, ge=1)
    # A client that is still over its limit after this long is disconnected.
    flood_disconnect_seconds: float = Field(5.0, gt=0)

    progress_max_per_second: float = Field(10.0, gt=0, le=1000)
    task_retention_seconds: float = Field(3600.0, ge=0)

    refresh_interval_seconds: float = Field(300.0, ge=0)
    refresh_min_interval_seconds: float = Field(1.0, gt=0)

    history_max_events: int = Field(1000, ge=1)
    history_max_age_seconds: float = Field(86400.0, gt=0)
    inbox_max_per_user: int = Field(1000, ge=1)
    inbox_max_age_seconds: float = Field(30 * 86400.0, gt=0)
    maintenance_interval_seconds: float = Field(60.0, gt=0)

    # Webhooks to the application (docs/channels.md): off while the URL is empty. The secret
    # is Standard Webhooks' `whsec_<base64>`; loopback, private and link-local destinations
    # are refused unless allowed.
    webhook_url: str = ""
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    webhook_max_attempts: int = Field(10, ge=1, le=100)
    webhook_retry_base_seconds: float = Field(1.0, gt=0, le=3600)
    webhook_retry_max_seconds: float = Field(300.0, gt=0, le=86400)
    # Web Push (docs/channels.md): on with a VAPID private key (PEM, or base64url raw) and a
    # subject (mailto: or https:) push services may contact. Endpoints must be https and
    # public unless private destinations are allowed (tests).
    vapid_private_key: SecretStr | None = None
    vapid_subject: str = ""
    push_allow_private: bool = False
    # E-mail digests (docs/channels.md): on with an SMTP URL (smtp://user:password@host:port,
    # ?starttls=true, or smtps://) and a sender. One mail per user per window; the
    # unsubscribe link points at the public URL.
    smtp_url: str = ""
    email_from: str = ""
    email_digest_seconds: float = Field(600.0, ge=1, le=7 * 86400)
    public_url: str = "http://127.0.0.1:8080"
    # A process claims an escalation or a webhook delivery for this long: if it dies, another
    # process takes it over once the lease ends.
    job_lease_seconds: float = Field(30.0, ge=1, le=3600)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("jwt_algorithms", "cors_origins", "trusted_proxies", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], no path (or * for any)")
        return value

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        unknown = set(value) - HMAC_ALGORITHMS - PUBLIC_KEY_ALGORITHMS
        if unknown or not value:
            raise ValueError(f"unsupported JWT algorithms {sorted(unknown) or value}")
        if set(value) & HMAC_ALGORITHMS and set(value) & PUBLIC_KEY_ALGORITHMS:
            # Mixing families invites key-confusion attacks: a public key used as an HMAC secret.
            raise ValueError("do not mix HS* with RS*/ES* algorithms")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            length = len(value.get_secret_value().encode())
            if length < MIN_HMAC_SECRET_BYTES:
                raise ValueError(
                    f"must be at least {MIN_HMAC_SECRET_BYTES} bytes (RFC 7518 section 3.2); "
                    f"this one has {length}"
                )
        return value

    @field_validator("outbox_url")
    @classmethod
    def _outbox_is_postgresql(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (the database applications publish in)")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str) -> str:
        if value and not value.startswith(("smtp://", "smtps://")):
            raise ValueError("must be smtp://[user:password@]host[:port][?starttls=true] or smtps://...")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value:
            from .destinations import UnsafeURL, check_url

            try:
                check_url(value)
            except UnsafeURL as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _a_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from standardwebhooks.webhooks import Webhook

            try:
                Webhook(value.get_secret_value())
            except Exception as exc:  # binascii.Error, or an empty or odd secret
                raise ValueError(f"must be whsec_ followed by base64 ({type(exc).__name__})") from None
        return value

    @model_validator(mode="after")
    def _webhook_needs_a_secret(self) -> Settings:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError("NOTIFIER_WEBHOOK_SECRET is required with NOTIFIER_WEBHOOK_URL")
        if self.smtp_url and "@" not in self.email_from:
            raise ValueError("NOTIFIER_EMAIL_FROM (an address) is required with NOTIFIER_SMTP_URL")
        if self.vapid_private_key is not None and not self.vapid_subject.startswith(("mailto:", "https:")):
            raise ValueError("NOTIFIER_VAPID_SUBJECT (mailto:... or https:...) is required with a VAPID key")
        return self

    @field_validator("vapid_private_key")
    @classmethod
    def _a_vapid_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from .webpush import load_vapid

            try:
                load_vapid(value.get_secret_value())
            except Exception as exc:  # whatever py-vapid or cryptography raise for a bad key
                kind = type(exc).__name__
                raise ValueError(f"not a P-256 private key in PEM or base64url ({kind})") from None
        return value

    @field_validator("jwt_public_key")
    @classmethod
    def _a_public_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from .keys_pem import load_public_key_pem

        return load_public_key_pem(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _SecretFiles(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @property
    def connection_limit(self) -> int:
        """`max_connections`, or what the open-files limit allows with a reserve kept."""
        if self.max_connections is not None:
            return self.max_connections
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        files = hard if hard != resource.RLIM_INFINITY else 1_000_000
        return max(16, files - max(64, files // 40))

    @property
    def uses_public_key(self) -> bool:
        return bool(set(self.jwt_algorithms) & PUBLIC_KEY_ALGORITHMS)

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{self.data_dir / 'notifier.db'}"


def describe_validation_error(error: ValidationError) -> str:
    """One line naming the offending NOTIFIER_* variable, for start-up failures."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    name = f"{ENV_PREFIX}{field.upper()}" if field else "configuration"
    message = str(first["msg"]).removeprefix("Value error, ")
    if message.startswith(ENV_PREFIX):  # the message names its variable itself
        return f"invalid configuration: {message}"
    return f"invalid configuration: {name}: {message}"


def unknown_variables(environ: dict[str, str] | None = None) -> list[str]:
    """NOTIFIER_* variables no setting reads, each with the nearest known name, if any."""
    environ = dict(os.environ) if environ is None else environ
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    known |= {f"{ENV_PREFIX}{name.upper()}_FILE" for name in SECRET_FILE_FIELDS}
    reports = []
    for variable in sorted(environ):
        if variable.startswith(ENV_PREFIX) and variable not in known:
            near = difflib.get_close_matches(variable, sorted(known), n=1)
            reports.append(f"{variable} (did you mean {near[0]}?)" if near else variable)
    return reports


def masked_url(url: str) -> str:
    """A URL as logs and `notifier config` show it: its password replaced by ***."""
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    return url.replace(f":{password}@", ":***@", 1) if password else url


def described(settings: Settings) -> dict[str, str]:
    """The effective configuration, variable by variable, with secrets masked."""
    lines: dict[str, str] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name == "jwt_secret":
            shown = "(not set: development mode)" if value is None else "*** (set)"
        elif name in ("store_url", "broker_url", "outbox_url") and value:
            shown = masked_url(str(value))
        elif name == "jwt_public_key" and value:
            shown = "(a PEM public key)"
        elif isinstance(value, list):
            shown = ",".join(value)
        else:
            shown = "" if value is None else str(value)
        lines[f"{ENV_PREFIX}{name.upper()}"] = shown
    lines[f"{ENV_PREFIX}STORE_URL"] = lines[f"{ENV_PREFIX}STORE_URL"] or (
        f"(default) {settings.resolved_store_url}"
    )
    return lines
