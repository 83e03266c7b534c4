#!/usr/bin/env python
"""How much group commit batches, and what a conflicting batch costs.

    python benchmarks/group_commit.py [--threads 8,16] [--seconds 8] [--database-url URL]

1. Batch sizes: C threads of one Distribution (one API process) each buying 1 unit at a time for
   a sub-channel of its own (stock_purchases.py's own-threads layout) for a fixed time; prints
   purchases/s and the committer's statistics: saves, commands a save, the largest, by size.
2. A conflicting batch: 32 commands of 2 events, one of them holding an (aggregate, version)
   already stored, saved by the committer as one batch; the time with the key the database names
   (the conflicting command dropped, the other 31 saved together again) against saving each
   command alone (what the committer does when no key is named).

Each part runs on a scratch database of its own (migrated), dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch import create_database, drop_database  # noqa: E402
from stock_purchases import set_up  # noqa: E402

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def scratch(admin_url: str) -> tuple[str, str]:
    from api.runtime.schema import apply_migrations

    name = f"bench_group_commit_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name)
    apply_migrations(url)
    return name, url


def batch_sizes(url: str, threads: int, seconds: float) -> str:
    from adapters.database import event_store_env
    from ledger.distribution.application import Distribution

    app = Distribution(env=event_store_env(url, POSTGRES_POOL_SIZE="4", POSTGRES_MAX_OVERFLOW="8"))
    try:
        committer = app.committer
        if committer is None:
            return f"{threads} threads: group commit is off (LEDGER_GROUP_COMMIT)"
        layout = set_up(app, threads, 1)
        batches, commands = committer.stats.batches, committer.stats.commands
        committer.stats.sizes.clear()
        done = [0] * threads
        stop = time.monotonic() + seconds

        def buy(i: int) -> None:
            while time.monotonic() < stop:
                app.purchase_stock(uuid.uuid4(), layout.children[i], layout.product_id, 1)
                done[i] += 1

        workers = [threading.Thread(target=buy, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        saves = committer.stats.batches - batches
        saved = committer.stats.commands - commands
        return (
            f"{threads} threads: {sum(done) / seconds:,.0f} purchases/s; {saved} commands in "
            f"{saves} saves, {saved / saves:.2f} a save, largest {max(committer.stats.sizes)}; "
            f"saves by commands: {dict(sorted(committer.stats.sizes.items()))}"
        )
    finally:
        app.close()


def conflicting_batch(url: str, repeats: int = 15) -> str:
    from eventsourcing.persistence import StoredEvent

    import ledger.group_commit as group_commit
    from adapters.database import event_store_env
    from ledger.distribution.application import Distribution

    def stored(aggregate: uuid.UUID, version: int) -> StoredEvent:
        return StoredEvent(
            originator_id=aggregate, originator_version=version, topic="bench:Event", state=b"{}"
        )

    app = Distribution(env=event_store_env(url, POSTGRES_MAX_OVERFLOW="2"))
    named_key = group_commit._named_key
    times: dict[str, list[float]] = {"named": [], "alone": []}
    try:
        for mode in ("named", "alone") * 2:
            for _ in range(repeats):
                taken = uuid.uuid4()
                app.recorder.insert_events([stored(taken, 1)])
                commands = [
                    group_commit._Command([stored(a, 1), stored(a, 2)])
                    for a in (uuid.uuid4() for _ in range(31))
                ]
                commands.insert(
                    16, group_commit._Command([stored(uuid.uuid4(), 1), stored(taken, 1)])
                )
                committer = group_commit.GroupCommitter(app.recorder.insert_events)
                if mode == "alone":
                    group_commit._named_key = lambda error: None  # type: ignore[assignment]
                began = time.perf_counter()
                committer._save(commands)
                times[mode].append(time.perf_counter() - began)
                group_commit._named_key = named_key  # type: ignore[assignment]
                failed = sum(c.error is not None for c in commands)
                assert failed == 1, f"{failed} commands failed, not the one conflicting"
    finally:
        group_commit._named_key = named_key  # type: ignore[assignment]
        app.close()

    def ms(values: list[Any]) -> str:
        return f"median {statistics.median(values) * 1000:.1f} ms"

    return (
        f"a batch of 32 with 1 conflict ({len(times['named'])} each): the key named "
        f"{ms(times['named'])}, each command alone {ms(times['alone'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="8,16", help="client threads, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL, help="admin URL")
    args = parser.parse_args()
    for threads in (int(t) for t in args.threads.split(",")):
        name, url = scratch(args.database_url)
        try:
            print(batch_sizes(url, threads, args.seconds), flush=True)
        finally:
            drop_database(args.database_url, name)
    name, url = scratch(args.database_url)
    try:
        print(conflicting_batch(url), flush=True)
    finally:
        drop_database(args.database_url, name)


if __name__ == "__main__":
    main()
