"""Demo data: two platforms, their plans, and a three-level channel tree with funds and stock."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

from adapters.database import application_env
from adapters.settings import Settings
from adapters.signing import key_secret
from ledger.distribution.application import Distribution
from ledger.money import Money

DEMO = uuid.UUID("0d3c9d2e-5f7a-4e8b-9c1d-2a3b4c5d6e7f")


def demo_id(name: str) -> uuid.UUID:
    """Fixed ids, so loading the demo twice changes nothing."""
    return uuid.uuid5(DEMO, name)


def load_demo(
    settings: Settings,
    database_url: str,
    base_url: str = "http://127.0.0.1:8000",
    gateway_url: str | None = None,
) -> None:
    """Load the demo; its platforms' partner API is `gateway_url` when given (the sandbox
    platform the server actually started: moved there if an earlier run registered another
    address), else LEDGER_SANDBOX_PLATFORM_PORT's at the first load."""
    app = Distribution(env=application_env(settings, database_url))
    gateway = gateway_url or f"http://127.0.0.1:{settings.ledger_sandbox_platform_port}"
    try:
        iqiyi = app.register_platform(demo_id("iqiyi"), "iQiyi", gateway)
        tencent = app.register_platform(demo_id("tencent"), "Tencent Video", gateway)
        if gateway_url:  # `ledger serve` knows where its platform runs; `ledger demo` does not
            for platform in (iqiyi, tencent):
                app.point_platform_gateway(platform.id, gateway_url)
        gold_month = app.register_product(
            demo_id("iqiyi-gold-month"),
            iqiyi.id,
            "iQiyi Gold VIP, 1 month",
            30,
            Money(3000),
            Money(2200),
        )
        tencent_year = app.register_product(
            demo_id("tencent-vip-year"),
            tencent.id,
            "Tencent Video VIP, 12 months",
            365,
            Money(25300),
            Money(19800),
        )
        top = app.register_channel(demo_id("channel-east"), "East China Digital")
        city = app.register_channel(demo_id("channel-shanghai"), "Shanghai Telecom Shops", top.id)
        shop = app.register_channel(demo_id("channel-pudong"), "Pudong Store 12", city.id)

        app.deposit(demo_id("deposit-east"), top.id, Money(5_000_000))
        app.deposit(demo_id("deposit-shanghai"), city.id, Money(500_000))
        app.deposit(demo_id("deposit-pudong"), shop.id, Money(50_000))
        app.purchase_stock(demo_id("buy-east-gold"), top.id, gold_month.id, 500)
        app.purchase_stock(demo_id("buy-east-year"), top.id, tencent_year.id, 50)
        app.set_price(top.id, gold_month.id, Money(2500))
        app.set_price(top.id, tencent_year.id, Money(21800))
        app.set_price(city.id, gold_month.id, Money(2700))
        app.purchase_stock(demo_id("buy-shanghai-gold"), city.id, gold_month.id, 100)
        app.purchase_stock(demo_id("buy-pudong-gold"), shop.id, gold_month.id, 10)
        channels = [app.channel(c.id) for c in (top, city, shop)]
        products = [gold_month, tencent_year]
    finally:
        app.close()

    console = Console()
    table = Table(title="Demo channel tree (loading it again changes nothing)")
    for column in ("channel", "level", "funds (fen)", *(p.name for p in products)):
        table.add_column(column)
    for level, channel in enumerate(channels, start=1):
        table.add_row(
            channel.name,
            str(level),
            str(channel.funds_in("CNY")),
            *(str(channel.stock_of(p.id)) for p in products),
        )
    console.print(table)
    for product in products:
        console.print(f"product  {product.id}  {product.name}")
    console.print("\nChannel keys (sign requests with these; see the README):")
    for channel in channels:
        secret = key_secret(settings.secret_bytes, channel.key_id)
        console.print(
            f"  {channel.name}\n    id {channel.id}\n    key_id {channel.key_id}"
            f"\n    key_secret {secret}",
            soft_wrap=True,
        )
    ledger = command_line()
    console.print(
        f"\nTry next, in another terminal in {Path.cwd()}:\n"
        f"  export LEDGER_URL={base_url} LEDGER_KEY_ID={shop.key_id} "
        f"LEDGER_KEY_SECRET={key_secret(settings.secret_bytes, shop.key_id)}\n"
        f"  {ledger} call GET /v1/channels/{shop.id}/funds\n"
        f"  {ledger} call POST /v1/stock-purchases --body "
        f'\'{{"product_id": "{gold_month.id}", "quantity": 2}}\'\n'
        f"  FINANCE=$({ledger} tokens create --role finance)\n"
        f'  {ledger} call GET /v1/ledger/trial-balance --token "$FINANCE"\n'
        f"  {base_url}/docs  shows the whole API",
        soft_wrap=True,
        markup=False,
        highlight=False,
    )


def command_line() -> str:
    """How to type the command line in another terminal: `ledger` when it is on the PATH,
    else this checkout's shim ./ledger (installed by scripts/run), else the full path."""
    if shutil.which("ledger"):
        return "ledger"
    shim = Path("ledger")
    if shim.is_file() and os.access(shim, os.X_OK):
        return "./ledger"
    return str(Path(sys.executable).parent / "ledger")
