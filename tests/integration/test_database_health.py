"""What a process's pools do when its database goes away, on a PostgreSQL cluster of the test's
own: a connection is refused at once (`DatabaseAway`) while the process knows the database is
away, rather than waited for, so eventsourcing's ten retries of a statement that met a lost
connection do not each wait out the pool's time-out; a rested connection found broken tells the
process at once; once a probe reaches the database again, the pools lend as before."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from adapters.database import DatabaseAway, DatabaseHealth, is_connection_error, open_pool
from ledger.distribution.application import Distribution
from tests.e2e.private_postgres import PrivateCluster, private_cluster
from tests.integration.test_rebuild import app_env

pytestmark = pytest.mark.integration


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    with private_cluster() as started:
        yield started


@pytest.fixture
def database_url(cluster: PrivateCluster) -> str:
    from api.runtime.schema import apply_migrations

    url = cluster.create_database("ledger")
    apply_migrations(url)
    return url


def causes(error: BaseException | None) -> list[type[BaseException]]:
    seen: list[type[BaseException]] = []
    while error is not None and len(seen) < 20:
        seen.append(type(error))
        error = error.__cause__ or error.__context__
    return seen


def wait_until(predicate: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.05)


def test_a_statement_in_flight_when_the_database_goes_is_refused_not_held(
    cluster: PrivateCluster, database_url: str
) -> None:
    health = DatabaseHealth(database_url)
    app = Distribution(env=app_env(database_url))
    health.register_application(app)
    try:
        before = app.recorder.max_notification_id()
        cluster.stop("fast")

        # the pooled connection was lent unchecked (it had just been used): the statement meets
        # it lost, the connection handed back broken tells the process, and eventsourcing's
        # retries are refused by the pool at once instead of each waiting for a connection
        with pytest.raises(Exception) as raised:
            app.recorder.max_notification_id()
        assert health.down
        assert is_connection_error(raised.value)
        assert DatabaseAway in causes(raised.value), causes(raised.value)

        cluster.start()
        wait_until(lambda: not health.down)
        assert health.recoveries == 1
        assert app.recorder.max_notification_id() == before
    finally:
        health.close()
        app.close()


def test_a_rested_connection_found_broken_ends_the_wait_for_another(
    cluster: PrivateCluster, database_url: str
) -> None:
    health = DatabaseHealth(database_url)
    pool = open_pool(database_url, size=2, name="rested", health=health)
    try:
        with pool.connection() as conn:
            conn.execute("SELECT 1")
        health.epoch += 1  # as after an outage: every connection is checked before it is lent
        cluster.stop("fast")

        # the check finds the connection broken and tells the process; the pool, unable to
        # open another, would wait its whole time-out: the wait ends as soon as the
        # database is known to be away
        with pytest.raises(DatabaseAway), pool.connection():
            pass
        assert health.down

        cluster.start()
        wait_until(lambda: not health.down)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        health.close()
        pool.close()
