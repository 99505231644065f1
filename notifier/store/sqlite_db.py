"""One SQLite connection shared by the store and the room histories: grouped commits that
callers wait for, and a database that notices when it stops working and recovers by itself.

Calls are synchronous on the event loop on purpose: a statement is a few microseconds, far
cheaper than a hop to a thread. Writes are grouped: the first write of a loop iteration opens
a transaction and schedules its COMMIT with `call_soon`; every writer of that iteration waits
for that one commit (`committed()`), so an acknowledgement is sent only once what it confirms
is on disk, and a burst of writes costs one commit instead of one each.

WAL with synchronous=NORMAL: a committed transaction survives the process being killed
(`kill -9`); a power loss may lose the last ones (`NOTIFIER_SQLITE_SYNCHRONOUS=full` closes
that gap at one fsync per commit).

When a commit fails (disk full, I/O error) the transaction is rolled back, every writer in it
gets STORE_UNAVAILABLE, and writes are refused at once until a probe succeeds again. The probe
runs every second: a tiny write, and a check that the file at the path is still the one we
have open. A deleted database is written back from the open connection (nothing is lost); a
replaced one is kept aside as `<name>.orphaned-<time>` and the new file is opened.

What else can happen to the files is watched too. A deleted write-ahead log (what it holds is
in the open connection's file handle only) is checkpointed into the database from that handle
and a new log started. A database overwritten in place (another database copied over it, or
garbage) is noticed by its header: the SQLite magic and this database's own identity (a random
`user_version` given at creation); the store is then unready until the file is right again,
since what the open connection would write back is no longer whole. `PRAGMA quick_check`
runs at start (a corrupt database is one line naming it, exit 2) and once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import ErrorCode, NotifierError, StartupError
from ..health import Health
from ..logs import get_logger

log = get_logger("notifier.store")

T = TypeVar("T")
Hook = Callable[[sqlite3.Connection], None]

COMPONENT = "store"
_PROBE_SECONDS = 1.0
# Every this many probes, the whole database is read back (`PRAGMA quick_check`).
_QUICK_CHECK_EVERY = 60
_MAGIC = b"SQLite format 3\x00"


def unavailable(detail: str = "the store is not writable right now") -> NotifierError:
    return NotifierError(ErrorCode.STORE_UNAVAILABLE, detail)


class SqliteDatabase:
    def __init__(
        self, path: str, health: Health, *, synchronous: str = "NORMAL", variable: str = "NOTIFIER_STORE_URL"
    ) -> None:
        self.path = path
        self._variable = variable  # what start-up errors name
        self._lock: int | None = None  # the descriptor holding the lock of the database's directory
        self._health = health
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._wal_identity: tuple[int, int] | None = None
        self._schema: list[str | Callable[[sqlite3.Connection], None]] = []
        self._in_transaction = False
        self._transaction_error: BaseException | None = None
        self._committed: asyncio.Future[None] | None = None
        self._before_commit: list[Hook] = []
        self._after_commit: list[Callable[[], None]] = []
        self._hook_failures = 0
        # The database's own identity, in its header (user_version): a copy of another one
        # at our path, or garbage, does not carry it.
        self._database_id = 0
        self._probes = 0
        self._after_rollback: list[Callable[[], None]] = []
        self._after_reopen: list[Callable[[], None]] = []
        self._probe: asyncio.TimerHandle | None = None
        self._failure: str | None = None
        self._users = 0

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:"

    def add_schema(self, script: str | Callable[[sqlite3.Connection], None]) -> None:
        """A script of CREATE ... IF NOT EXISTS, or a migration function; run at every open."""
        self._schema.append(script)

    def on_before_commit(self, hook: Hook) -> None:
        self._before_commit.append(hook)

    def on_after_commit(self, hook: Callable[[], None]) -> None:
        self._after_commit.append(hook)

    def on_after_rollback(self, hook: Callable[[], None]) -> None:
        self._after_rollback.append(hook)

    def on_reopen(self, hook: Callable[[], None]) -> None:
        """Called after the database file was reopened (caches must be reloaded)."""
        self._after_reopen.append(hook)

    # Lifecycle (shared: the store and the room log each open and close it)

    def open(self) -> None:
        self._users += 1
        if self._conn is not None:
            return
        if not self.in_memory:
            self._take_lock()
        self._conn = self._connect()
        if not self.in_memory:
            self._remember_files()
            # Writable now? A read-only database is unready from the start, not at the first write.
            self._probe_write()
            self._probe = asyncio.get_running_loop().call_later(_PROBE_SECONDS, self._check)

    def close(self) -> None:
        self._users -= 1
        if self._users > 0 or self._conn is None:
            return
        with contextlib.suppress(NotifierError):
            self.commit_now()
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None
        with contextlib.suppress(sqlite3.Error):
            if not self.in_memory:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()
        self._conn = None
        if self._lock is not None:
            os.close(self._lock)  # the lock goes with its descriptor
            self._lock = None

    def _take_lock(self) -> None:
        """One process per database: a second one would hand out the same offsets (the
        first then fails every write on its unique keys). The lock is the kernel's, so a
        process killed with -9 leaves none behind."""
        directory = Path(self.path).parent
        lock = f"{self.path}.lock"
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"{self._variable}: cannot create {directory}: {exc.strerror}") from exc
        writable = True
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            try:  # a read-only directory: locked all the same (flock needs no write access)
                fd, writable = os.open(lock, os.O_RDONLY), False
            except OSError as exc:
                raise StartupError(f"{self._variable}: cannot use {directory}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StartupError(
                f"{self._variable}: {directory} is in use by another notifier process (pid {holder})"
            ) from None
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    def _connect(self) -> sqlite3.Connection:
        if not self.in_memory:
            directory = Path(self.path).parent
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StartupError(f"{self._variable}: cannot create {directory}: {exc.strerror}") from exc
            if not os.access(directory, os.W_OK):
                raise StartupError(f"{self._variable}: {directory} is not writable")
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            for script in self._schema:
                if isinstance(script, str):
                    conn.executescript(script)
                else:
                    script(conn)
            if not self.in_memory:
                self._database_id = _database_id(conn)
                problem = _quick_check(conn)
                if problem is not None:
                    conn.close()
                    raise StartupError(
                        f"{self._variable}: {self.path} is corrupt ({problem}); restore it from a backup "
                        "or move it aside to start with an empty one"
                    )
        except sqlite3.DatabaseError as exc:
            raise StartupError(
                f"{self._variable}: {self.path} is not a usable SQLite database ({exc})"
            ) from exc
        return conn

    # Writing

    def transaction(self) -> sqlite3.Connection:
        """The connection, inside this loop iteration's transaction (opened if needed).

        Raises STORE_UNAVAILABLE while the database is failing: writes are refused at once
        rather than accepted into a file that may be lost.
        """
        if self._failure is not None:
            raise unavailable(self._failure)
        conn = self.connection
        if not self._in_transaction:
            conn.execute("BEGIN")
            self._in_transaction = True
            self._transaction_error = None
            self._committed = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_soon(self._commit_quietly)
        return conn

    def committed(self) -> asyncio.Future[None]:
        """The future of the open transaction's COMMIT (call right after `transaction()`)."""
        assert self._committed is not None, "no transaction is open"
        return self._committed

    async def write(self, statements: Callable[[sqlite3.Connection], T]) -> T:
        """Run `statements` in this iteration's transaction and wait until it is committed."""
        conn = self.transaction()
        done = self.committed()
        try:
            result = statements(conn)
        except sqlite3.Error as exc:
            # The whole transaction fails at its commit, with STORE_UNAVAILABLE for everyone
            # in it; this writer learns it here.
            self._transaction_error = exc
            await done
            raise unavailable(str(exc)) from exc
        await done
        return result

    def commit_now(self) -> None:
        """Commit the open transaction at once (before reads: they must see only what is
        committed). Raises STORE_UNAVAILABLE if the commit failed."""
        if self._in_transaction:
            self._commit()

    def _commit_quietly(self) -> None:
        # A read may have committed the transaction already (commit_now), and another one
        # opened since is committed by whichever of the scheduled calls comes first.
        if self._in_transaction:
            with contextlib.suppress(NotifierError):
                self._commit()

    def _commit(self) -> None:
        conn, done = self.connection, self._committed
        assert done is not None
        self._committed = None
        started = time.perf_counter()
        try:
            for hook in self._before_commit:
                hook(conn)
            if self._transaction_error is not None:
                raise self._transaction_error
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._in_transaction = False
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for rollback in self._after_rollback:
                rollback()
            self._fail(f"writing to {self.path} failed: {exc}")
            error = unavailable(f"the store could not save this: {exc}")
            if not done.done():
                done.set_exception(error)
                done.exception()  # retrieved: each waiter re-raises it
            raise error from exc
        self._in_transaction = False
        self._health.timed(COMPONENT, "commit", time.perf_counter() - started)
        # What is committed is acknowledged whatever the hooks do: a hook that raises (a
        # defect) is logged once and skipped, never leaving a writer waiting.
        if not done.done():
            done.set_result(None)
        for after in self._after_commit:
            try:
                after()
            except Exception:
                self._hook_failed()

    # Reading

    @property
    def connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise unavailable("the store is not open")
        return self._conn

    def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on committed data; an error becomes STORE_UNAVAILABLE."""
        with contextlib.suppress(NotifierError):
            self.commit_now()  # a failed commit fails its writers; the read goes on
        try:
            return query(self.connection)
        except sqlite3.Error as exc:
            self._fail(f"reading {self.path} failed: {exc}")
            raise unavailable(f"the store could not be read: {exc}") from exc

    # Failure and recovery

    def _hook_failed(self) -> None:
        self._hook_failures += 1
        if self._hook_failures == 1:
            log.exception(
                "after_commit_hook_failed", detail="the commit stands; further failures are counted only"
            )

    def _fail(self, detail: str) -> None:
        self._failure = detail
        self._health.fail(COMPONENT, detail)

    def _recovered(self) -> None:
        if self._failure is not None:
            self._failure = None
            self._health.recover(COMPONENT)

    def _check(self) -> None:
        """Every second: is the file still ours, whole, with its log, and can we write?"""
        try:
            self._probes += 1
            self._check_file()
            if self._conn is not None and self._check_contents() and self._failure is not None:
                self._probe_write()
        finally:
            self._probe = asyncio.get_running_loop().call_later(_PROBE_SECONDS, self._check)

    def _check_contents(self) -> bool:
        """The header is ours, the log is there, and now and then every page reads back."""
        problem = self._header_problem()
        if problem is None and self._probes % _QUICK_CHECK_EVERY == 0:
            try:
                problem = _quick_check(self.connection)
            except (sqlite3.Error, NotifierError) as exc:
                problem = str(exc)
        if problem is not None:
            if self._failure is None:
                log.error("store_file_damaged", path=self.path, detail=problem)
            self._fail(f"{self.path} {problem}")
            return False
        if self._wal_lost():
            self._restart_wal()
        return True

    def _header_problem(self) -> str | None:
        try:
            with open(self.path, "rb") as file:
                header = file.read(100)
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        if not header.startswith(_MAGIC):
            return "was overwritten: it is no SQLite database any more"
        if self._database_id and int.from_bytes(header[60:64], "big") != self._database_id:
            return "was overwritten in place by another database"
        return None

    def _wal_lost(self) -> bool:
        wal = _identity(f"{self.path}-wal")
        if self._wal_identity is None:
            self._wal_identity = wal  # the log appeared with the first write
            return False
        return wal != self._wal_identity

    def _restart_wal(self) -> None:
        """The write-ahead log was deleted (or replaced) under us: what it holds lives on in the
        open handle only. Copy it into the database from there, then start a new log."""
        log.warning(
            "store_wal_lost",
            path=f"{self.path}-wal",
            detail="checkpointed from the open handle; a new log is started",
        )
        with contextlib.suppress(NotifierError):
            self.commit_now()
        conn = self.connection
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        except sqlite3.Error as exc:
            self._fail(f"could not save the write-ahead log of {self.path}: {exc}")
            return
        self._conn = None
        for leftover in (f"{self.path}-wal", f"{self.path}-shm"):
            with contextlib.suppress(OSError):
                os.unlink(leftover)  # not ours any more, whatever is there
        self._open_again()

    def _check_file(self) -> None:
        identity = _identity(self.path)
        if identity == self._identity:
            return
        if identity is None:
            self._fail(f"{self.path} was deleted")
        else:
            self._fail(f"{self.path} was replaced by another file")
        with contextlib.suppress(NotifierError):
            self.commit_now()
        self._reopen(deleted=identity is None)

    def _reopen(self, *, deleted: bool) -> None:
        """Keep everything the open connection holds, then open the file at the path."""
        old, self._conn = self._conn, None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        keep = self.path if deleted else f"{self.path}.orphaned-{stamp}"
        copy = f"{keep}.partial"
        try:
            if old is not None:
                with contextlib.closing(sqlite3.connect(copy)) as target:
                    old.backup(target)
        except (sqlite3.Error, OSError) as exc:
            self._conn = old
            with contextlib.suppress(OSError):
                os.unlink(copy)
            self._fail(f"could not save the open database to {keep}: {exc}")
            return
        if old is not None:
            with contextlib.suppress(sqlite3.Error):
                old.close()
        # SQLite does not tie a WAL file to its database: ours, left beside a new file at the
        # path, would be read as that file's latest pages. It goes before anything is opened.
        self._remove_own_wal()
        if old is not None:
            os.replace(copy, keep)
            log.warning(
                "store_file_restored" if deleted else "store_file_kept_aside",
                path=keep,
                detail="the open database was written out before reopening",
            )
        self._open_again()

    def _open_again(self) -> None:
        """Open the file at the path anew (its caches reloaded) and see whether it works."""
        try:
            self._conn = self._connect()
        except StartupError as exc:
            self._fail(str(exc).removeprefix(f"{self._variable}: "))
            return
        self._remember_files()
        for reopened in self._after_reopen:
            reopened()
        self._probe_write()

    def _remember_files(self) -> None:
        self._identity = _identity(self.path)
        self._wal_identity = _identity(f"{self.path}-wal")

    def _remove_own_wal(self) -> None:
        wal = f"{self.path}-wal"
        if self._wal_identity is not None and _identity(wal) == self._wal_identity:
            for leftover in (wal, f"{self.path}-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)
        self._wal_identity = None

    def _probe_write(self) -> None:
        conn = self.connection
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('probe', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(time.time()),),
            )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._fail(f"writing to {self.path} failed: {exc}")
            return
        self._recovered()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _database_id(conn: sqlite3.Connection) -> int:
    """The database's identity (its `user_version`), given once, at random, when it is new."""
    (value,) = conn.execute("PRAGMA user_version").fetchone()
    if value:
        return int(value)
    value = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF or 1
    conn.execute(f"PRAGMA user_version = {value}")
    # Into the file's own header at once (not only the log): the probe reads it from there.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return value


def _quick_check(conn: sqlite3.Connection) -> str | None:
    """None when every page reads back; otherwise SQLite's first complaint."""
    (result,) = conn.execute("PRAGMA quick_check(1)").fetchone()
    return None if result == "ok" else "quick_check: " + " ".join(str(result).split())[:200]
