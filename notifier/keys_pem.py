"""PEM keys for RS*/ES* tokens: the public key the service verifies with, the private key the
CLI signs with, and which algorithm a private key implies."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def _pem_text(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        return Path(value).read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {value}: {exc.strerror}") from exc


def load_public_key_pem(value: str) -> str:
    """PEM text of a public key given as text or as a file path; anything else is refused
    (a private key here would mean the private key sits on every server)."""
    text = _pem_text(value)
    if "PRIVATE KEY" in text:
        raise ValueError("this is a private key: give the public key (openssl pkey -pubout)")
    try:
        load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ValueError("not a PEM public key") from exc
    return text


def parse_public_key(pem: str) -> PublicKeyTypes:
    """The key object of PEM text that `load_public_key_pem` has checked."""
    return load_pem_public_key(pem.encode())


def algorithms_for(key: PublicKeyTypes, algorithms: list[str]) -> list[str]:
    """Those of `algorithms` that `key` can verify: RS* for an RSA key, ES* for an EC key."""
    if isinstance(key, rsa.RSAPublicKey):
        family = "RS"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        family = "ES"
    else:
        return []
    return [algorithm for algorithm in algorithms if algorithm.startswith(family)]


def private_key_algorithm(path: Path) -> tuple[str, str]:
    """The PEM text of a private key file and the JWT algorithm it signs with."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        key = load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not an unencrypted PEM private key") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        return text, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGORITHMS:
        return text, _EC_ALGORITHMS[key.curve.name]
    raise ValueError(f"{path}: only RSA and P-256/384/521 keys are supported")
