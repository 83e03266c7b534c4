"""Every view, the applications that feed it, and the readers the API uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ledger.cards.application import Cards
from ledger.distribution.application import Distribution
from ledger.recharges.application import Recharges
from projections.balances import BalancesReader, BalancesView
from projections.base import View, projection_for
from projections.codes import CodesReader, CodesView
from projections.journal import JournalReader, JournalView
from projections.positions import wait_until_caught_up
from projections.recharges import RechargesReader, RechargesView
from projections.runner import Feed, ProcessFeed, ViewFeed

if TYPE_CHECKING:
    from projections.status import Standing

APPLICATIONS: tuple[type[Any], ...] = (Distribution, Recharges, Cards)


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
    ViewSpec(BalancesView, (Distribution, Cards)),
    ViewSpec(JournalView, (Distribution, Cards)),
    ViewSpec(RechargesView, (Recharges,)),
    ViewSpec(CodesView, (Distribution,)),
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


class Views:
    """The API's handle on the read side."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.balances = BalancesReader(pool)
        self.recharges = RechargesReader(pool)
        self.codes = CodesReader(pool)
        self.journal = JournalReader(pool)

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
        from projections.status import standings  # status reads this catalogue

        with self.pool.connection() as conn:
            return standings(conn, extra)

    def recharges_caught_up(self, timeout: float = 3.0) -> bool:
        """Every reservation logged so far has started its saga, and the list shows it."""
        return wait_until_caught_up(
            self.pool, [Distribution.name], tracking_name=Recharges.name, timeout=timeout
        ) and self.catch_up("recharges", timeout)


FEEDS = continuous_feeds()
