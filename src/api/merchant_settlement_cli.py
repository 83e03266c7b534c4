"""`ledger merchant-settlements run|show|export`: settle a merchant's closed day from the
command line, and print a settlement's statement as JSON or CSV."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from uuid import UUID

import typer

merchant_settlements_cli = typer.Typer(
    help="Merchant settlements: settle a merchant's day, show or export its statement.",
    no_args_is_help=True,
)


def an_id(text: str, what: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an id", param_hint=what) from None


@contextmanager
def cards_app(payouts: bool = False) -> Iterator[tuple[Any, str, Any]]:
    """The cards application on the configured database (with the sandbox payouts when asked
    and in sandbox mode), its URL and the settings."""
    from adapters.sandbox_payouts import PostgresSandboxPayouts
    from adapters.settings import Settings
    from api.cli_support import console, database_url, tool_env
    from ledger.cards.application import Cards

    settings = Settings()
    url = database_url(settings)
    if payouts and not settings.sandbox:
        console.print(
            "[red]no payout gateway is configured outside sandbox mode: the server's sweeper "
            "pays merchant settlements where one is[/red]"
        )
        raise typer.Exit(2)
    app = Cards(
        env=tool_env(settings, url),
        payouts=PostgresSandboxPayouts(url) if payouts else None,
    )
    try:
        yield app, url, settings
    finally:
        app.close()


@contextmanager
def statements_followed(url: str, settings: Any) -> Iterator[Any]:
    """The merchant statements view kept up to date while the command runs (a standby if a
    server's runner holds it already), and its reader."""
    from adapters.database import open_pool
    from api.cli_support import tool_env
    from ledger.cards.application import Cards
    from projections.catalog import view
    from projections.merchant_statements import MerchantStatementsReader
    from projections.runner import SupervisedRunner

    (feed,) = [f for f in view("merchant_statements").feeds() if f.application_class is Cards]
    runner = SupervisedRunner(feed, url, tool_env(settings, url))
    runner.start()
    pool = open_pool(url, size=2)
    try:
        yield MerchantStatementsReader(pool, catch_up_seconds=60)
    finally:
        pool.close()
        runner.stop()
        runner.join(timeout=20)


@merchant_settlements_cli.command("run")
def run(
    merchant_id: Annotated[str, typer.Argument(help="The merchant's id.")],
    period: Annotated[str, typer.Argument(help="A closed day YYYY-MM-DD in its time zone.")],
    close_now: Annotated[
        bool, typer.Option(help="Sandbox mode only: settle today as if it had ended now.")
    ] = False,
) -> None:
    """Settle a merchant's day: collect its unsettled lines, pay what is due (sandbox
    payouts), print the settlement as JSON. Running it again answers the same settlement."""
    from api.cli_support import console
    from api.merchant_settlement_presenters import settlement_view
    from ledger.cards.settlements import MerchantSettlements
    from ledger.errors import DomainError

    merchant = an_id(merchant_id, "MERCHANT_ID")
    with cards_app(payouts=True) as (app, url, settings):
        if close_now and not settings.sandbox:
            raise typer.BadParameter("sandbox mode only", param_hint="--close-now")
        console.print(f"settling {merchant} for {period}: collecting its unsettled lines")
        with statements_followed(url, settings) as reader:
            try:
                settlement = MerchantSettlements(app, reader).open(merchant, period, close_now)
            except DomainError as refusal:
                console.print(f"[red]{refusal.code}: {refusal.detail}[/red]")
                raise typer.Exit(1) from refusal
        console.print(f"{settlement.id}: {settlement.status}, {len(settlement.lines)} lines")
        print(json.dumps(settlement_view(settlement), indent=2))


@merchant_settlements_cli.command("show")
def show(settlement_id: Annotated[str, typer.Argument(help="The settlement's id.")]) -> None:
    """Print a settlement's statement as JSON."""
    from api.merchant_settlement_presenters import settlement_view

    with cards_app() as (app, _, _):
        print(json.dumps(settlement_view(found(app, settlement_id)), indent=2))


@merchant_settlements_cli.command("export")
def export(settlement_id: Annotated[str, typer.Argument(help="The settlement's id.")]) -> None:
    """Write a settlement's statement as CSV to stdout: one row per consumption and refund,
    then what was carried in and the total per currency."""
    from api.merchant_settlement_presenters import settlement_csv

    with cards_app() as (app, _, _):
        sys.stdout.write(settlement_csv(found(app, settlement_id)))


def found(app: Any, settlement_id: str) -> Any:
    from api.cli_support import console
    from ledger.cards.settlements import MerchantSettlements
    from ledger.errors import NotFound

    wanted = an_id(settlement_id, "SETTLEMENT_ID")
    try:
        return MerchantSettlements(app).settlement(wanted)
    except NotFound as error:
        console.print(f"[red]{error.detail}[/red]")
        raise typer.Exit(1) from error
