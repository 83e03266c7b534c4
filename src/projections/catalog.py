"""Every view, the applications that feed it, and the readers the API uses."""

from __future__ import annotations

from typing import Any

from ledger.cards.application import Cards
from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from projections.balances import BalancesProjection, BalancesReader, BalancesView
from projections.codes import CodesProjection, CodesReader, CodesView
from projections.positions import wait_until_caught_up
from projections.recharges import RechargesProjection, RechargesReader, RechargesView
from projections.runner import ProcessFeed, ViewFeed

FEEDS = [
    ViewFeed(Distribution, BalancesProjection, BalancesView),
    ViewFeed(Recharges, RechargesProjection, RechargesView),
    ViewFeed(Distribution, CodesProjection, CodesView),
    ProcessFeed(Distribution, Recharges),
    ViewFeed(Cards, BalancesProjection, BalancesView),
]

TRACKERS: list[tuple[str, type[Any] | None]] = [
    *((f.projection_class.name, f.view_class) for f in FEEDS if isinstance(f, ViewFeed)),
    ("dispatcher", None),
]
"""Tracking tables to create: every view's, and the recharges outbox dispatcher's."""


class Views:
    """The API's handle on the read side."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.balances = BalancesReader(pool)
        self.recharges = RechargesReader(pool)
        self.codes = CodesReader(pool)

    def catch_up(self, timeout: float = 3.0) -> bool:
        """Read-your-writes: wait (bounded) until the balances include every logged event."""
        return wait_until_caught_up(
            self.pool, BalancesProjection.name, [Distribution.name, Cards.name], timeout=timeout
        )

    def recharges_caught_up(self, timeout: float = 3.0) -> bool:
        """Every reservation logged so far has started its saga, and the list shows it."""
        return wait_until_caught_up(
            self.pool, Recharges.name, [Distribution.name], timeout=timeout
        ) and wait_until_caught_up(
            self.pool, RechargesProjection.name, [Recharges.name], timeout=timeout
        )
