#!/usr/bin/env python
"""Recharges sent to review early through the real stack: `ledger serve` in sandbox mode, its
sandbox platform answering a fraction of partner calls 503 before doing anything.

    python benchmarks/recharge_review_sandbox.py [--recharges 220] [--error-rate 0.1]
        [--observe 120] [--database-url URL]

A scratch database; `ledger serve` (in-process worker, the default 600 s deadline, rate limits
out of the way) whose sandbox platform gets `error_rate` through POST /sandbox/faults; a channel
with N codes; N recharges placed by 8 clients; then, for `--observe` seconds, the recharges'
states are counted: any in `review` by then went there long before the deadline. The platform's
credits are checked: every order credited at most once. To compare two checkouts, run it with
PYTHONPATH pointing at each one's src/ (the `ledger` processes inherit it).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from recharges import (  # noqa: E402 - the sibling benchmark's helpers
    DEFAULT_ADMIN_URL,
    Client,
    Process,
    accept_all,
    free_port,
    operator_token,
    sandbox_env,
    set_up,
    start,
    wait_until,
)
from scratch import create_database, drop_database  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recharges", type=int, default=220)
    parser.add_argument("--error-rate", type=float, default=0.1)
    parser.add_argument("--observe", type=float, default=120)
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    args = parser.parse_args()

    import httpx
    import psycopg

    from api.runtime.schema import apply_migrations

    name = f"bench_review_{uuid.uuid4().hex[:8]}"
    db_url = create_database(args.database_url, name)
    processes: list[Process] = []
    try:
        apply_migrations(db_url)
        platform_port, api_port = free_port(), free_port()
        env = sandbox_env(db_url, platform_port, 600, platform_start=True)
        base_url = f"http://127.0.0.1:{api_port}"
        platform_url = f"http://127.0.0.1:{platform_port}"
        serve = start("serve", ["serve", "--port", str(api_port)], env)
        processes.append(serve)
        wait_until(serve, lambda: httpx.get(f"{base_url}/health", timeout=1).status_code == 200)
        wait_until(
            serve, lambda: httpx.get(f"{platform_url}/sandbox/faults", timeout=1).is_success
        )
        token = operator_token(env)
        prepared = set_up(base_url, token, platform_url, db_url, args.recharges, 8)
        faults = httpx.post(
            f"{platform_url}/sandbox/faults", json={"error_rate": args.error_rate}, timeout=10
        )
        faults.raise_for_status()
        started = time.monotonic()
        acceptance = accept_all(base_url, prepared, 8)
        ids = [rid for rid, _, _ in acceptance.accepted]
        time.sleep(max(0.0, args.observe - (time.monotonic() - started)))
        operator = Client(base_url, token=token)
        try:
            states = Counter(
                operator.ok("GET", f"/v1/recharges/{rid}", status=200)["status"] for rid in ids
            )
        finally:
            operator.close()
        with psycopg.connect(db_url, autocommit=True) as conn:
            reviews = conn.execute(
                "SELECT count(*) FROM recharges_events WHERE topic LIKE %s",
                ("%Recharge.SentToReview",),
            ).fetchone()
        credits = httpx.get(f"{platform_url}/sandbox/credits", timeout=30).json()["credits"]
        per_order = Counter(credit["order_no"] for credit in credits)
        print(
            f"{len(ids)} recharges accepted at error rate {args.error_rate:.0%}; after "
            f"{args.observe:.0f} s (deadline 600 s): {dict(states)}; sent to review: "
            f"{reviews[0] if reviews else '?'}; orders credited twice: "
            f"{sum(1 for n in per_order.values() if n > 1)}"
        )
        return 0
    finally:
        for process in processes:
            process.stop()
        drop_database(args.database_url, name)


if __name__ == "__main__":
    raise SystemExit(main())
