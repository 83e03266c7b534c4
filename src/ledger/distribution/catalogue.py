"""Platforms and the products (VIP plans) they sell to the operator."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidAmount
from ledger.money import Money

MAX_DURATION_DAYS = 3660


def check_name(name: str, what: str = "name") -> str:
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidAmount(f"{what} must be 1 to 200 characters")
    return name


class Platform(Aggregate):
    """A third-party video platform: it recharges memberships and settles with the operator."""

    @event("Registered")
    def __init__(self, id: UUID, name: str, gateway_url: str) -> None:
        self.name = name
        self.gateway_url = gateway_url

    def point_gateway_at(self, gateway_url: str) -> None:
        """The partner API moved (the sandbox platform started on another port): later calls
        go to the new address; nothing recorded when it is the same."""
        if gateway_url != self.gateway_url:
            self._gateway_moved(gateway_url=gateway_url)

    @event("GatewayMoved")
    def _gateway_moved(self, gateway_url: str) -> None:
        self.gateway_url = gateway_url


class Product(Aggregate):
    """A sellable plan of one platform, bought by top-level channels at its wholesale cost."""

    @event("Registered")
    def __init__(
        self,
        id: UUID,
        platform_id: UUID,
        name: str,
        duration_days: int,
        face_value: Money,
        wholesale_cost: Money,
    ) -> None:
        self.platform_id = platform_id
        self.name = name
        self.duration_days = duration_days
        self.face_value = face_value
        self.wholesale_cost = wholesale_cost

    @property
    def currency(self) -> str:
        return self.face_value.currency

    @staticmethod
    def check_terms(duration_days: int, face_value: Money, wholesale_cost: Money) -> None:
        if type(duration_days) is not int or not 1 <= duration_days <= MAX_DURATION_DAYS:
            raise InvalidAmount(f"duration_days must be 1 to {MAX_DURATION_DAYS}")
        face_value.require_positive()
        wholesale_cost.require_positive()
        if wholesale_cost.currency != face_value.currency:
            raise InvalidAmount("face value and wholesale cost must share a currency")
