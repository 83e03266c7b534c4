"""`scripts/test-crowded`: the tests on a server with max_connections=100 of which another
client holds 20 (issue 9: the suite must pass so). A private cluster (see private_postgres)
is started, 20 connections are opened and held, pytest runs with LEDGER_TEST_ADMIN_URL
pointing at that cluster, and the peak of connections seen is printed beside the result."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import psycopg

from tests.e2e.private_postgres import private_cluster

MAX_CONNECTIONS = 100
HELD = 20


def main(arguments: list[str]) -> int:
    with private_cluster(max_connections=MAX_CONNECTIONS) as cluster:
        held = [psycopg.connect(cluster.url(), autocommit=True) for _ in range(HELD)]
        peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                row = (
                    held[0]
                    .execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    )
                    .fetchone()
                )
                peak[0] = max(peak[0], int(row[0]) if row else 0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        env = {**os.environ, "LEDGER_TEST_ADMIN_URL": cluster.url()}
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *arguments]
        started = time.monotonic()
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        done.set()
        sampler.join()
        output = run.stdout + run.stderr
        print(output[-6000:])
        too_many = output.count("too many clients")
        print(
            f"server max_connections={MAX_CONNECTIONS}, held by another client: {HELD}; "
            f"peak client connections {peak[0]} (held ones included); "
            f'"too many clients" seen {too_many} times; pytest exit {run.returncode} '
            f"in {time.monotonic() - started:.0f} s"
        )
        for conn in held:
            conn.close()
        return run.returncode or (1 if too_many else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
