"""`ledger settlements run|list|show|export`: settle a platform's day from the command line
with a progress bar, list and show settlements as tables, export a settlement's lines as CSV.

`run` works on the configured database like `ledger serve`'s sweeper does (the same steps,
idempotent, so both may move one settlement at once); it keeps the settled orders view up to
date while it runs (a standby when a server's runner holds it).
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Annotated, Any
from uuid import UUID

import typer

settlements_cli = typer.Typer(
    help="Platform settlements: settle a day, list, show, export lines as CSV.",
    no_args_is_help=True,
)

STEPS = ("collecting", "awaiting_statement", "reconciling", "paying", "paid")
"""The statuses a settlement passes, in order; `awaiting_approval` stands where `paying` is."""
MAX_WAIT_SECONDS = 3600
CATCH_UP_SECONDS = 30.0


def an_id(text: str, what: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an id", param_hint=what) from None


def a_day(text: str) -> date:
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day YYYY-MM-DD", param_hint="PERIOD") from None


def done_steps(settlement: Any) -> int:
    """How many of the settlement's steps are behind it (out of len(STEPS) - 1)."""
    status = "paying" if settlement.status == "awaiting_approval" else settlement.status
    return STEPS.index(status) if status in STEPS else 0


@contextmanager
def followed(url: str, settings: Any, names: tuple[str, ...]) -> Iterator[None]:
    """These views kept up to date while the command runs (standbys when a server's runners
    hold them), caught up with the logs (bounded) before the command goes on."""
    from adapters.database import open_pool
    from api.cli_support import tool_env
    from projections.catalog import view
    from projections.positions import wait_until_caught_up
    from projections.runner import SupervisedRunner

    specs = [view(name) for name in names]
    env = tool_env(settings, url)
    runners = [SupervisedRunner(feed, url, env) for spec in specs for feed in spec.feeds()]
    for runner in runners:
        runner.start()
    pool = open_pool(url, size=1)
    try:
        for spec in specs:
            logs = [application.name for application in spec.applications]
            wait_until_caught_up(pool, logs, view_name=spec.name, timeout=CATCH_UP_SECONDS)
        yield
    finally:
        pool.close()
        for runner in runners:
            runner.stop()
        for runner in runners:
            runner.join(timeout=20)


@contextmanager
def settling() -> Iterator[Any]:
    """The process's runtime (applications and settlement steps over the real ports), with
    the settled orders and settlements views followed while the command runs."""
    from adapters.settings import Settings
    from api.cli_support import database_url
    from api.runtime.worker import Runtime

    settings = Settings()
    url = database_url(settings)
    runtime = Runtime(settings, url)
    try:
        with followed(url, settings, ("settled_orders", "settlements")):
            yield runtime
    finally:
        runtime.close()


@contextmanager
def settlements_app() -> Iterator[Any]:
    from adapters.settings import Settings
    from api.cli_support import database_url, tool_env
    from ledger.settlement.application import Settlements

    settings = Settings()
    app = Settlements(env=tool_env(settings, database_url(settings)))
    try:
        yield app
    finally:
        app.close()


@settlements_cli.command("run")
def run(
    platform_id: Annotated[str, typer.Argument(help="The platform's id.")],
    period: Annotated[str, typer.Argument(help="A closed UTC day, YYYY-MM-DD.")],
    close_now: Annotated[
        bool, typer.Option(help="Sandbox mode only: settle today as if it had ended.")
    ] = False,
    wait: Annotated[
        int,
        typer.Option(min=0, max=MAX_WAIT_SECONDS, help="Longest wait for a deferred step, s."),
    ] = 600,
) -> None:
    """Open the settlement of (platform, day) and drive it to `paid`, or to
    `awaiting_approval` when cases are open; running it again answers the same settlement."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from api.cli_support import console
    from ledger.errors import DomainError

    platform, day = an_id(platform_id, "PLATFORM_ID"), a_day(period)
    with settling() as runtime:
        steps = runtime.settlement_steps
        try:
            settlement = steps.open(platform, day, close_now)
        except DomainError as refusal:
            console.print(f"[red]{refusal.code}: {refusal.detail}[/red]")
            raise typer.Exit(1) from refusal
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        with Progress(*columns, TextColumn("{task.percentage:>3.0f} %"), console=console) as bar:
            task = bar.add_task(settlement.status, total=len(STEPS) - 1)
            deadline = time.monotonic() + wait
            while settlement.status not in ("paid", "awaiting_approval"):
                settlement = steps.advance(settlement.id)
                bar.update(task, completed=done_steps(settlement), description=settlement.status)
                pause = seconds_until(settlement.due_at)
                if settlement.status in ("paid", "awaiting_approval"):
                    break
                if time.monotonic() + pause > deadline:
                    console.print(
                        f"[yellow]{settlement.status}: waiting for "
                        f"{settlement.waiting_for or 'the next step'} past --wait; the server's "
                        "sweeper carries on[/yellow]"
                    )
                    raise typer.Exit(3)
                time.sleep(pause)
            bar.update(task, completed=len(STEPS) - 1, description=settlement.status)
        print_settlement(settlement)


def seconds_until(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    return max(0.0, min((moment - datetime.now(UTC)).total_seconds(), 60.0))


@settlements_cli.command("list")
def listing(
    platform_id: Annotated[
        str | None, typer.Option("--platform", help="Only this platform's settlements.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
) -> None:
    """Settlements, newest day first, as a table."""
    from rich.console import Console
    from rich.table import Table

    from adapters.database import open_pool
    from adapters.settings import Settings
    from api.cli_support import database_url
    from projections.settlements import SettlementsReader

    platform = an_id(platform_id, "--platform") if platform_id else None
    settings = Settings()
    url = database_url(settings)
    with settlements_app() as app, followed(url, settings, ("settlements",)):
        pool = open_pool(url, size=1)
        try:
            ids = SettlementsReader(pool).listing(platform, None, limit)
        finally:
            pool.close()
        table = Table(title="Settlements")
        for column in ("id", "platform", "period", "status", *AMOUNTS, "cases"):
            table.add_column(column, justify="right" if column in (*AMOUNTS, "cases") else "left")
        for settlement_id in ids:
            s = app.settlement(settlement_id)
            table.add_row(
                str(s.id), str(s.platform_id), s.period.isoformat(), s.status,
                *(money(value, s.currency) for value in amounts(s)), str(s.open_cases),
            )  # fmt: skip
    Console().print(table)


AMOUNTS = ("owed", "statement", "agreed", "paid")


def amounts(settlement: Any) -> tuple[int | None, ...]:
    s = settlement
    return (s.owed, s.statement, s.agreed if s.is_reconciled else None, s.paid)


def money(value: int | None, currency: str) -> str:
    return "-" if value is None else f"{value / 100:,.2f} {currency}"


@settlements_cli.command("show")
def show(settlement_id: Annotated[str, typer.Argument(help="The settlement's id.")]) -> None:
    """A settlement's figures and counts per match kind, as a table."""
    with settlements_app() as app:
        print_settlement(found(app, settlement_id))


def print_settlement(s: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Settlement {s.id}", show_header=False)
    table.add_column("field")
    table.add_column("value", justify="right")
    rows = [
        ("platform", str(s.platform_id)),
        ("period", s.period.isoformat()),
        ("status", s.status),
        *(
            (name, money(value, s.currency))
            for name, value in zip(AMOUNTS, amounts(s), strict=True)
        ),
        ("our lines", str(s.ours_count)),
        ("their lines", str(s.theirs_count)),
        *((match, str(n)) for match, n in sorted(s.counts.items())),
        ("carried in / out", f"{s.carried_in_count} / {s.carried_out_count}"),
        ("cases (open)", f"{s.cases} ({s.open_cases})"),
        ("payment reference", s.reference or "-"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


@settlements_cli.command("export")
def export(settlement_id: Annotated[str, typer.Argument(help="The settlement's id.")]) -> None:
    """Write a reconciled settlement's lines as CSV to stdout: order_no, kind, ours, theirs
    (minor units, empty where a side has no line), currency, match, disposition."""
    from api.cli_support import console

    with settlements_app() as app:
        settlement = found(app, settlement_id)
        if not settlement.is_reconciled:
            console.print(f"[red]{settlement.id} is {settlement.status}: not reconciled yet[/red]")
            raise typer.Exit(1)
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(("order_no", "kind", "ours", "theirs", "currency", "match", "disposition"))
        offset, page = 0, 1000
        while rows := app.results(settlement, offset, page):
            for currency, (order_no, kind, ours, theirs, match, disposition) in rows:
                out.writerow((order_no, kind, blank(ours), blank(theirs), currency, match,
                              disposition))  # fmt: skip
            offset += len(rows)


def blank(value: Any) -> Any:
    return "" if value is None else value


def found(app: Any, settlement_id: str) -> Any:
    from api.cli_support import console
    from ledger.errors import NotFound

    wanted = an_id(settlement_id, "SETTLEMENT_ID")
    try:
        return app.settlement(wanted)
    except NotFound as error:
        console.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(1) from error
