"""The `ledger` command line for operators and finance."""

from __future__ import annotations

import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, cast

import typer
from rich.console import Console

from adapters.settings import Settings
from api.cli_support import console, database_url, one_line, tool_env
from api.merchant_settlement_cli import merchant_settlements_cli
from api.settlement_cli import settlements_cli

cli = typer.Typer(help="The membership-card ledger.", no_args_is_help=True, add_completion=False)
tokens_cli = typer.Typer(help="Bearer tokens for operator and finance.", no_args_is_help=True)
cli.add_typer(tokens_cli, name="tokens")


@cli.command()
def serve(
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    with_demo: Annotated[bool, typer.Option("--demo", help="Load the demo data first.")] = False,
) -> None:
    """Run the API (and, unless turned off, the projection runners) in this process."""
    settings = Settings()
    # The ports first, held from here on: a port in use is said before anything is migrated
    # or loaded, and the sandbox platform is this server's own, never whatever answers there.
    api_socket = bound(host, port)
    if api_socket is None:
        console.print(
            f"[red]port {port} is in use by another program; pick another: "
            f"ledger serve --port {next_free(host, port)}[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    starts_platform = settings.sandbox and settings.ledger_sandbox_platform_start
    platform_socket = sandbox_socket(settings) if starts_platform else None
    gateway = None
    if platform_socket is not None:
        gateway = f"http://127.0.0.1:{platform_socket.getsockname()[1]}"
    import uvicorn

    from api.app import create_app

    url = database_url(settings)
    if with_demo:
        from api.demo import load_demo

        load_demo(settings, url, base_url=f"http://{host}:{port}", gateway_url=gateway)
    where = "embedded PostgreSQL" if settings.embedded else "DATABASE_URL"
    console.print(
        f"ledger on http://{host}:{port} ({where}, sandbox {'on' if settings.sandbox else 'off'})"
    )
    platform = start_sandbox_platform(platform_socket) if platform_socket is not None else None
    if settings.sandbox and not starts_platform:
        console.print(
            "sandbox video platform: the one already running on "
            f"http://127.0.0.1:{settings.ledger_sandbox_platform_port} "
            "(LEDGER_SANDBOX_PLATFORM_START=false)"
        )
    # uvicorn re-raises the signal that stopped it; exiting through SystemExit instead lets the
    # clean-up run (the sandbox platform, and the embedded PostgreSQL it may have started).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        config = uvicorn.Config(
            create_app(settings, url),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,  # not printed at warning, but its line was built per request
            proxy_headers=True,
            forwarded_allow_ips=settings.ledger_trusted_proxies,
        )
        uvicorn.Server(config).run(sockets=[api_socket])
    finally:
        if platform is not None:
            platform.terminate()
            platform.wait(timeout=10)


def bound(host: str, port: int) -> socket.socket | None:
    """A socket bound to host:port as uvicorn binds one (SO_REUSEADDR), or None when another
    program holds the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        return None
    return sock


def next_free(host: str, port: int) -> int:
    """The first port above `port` nobody holds (to suggest, or to take)."""
    for candidate in range(port + 1, min(port + 500, 65536)):
        sock = bound(host, candidate)
        if sock is not None:
            sock.close()
            return candidate
    sock = bound(host, 0)
    assert sock is not None
    with sock:
        return int(sock.getsockname()[1])


def sandbox_socket(settings: Settings) -> socket.socket:
    """The sandbox platform's port, bound here and handed to its process. Taken by another
    program: an error when LEDGER_SANDBOX_PLATFORM_PORT names it, else the next free port."""
    port = settings.ledger_sandbox_platform_port
    sock = bound("127.0.0.1", port)
    if sock is not None:
        return sock
    if "ledger_sandbox_platform_port" in settings.model_fields_set:
        console.print(
            f"[red]LEDGER_SANDBOX_PLATFORM_PORT={port} is in use by another program; the sandbox "
            "platform must be this server's own: set a free port, or unset it to have one "
            "chosen[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    chosen = next_free("127.0.0.1", port)
    sock = bound("127.0.0.1", chosen)
    if sock is None:
        console.print(f"[red]no free port for the sandbox platform near {port}[/red]")
        raise typer.Exit(1)
    console.print(
        f"port {port} is in use by another program: this server's sandbox video platform "
        f"takes port {chosen}",
        soft_wrap=True,
    )
    return sock


def start_sandbox_platform(sock: socket.socket) -> subprocess.Popen[bytes]:
    """In sandbox mode the sandbox video platform runs beside the API, in its own process, on
    the socket bound here (so no other program can be taken for it)."""
    port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "api.cli",
        "sandbox-platform",
        "--port",
        str(port),
        "--fd",
        str(sock.fileno()),
    ]
    console.print(f"sandbox video platform on http://127.0.0.1:{port}")
    sock.listen(128)  # calls wait in the backlog until the platform's process takes them
    try:
        return subprocess.Popen(command, pass_fds=[sock.fileno()])
    finally:
        sock.close()


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
    callback_url: Annotated[
        str | None,
        typer.Option(help="Post order callbacks here: the ledger's /v1/platform-callbacks/{id}."),
    ] = None,
    callback_probability: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of final orders called back.")
    ] = 1.0,
    callback_delay_ms: Annotated[
        int, typer.Option(min=0, help="Delay of each callback after the outcome.")
    ] = 0,
    callback_duplicates: Annotated[
        int, typer.Option(min=0, max=100, help="Send each callback N more times.")
    ] = 0,
    callback_out_of_order: Annotated[
        bool,
        typer.Option(help="Callbacks overtake each other; a stale processing one follows."),
    ] = False,
    callback_bad_signatures: Annotated[
        int, typer.Option(min=0, help="Sign the next N callback posts with a wrong secret.")
    ] = 0,
    late_success_account: Annotated[
        list[str] | None,
        typer.Option(help="Recharges to this account fail, then succeed late (repeatable)."),
    ] = None,
    late_success_after_ms: Annotated[
        int, typer.Option(min=0, help="When such a failed order is credited after all.")
    ] = 1000,
    refund_review_ms: Annotated[
        int, typer.Option(min=0, help="How long a refund stays pending in review.")
    ] = 500,
    refund_rejection_rate: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Fraction of refunds the review rejects.")
    ] = 0.0,
    refund_callbacks: Annotated[
        bool, typer.Option(help="Call back each refund's outcome to --callback-url.")
    ] = True,
    statement_not_ready_seconds: Annotated[
        float, typer.Option(min=0.0, help="Publish a statement N s after it is first asked.")
    ] = 0.0,
    statement_drop_order: Annotated[
        list[str] | None, typer.Option(help="Leave this order off statements (repeatable).")
    ] = None,
    statement_extra_lines: Annotated[
        int, typer.Option(min=0, help="Add N lines of orders never sent to each statement.")
    ] = 0,
    statement_amount_order: Annotated[
        list[str] | None,
        typer.Option(help="Bill this order --statement-amount-delta more (repeatable)."),
    ] = None,
    statement_amount_delta: Annotated[
        int, typer.Option(help="The change to such an order's amount, in minor units.")
    ] = 100,
    statement_next_day_order: Annotated[
        list[str] | None,
        typer.Option(help="Put this order on the next day's statement (repeatable)."),
    ] = None,
    fd: Annotated[
        int | None, typer.Option(hidden=True, help="Serve on this bound socket (ledger serve).")
    ] = None,
) -> None:
    """Run the sandbox video platform (partner API, signed) in this process."""
    from adapters.sandbox.faults import Faults
    from adapters.sandbox.server import serve

    settings = Settings()
    faults = Faults(
        latency_ms=latency_ms,
        error_rate=error_rate,
        timeout_after_credit=timeout_after_credit,
        fail_accounts=tuple(fail_account or ()),
        hang_seconds=hang_seconds,
        callback_url=callback_url or None,
        callback_probability=callback_probability,
        callback_delay_ms=callback_delay_ms,
        callback_duplicates=callback_duplicates,
        callback_out_of_order=callback_out_of_order,
        callback_bad_signatures=callback_bad_signatures,
        late_success_accounts=tuple(late_success_account or ()),
        late_success_after_ms=late_success_after_ms,
        refund_review_ms=refund_review_ms,
        refund_rejection_rate=refund_rejection_rate,
        refund_callbacks=refund_callbacks,
        statement_not_ready_seconds=statement_not_ready_seconds,
        statement_drop_orders=tuple(statement_drop_order or ()),
        statement_extra_lines=statement_extra_lines,
        statement_amount_orders=tuple(statement_amount_order or ()),
        statement_amount_delta=statement_amount_delta,
        statement_next_day_orders=tuple(statement_next_day_order or ()),
    )
    if fd is None:
        console.print(f"sandbox video platform on http://{host}:{port}")
    serve(
        port,
        host,
        secret=settings.ledger_platform_secret,
        partner_id=settings.ledger_platform_partner_id,
        faults=faults,
        sock=socket.socket(fileno=fd) if fd is not None else None,
    )


@cli.command()
def worker(
    threads: Annotated[int | None, typer.Option(help="Threads (LEDGER_WORKER_THREADS).")] = None,
) -> None:
    """Run a dramatiq worker for the saga's steps and the webhooks (needs BROKER_URL)."""
    from api.runtime.heap import settle_heap
    from api.runtime.worker import Jobs, Runtime, make_broker, start_worker

    settings = Settings()
    if not settings.broker_url:
        console.print(
            "[red]BROKER_URL is not set: without a broker, `ledger serve` runs the "
            "workers in its own process.[/red]"
        )
        raise typer.Exit(2)
    url = database_url(settings)
    runtime = Runtime(settings, url)
    broker = make_broker(settings.broker_url)
    Jobs(broker, runtime)
    running = start_worker(broker, threads or settings.ledger_worker_threads)
    settle_heap()
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
def run_projections(
    feeds: Annotated[
        str | None,
        typer.Option(
            help="all, views, or sagas (the saga starter, the outbox dispatcher and the "
            "sweepers); LEDGER_PROJECTIONS_FEEDS."
        ),
    ] = None,
) -> None:
    """Keep every view, the saga starter and the outbox dispatcher up to date (one active
    runner per view across all processes; the others stand by)."""
    from api.runtime.background import Feeds, start_background
    from api.runtime.heap import settle_heap

    settings = Settings()
    chosen = feeds or settings.ledger_projections_feeds
    if chosen not in ("all", "views", "sagas"):
        console.print(f"[red]--feeds is all, views or sagas, not {chosen!r}[/red]")
        raise typer.Exit(2)
    chosen = cast(Feeds, chosen)
    url = database_url(settings)
    background = start_background(settings, url, with_worker=not settings.broker_url, feeds=chosen)
    settle_heap()
    console.print(f"running {len(background.runners)} runners; Ctrl-C stops them")
    try:
        wait_for_signal()
    finally:
        background.stop()


@projections_cli.command("status")
def projections_status(
    names: Annotated[bool, typer.Option("--names", help="Print only the view names.")] = False,
) -> None:
    """A table of every view: version, position, head, lag and state."""
    import psycopg
    from rich.table import Table

    from api.runtime.dispatcher import DISPATCHER_FEED
    from projections.catalog import VIEWS
    from projections.status import standings

    if names:
        for spec in VIEWS:
            print(spec.name)
        return
    url = database_url(Settings())
    with psycopg.connect(url, autocommit=True) as conn:
        rows = standings(conn, [DISPATCHER_FEED])
    table = Table(title="Projections")
    for column in ("view", "application", "version", "position", "head", "lag", "state", "dead"):
        table.add_column(
            column, justify="right" if column in ("position", "head", "lag") else "left"
        )
    for row in rows:
        table.add_row(
            row.name,
            row.application,
            "-" if row.version is None else str(row.version),
            str(row.position),
            str(row.head),
            str(row.lag),
            row.status,
            str(row.dead_letters),
        )
    Console().print(table)


@projections_cli.command("rebuild")
def projections_rebuild(
    name: Annotated[
        str, typer.Argument(help="The view (see `ledger projections status --names`).")
    ],
) -> None:
    """Rebuild a view blue/green: the next version from the start of the logs, then switch."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from projections.catalog import view
    from projections.rebuild import RebuildFailed, rebuild

    settings = Settings()
    url = database_url(settings)
    try:
        spec = view(name)
    except LookupError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from error
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9} ev/s"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"rebuilding {name}", total=None, rate="-")
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            rate = done / max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=done, total=total, rate=f"{rate:,.0f}")

        try:
            result = rebuild(spec, url, tool_env(settings, url), progress)
        except RebuildFailed as error:
            console.print(f"[red]rebuild stopped, the live version is untouched: {error}[/red]")
            raise typer.Exit(1) from error
    console.print(
        f"{name}: version {result.new_version} is live (was {result.old_version}); "
        f"{result.events:,} events in {result.seconds:.1f} s"
    )


@cli.command()
def verify() -> None:
    """Replay every event, check the hash chains, recompute every view and compare."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from projections.verify import verify as run_verify

    settings = Settings()
    url = database_url(settings)
    with Progress(
        TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        task = bar.add_task("verify", total=None)
        report = run_verify(
            url,
            tool_env(settings, url),
            lambda done, total: bar.update(task, completed=done, total=total),
        )
    events = ", ".join(f"{name} {count:,}" for name, count in report.events.items())
    if not report.ok:
        console.print(f"[red]DIVERGENCE: {report.divergence}[/red]")
        console.print(f"(events checked before it: {events})")
        raise typer.Exit(1)
    rows = sum(report.rows_compared.values())
    console.print(
        f"OK: {events} events, hash chains intact; {rows:,} view rows recomputed and equal "
        f"({report.seconds:.1f} s)"
    )


checkpoint_cli = typer.Typer(help="Signed checkpoints at a close.", invoke_without_command=True)
cli.add_typer(checkpoint_cli, name="checkpoint")


@checkpoint_cli.callback()
def checkpoint(
    ctx: typer.Context,
    out: Annotated[
        str | None, typer.Option(help="Write the statement here (default: stdout).")
    ] = None,
) -> None:
    """Take a signed statement: head hashes, trial balance, account balances."""
    if ctx.invoked_subcommand is not None:
        return
    import json

    from projections.checkpoint import summary, take

    settings = Settings()
    statement = take(database_url(settings), settings.secret_bytes)
    text = json.dumps(statement, indent=2, ensure_ascii=False)
    if out:
        try:
            with open(out, "w") as file:
                file.write(text + "\n")
        except OSError as error:
            raise typer.BadParameter(
                f"cannot write {out}: {error.strerror}", param_hint="--out"
            ) from None
        console.print(f"checkpoint written to {out}", highlight=False)
        console.print(summary(statement), soft_wrap=True, highlight=False)
    else:
        print(text)


@checkpoint_cli.command("verify")
def checkpoint_verify(file: Annotated[str, typer.Argument(help="A checkpoint file.")]) -> None:
    """Check a checkpoint's signature, and that the database still agrees with it."""
    import json

    from projections.checkpoint import check

    settings = Settings()
    try:
        with open(file) as handle:
            statement = json.load(handle)
        if not isinstance(statement, dict) or "signature" not in statement:
            raise ValueError("no signed statement in it")
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) else str(error)
        raise typer.BadParameter(f"{file} is not a checkpoint file: {reason}") from None
    problems = check(database_url(settings), statement, settings.secret_bytes)
    if problems:
        for problem in problems:
            console.print(f"[red]{problem}[/red]")
        raise typer.Exit(1)
    console.print(f"OK: the checkpoint of {statement['taken_at']} holds")


class Export(StrEnum):
    journal = "journal"
    balances = "balances"


@cli.command()
def export(
    what: Annotated[Export, typer.Argument(help="journal (one line per posting) or balances")],
    start: Annotated[str | None, typer.Option("--from", help="ISO date or time, inclusive")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date or time, exclusive")] = None,
) -> None:
    """Write the journal or the balances of a period as CSV to stdout."""
    import csv

    from adapters.database import open_pool
    from projections.journal import JournalReader

    since, until = moment(start, "--from"), moment(end, "--to")
    pool = open_pool(database_url(Settings()), size=2)
    writer = csv.writer(sys.stdout)
    reader = JournalReader(pool)
    try:
        if what is Export.journal:
            writer.writerow(
                [
                    "recorded_at",
                    "application",
                    "notification_id",
                    "line",
                    "account",
                    "asset",
                    "amount",
                    "kind",
                ]
            )
            for row in reader.lines(since, until):
                writer.writerow([row[0].isoformat(), *row[1:]])
        else:
            writer.writerow(["account", "asset", "opening", "debits", "credits", "closing"])
            for row in reader.balances_between(since, until):
                writer.writerow(row)
    finally:
        pool.close()


TIME_FORMS = (
    "2026-12-01 (a day, from midnight UTC), 2026-12-01T09:30 (UTC) or 2026-12-01T09:30+08:00"
)


def moment(text: str | None, option: str) -> datetime | None:
    """An option's ISO 8601 date or time; without an offset it is UTC. Anything else is a
    usage error naming the forms accepted."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        message = f"{text!r} is not a date or time; give {TIME_FORMS}"
        raise typer.BadParameter(message, param_hint=option) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def wait_for_signal() -> None:
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

    from adapters.tokens import new_token, token_hash

    url = database_url(Settings())
    token = new_token()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_tokens (id, token_hash, role) VALUES (%s, %s, %s)",
            ("tok_" + secrets.token_hex(8), token_hash(token), role.value),
        )
    console.print(f"{role.value} token created; it is shown only now:")
    print(token)


audit_cli = typer.Typer(help="The audit log: refusals and operators' token use.")
cli.add_typer(audit_cli, name="audit")
cli.add_typer(merchant_settlements_cli, name="merchant-settlements")
cli.add_typer(settlements_cli, name="settlements")


@audit_cli.command("export")
def audit_export(
    start: Annotated[str | None, typer.Option("--from", help="ISO date or time, inclusive")] = None,
    end: Annotated[str | None, typer.Option("--to", help="ISO date or time, exclusive")] = None,
    kind: Annotated[str | None, typer.Option(help="Only lines of this kind")] = None,
) -> None:
    """Write the audit log's lines (oldest first, accounts masked) as CSV to stdout."""
    from adapters.audit_log import KINDS, AuditFilter, AuditLog
    from adapters.database import open_pool

    if kind is not None and kind not in KINDS:
        raise typer.BadParameter(f"one of {', '.join(KINDS)}", param_hint="--kind")
    where = AuditFilter(kind=kind, since=moment(start, "--from"), until=moment(end, "--to"))
    pool = open_pool(database_url(Settings()), size=2)
    try:
        AuditLog(pool).export_csv(sys.stdout, where)
    finally:
        pool.close()


@cli.command()
def demo() -> None:
    """Load demo data (platforms, products, a channel tree with funds and stock)."""
    from api.demo import load_demo

    settings = Settings()
    load_demo(settings, database_url(settings))


@cli.command()
def call(
    ctx: typer.Context,
    method: Annotated[str, typer.Argument(help="GET, POST, PUT or DELETE")],
    path: Annotated[str, typer.Argument(help="e.g. /v1/channels/<id>/funds")],
    body: Annotated[str | None, typer.Option(help="JSON body")] = None,
    key_id: Annotated[
        str | None,
        typer.Option(
            "--key-id", "--key", envvar="LEDGER_KEY_ID", help="A channel's or merchant's key id."
        ),
    ] = None,
    secret: Annotated[
        str | None, typer.Option(envvar="LEDGER_KEY_SECRET", help="That key's secret.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="LEDGER_TOKEN", help="A bearer token (operator, finance, member)."),
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="default: a new one")] = None,
    base_url: Annotated[str, typer.Option(envvar="LEDGER_URL")] = "http://127.0.0.1:8000",
) -> None:
    """Send one request, signed with a key (signing v2: a fresh nonce, the Idempotency-Key
    inside the signature) or carrying a bearer token; print the reply's JSON on stdout, and on
    stderr the principal used and the status. What is given on the command line wins over the
    environment: `--token` is used even when LEDGER_KEY_ID and LEDGER_KEY_SECRET are set, and
    `--key-id`/`--secret` even when LEDGER_TOKEN is."""
    import json
    import time
    import uuid

    import httpx

    from adapters.signing import new_nonce, sign_request

    def given(name: str) -> bool:
        """On the command line, not from the environment (compared by name: typer carries
        its own copy of click's ParameterSource)."""
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    if given("token") and (given("key_id") or given("secret")):
        raise typer.BadParameter("give either --token or --key-id and --secret, not both")
    if given("key_id") != given("secret"):
        raise typer.BadParameter("--key-id and --secret go together")
    if given("token"):
        use_key = False
    elif given("key_id"):
        use_key = True
    else:
        use_key = bool(key_id and secret)
    method = method.upper()
    content = body.encode() if body else b""
    headers = {"Content-Type": "application/json"}
    if idempotency_key or method == "POST":
        headers["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
    if use_key and key_id and secret:
        timestamp, nonce = str(int(time.time())), new_nonce()
        signature = sign_request(
            secret, method, path, timestamp, nonce, headers.get("Idempotency-Key", ""), content
        )
        headers |= {
            "X-Key-Id": key_id,
            "X-Timestamp": timestamp,
            "X-Nonce": nonce,
            "X-Signature": signature,
        }
        origin = "--key-id" if given("key_id") else "LEDGER_KEY_ID"
        principal = f"signed as key {key_id} (from {origin})"
    elif token:
        headers["Authorization"] = f"Bearer {token}"
        principal = "bearer token from " + ("--token" if given("token") else "LEDGER_TOKEN")
    else:
        principal = "anonymous: no --token or --key-id/--secret, nor LEDGER_TOKEN or LEDGER_KEY_ID"
    console.print(principal, soft_wrap=True, highlight=False, markup=False)
    try:
        reply = httpx.request(method, base_url + path, content=content, headers=headers)
    except httpx.TransportError as error:
        console.print(
            f"[red]cannot reach {base_url}: {one_line(str(error)) or type(error).__name__}; "
            "is `ledger serve` (or scripts/run) running there? (--base-url or LEDGER_URL)[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(1) from error
    console.print(f"{reply.status_code} {reply.reason_phrase}", highlight=False)
    try:
        print(json.dumps(reply.json(), indent=2, ensure_ascii=False))
    except ValueError:
        print(reply.text)
    if reply.status_code >= 400:
        raise typer.Exit(1)


def main() -> None:
    """The console script: a usage error (a bad option value, a missing argument, an unknown
    command) is one plain line on stderr and exit status 2, never a traceback or a box."""
    # typer carries its own copy of click; its exceptions are not the `click` package's.
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

    command = typer.main.get_command(cli)
    try:
        status = command.main(prog_name="ledger", standalone_mode=False)
    except NoArgsIsHelpError as error:
        print(error.ctx.get_help(), file=sys.stderr)
        status = 2
    except UsageError as error:
        where = error.ctx.command_path if error.ctx is not None else "ledger"
        message = one_line(error.format_message()).replace("Value error, ", "")
        print(f"{where}: {message} (see {where} --help)", file=sys.stderr)
        status = 2
    except ClickException as error:
        print(f"ledger: {one_line(error.format_message())}", file=sys.stderr)
        status = error.exit_code
    except typer.Abort:
        print("ledger: stopped", file=sys.stderr)
        status = 130
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
