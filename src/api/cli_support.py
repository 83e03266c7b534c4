"""What every `ledger` command shares: the console it talks on, the database it works on
(the configured server, or the embedded one, migrated) and the small pools operator tools use."""

from __future__ import annotations

import typer
from rich.console import Console

from adapters.settings import Settings

console = Console(stderr=True)


def database_url(settings: Settings) -> str:
    """The configured server, or the embedded one (started on demand), migrated."""
    import psycopg

    from adapters import embedded
    from api.runtime.schema import apply_migrations

    if settings.database_url:
        url = settings.database_url
    else:
        try:
            url = embedded.start(settings.ledger_data_dir)
        except embedded.EmbeddedPostgresUnavailable as error:
            console.print(f"[red]{error}[/red]")
            raise typer.Exit(2) from error
    try:
        applied = apply_migrations(url)
    except psycopg.OperationalError as error:
        message = one_line(str(error).splitlines()[0] if str(error) else repr(error))
        console.print(f"[red]cannot use the database: {message}[/red]", soft_wrap=True)
        raise typer.Exit(2) from error
    if applied:
        console.print(f"applied {applied} migration(s)")
    return url


def tool_env(settings: Settings, url: str) -> dict[str, str]:
    """Operator tools keep to a connection or two per application."""
    from adapters.database import application_env

    return application_env(settings, url, POSTGRES_POOL_SIZE="1", POSTGRES_MAX_OVERFLOW="2")


def one_line(text: str) -> str:
    return " ".join(text.split())
