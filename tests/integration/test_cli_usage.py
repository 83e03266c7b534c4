"""Usage errors of the `ledger` command line: one plain line on stderr naming the command and
what is wrong (with the forms accepted where there are some), exit status 2, no traceback and
no box; nothing is connected to or recorded. Each case runs the installed console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.cli import main
from tests.integration.test_rebuild import ledger_command

pytestmark = pytest.mark.integration

NOWHERE = "postgresql://nobody@127.0.0.1:9/none"
"""A database no usage error may get as far as."""


def ledger(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "DATABASE_URL": NOWHERE,
        "LEDGER_SANDBOX": "false",
        "COLUMNS": "80",
        **env,
    }
    for name in ("LEDGER_TOKEN", "LEDGER_KEY_ID", "LEDGER_KEY_SECRET"):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [ledger_command(), *args], env=environment, capture_output=True, text=True, timeout=60
    )


CASES = [
    (
        ["export", "journal", "--from", "yesterday"],
        "ledger export: Invalid value for --from: 'yesterday' is not a date or time; give "
        "2026-12-01 (a day, from midnight UTC), 2026-12-01T09:30 (UTC) or 2026-12-01T09:30+08:00 "
        "(see ledger export --help)",
    ),
    (
        ["export", "balances", "--to", "31/12/2026"],
        "ledger export: Invalid value for --to: '31/12/2026' is not a date or time; give "
        "2026-12-01 (a day, from midnight UTC), 2026-12-01T09:30 (UTC) or 2026-12-01T09:30+08:00 "
        "(see ledger export --help)",
    ),
    (
        ["export", "ledger"],
        "ledger export: Invalid value for 'what': 'ledger' is not one of 'journal', 'balances'. "
        "(see ledger export --help)",
    ),
    (
        ["audit", "export", "--from", "last week"],
        "ledger audit export: Invalid value for --from: 'last week' is not a date or time; give "
        "2026-12-01 (a day, from midnight UTC), 2026-12-01T09:30 (UTC) or 2026-12-01T09:30+08:00 "
        "(see ledger audit export --help)",
    ),
    (["nosuch"], "ledger: No such command 'nosuch'. (see ledger --help)"),
    (
        ["tokens", "create"],
        "ledger tokens create: Missing option '--role'. Choose from: operator, finance "
        "(see ledger tokens create --help)",
    ),
    (
        ["serve", "--port", "eighty"],
        "ledger serve: Invalid value for '--port': Input should be a valid integer, unable to "
        "parse string as an integer (see ledger serve --help)",
    ),
    (
        ["call", "GET", "/v1/wallet", "--token", "t", "--key-id", "k", "--secret", "s"],
        "ledger call: Invalid value: give either --token or --key-id and --secret, not both "
        "(see ledger call --help)",
    ),
    (
        ["call", "GET", "/v1/wallet", "--key-id", "k"],
        "ledger call: Invalid value: --key-id and --secret go together (see ledger call --help)",
    ),
]


@pytest.mark.parametrize(("args", "line"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_usage_error_is_one_plain_line_and_exit_2(
    args: list[str], line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process, through the console script's own entry point (`api.cli:main`)."""
    monkeypatch.setenv("DATABASE_URL", NOWHERE)
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("LEDGER_TOKEN", "LEDGER_KEY_ID", "LEDGER_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "argv", ["ledger", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out, err = capsys.readouterr()
    assert exited.value.code == 2, err
    assert err.splitlines() == [line]
    assert out == ""


def test_the_installed_console_script_says_it_the_same_way() -> None:
    done = ledger("export", "journal", "--from", "yesterday")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [CASES[0][1]]
    assert done.stdout == ""


def test_a_checkpoint_file_that_is_missing_or_not_one_is_one_line(tmp_path: Path) -> None:
    missing = ledger("checkpoint", "verify", str(tmp_path / "close.json"))
    assert (missing.returncode, missing.stderr.splitlines()) == (
        2,
        [
            f"ledger checkpoint verify: Invalid value: {tmp_path / 'close.json'} is not a "
            "checkpoint file: No such file or directory (see ledger checkpoint verify --help)"
        ],
    )
    garbage = tmp_path / "notes.txt"
    garbage.write_text("balances: all fine\n")
    wrong = ledger("checkpoint", "verify", str(garbage))
    assert wrong.returncode == 2
    assert len(wrong.stderr.splitlines()) == 1
    assert wrong.stderr.startswith(f"ledger checkpoint verify: Invalid value: {garbage} is not")


def test_ledger_call_with_no_server_says_so_in_plain_words() -> None:
    done = ledger("call", "GET", "/health", "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "anonymous: no --token or --key-id/--secret, nor LEDGER_TOKEN or LEDGER_KEY_ID",
        "cannot reach http://127.0.0.1:9: [Errno 111] Connection refused; is `ledger serve` (or "
        "scripts/run) running there? (--base-url or LEDGER_URL)",
    ]


def test_an_unreachable_database_ends_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the start-up's retries (shortened here), one line saying why, exit 2."""
    import api.runtime.schema

    monkeypatch.setattr(api.runtime.schema, "STARTUP_RETRY_SECONDS", 0.5)
    monkeypatch.setenv("DATABASE_URL", NOWHERE)
    monkeypatch.setattr(sys, "argv", ["ledger", "migrate"])
    with pytest.raises(SystemExit) as exited:
        main()
    _, err = capsys.readouterr()
    assert exited.value.code == 2
    last = err.splitlines()[-1]
    assert last.startswith("cannot use the database: connection failed: "), err
    assert "Traceback" not in err


def test_help_is_not_an_error() -> None:
    done = ledger("export", "--help")
    assert done.returncode == 0
    assert "--from" in done.stdout
