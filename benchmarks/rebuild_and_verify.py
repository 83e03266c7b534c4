#!/usr/bin/env python
"""Rebuild and verify speed over a log of 200,000+ events, beside merely reading it.

    python benchmarks/rebuild_and_verify.py [--events 200000] [--database-url URL] [--profile]

One run on one PostgreSQL server:

1. A scratch database, migrated, and a distribution log of at least --events real events of
   the product written through the application in big saves (group commit): deposits (1,000
   Deposit.Recorded and FundsDeposited events a save), stock purchases down a channel tree
   (500 purchases, 1,500 events a save) and code batches issued with `issue_codes` (1,000
   codes, ~1,002 events a batch), in the proportions of roughly 2:1.5:1.
2. (a) Reading and decoding the whole log: `projections.logs.read_events` (short queries,
   pages of 2,000) and the application's mapper, nothing else. Measured after one warm-up
   read, so every phase below finds the log in PostgreSQL's cache as it does.
3. (b) `rebuild()` of balances, journal and codes (blue/green, from the start of the logs,
   1,000 events a transaction), each timed from start to the switch and the old version's
   drop. No runner is running in the scratch database, so retire() does not wait.
4. (c) `verify()`: the hash chain of every log, the replay of every event into scratch copies
   of all the views, and the row-by-row comparison with the stored views.

Each rate is printed in events per second beside its ratio to (a). The database is dropped at
the end (--keep keeps it). --profile also runs the balances rebuild and verify under cProfile
and prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEPOSITS_PER_SAVE = 1000
PURCHASES_PER_SAVE = 500
CODES_PER_BATCH = 1000
console = Console(width=110)


def url_for(admin_url: str, name: str) -> str:
    return f"{admin_url.rpartition('/')[0]}/{name}"


def app_env(url: str) -> dict[str, str]:
    from adapters.database import application_env
    from adapters.settings import Settings

    return application_env(Settings(), url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="2")


# ---------------------------------------------------------------------------------------------
# The log


def write_log(url: str, target: int) -> tuple[int, float]:
    """At least `target` events in the distribution log; (events, seconds)."""
    from ledger.distribution.application import Distribution
    from ledger.distribution.movements import Deposit, StockPurchase
    from ledger.money import Money

    app = Distribution(env=app_env(url))
    started = time.monotonic()
    try:
        platform, product, top = uuid4(), uuid4(), uuid4()
        subs = [uuid4() for _ in range(4)]
        app.register_platform(platform, "iQiyi", "http://127.0.0.1:9/gateway")
        app.register_product(product, platform, "VIP monthly", 30, Money(3000), Money(2000))
        app.register_channel(top, "East region")
        for n, sub in enumerate(subs):
            app.register_channel(sub, f"Reseller {n}", parent_id=top)
        app.deposit(uuid4(), top, Money(10**12))
        for _ in range(3):
            app.purchase_stock(uuid4(), top, product, 100_000)
        app.set_price(top, product, Money(2500))

        def deposits(channel_id: uuid.UUID) -> None:
            channel = app.channel(channel_id)
            batch = [
                Deposit.record(uuid4(), channel_id, Money(10_000)) for _ in range(DEPOSITS_PER_SAVE)
            ]
            for deposit in batch:
                channel.deposit(deposit.id, deposit.amount)
            app.save(*batch, channel)

        def purchases(buyer_id: uuid.UUID) -> None:
            buyer, parent = app.channel(buyer_id), app.channel(top)
            batch = []
            for _ in range(PURCHASES_PER_SAVE):
                purchase = StockPurchase.from_parent(
                    uuid4(), buyer_id, top, product, 1, Money(2500)
                )
                buyer.buy(purchase.id, product, 1, purchase.total)
                parent.sell(purchase.id, product, 1, purchase.total)
                batch.append(purchase)
            app.save(*batch, buyer, parent)

        written, turn = 0, 0
        with psycopg.connect(url, autocommit=True) as conn:

            def head() -> int:
                return int(
                    conn.execute("SELECT max(notification_id) FROM distribution_events").fetchone()[
                        0
                    ]
                )

            while (written := head()) < target:
                sub = subs[(turn // 4) % len(subs)]
                step = turn % 4
                if step in (0, 2):
                    deposits(sub)
                elif step == 1:
                    purchases(sub)
                else:
                    app.issue_codes(uuid4(), top, product, CODES_PER_BATCH)
                turn += 1
                if turn % 20 == 0:
                    console.print(f"  {written:,} events written", highlight=False)
        return written, time.monotonic() - started
    finally:
        app.close()


# ---------------------------------------------------------------------------------------------
# The measures


def read_and_decode(url: str) -> tuple[int, float]:
    from ledger.cards.application import Cards
    from ledger.distribution.application import Distribution
    from projections.logs import decoded, read_events

    count, started = 0, time.monotonic()
    for application_class in (Distribution, Cards):
        application = application_class(env=app_env(url))
        try:
            with psycopg.connect(url) as conn:
                rows = read_events(conn, application.name, 0)
                for _event, _tracking in decoded(application.mapper, application.name, rows):
                    count += 1
        finally:
            application.close()
    return count, time.monotonic() - started


def rebuild_view(url: str, name: str) -> tuple[int, float]:
    from projections.catalog import view
    from projections.rebuild import rebuild

    started = time.monotonic()
    result = rebuild(view(name), url, app_env(url))
    return result.events, time.monotonic() - started


def verify_all(url: str) -> tuple[int, float, str]:
    from projections.verify import verify

    started = time.monotonic()
    report = verify(url, app_env(url))
    outcome = "OK" if report.ok else f"DIVERGENCE: {report.divergence}"
    return sum(report.events.values()), time.monotonic() - started, outcome


def profiled(title: str, call: Any, lines: int = 18) -> None:
    profile = cProfile.Profile()
    profile.enable()
    call()
    profile.disable()
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(order).print_stats(lines)
        console.print(f"[bold]{title}, by {order}[/bold]")
        text = out.getvalue()
        console.print(text[text.index("   ncalls") :], highlight=False, soft_wrap=True)


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LEDGER_TEST_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="a server's admin URL; a scratch database is created beside it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--profile", action="store_true", help="cProfile rebuild and verify")
    args = parser.parse_args()

    from api.runtime.schema import apply_migrations

    name = f"bench_rebuild_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        server = conn.execute("SHOW server_version").fetchone()[0]
    url = url_for(args.database_url, name)
    load = os.getloadavg()[0]
    try:
        apply_migrations(url)
        console.print(f"writing a log of at least {args.events:,} events into {name}")
        written, seconds = write_log(url, args.events)
        console.print(
            f"{written:,} events written in {seconds:.1f} s ({written / seconds:,.0f} events/s)"
        )

        read_and_decode(url)  # warm-up
        rows: list[tuple[str, int, float, str]] = []
        events, seconds = read_and_decode(url)
        rows.append(("(a) read and decode the log", events, seconds, ""))
        console.print(f"(a) read and decode: {events / seconds:,.0f} events/s")
        for view_name in ("balances", "journal", "codes"):
            events, seconds = rebuild_view(url, view_name)
            rows.append((f"(b) rebuild {view_name}", events, seconds, ""))
            console.print(f"(b) rebuild {view_name}: {events / seconds:,.0f} events/s")
        events, seconds, outcome = verify_all(url)
        rows.append(("(c) verify: chains, replay, compare", events, seconds, outcome))
        console.print(f"(c) verify: {events / seconds:,.0f} events/s, {outcome}")

        base = rows[0][1] / rows[0][2]
        table = Table(
            title=f"Rebuild and verify vs reading the log ({datetime.now(UTC):%Y-%m-%d}, "
            f"{written:,} events)"
        )
        for column in ("phase", "events", "seconds", "events/s", "÷ (a)", "outcome"):
            table.add_column(column, justify="left" if column in ("phase", "outcome") else "right")
        for phase, events, seconds, outcome in rows:
            rate = events / seconds
            table.add_row(
                phase,
                f"{events:,}",
                f"{seconds:.1f}",
                f"{rate:,.0f}",
                f"{rate / base:.3f}",
                outcome,
            )
        console.print(table)
        console.print(
            f"PostgreSQL {server}, {os.cpu_count()} CPUs, load average {load:.2f} at start, "
            f"{os.getloadavg()[0]:.2f} at the end"
        )
        if args.profile:
            profiled("rebuild balances", lambda: rebuild_view(url, "balances"))
            profiled("verify", lambda: verify_all(url))
    finally:
        if not args.keep:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


if __name__ == "__main__":
    main()
