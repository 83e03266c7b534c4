"""The API's handle on the read side: the views' readers, read-your-writes waits, where the
views stand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from projections.balances import BalancesReader
from projections.catalog import view
from projections.codes import CodesReader
from projections.directory import DirectoryReader
from projections.journal import JournalReader
from projections.positions import wait_until_caught_up
from projections.recharges import RechargesReader
from projections.settled_orders import SettledOrders
from projections.settlements import SettlementsReader
from projections.status import Standing, standings


class Views:
    """The API's handle on the read side."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.balances = BalancesReader(pool)
        self.recharges = RechargesReader(pool)
        self.codes = CodesReader(pool)
        self.journal = JournalReader(pool)
        self.directory = DirectoryReader(pool)
        self.settled_orders = SettledOrders(pool)
        self.settlements = SettlementsReader(pool)

    def catch_up(self, name: str = "balances", timeout: float = 3.0) -> bool:
        """Read-your-writes: wait (bounded) until the view includes every logged event."""
        applications = [a.name for a in view(name).applications]
        return wait_until_caught_up(self.pool, applications, view_name=name, timeout=timeout)

    def database_error(self) -> str | None:
        """None when the database answers within two seconds, else what went wrong."""
        try:
            with self.pool.connection(timeout=2) as conn:
                conn.execute("SELECT 1")
        except Exception as error:  # noqa: BLE001 - any failure means it is not usable
            return type(error).__name__
        return None

    def standings(self, extra: Sequence[Any] = ()) -> list[Standing]:
        """Where every view stands, and the `extra` feeds (the outbox dispatcher)."""
        with self.pool.connection() as conn:
            return standings(conn, extra)

    def recharges_caught_up(self, timeout: float = 3.0) -> bool:
        """Every reservation logged so far has started its saga, and the list shows it."""
        return wait_until_caught_up(
            self.pool, [Distribution.name], tracking_name=Recharges.name, timeout=timeout
        ) and self.catch_up("recharges", timeout)
