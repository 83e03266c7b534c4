"""`scripts/test-crowded`: the tests on a server with max_connections=100 of which another
client holds 20 (issue 9: the suite must pass so). A private cluster (see private_postgres)
is started, 20 connections are opened and held, pytest runs with LEDGER_TEST_ADMIN_URL
pointing at that cluster, and the peak of connections seen is printed beside the result, with
the databases that held them and the tests running then."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from xml.etree import ElementTree

import psycopg

from tests.e2e.private_postgres import private_cluster

MAX_CONNECTIONS = 100
HELD = 20
COUNT_BY_DATABASE = (
    "SELECT coalesce(datname, '-'), count(*) FROM pg_stat_activity "
    "WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC"
)


def main(arguments: list[str]) -> int:
    with private_cluster(max_connections=MAX_CONNECTIONS) as cluster:
        held = [psycopg.connect(cluster.url(), autocommit=True) for _ in range(HELD)]
        peak = {"count": 0, "at": 0.0}
        peak_by_database: list[tuple[str, int]] = []
        done = threading.Event()
        began = time.monotonic()

        def sample() -> None:
            while not done.wait(0.5):
                rows = held[0].execute(COUNT_BY_DATABASE).fetchall()
                total = sum(int(count) for _, count in rows)
                if total > peak["count"]:
                    peak.update(count=total, at=time.monotonic() - began)
                    peak_by_database[:] = [(str(name), int(count)) for name, count in rows]

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        env = {**os.environ, "LEDGER_TEST_ADMIN_URL": cluster.url()}
        report = cluster.folder / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
        command += [f"--junitxml={report}", *arguments]
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        done.set()
        sampler.join()
        output = run.stdout + run.stderr
        print(output[-6000:])
        too_many = output.count("too many clients")
        print(
            f"server max_connections={MAX_CONNECTIONS}, held by another client: {HELD}; "
            f"peak client connections {peak['count']} (held ones included); "
            f'"too many clients" seen {too_many} times; pytest exit {run.returncode} '
            f"in {time.monotonic() - began:.0f} s"
        )
        print(f"at the peak ({peak['at']:.0f} s in), by database: {peak_by_database[:6]}")
        print(f"tests running about then: {tests_near(report, peak['at'])}")
        for conn in held:
            conn.close()
        return run.returncode or (1 if too_many else 0)


def tests_near(report: Path, second: float) -> list[str]:
    """The tests whose run (set-up to tear-down, laid end to end) spans `second`, give or take
    10 s; approximate: collection time is not counted."""
    if not report.exists():
        return []
    clock, near = 0.0, []
    for case in ElementTree.parse(report).iter("testcase"):
        duration = float(case.get("time", "0"))
        if clock - 10 <= second <= clock + duration + 10:
            near.append(f"{case.get('classname')}::{case.get('name')}")
        clock += duration
    return near[:8]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
