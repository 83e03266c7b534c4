"""The `ledger` command line for operators and finance."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console

from adapters.settings import Settings

cli = typer.Typer(help="The membership-card ledger.", no_args_is_help=True, add_completion=False)
tokens_cli = typer.Typer(help="Bearer tokens for operator and finance.", no_args_is_help=True)
cli.add_typer(tokens_cli, name="tokens")
console = Console(stderr=True)


def database_url(settings: Settings) -> str:
    """The configured server, or the embedded one (started on demand), migrated."""
    from adapters import embedded
    from adapters.migrations import apply_migrations

    if settings.database_url:
        url = settings.database_url
    else:
        try:
            url = embedded.start(settings.ledger_data_dir)
        except embedded.EmbeddedPostgresUnavailable as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from error
    applied = apply_migrations(url)
    if applied:
        console.print(f"applied {applied} migration(s)")
    return url


@cli.command()
def serve(
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    with_demo: Annotated[bool, typer.Option("--demo", help="Load the demo data first.")] = False,
) -> None:
    """Run the API (and, unless turned off, the projection runners) in this process."""
    import uvicorn

    from api.app import create_app

    settings = Settings()
    url = database_url(settings)
    if with_demo:
        from api.demo import load_demo

        load_demo(settings, url, base_url=f"http://{host}:{port}")
    where = "embedded PostgreSQL" if settings.embedded else "DATABASE_URL"
    console.print(
        f"ledger on http://{host}:{port} ({where}, sandbox {'on' if settings.sandbox else 'off'})"
    )
    platform = start_sandbox_platform(settings) if settings.sandbox else None
    try:
        uvicorn.run(create_app(settings, url), host=host, port=port, log_level="warning")
    finally:
        if platform is not None:
            platform.terminate()
            platform.wait(timeout=10)


def start_sandbox_platform(settings: Settings) -> subprocess.Popen[bytes] | None:
    """In sandbox mode the sandbox video platform runs beside the API, in its own process."""
    port = settings.ledger_sandbox_platform_port
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            console.print(f"a sandbox platform already answers on port {port}; using it")
            return None
    command = [sys.executable, "-m", "api.cli", "sandbox-platform", "--port", str(port)]
    console.print(f"sandbox video platform on http://127.0.0.1:{port}")
    return subprocess.Popen(command)


@cli.command("sandbox-platform")
def sandbox_platform(
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8100,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    latency_ms: Annotated[int, typer.Option(min=0, help="Delay before each answer.")] = 0,
    error_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of requests answered 503.")
    ] = 0.0,
    timeout_after_credit: Annotated[
        int, typer.Option(min=0, help="The next N recharges credit, then hang.")
    ] = 0,
    hang_seconds: Annotated[
        float, typer.Option(min=0.001, help="How long such a recharge hangs.")
    ] = 10.0,
    fail_account: Annotated[
        list[str] | None, typer.Option(help="An account whose recharges fail (repeatable).")
    ] = None,
) -> None:
    """Run the sandbox video platform (partner API, signed) in this process."""
    from adapters.sandbox_platform import Faults, serve

    settings = Settings()
    faults = Faults(
        latency_ms=latency_ms,
        error_rate=error_rate,
        timeout_after_credit=timeout_after_credit,
        fail_accounts=tuple(fail_account or ()),
        hang_seconds=hang_seconds,
    )
    console.print(f"sandbox video platform on http://{host}:{port}")
    serve(
        port,
        host,
        secret=settings.ledger_platform_secret,
        partner_id=settings.ledger_platform_partner_id,
        faults=faults,
    )


@cli.command()
def worker(
    threads: Annotated[int | None, typer.Option(help="Threads (LEDGER_WORKER_THREADS).")] = None,
) -> None:
    """Run a dramatiq worker for the saga's steps and the webhooks (needs BROKER_URL)."""
    from adapters.jobs import Jobs, Runtime, make_broker, start_worker

    settings = Settings()
    if not settings.broker_url:
        console.print("[red]BROKER_URL is not set: without a broker, `ledger serve` runs the "
                      "workers in its own process.[/red]")
        raise typer.Exit(2)
    url = database_url(settings)
    runtime = Runtime(settings, url)
    broker = make_broker(settings.broker_url)
    Jobs(broker, runtime)
    running = start_worker(broker, threads or settings.ledger_worker_threads)
    console.print(f"worker on {settings.broker_url.split('@')[-1]}; Ctrl-C stops it")
    try:
        wait_for_signal()
    finally:
        running.stop(timeout=10_000)
        broker.close()
        runtime.close()


projections_cli = typer.Typer(help="Projection runners: run, status, rebuild.")
cli.add_typer(projections_cli, name="projections")


@projections_cli.command("run")
def run_projections() -> None:
    """Keep every view, the saga starter and the outbox dispatcher up to date (one active
    runner per view across all processes; the others stand by)."""
    from adapters.background import start_background

    settings = Settings()
    url = database_url(settings)
    background = start_background(settings, url, with_worker=not settings.broker_url)
    console.print(f"running {len(background.runners)} runners; Ctrl-C stops them")
    try:
        wait_for_signal()
    finally:
        background.stop()


def wait_for_signal() -> None:
    import signal
    import threading

    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    stop.wait()


@cli.command()
def migrate() -> None:
    """Apply the schema migrations."""
    database_url(Settings())


class Role(StrEnum):
    operator = "operator"
    finance = "finance"


@tokens_cli.command("create")
def create_token(role: Annotated[Role, typer.Option(help="operator or finance")]) -> None:
    """Create a bearer token; it is printed once, as the last line, and stored hashed."""
    import psycopg

    from api.auth import new_token, token_hash

    url = database_url(Settings())
    token = new_token()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_tokens (id, token_hash, role) VALUES (%s, %s, %s)",
            ("tok_" + secrets.token_hex(8), token_hash(token), role.value),
        )
    console.print(f"{role.value} token created; it is shown only now:")
    print(token)


@cli.command()
def demo() -> None:
    """Load demo data (platforms, products, a channel tree with funds and stock)."""
    from api.demo import load_demo

    settings = Settings()
    load_demo(settings, database_url(settings))


@cli.command()
def call(
    method: Annotated[str, typer.Argument(help="GET, POST, PUT or DELETE")],
    path: Annotated[str, typer.Argument(help="e.g. /v1/channels/<id>/funds")],
    body: Annotated[str | None, typer.Option(help="JSON body")] = None,
    key_id: Annotated[str | None, typer.Option(envvar="LEDGER_KEY_ID")] = None,
    secret: Annotated[str | None, typer.Option(envvar="LEDGER_KEY_SECRET")] = None,
    token: Annotated[str | None, typer.Option(envvar="LEDGER_TOKEN")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="default: a new one")] = None,
    base_url: Annotated[str, typer.Option(envvar="LEDGER_URL")] = "http://127.0.0.1:8000",
) -> None:
    """Send one request, signed with a channel key or carrying a bearer token; print the reply."""
    import json
    import time
    import uuid

    import httpx

    from api.auth import sign

    content = body.encode() if body else b""
    headers = {"Content-Type": "application/json"}
    if method.upper() == "POST":
        headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
    if key_id and secret:
        timestamp = str(int(time.time()))
        headers |= {
            "X-Key-Id": key_id,
            "X-Timestamp": timestamp,
            "X-Signature": sign(secret, method, path, timestamp, content),
        }
    elif token:
        headers["Authorization"] = f"Bearer {token}"
    reply = httpx.request(method.upper(), base_url + path, content=content, headers=headers)
    console.print(f"{reply.status_code} {reply.reason_phrase}")
    try:
        print(json.dumps(reply.json(), indent=2, ensure_ascii=False))
    except ValueError:
        print(reply.text)
    if reply.status_code >= 400:
        raise typer.Exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
