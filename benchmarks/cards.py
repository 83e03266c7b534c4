#!/usr/bin/env python
"""Member-card use cases per second over HTTP, beside pgbench's TPS on the same server.

    python benchmarks/cards.py [--clients 8] [--per-client 40] [--seconds 15]
                               [--database-url URL] [--readme benchmarks/README.md]

One run on one PostgreSQL server: pgbench's TPC-B-like script (`-c C -j C -T seconds`) alone
first, its TPS the yardstick; then `ledger serve` in sandbox mode (sandbox payments and payouts)
on a scratch database, set up over HTTP (an operator token, a merchant, an activity paying
1000.00 with 100.00 bonus at 80 %, 2 x C members), and C client threads, each on an HTTP
connection of its own, run one phase after another, back to back:

- cards bought: each client's member buys `per-client` main cards (POST /v1/cards: the
  payment port charges, then the card is recorded);
- main-card consumptions: the merchant consumes 1.00 on each client's main card (POST
  /v1/consumptions: the card's balance drawn);
- shared-card consumptions: the same on a shared card (90 %, commission 30 %) each client's
  owner sent to another member (the holder charged through the payment port, split into the
  merchant's, owner's and wallet lines);
- withdrawals: each owner withdraws 0.01 from the commission its wallet earned (hold, payout
  port, posted).

Each phase's rate is its 201s over (last 201 - first request sent), printed with p50/p99 and
the ratio to pgbench's TPS; the trial balance is read at the end as finance, and must balance.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from recharges import (
    Channel,
    Client,
    Process,
    free_port,
    in_parallel,
    ledger_command,
    run_pgbench,
    start,
    wait_until,
)
from scratch import create_database, drop_database, server_facts

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PAY, BONUS = 100_000, 10_000
PRICE = 100


def token(env: dict[str, str], role: str) -> str:
    import subprocess

    made = subprocess.run(
        [*ledger_command(), "tokens", "create", "--role", role],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if made.returncode:
        raise RuntimeError(f"ledger tokens create failed:\n{made.stderr}")
    return made.stdout.strip().splitlines()[-1]


@dataclass
class Party:
    """What one client works with: its owner, the owner's cards, a shared card, the merchant."""

    owner_token: str
    holder_id: str
    merchant: Channel
    activity_id: str
    cards: list[str] = field(default_factory=list)
    shared_card: str = ""


@dataclass
class Phase:
    name: str
    created: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    first_sent: float = math.inf
    last_done: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, sent: float, done: float, reply: Any) -> None:
        with self.lock:
            self.first_sent = min(self.first_sent, sent)
            if reply.status_code == 201:
                self.created += 1
                self.latencies.append(done - sent)
                self.last_done = max(self.last_done, done)
            else:
                code = reply.json().get("code", str(reply.status_code))
                self.refused[code] = self.refused.get(code, 0) + 1

    @property
    def window(self) -> float:
        return self.last_done - self.first_sent

    @property
    def per_second(self) -> float:
        return self.created / self.window if self.window > 0 else math.nan

    def percentile_ms(self, p: int) -> float:
        if len(self.latencies) < 2:
            return math.nan
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


def set_up(api_url: str, operator_token: str, clients: int) -> list[Party]:
    operator = Client(api_url, token=operator_token)
    try:
        made = operator.ok(
            "POST", "/v1/merchants", {"name": "Bench tea", "timezone": "Asia/Shanghai"}
        )
        merchant = Channel(made["id"], made["key_id"], made["key_secret"])
        members = [
            operator.ok("POST", "/v1/members", {"name": f"M{i}", "phone": "13800138000"})
            for i in range(2 * clients)
        ]
    finally:
        operator.close()
    shop = Client(api_url, channel=merchant)
    try:
        activity = shop.ok(
            "POST",
            f"/v1/merchants/{merchant.id}/activities",
            {
                "pay": {"amount": PAY, "currency": "CNY"},
                "bonus": {"amount": BONUS, "currency": "CNY"},
                "discount_bp": 8000,
            },
        )["id"]
    finally:
        shop.close()
    return [
        Party(members[2 * i]["token"], members[2 * i + 1]["id"], merchant, activity)
        for i in range(clients)
    ]


def run_phase(api_url: str, phase: Phase, parties: list[Party], work: Any) -> None:
    barrier = threading.Barrier(len(parties))

    def client(party: Party) -> None:
        http_member = Client(api_url, token=party.owner_token)
        http_merchant = Client(api_url, channel=party.merchant)
        try:
            http_member.request("GET", "/health")
            http_merchant.request("GET", "/health")
            barrier.wait(timeout=60)
            work(party, http_member, http_merchant, phase)
        finally:
            http_member.close()
            http_merchant.close()

    in_parallel(client, parties)


def timed(phase: Phase, call: Any) -> Any:
    sent = time.monotonic()
    reply = call()
    phase.record(sent, time.monotonic(), reply)
    return reply


def buy_cards(per_client: int) -> Any:
    def work(party: Party, member: Client, _merchant: Client, phase: Phase) -> None:
        for _ in range(per_client):
            reply = timed(
                phase,
                lambda: member.request("POST", "/v1/cards", {"activity_id": party.activity_id}),
            )
            if reply.status_code == 201:
                party.cards.append(reply.json()["id"])

    return work


def consume(per_client: int, shared: bool) -> Any:
    def work(party: Party, _member: Client, merchant: Client, phase: Phase) -> None:
        card = party.shared_card if shared else party.cards[0]
        body = {"card_id": card, "price": {"amount": PRICE, "currency": "CNY"}}
        for _ in range(per_client):
            timed(phase, lambda: merchant.request("POST", "/v1/consumptions", body))

    return work


def withdraw(per_client: int) -> Any:
    def work(_party: Party, member: Client, _merchant: Client, phase: Phase) -> None:
        body = {"amount": {"amount": 1, "currency": "CNY"}}
        for _ in range(per_client):
            timed(phase, lambda: member.request("POST", "/v1/withdrawals", body))

    return work


def share_cards(api_url: str, parties: list[Party]) -> None:
    def share(party: Party) -> None:
        member = Client(api_url, token=party.owner_token)
        try:
            party.shared_card = member.ok(
                "POST",
                f"/v1/cards/{party.cards[0]}/shared-cards",
                {"to_member_id": party.holder_id, "discount_bp": 9000, "commission_bp": 3000},
            )["id"]
        finally:
            member.close()

    in_parallel(share, parties)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="HTTP clients, pgbench -c")
    parser.add_argument("--per-client", type=int, default=40, help="requests per client per phase")
    parser.add_argument("--seconds", type=int, default=15, help="pgbench's duration")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin URL")
    parser.add_argument("--pgbench", default=shutil.which("pgbench") or "/usr/bin/pgbench")
    parser.add_argument("--readme", default=None, help="append the table to this file")
    parser.add_argument("--label", default="", help="a word for this run's tree (e.g. before)")
    args = parser.parse_args(argv)
    if args.clients < 1 or not 1 <= args.per_client <= 200:
        parser.error("clients >= 1 and per-client 1 to 200")

    from rich.console import Console
    from rich.table import Table

    from api.runtime.schema import apply_migrations

    console = Console()
    if not console.is_terminal:
        console.width = 160
    admin = args.database_url
    suffix = uuid.uuid4().hex[:8]
    ledger_db, pgbench_db = f"bench_cards_{suffix}", f"bench_pgbench_{suffix}"
    created: list[str] = []
    processes: list[Process] = []
    started_at = datetime.now(UTC)
    context = (
        f"{args.clients} clients x {args.per_client} per phase, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start; {server_facts(admin)}"
        + (f"; tree: {args.label}" if args.label else "")
    )
    console.print(f"[bold]Member cards vs pgbench[/]: {context}")
    phases = [
        Phase("cards bought (payment charged)"),
        Phase("main-card consumptions"),
        Phase("shared-card consumptions (holder charged)"),
        Phase("withdrawals (payout)"),
    ]
    try:
        create_database(admin, pgbench_db)
        created.append(pgbench_db)
        with console.status(f"pgbench -c {args.clients} -j {args.clients} -T {args.seconds}"):
            tps = run_pgbench(args.pgbench, admin, pgbench_db, args.clients, args.seconds)
        drop_database(admin, pgbench_db)
        created.remove(pgbench_db)
        console.print(f"pgbench: {tps:,.0f} TPS")

        db_url = create_database(admin, ledger_db)
        created.append(ledger_db)
        apply_migrations(db_url)
        api_port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "LEDGER_SANDBOX": "true",
            "LEDGER_SANDBOX_PLATFORM_PORT": str(free_port()),
        }
        env.pop("BROKER_URL", None)
        api_url = f"http://127.0.0.1:{api_port}"
        import httpx

        with console.status("starting ledger serve"):
            serve = start("serve", ["serve", "--port", str(api_port)], env)
            processes.append(serve)
            wait_until(serve, lambda: httpx.get(f"{api_url}/health").is_success)
        with console.status("set-up over HTTP"):
            parties = set_up(api_url, token(env, "operator"), args.clients)
            finance = token(env, "finance")
        n = args.per_client
        for phase, work in zip(
            phases, [buy_cards(n), consume(n, False), consume(n, True), withdraw(n)], strict=True
        ):
            with console.status(phase.name):
                run_phase(api_url, phase, parties, work)
            if phase is phases[0]:
                share_cards(api_url, parties)
        reader = Client(api_url, token=finance)
        try:
            balanced = reader.ok("GET", "/v1/ledger/trial-balance", status=200)["balanced"]
        finally:
            reader.close()
    finally:
        for process in reversed(processes):
            process.stop()
        for name in created:
            drop_database(admin, name)

    table = Table(title=f"Member cards vs pgbench, {args.clients} clients, {started_at:%Y-%m-%d}")
    for column in ("measure", "count", "seconds", "per second", "p50 ms", "p99 ms", "÷ pgbench"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row(
        f"pgbench TPS (-c {args.clients} -j {args.clients})", "", f"{args.seconds}",
        f"{tps:,.0f}", "", "", "1",
    )  # fmt: skip
    for phase in phases:
        table.add_row(
            phase.name,
            f"{phase.created:,}",
            f"{phase.window:.1f}",
            f"{phase.per_second:,.1f}",
            f"{phase.percentile_ms(50):.0f}",
            f"{phase.percentile_ms(99):.0f}",
            f"{phase.per_second / tps:.4f}",
        )
    console.print(table)
    refused = {p.name: p.refused for p in phases if p.refused}
    books = f"trial balance: {'balanced' if balanced else 'NOT BALANCED'}"
    console.print(books)
    if refused:
        console.print(f"refused: {refused}")
    if args.readme:
        record = Console(width=160, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
        record.print(table)
        with open(args.readme, "a") as readme:
            readme.write(
                f"\n{started_at:%Y-%m-%d %H:%M} UTC — {context}:\n\n```\n"
                + "\n".join(line.rstrip() for line in record.export_text().splitlines())
                + f"\n{books}\n"
                + (f"refused: {refused}\n" if refused else "")
                + "```\n"
            )
        console.print(f"appended to {args.readme}")
    return 0 if balanced and not refused else 1


if __name__ == "__main__":
    sys.exit(main())
