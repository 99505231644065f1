"""Configuration: one pydantic-settings model, read from NOTIFIER_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"})

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """Everything the service can be told. Defaults are safe for a single local process."""

    model_config = SettingsConfigDict(env_prefix="NOTIFIER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("notifier-data")
    # memory://, sqlite:///path or postgresql://...; empty means sqlite in data_dir.
    store_url: str = ""
    # Empty: one process, room histories in the store's SQLite database. redis://host:port/db
    # (also rediss://, unix://): histories and delivery across processes in Redis.
    broker_url: str = ""
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

    # Origins allowed to open a Socket.IO connection (checked on the websocket handshake too).
    # Empty: same origin only. "*": any origin (development only).
    cors_origins: CommaList = []

    # Whole seconds: Engine.IO announces the interval to clients truncated to a second.
    ping_interval_seconds: int = Field(25, ge=1, le=300)
    ping_timeout_seconds: int = Field(20, ge=1, le=120)
    max_payload_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    # Events queued for one connection that has stopped reading before it is disconnected.
    max_backlog_events: int = Field(2000, ge=10)
    # An Engine.IO session that has not connected a Socket.IO namespace by then is closed.
    connect_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # Request headers that have not all arrived by then get 408 and the connection closes.
    http_header_timeout_seconds: float = Field(10.0, gt=0, le=300)

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

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("jwt_algorithms", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
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

    @model_validator(mode="after")
    def _key_matches_algorithms(self) -> Settings:
        if set(self.jwt_algorithms) & PUBLIC_KEY_ALGORITHMS and not self.jwt_public_key:
            raise ValueError("NOTIFIER_JWT_PUBLIC_KEY is required for RS*/ES* algorithms")
        return self

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
    name = f"NOTIFIER_{field.upper()}" if field else "configuration"
    return f"invalid configuration: {name}: {first['msg']}"
