"""The connection budget's shares, and which errors mean the database is away."""

from __future__ import annotations

import psycopg
import pytest
from eventsourcing.persistence import OperationalError as StoreOperationalError
from psycopg import errors
from psycopg_pool import PoolTimeout

from adapters.database import FIXED_WITH_RUNNERS, ConnectionBudget, is_connection_error


@pytest.mark.parametrize("total", [9, 10, 12, 20, 33, 100])
@pytest.mark.parametrize("runners", [True, False])
def test_every_pool_gets_a_share_and_together_they_stay_within_the_budget(
    total: int, runners: bool
) -> None:
    budget = ConnectionBudget(total, runners=runners)
    sizes = budget.sizes()
    assert all(size >= 1 for size in sizes.values())
    assert budget.most() == total
    assert ("views" in sizes) is runners and ("processes" in sizes) is runners
    assert sizes["read"] >= sizes["distribution"] >= sizes["recharges"]


def test_the_default_budget_shares_twenty() -> None:
    with_runners = ConnectionBudget(20, runners=True)
    assert with_runners.sizes() == {
        "read": 5,
        "distribution": 3,
        "recharges": 2,
        "cards": 2,
        "settlements": 2,
        "views": 2,
        "processes": 2,
    }
    assert with_runners.most() == 18 + FIXED_WITH_RUNNERS == 20
    assert ConnectionBudget(20, runners=False).sizes() == {
        "read": 6,
        "distribution": 5,
        "recharges": 3,
        "cards": 3,
        "settlements": 3,
    }
    assert with_runners.env("recharges") == {
        "POSTGRES_POOL_SIZE": "0",
        "POSTGRES_MAX_OVERFLOW": "2",
    }


def wrapped(cause: BaseException) -> BaseException:
    """As eventsourcing raises a driver error: its own class, from the driver's."""
    try:
        raise StoreOperationalError(str(cause)) from cause
    except StoreOperationalError as error:
        return error


@pytest.mark.parametrize(
    "error",
    [
        PoolTimeout("couldn't get a connection after 5.00 sec"),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        errors.AdminShutdown("terminating connection due to administrator command"),
        errors.TooManyConnections("sorry, too many clients already"),
        errors.CannotConnectNow("the database system is starting up"),
        wrapped(errors.AdminShutdown("terminating connection")),
        wrapped(PoolTimeout("couldn't get a connection")),
    ],
)
def test_a_lost_or_refused_connection_means_the_database_is_away(error: BaseException) -> None:
    assert is_connection_error(error)


@pytest.mark.parametrize(
    "error",
    [
        errors.LockNotAvailable("canceling statement due to lock timeout"),
        errors.QueryCanceled("canceling statement due to statement timeout"),
        errors.UniqueViolation("duplicate key"),
        wrapped(errors.LockNotAvailable("lock timeout")),
        ValueError("not a database error"),
    ],
)
def test_a_refused_statement_is_not_an_outage(error: BaseException) -> None:
    assert not is_connection_error(error)
