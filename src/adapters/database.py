"""PostgreSQL: connection settings for eventsourcing, pools sized from one connection budget,
and what a process does when its database goes away and comes back.

Every pool a process opens is sized from `LEDGER_DB_CONNECTIONS` (`ConnectionBudget`): the
most connections the process may hold. Pools keep almost nothing open while idle (connections
unused for `MAX_IDLE_SECONDS` are closed), so an idle process holds a handful.

No connection is pinged on every checkout. A connection is checked only when it comes out of
the pool after resting there longer than `IDLE_CHECK_SECONDS`, or when it was opened before
the database was last found away (`DatabaseHealth.epoch`). A request that meets a broken
connection is answered 503 `unavailable` (api/problems.py) and reports it here: the process
then answers 503 at once (without touching a pool) until a probe reaches the database again,
checks every registered pool's idle connections and lets requests through. A connection handed
back broken, or a rested one found broken, reports it too; while the database is known to be
away, the registered pools refuse a connection at once (`DatabaseAway`), so a request that was
in flight when it went is not held by eventsourcing's retries, each waiting out the pool.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psycopg
from eventsourcing.persistence import PersistenceError
from psycopg_pool import ConnectionPool, PoolTimeout
from psycopg_pool.pool import ShrinkPool

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3
"""How long opening one connection may take (libpq `connect_timeout`)."""
POOL_TIMEOUT_SECONDS = 5.0
"""How long a request waits for a pooled connection before it is answered 503."""
MAX_IDLE_SECONDS = 5.0
"""A pool closes one connection above its minimum per period in which it was not needed."""
MAX_LIFETIME_SECONDS = 30 * 60.0
"""Connections are replaced after this long (spread by psycopg_pool), whatever happened."""
IDLE_CHECK_SECONDS = 2.0
"""A connection that rested in its pool longer than this is checked before it is lent."""
PROBE_SECONDS = 0.5
"""While the database is away, how often this process tries to reach it."""
WAIT_SLICE_SECONDS = 0.5
"""A wait for a pooled connection looks this often whether the database was found away."""
RETRY_AFTER_SECONDS = 2
"""Retry-After of a 503 `unavailable` answered because the database is away."""

RELAXED_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS relaxed"
"""A FROM item that makes the statement's own transaction commit without waiting for its WAL
to reach the disk (PostgreSQL's asynchronous commit, for that transaction only). Only for a
statement of a request that a synchronous commit of the same request follows before any
answer that relies on it (the idempotency record's finish, the events' append): PostgreSQL
flushes its log in order, so that later commit makes this one durable too, and a crash
before it loses both, as if the request had never arrived. What it saves is the wait for a
disk flush (0.3 ms here) and, for a counter every request updates, its row held meanwhile."""

EVENT_STORE_ENV_DEFAULTS = {
    "PERSISTENCE_MODULE": "eventsourcing.postgres",
    "CREATE_TABLE": "n",
    "POSTGRES_POOL_SIZE": "0",
    "POSTGRES_MAX_OVERFLOW": "4",
    # eventsourcing passes this to its pool as the wait for a connection
    "POSTGRES_CONNECT_TIMEOUT": str(int(POOL_TIMEOUT_SECONDS)),
    "POSTGRES_LOCK_TIMEOUT": "10",
    "POSTGRES_PRE_PING": "n",
    "POSTGRES_CONN_MAX_AGE": str(int(MAX_LIFETIME_SECONDS)),
    "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
    "AGGREGATE_CACHE_MAXSIZE": "10000",
    "APPLICATION_RECORDER_TOPIC": "adapters.chained_recorders:ChainedApplicationRecorder",
    "PROCESS_RECORDER_TOPIC": "adapters.chained_recorders:ChainedProcessRecorder",
}

DATABASE_ERRORS: tuple[type[Exception], ...] = (psycopg.Error, PersistenceError)
"""What the driver and eventsourcing raise; `is_connection_error` tells an outage apart."""

# SQLSTATEs that mean the connection or the server is gone, not that a statement failed.
CONNECTION_LOST_STATES = ("57P01", "57P02", "57P03", "53300")


def event_store_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The eventsourcing environment for a PostgreSQL URL (a socket folder works as host)."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    env = dict(EVENT_STORE_ENV_DEFAULTS)
    env.update(
        POSTGRES_DBNAME=unquote(parts.path.lstrip("/")) or "postgres",
        POSTGRES_HOST=host,
        POSTGRES_PORT=str(parts.port or query.get("port", ["5432"])[0]),
        POSTGRES_USER=unquote(parts.username or "postgres"),
        POSTGRES_PASSWORD=unquote(parts.password or ""),
    )
    env.update(overrides)
    return env


def application_env(settings: Any, database_url: str, **overrides: str) -> dict[str, str]:
    """The environment every application of the ledger is constructed with."""
    env = event_store_env(database_url)
    env.update(
        CODE_HASH_KEY=settings.ledger_code_hash_key,
        RECHARGE_DEADLINE_SECONDS=str(settings.ledger_recharge_deadline_seconds),
        CARDS_SHARE_DEPTH=str(settings.ledger_share_depth),
    )
    env.update(overrides)
    return env


def pool_env(max_size: int) -> dict[str, str]:
    """eventsourcing's pool settings for a pool of at most `max_size`, none kept idle."""
    return {"POSTGRES_POOL_SIZE": "0", "POSTGRES_MAX_OVERFLOW": str(max(1, max_size))}


# the connection budget


READ_POOL = "read"
"""The process's own pool: authentication, idempotency, limits, views, audit, sweeper."""
FIXED_WITH_RUNNERS = 2
"""With projection runners: the session holding their advisory locks and the LISTEN one."""

WEIGHTS = {
    READ_POOL: 3,
    "distribution": 2,
    "recharges": 1,
    "cards": 1,
    "settlements": 1,
}
RUNNER_WEIGHTS = {"views": 1, "processes": 1}
"""Pools only a process running the projection runners opens: the views' writes and the
saga starter's (an event-sourced process)."""


@dataclass(frozen=True)
class ConnectionBudget:
    """`LEDGER_DB_CONNECTIONS`: the most connections one process holds, shared out among its
    pools by weight (every pool at least one). An idle process holds far fewer: only the read
    pool keeps one connection open, and the runners hold their lock session and one LISTEN
    connection."""

    total: int
    runners: bool = True

    def sizes(self) -> dict[str, int]:
        weights = dict(WEIGHTS)
        fixed = 0
        if self.runners:
            weights.update(RUNNER_WEIGHTS)
            fixed = FIXED_WITH_RUNNERS
        # one each, then the rest by weight (largest remainders get what rounding left)
        extra = max(self.total - fixed - len(weights), 0)
        whole = sum(weights.values())
        sizes = {name: 1 + extra * weight // whole for name, weight in weights.items()}
        left = self.total - fixed - sum(sizes.values())
        by_remainder = sorted(weights, key=lambda name: -(extra * weights[name] % whole))
        for name in by_remainder[: max(left, 0)]:
            sizes[name] += 1
        return sizes

    def size(self, name: str) -> int:
        return self.sizes()[name]

    def env(self, name: str) -> dict[str, str]:
        """eventsourcing's pool settings for the application (or pool) called `name`."""
        return pool_env(self.size(name))

    def most(self) -> int:
        """The most connections the pools and the fixed ones may hold together."""
        return sum(self.sizes().values()) + (FIXED_WITH_RUNNERS if self.runners else 0)


# outages


class DatabaseAway(PoolTimeout):
    """No connection lent: this process knows its database is away (a probe is trying to
    reach it). A `PoolTimeout` without the wait, so everything that handles a lost database
    (eventsourcing's retries, the runners' restarts, the 503) handles it the same way."""


def is_connection_error(error: BaseException | None) -> bool:
    """True when `error` (or what caused it) says the database is unreachable or the
    connection broke, rather than that a statement was refused (a lock time-out is not)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, PoolTimeout):
            return True
        if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
            state = getattr(error, "sqlstate", None)
            return state is None or state.startswith("08") or state in CONNECTION_LOST_STATES
        error = error.__cause__ or error.__context__
        seen += 1
    return False


class DatabaseHealth:
    """What this process knows about its database: away (since a request found a broken
    connection or none in time) or reachable, and the pools to check when it comes back."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.epoch = 0
        self.down_since: float | None = None
        self.recoveries = 0
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._mutex = threading.Lock()
        self._probe: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def register(self, pool: Any) -> Any:
        """Let `pool` (psycopg_pool's, or eventsourcing's subclass of it, not opened yet) check
        rested connections and those older than the last outage, close idle ones soon, and
        give up on a connection after `POOL_TIMEOUT_SECONDS`."""
        returned_at: weakref.WeakKeyDictionary[Any, tuple[float, int]] = weakref.WeakKeyDictionary()

        def stamp(conn: Any) -> None:
            returned_at[conn] = (time.monotonic(), self.epoch)

        def check(conn: Any) -> None:
            at, epoch = returned_at.get(conn, (0.0, -1))
            if epoch != self.epoch or time.monotonic() - at > IDLE_CHECK_SECONDS:
                try:
                    ConnectionPool.check_connection(conn)
                except Exception as error:
                    # the pool discards it and waits for another; the process learns now
                    # (not after the pool's time-out) that the database may be away
                    self.report(error)
                    raise

        # psycopg_pool keeps `check` as an attribute; eventsourcing builds its pool without
        # it, so it is set here, before the pool opens. The return is stamped in `putconn`,
        # on the returning thread: a `reset` callback would send every return through the
        # pool's worker thread (a hand-off per statement, 13 % of an API process's GIL time).
        def putconn(conn: Any, *, give_back: Any = pool.putconn) -> None:
            # eventsourcing retries a statement that met a lost connection, so the error may
            # never reach a request's error handler: a connection handed back broken tells the
            # process the database is away just the same
            if getattr(conn, "broken", False):
                self.report(psycopg.OperationalError("a pooled connection was lost"))
            stamp(conn)
            give_back(conn)

        # While the database is known to be away, a connection is refused at once rather
        # than waited for: eventsourcing retries a statement that met a lost connection ten
        # times, and each retry would otherwise wait out the pool's time-out, holding a request
        # that was in flight when the database went for as long as it stays away. A wait is
        # cut in slices for the same reason: the database found away meanwhile ends it.
        def getconn(timeout: float | None = None, *, lend: Any = pool.getconn) -> Any:
            deadline = time.monotonic() + (POOL_TIMEOUT_SECONDS if timeout is None else timeout)
            while True:
                if self.down:
                    raise DatabaseAway(f"pool {getattr(pool, 'name', '')!r}: the database is away")
                left = deadline - time.monotonic()
                try:
                    return lend(timeout=min(left, WAIT_SLICE_SECONDS))
                except PoolTimeout:
                    if left <= WAIT_SLICE_SECONDS:
                        raise

        pool._check = check
        pool.putconn = putconn
        pool.getconn = getconn
        pool.max_idle = MAX_IDLE_SECONDS
        pool.timeout = POOL_TIMEOUT_SECONDS
        if isinstance(pool.kwargs, dict):
            pool.kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
        if not pool.closed:
            # opened already (eventsourcing opens its pool with the application): its first
            # shrink was scheduled with the old max_idle, so one is scheduled with the new
            pool.schedule_task(ShrinkPool(pool), MAX_IDLE_SECONDS)
        self._pools.add(pool)
        return pool

    def register_application(self, application: Any) -> Any:
        """Register the pool of an eventsourcing application on PostgreSQL."""
        for pool in event_store_pools(application):
            self.register(pool)
        return application

    def report(self, error: BaseException) -> bool:
        """Called with an error a request or a thread met; True if it means the database is
        away (then requests are answered 503 at once until a probe reaches it again)."""
        if not is_connection_error(error):
            return False
        with self._mutex:
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning(
                    "the database is unreachable (%s); answering 503 until it is back",
                    type(error).__name__,
                )
                self._probe = threading.Thread(
                    target=self._wait_for_it, name="db-probe", daemon=True
                )
                self._probe.start()
        return True

    def reachable(self, timeout: float = 2.0) -> str | None:
        """None if a new connection answers now, else what went wrong (no pool involved)."""
        try:
            with psycopg.connect(
                self.database_url, connect_timeout=max(1, int(timeout)), autocommit=True
            ) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as error:
            return type(error).__name__
        return None

    def _wait_for_it(self) -> None:
        while not self._closed.wait(PROBE_SECONDS):
            if self.reachable() is None:
                break
        else:
            return
        self.epoch += 1  # every connection opened before is checked before it is lent
        for pool in list(self._pools):
            try:
                pool.check()
            except Exception:  # noqa: BLE001 - a pool closed meanwhile
                log.debug("pool %s not checked", getattr(pool, "name", pool))
        with self._mutex:
            away = time.monotonic() - (self.down_since or time.monotonic())
            self.down_since = None
            self.recoveries += 1
        log.warning("the database is reachable again after %.1f s", away)

    def close(self) -> None:
        self._closed.set()


def event_store_pools(application: Any) -> Iterator[Any]:
    """The psycopg pools behind an eventsourcing application (or a datastore)."""
    seen: set[int] = set()
    for holder in (
        getattr(application, "factory", None),
        getattr(application, "recorder", None),
        application,
    ):
        datastore = getattr(holder, "datastore", None)
        pool = getattr(datastore, "pool", None)
        if pool is not None and id(pool) not in seen:
            seen.add(id(pool))
            yield pool


def open_pool(
    database_url: str,
    size: int = 8,
    name: str = "ledger",
    *,
    min_size: int = 1,
    health: DatabaseHealth | None = None,
) -> ConnectionPool:
    """A pool of at most `size` connections keeping `min_size` open while idle."""
    pool: ConnectionPool = ConnectionPool(
        database_url,
        min_size=min(min_size, size),
        max_size=size,
        name=name,
        kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_SECONDS},
        open=False,
        timeout=POOL_TIMEOUT_SECONDS,
        max_idle=MAX_IDLE_SECONDS,
        max_lifetime=MAX_LIFETIME_SECONDS,
    )
    if health is not None:
        health.register(pool)
    pool.open(wait=min_size > 0, timeout=30)
    return pool


def wait_for_database(database_url: str, bound: float = 30.0, say: Any = None) -> None:
    """Connect once, retrying for up to `bound` seconds while the server refuses (starting,
    restarting, or full: "too many clients"); `say` is told of each wait. Raises the last error
    past the bound."""
    deadline = time.monotonic() + bound
    delay = 0.25
    told = False
    while True:
        try:
            with psycopg.connect(database_url, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as error:
            left = deadline - time.monotonic()
            if left <= 0 or not is_connection_error(error):
                raise
            if say is not None and not told:
                reason = str(error).strip().splitlines()[-1] if str(error).strip() else "refused"
                say(
                    f"the database refuses connections ({reason}); retrying for up to {bound:.0f} s"
                )
                told = True
            time.sleep(min(delay, max(left, 0.0)))
            delay = min(delay * 2, 2.0)
