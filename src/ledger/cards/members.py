"""Members: the people who own, hold and use cards, each with a list of their cards."""

from __future__ import annotations

import re
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from ledger.errors import InvalidAmount, LimitExceeded

PHONE = re.compile(r"^\+?[0-9]{5,20}$")
MAX_CARDS = 10_000


def check_phone(phone: str) -> str:
    phone = phone.strip().replace(" ", "").replace("-", "")
    if not PHONE.match(phone):
        raise InvalidAmount("a phone number is 5 to 20 digits, optionally after a +")
    return phone


class Member(Aggregate):
    """A registered person; `card_ids` lists the cards they own or hold, newest last."""

    @event("Registered")
    def __init__(self, id: UUID, name: str, phone: str) -> None:
        self.name = name
        self.phone = phone
        self.card_ids: list[UUID] = []

    def receive(self, card_id: UUID) -> None:
        if len(self.card_ids) >= MAX_CARDS:
            raise LimitExceeded(f"a member holds at most {MAX_CARDS} cards")
        self._received(card_id)

    @event("CardReceived")
    def _received(self, card_id: UUID) -> None:
        self.card_ids.append(card_id)
