"""Late successes become cases: a platform that reports success for a recharge we had failed
and released (`Recharge.DiscrepancyFound`, kind `late_success`) may have sold the unit twice,
so an operator looks at it. The runtime's dispatcher, which follows the recharges log with
tracking, calls `open` for each such event; a repeat opens nothing new (the case's id comes
from the recharge's)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from ledger.settlement.application import Settlements
from ledger.settlement.cases import Case


class LateSuccesses:
    """Opens the `late_success` case of a recharge, on its product's platform."""

    def __init__(
        self, settlements: Settlements, recharges: Recharges, distribution: Distribution
    ) -> None:
        self.settlements = settlements
        self.recharges = recharges
        self.distribution = distribution

    def open(self, recharge_id: UUID, reason: str, now: datetime) -> Case:
        recharge = self.recharges.recharge(recharge_id)
        product = self.distribution.product(recharge.product_id)
        detail = f"the platform credited order {recharge_id} after we failed it: {reason}"
        return self.settlements.open_late_success(
            recharge_id, product.platform_id, detail, product.wholesale_cost.currency, now
        )
