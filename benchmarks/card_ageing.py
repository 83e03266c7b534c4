#!/usr/bin/env python
"""Consumptions on one main card as it ages: ms per consumption in blocks, on PostgreSQL.

    python benchmarks/card_ageing.py [--blocks 8] [--block 250] [--database-url URL]
                                     [--deep-copy-histories]

A scratch database (migrated), one Cards application (the API's event-store settings), one
merchant, one activity, one main card with a balance for every consumption; then
blocks x block consumptions of 1.00 on that card, one after another, and the ms per
consumption of each block. A flat column is a card whose cost does not grow with its use.
--deep-copy-histories puts back the shape before the fix (ledger.cards.histories) to compare.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

from scratch import create_database, drop_database, server_facts

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from adapters.database import event_store_env, open_pool  # noqa: E402
from adapters.tokens import PostgresMemberTokens  # noqa: E402
from api.runtime.schema import apply_migrations  # noqa: E402
from ledger.cards.application import Cards  # noqa: E402
from ledger.cards.histories import CopiesHistoriesShallowly  # noqa: E402
from ledger.money import Money  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PRICE = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--block", type=int, default=250)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument(
        "--deep-copy-histories",
        action="store_true",
        help="the shape before the fix: a card's id lists deep-copied on every get",
    )
    args = parser.parse_args()
    if args.deep_copy_histories:
        del CopiesHistoriesShallowly.__deepcopy__
    shape = "deep-copied" if args.deep_copy_histories else "shared"
    print(f"card histories {shape} on get; {args.blocks} blocks of {args.block}")
    name = f"card_ageing_{uuid.uuid4().hex[:8]}"
    url = create_database(args.database_url, name)
    try:
        apply_migrations(url)
        pool = open_pool(url, size=1, name="card-ageing-tokens")
        cards = Cards(env=event_store_env(url), tokens=PostgresMemberTokens(pool))
        try:
            run(cards, args.blocks, args.block)
        finally:
            cards.close()
            pool.close()
    finally:
        drop_database(args.database_url, name)
    print(server_facts(args.database_url))


def run(cards: Cards, blocks: int, block: int) -> None:
    merchant, owner, activity = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cards.register_merchant(merchant, "Tea house", "Asia/Shanghai")
    cards.register_member(owner, "Owner", "13800138000")
    # the card must hold every consumption: 1.00 each at 100 %
    pay = PRICE * blocks * block
    cards.publish_activity(activity, merchant, Money(pay), Money(0), 10_000)
    card = cards.open_card(uuid.uuid4(), owner, activity, "sandbox").id
    print(f"{'block':>5} {'consumptions':>12} {'ms each':>8}")
    first = 0.0
    for number in range(1, blocks + 1):
        began = time.perf_counter()
        for _ in range(block):
            cards.consume(uuid.uuid4(), merchant, card, Money(PRICE))
        each = (time.perf_counter() - began) * 1000 / block
        first = first or each
        print(f"{number:>5} {number * block:>12} {each:>8.2f}", flush=True)
    print(f"last block / first block: {each / first:.2f}")
    assert cards.main_card(card).balance == 0


if __name__ == "__main__":
    main()
