"""Every view, the applications that feed it, and the readers the API uses."""

from __future__ import annotations

from typing import Any

from ledger.distribution.application import Distribution
from projections.balances import BalancesProjection, BalancesReader, BalancesView
from projections.positions import wait_until_caught_up
from projections.runner import ViewFeed

FEEDS = [ViewFeed(Distribution, BalancesProjection, BalancesView)]


class Views:
    """The API's handle on the read side."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.balances = BalancesReader(pool)

    def catch_up(self, timeout: float = 3.0) -> bool:
        """Read-your-writes: wait (bounded) until the balances include every logged event."""
        return wait_until_caught_up(
            self.pool, BalancesProjection.name, [Distribution.name], timeout=timeout
        )
