"""How the domain's value objects are stored inside events."""

from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from ledger.money import Money
from ledger.postings import Holds, Postings


class MoneyAsList(Transcoding):
    type = Money
    name = "money"

    def encode(self, obj: Money) -> list[Any]:
        return [obj.amount, obj.currency]

    def decode(self, data: list[Any]) -> Money:
        return Money(int(data[0]), str(data[1]))


class PostingsAsRows(Transcoding):
    type = Postings
    name = "postings"

    def encode(self, obj: Postings) -> list[list[object]]:
        return obj.to_rows()

    def decode(self, data: list[list[Any]]) -> Postings:
        return Postings.from_rows(data)


class HoldsAsRows(Transcoding):
    type = Holds
    name = "holds"

    def encode(self, obj: Holds) -> list[list[object]]:
        return obj.to_rows()

    def decode(self, data: list[list[Any]]) -> Holds:
        return Holds.from_rows(data)


def register_ledger_transcodings(transcoder: JSONTranscoder) -> None:
    for transcoding in (MoneyAsList(), PostingsAsRows(), HoldsAsRows()):
        transcoder.register(transcoding)
