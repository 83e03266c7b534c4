"""Settled orders: the ledger's side of a platform settlement. A credited recharge is billed
once (`charge`) and an accepted refund reverses it once (`refund`), at the product's
wholesale cost, on the UTC day the ledger recorded it.

The view follows two logs. The recharges log gives each order's product (Requested) and its
lines (Succeeded, RefundAccepted); the distribution log gives each product's platform and
cost (Product.Registered). Lines keep the product and are joined with it when read, so a
continuous run, where the two logs are applied by two runners in no particular order to
each other, ends up with the same rows as a rebuild.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from psycopg import Cursor
from psycopg.sql import SQL, Identifier

from ledger.money import Money
from ledger.settlement.ports import Line, LineKind
from projections.base import Deferred, View, columns
from projections.positions import head, live_tracking_name, position

# Matched by topic: RefundAccepted is recorded by recharges that can be refunded, and a view
# must replay logs written before and after that event existed alike.
REQUESTED = "ledger.recharges.saga:Recharge.Requested"
LINE_KINDS: dict[str, LineKind] = {
    "ledger.recharges.saga:Recharge.Succeeded": "charge",
    "ledger.recharges.saga:Recharge.RefundAccepted": "refund",
}
PRODUCT_REGISTERED = "ledger.distribution.catalogue:Product.Registered"
RECHARGES_LOG = "recharges"

COMMIT_GRACE = timedelta(minutes=5)
"""An event's time is taken before its save waits for the log's lock: once the view has
applied an event this long past a period's end, no event of the period can still commit."""
STREAM_ROWS = 5000
"""Lines fetched per round trip of the server-side cursor."""


def topic(event: Any) -> str:
    kind = type(event)
    return f"{kind.__module__}:{kind.__qualname__}"


def period_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


class SettledOrdersView(View):
    view_name = "settled_orders"
    tables = ("settled_orders", "settled_order_products", "settled_products", "settled_marks")
    keys = {
        "settled_orders": "order_no, kind",
        "settled_order_products": "order_no",
        "settled_products": "product_id",
        "settled_marks": "application",
    }

    def apply(self, curs: Cursor[Any], event: Any, tracking: Tracking) -> None:
        self.apply_all(curs, [(event, tracking)])

    def apply_all(self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]) -> None:
        for statement, params in self.apply_leading(curs, events):
            curs.execute(statement, params)

    def apply_leading(
        self, curs: Cursor[Any], events: Sequence[tuple[Any, Tracking]]
    ) -> list[Deferred]:
        """Products and orders' products first, then the lines that need them: within one
        log a line always follows its order's request. The marks are left to the caller
        (in a round, they ride with the tracking rows)."""
        products, requests, lines = [], [], []
        marks: dict[str, datetime] = {}
        for event, tracking in events:
            name = topic(event)
            if name == PRODUCT_REGISTERED:
                cost = event.wholesale_cost
                product = (event.originator_id, event.platform_id, cost.amount, cost.currency)
                products.append(product)
            elif name == REQUESTED:
                requests.append((str(event.originator_id), event.product_id))
            elif name in LINE_KINDS:
                order_no = str(event.originator_id)
                at = event.timestamp
                lines.append((order_no, LINE_KINDS[name], at, period_of(at)))
            log = tracking.application_name
            marks[log] = max(marks[log], event.timestamp) if log in marks else event.timestamp
        if products:
            curs.execute(
                self.sql(
                    "INSERT INTO {t} (product_id, platform_id, amount, currency) SELECT * FROM "
                    "unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::text[])",
                    t="settled_products",
                ),
                columns(products, 4),
            )
        if requests:
            curs.execute(
                self.sql(
                    "INSERT INTO {t} (order_no, product_id) SELECT * FROM "
                    "unnest(%s::text[], %s::uuid[])",
                    t="settled_order_products",
                ),
                columns(requests, 2),
            )
        if lines:
            # A line whose order was never requested fails on product_id NOT NULL: loud,
            # never a line quietly left out of a settlement.
            curs.execute(
                self.sql(
                    "INSERT INTO {o} (order_no, kind, product_id, at, period) SELECT "
                    "u.order_no, u.kind, (SELECT product_id FROM {p} p WHERE p.order_no = "
                    "u.order_no), u.at, u.period FROM unnest(%s::text[], %s::text[], "
                    "%s::timestamptz[], %s::date[]) AS u(order_no, kind, at, period)",
                    o="settled_orders",
                    p="settled_order_products",
                ),
                columns(lines, 4),
            )
        mark = self.sql(
            "INSERT INTO {t} AS m (application, last_at) SELECT * FROM "
            "unnest(%s::text[], %s::timestamptz[]) ON CONFLICT (application) DO UPDATE "
            "SET last_at = greatest(m.last_at, EXCLUDED.last_at)",
            t="settled_marks",
        )
        return [(mark, columns(sorted(marks.items()), 2))]


class SettledOrders:
    """The ledger's side of a settlement (`ledger.settlement.ports.LedgerSide`), read from
    the live version of the view."""

    def __init__(self, pool: Any, view_name: str = SettledOrdersView.view_name) -> None:
        self.pool = pool
        self.view_name = view_name

    def lines(self, platform_id: UUID, period: date) -> Iterator[Line]:
        """The period's lines in order-number order, streamed through a server-side cursor
        (a period may hold hundreds of thousands); the connection is held until the
        iteration ends or the iterator is closed."""
        query = SQL(
            "SELECT o.order_no, o.kind, p.amount, p.currency, o.at FROM {o} o "
            "JOIN {p} p ON p.product_id = o.product_id "
            "WHERE o.period = %s AND p.platform_id = %s ORDER BY o.order_no, o.kind"
        ).format(o=Identifier("settled_orders"), p=Identifier("settled_products"))
        with (
            self.pool.connection() as conn,
            conn.transaction(),
            conn.cursor(name=f"settled_lines_{platform_id.hex}") as cursor,
        ):
            cursor.itersize = STREAM_ROWS
            cursor.execute(query, (period, platform_id))
            for order_no, kind, amount, currency, at in cursor:
                yield Line(order_no, kind, Money(amount, currency), at)

    def prices(self, platform_id: UUID) -> dict[str, Money]:
        """The wholesale cost of each of the platform's products, by product code (its id,
        as the recharge gateway sends it): the price list a statement request carries."""
        query = SQL("SELECT product_id, amount, currency FROM {p} WHERE platform_id = %s").format(
            p=Identifier("settled_products")
        )
        with self.pool.connection() as conn:
            rows = conn.execute(query, (platform_id,)).fetchall()
        return {str(product): Money(amount, currency) for product, amount, currency in rows}

    def caught_up(self, platform_id: UUID, period: date) -> bool:
        """Whether every line of the period is in the view: the recharges log is applied
        `COMMIT_GRACE` past the period's end (or up to its head, for a period settled
        before it ends: sandbox `close_now`), and every line of the period found its
        product (the distribution log is applied far enough)."""
        end = datetime.combine(period + timedelta(days=1), time(), UTC)
        with self.pool.connection() as conn:
            row = conn.execute(
                SQL("SELECT last_at FROM {m} WHERE application = %s").format(
                    m=Identifier("settled_marks")
                ),
                (RECHARGES_LOG,),
            ).fetchone()
            past_end = row is not None and row[0] >= end + COMMIT_GRACE
            if not past_end:
                tracked = live_tracking_name(conn, self.view_name)
                if position(conn, tracked, RECHARGES_LOG) < head(conn, RECHARGES_LOG):
                    return False
            orphans = conn.execute(
                SQL(
                    "SELECT count(*) FROM {o} o LEFT JOIN {p} p ON p.product_id = o.product_id "
                    "WHERE o.period = %s AND p.product_id IS NULL"
                ).format(o=Identifier("settled_orders"), p=Identifier("settled_products")),
                (period,),
            ).fetchone()[0]
        return orphans == 0
