"""Every view and the applications that feed it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.cards.application import Cards
from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from ledger.settlement.application import Settlements
from projections.balances import BalancesView
from projections.base import View, projection_for
from projections.codes import CodesView
from projections.directory import DirectoryView
from projections.journal import JournalView
from projections.merchant_statements import MerchantStatementsView
from projections.recharges import RechargesView
from projections.runner import Feed, ProcessFeed, ViewFeed
from projections.settled_orders import SettledOrdersView
from projections.settlements import SettlementsView

APPLICATIONS: tuple[type[Any], ...] = (Distribution, Recharges, Cards, Settlements)


@dataclass(frozen=True)
class ViewSpec:
    """A view and the applications whose logs it follows."""

    view_class: type[View]
    applications: tuple[type[Any], ...]

    @property
    def name(self) -> str:
        return self.view_class.view_name

    def feed(self, application_class: type[Any], version: int) -> ViewFeed:
        return ViewFeed(
            application_class,
            projection_for(self.view_class, version),
            self.view_class.at_version(version),
        )

    def feeds(self) -> list[SpecFeed]:
        return [SpecFeed(self, application) for application in self.applications]


@dataclass(frozen=True)
class SpecFeed:
    """One view's feed from one application, at whichever version is live."""

    spec: ViewSpec
    application_class: type[Any]

    @property
    def name(self) -> str:
        return f"{self.spec.name}<-{self.application_class.name}"

    @property
    def view_name(self) -> str:
        return self.spec.name

    def at(self, version: int) -> Feed:
        return self.spec.feed(self.application_class, version)


VIEWS = [
    ViewSpec(BalancesView, (Distribution, Cards, Settlements)),
    ViewSpec(JournalView, (Distribution, Cards, Settlements)),
    ViewSpec(RechargesView, (Recharges,)),
    ViewSpec(CodesView, (Distribution,)),
    ViewSpec(DirectoryView, (Distribution, Cards)),
    ViewSpec(MerchantStatementsView, (Cards,)),
    ViewSpec(SettlementsView, (Settlements,)),
    ViewSpec(SettledOrdersView, (Distribution, Recharges)),
]
PROCESSES: list[Feed] = [ProcessFeed(Distribution, Recharges)]
"""Event-sourced processes that follow another application's log (saga starters)."""


def view(name: str) -> ViewSpec:
    for spec in VIEWS:
        if spec.name == name:
            return spec
    raise LookupError(f"no view named {name!r}; there are {', '.join(s.name for s in VIEWS)}")


def continuous_feeds() -> list[Any]:
    return [feed for spec in VIEWS for feed in spec.feeds()] + PROCESSES


FEEDS = continuous_feeds()
