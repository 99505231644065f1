"""Real backends for tests: a PostgreSQL database of the test's own (created, then dropped).

The project's scripts start PostgreSQL when it is not running (scripts/services.sh); the
server is the machine's (127.0.0.1:5432, trust auth) unless TEST_POSTGRES_URL names another.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@asynccontextmanager
async def postgres_database(admin_url: str = ADMIN_URL) -> AsyncIterator[str]:
    """A fresh database for one test; its URL. Dropped afterwards, connections and all."""
    name = f"notifier_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(admin_url, name)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
