"""Token verification and the claims the service relies on. Knows nothing of the wire."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt

from .errors import ErrorCode, NotifierError, StartupError
from .keys_pem import algorithms_for, parse_public_key
from .logs import get_logger
from .rooms import MAX_USER_ID, is_user_id
from .settings import Settings

log = get_logger("notifier.auth")

ALL_PROJECTS = "*"
DEV_SECRET_FILE = "jwt-secret"


class Role(StrEnum):
    USER = "user"
    PUBLISHER = "publisher"
    ADMIN = "admin"


PUBLISHING_ROLES = frozenset({Role.PUBLISHER, Role.ADMIN})


@dataclass(frozen=True, slots=True)
class Claims:
    """Who is connected and what they may see, as stated by a verified token."""

    sub: str
    role: Role
    projects: frozenset[str]
    expires_at: float
    issued_at: float | None = None

    def can_see_project(self, project_id: str) -> bool:
        return ALL_PROJECTS in self.projects or project_id in self.projects

    @property
    def can_publish(self) -> bool:
        return self.role in PUBLISHING_ROLES

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class TokenVerifier:
    """Checks signature, algorithm (pinned by configuration), exp, nbf, aud and iss."""

    def __init__(self, settings: Settings, key: str) -> None:
        self._key: Any = key
        self._algorithms = list(settings.jwt_algorithms)
        if settings.uses_public_key:
            # The PEM is parsed here once: PyJWT would parse the text on every verify
            # (measured: 77 -> 59 µs per RS256 token, 127 -> 106 µs per ES256) and takes a key
            # object as it is. A token of the other family (ES* for an RSA key) cannot verify
            # and is refused as an algorithm this server does not accept.
            self._key = parse_public_key(key)
            self._algorithms = algorithms_for(self._key, self._algorithms)
            if not self._algorithms:
                raise StartupError(
                    f"NOTIFIER_JWT_PUBLIC_KEY: this key cannot verify "
                    f"{', '.join(settings.jwt_algorithms)} tokens (RS* need an RSA key, ES* an EC key)"
                )
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway_seconds
        self._max_bytes = settings.jwt_max_token_bytes

    def verify(self, token: object) -> Claims:
        if token is None or token == "":
            raise NotifierError(ErrorCode.AUTH_REQUIRED, "a token is required")
        if not isinstance(token, str):
            raise NotifierError(ErrorCode.AUTH_INVALID, "the token must be a string")
        if len(token) > self._max_bytes:
            raise NotifierError(ErrorCode.AUTH_INVALID, "the token is too large")
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            # PyJWT reads `exp: true` as 1: a claim that is no date is invalid, not expired.
            unverified = jwt.decode(token, options={"verify_signature": False})
            _timestamp(unverified, "exp", required=True)
            raise NotifierError(ErrorCode.AUTH_EXPIRED, "the token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise NotifierError(ErrorCode.AUTH_INVALID, _plain_reason(exc)) from exc
        except (OverflowError, ValueError, TypeError) as exc:
            # A correctly signed token with absurd numbers (exp = 10**400, 1e999): PyJWT's own
            # arithmetic on them raises these instead of a token error.
            raise NotifierError(ErrorCode.AUTH_INVALID, "the token's time claims are out of range") from exc
        return _claims_from_payload(payload)


def _plain_reason(exc: jwt.InvalidTokenError) -> str:
    """What went wrong, in words for people; never the crypto library's internals."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token has no {exc.claim!r} claim"
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "the token is not acceptable"


_REASONS: list[tuple[type[Exception], str]] = [
    (jwt.ImmatureSignatureError, "the token is not valid yet (nbf is in the future)"),
    (jwt.InvalidIssuedAtError, "the token's issue time (iat) is in the future or malformed"),
    (jwt.InvalidAudienceError, "the token's audience (aud) is not accepted here"),
    (jwt.InvalidIssuerError, "the token's issuer (iss) is not accepted here"),
    (jwt.InvalidAlgorithmError, "the token is signed with an algorithm this server does not accept"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.DecodeError, "the token is not a well-formed JWT"),
]

# Time claims beyond 9999-12-31 are not dates anyone means.
_LATEST_TIMESTAMP = 253_402_300_799


def _timestamp(payload: dict[str, Any], claim: str, required: bool) -> float | None:
    value = payload.get(claim)
    if value is None and not required:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (0 <= value <= _LATEST_TIMESTAMP)
    ):
        raise NotifierError(ErrorCode.AUTH_INVALID, f"claim {claim!r} must be a date in seconds")
    return float(value)


def _claims_from_payload(payload: dict[str, Any]) -> Claims:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not is_user_id(sub):
        raise NotifierError(
            ErrorCode.AUTH_INVALID,
            f"claim 'sub' must be a non-empty string of at most {MAX_USER_ID} characters, "
            "without control characters",
        )
    try:
        role = Role(payload.get("role", Role.USER))
    except ValueError as exc:
        raise NotifierError(ErrorCode.AUTH_INVALID, "claim 'role' is not a known role") from exc
    projects = payload.get("projects", [])
    if projects == ALL_PROJECTS:
        projects = [ALL_PROJECTS]
    if not isinstance(projects, list) or not all(isinstance(p, str) for p in projects):
        raise NotifierError(ErrorCode.AUTH_INVALID, "claim 'projects' must be a list of strings")
    expires_at = _timestamp(payload, "exp", required=True)
    assert expires_at is not None
    _timestamp(payload, "nbf", required=False)
    issued_at = _timestamp(payload, "iat", required=False)
    return Claims(
        sub=sub,
        role=role,
        projects=frozenset(projects),
        expires_at=expires_at,
        issued_at=issued_at,
    )


def issue_token(
    key: str,
    algorithm: str,
    sub: str,
    *,
    role: Role = Role.USER,
    projects: list[str] | None = None,
    ttl_seconds: float = 3600,
    audience: str | None = None,
    issuer: str | None = None,
) -> str:
    """Sign a token the service will accept (HS* with the secret, RS*/ES* with a private key)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": sub,
        "role": role.value,
        "projects": projects or [],
        "iat": now,
        "exp": now + int(ttl_seconds),
    }
    if audience:
        payload["aud"] = audience
    if issuer:
        payload["iss"] = issuer
    return jwt.encode(payload, key, algorithm=algorithm)


def verification_key(settings: Settings) -> str:
    """The key tokens are checked with: the public key, the secret, or the dev-mode secret."""
    if settings.uses_public_key:
        if settings.jwt_public_key is None:
            raise StartupError(
                "NOTIFIER_JWT_PUBLIC_KEY: required for the RS*/ES* algorithms in NOTIFIER_JWT_ALGORITHMS"
            )
        return settings.jwt_public_key  # PEM text: settings loaded and checked it
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    return load_or_create_dev_secret(settings.data_dir)[0]


def signing_algorithm(settings: Settings) -> str:
    return settings.jwt_algorithms[0]


def dev_secret_path(data_dir: Path) -> Path:
    return (data_dir / DEV_SECRET_FILE).resolve()


def load_or_create_dev_secret(data_dir: Path) -> tuple[str, bool]:
    """Development mode: a random secret kept (mode 0600) in the data directory; the secret
    and whether it was created now."""
    path = dev_secret_path(data_dir)
    try:
        if path.exists():
            return path.read_text().strip(), False
        data_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret)
    except OSError as exc:
        raise StartupError(
            f"NOTIFIER_DATA_DIR: development mode keeps its secret in {path}, which cannot be "
            f"written ({exc.strerror}); set NOTIFIER_JWT_SECRET, or make {data_dir} writable"
        ) from exc
    log.warning(
        "dev_mode_secret_created",
        path=str(path),
        detail="no NOTIFIER_JWT_SECRET or NOTIFIER_JWT_PUBLIC_KEY set; development mode",
    )
    return secret, True
