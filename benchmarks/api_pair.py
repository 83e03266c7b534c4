#!/usr/bin/env python
"""Two checkouts' API side by side: acceptance alone, chunks alternated, beside pgbench.

    python benchmarks/api_pair.py --before DIR [--after DIR] [--recharges 16000] [--rounds 8]

The topology benchmark measures one checkout per run, and on a machine whose speed drifts
from minute to minute (a shared host: pgbench moved from 1,368 to 2,031 TPS between two runs
ten minutes apart) two runs compare the machine more than the code. Here both checkouts serve
at once, on one private PostgreSQL cluster and one database:

1. pgbench's TPC-B-like script, as in benchmarks/topology.py: the yardstick.
2. The topology from the `--before` checkout (benchmarks/topology.py's start_topology, one API
   process), and the set-up through its balancer. Then two more `ledger serve` processes, one
   from each checkout's src, started the same way (the Procfile's `api` environment, the same
   `api` role), after the set-up: neither served it, so the two meet the work alike (the
   topology's own API process, which served the set-up, was once the before's side). The same
   tree on both sides reads 1.00 of the API CPU (0.986-1.001 in two runs).
3. Every other process stopped (SIGSTOP), the topology's own API process too, as in the
   topology's "alone" stage. Then 2 x rounds chunks of the work, C client threads each, signed POST
   /v1/recharges straight to one API process's port: A B, B A, A B, ... so that each pair
   meets the same machine. For each chunk: accepted/s, p50, and the CPU of that API process
   and of every PostgreSQL backend, per acceptance (psutil).
4. The sums per checkout and their ratios (after / before), with how many pairs the after
   won; then the books (every accepted recharge succeeded once and credited once), with the
   background resumed.

One API process each is bound by its GIL, as each of the topology's is: acceptances a second
follow the API's CPU per acceptance, which is what a change to the HTTP path moves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import topology as T
from recharges import start, wait_until


@dataclass
class Side:
    name: str
    port: int
    pid: int
    accepted: int = 0
    seconds: float = 0.0
    api_cpu: float = 0.0
    postgres_cpu: float = 0.0

    def row(self) -> list[str]:
        return [
            self.name,
            f"{self.accepted:,}",
            f"{self.accepted / self.seconds:.1f}",
            f"{self.api_cpu * 1000 / self.accepted:.3f}",
            f"{self.postgres_cpu * 1000 / self.accepted:.3f}",
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--before", type=Path, required=True, help="checkout A (e.g. a worktree)")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--recharges", type=int, default=16000)
    parser.add_argument("--rounds", type=int, default=8, help="pairs of chunks")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10, help="pgbench's duration")
    args = parser.parse_args(argv)
    before, after = args.before.resolve(), args.after.resolve()
    sys.path.insert(0, str(before / "src"))
    os.environ["PYTHONPATH"] = str(before / "src")

    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console.width = 160
    server = T.private_server()
    vhost = f"bench-pair-{uuid.uuid4().hex[:8]}"
    broker = T.rabbitmq_vhost(vhost)
    topology = T.Topology()
    apis = []
    try:
        admin = server.url()
        T.create_database(admin, "bench_pgbench")
        tps = T.run_pgbench(shutil.which("pgbench") or "/usr/bin/pgbench", admin,
                            "bench_pgbench", args.clients, args.seconds)  # fmt: skip
        console.print(
            f"[bold]API pair[/]: before {T.checkout(before)}, after {T.checkout(after)}; "
            f"{args.recharges} recharges, {args.rounds} rounds, {args.clients} clients; "
            f"private {T.server_facts(admin)}; pgbench {tps:,.0f} TPS"
        )
        db = "bench_topology"
        db_url = T.create_database(admin, db)
        platform_port, balancer_port = T.free_port(), T.free_port()
        env = T.topology_env(db_url, broker, platform_port, 8, 3600)  # 8: the default
        subprocess.run([*T.ledger_command(), "migrate"], env=env, check=True, capture_output=True)
        with console.status("starting the before's topology"):
            topology = T.start_topology(before, server, db, env, 1, balancer_port)
        with console.status(f"set-up: {args.recharges} codes and accounts"):
            prepared = T.set_up_recharges(
                f"http://127.0.0.1:{balancer_port}", T.operator_token(env),
                f"http://127.0.0.1:{platform_port}", db_url, args.recharges, args.clients,
            )  # fmt: skip
        sides = {}
        with console.status("starting one API process from each checkout"):
            for name, source in (("before", before), ("after", after)):
                port = T.free_port()
                api = start(f"api-{name}", ["serve", "--host", "127.0.0.1", "--port", str(port)],
                            env | {"PYTHONPATH": str(source / "src"),
                                   "DATABASE_URL": server.url(db, "api"),
                                   "LEDGER_RUN_PROJECTIONS": "false"})  # fmt: skip
                apis.append(api)
                wait_until(
                    api, lambda p=port: httpx.get(f"http://127.0.0.1:{p}/health/ready").is_success
                )
                sides[name] = Side(name, port, api.popen.pid)
        pids = {name: side.pid for name, side in sides.items()}
        chunks = T.split(prepared.work, tuple([1 / (2 * args.rounds)] * (2 * args.rounds)))
        chunk_table = Table(title="Chunks in the order sent (acceptance alone, one API process)")
        columns = ("pair", "checkout", "accepted", "per second", "p50 ms",
                   "API CPU ms per acceptance", "PostgreSQL CPU ms per acceptance")  # fmt: skip
        for column in columns:
            chunk_table.add_column(column, justify="left" if column == "checkout" else "right")
        won = 0
        acceptances = []
        topology.pause("api-1", *topology.background)
        for pair in range(args.rounds):
            order = ("before", "after") if pair % 2 == 0 else ("after", "before")
            cost = {}
            for name in order:
                side = sides[name]
                work = chunks[2 * pair + order.index(name)]
                snapshot = T.CpuSnapshot.take(pids, server.postmaster())
                began = time.monotonic()
                with console.status(f"pair {pair + 1}: {name}"):
                    acceptance = T.accept(f"http://127.0.0.1:{side.port}", prepared.channel,
                                          work, args.clients)  # fmt: skip
                seconds = time.monotonic() - began
                spent = T.CpuSnapshot.take(pids, server.postmaster()).since(snapshot)
                acceptances.append(acceptance)
                accepted = len(acceptance.accepted)
                if acceptance.refused or accepted == 0:
                    raise RuntimeError(f"{name} refused: {acceptance.refused}")
                side.accepted += accepted
                side.seconds += seconds
                side.api_cpu += spent[name]
                side.postgres_cpu += spent["postgres (all backends)"]
                cost[name] = spent[name] / accepted
                latencies = sorted(acceptance.latencies)
                chunk_table.add_row(
                    str(pair + 1), name, f"{accepted:,}", f"{accepted / seconds:.1f}",
                    T.ms(latencies[len(latencies) // 2] * 1000),
                    f"{spent[name] * 1000 / accepted:.3f}",
                    f"{spent['postgres (all backends)'] * 1000 / accepted:.3f}",
                )  # fmt: skip
            won += cost["after"] < cost["before"]
        topology.resume()
        wait_until(
            topology.processes["balancer"],
            lambda: httpx.get(f"http://127.0.0.1:{balancer_port}/health/ready").status_code == 200,
        )
        console.print(chunk_table)
        totals = Table(title=f"Acceptance alone, both checkouts at once; pgbench {tps:,.0f} TPS")
        for column in ("checkout", "accepted", "per second", "API CPU ms per acceptance",
                       "PostgreSQL CPU ms per acceptance"):  # fmt: skip
            totals.add_column(column, justify="left" if column == "checkout" else "right")
        for side in sides.values():
            totals.add_row(*side.row())
        a, b = sides["before"], sides["after"]
        totals.add_row(
            "after ÷ before", "",
            f"{(b.accepted / b.seconds) / (a.accepted / a.seconds):.3f}",
            f"{(b.api_cpu / b.accepted) / (a.api_cpu / a.accepted):.3f}",
            f"{(b.postgres_cpu / b.accepted) / (a.postgres_cpu / a.accepted):.3f}",
        )  # fmt: skip
        console.print(totals)
        console.print(f"the after used less API CPU an acceptance in {won} of {args.rounds} pairs")
        accepted = a.accepted + b.accepted
        with console.status("the books: every accepted recharge succeeded once"):
            observed = server.url(db, T.OBSERVER)
            T.wait_succeeded(observed, accepted, 600, topology)
            T.wait_redeemed(observed, accepted, 600)
            made = subprocess.run([*T.ledger_command(), "tokens", "create", "--role", "finance"],
                                  env=env, capture_output=True, text=True, check=True)  # fmt: skip
            tokens = {"operator": T.operator_token(env),
                      "finance": made.stdout.strip().splitlines()[-1]}  # fmt: skip
            problems = T.check_books(
                observed, f"http://127.0.0.1:{balancer_port}", f"http://127.0.0.1:{platform_port}",
                tokens, [T.Stage("pair", acceptance) for acceptance in acceptances],
            )  # fmt: skip
        console.print("books check: " + ("OK" if not problems else "; ".join(problems)))
        return 1 if problems else 0
    finally:
        for api in apis:
            api.stop()
        topology.stop()
        server.stop()
        T.drop_vhost(vhost)


if __name__ == "__main__":
    sys.exit(main())
