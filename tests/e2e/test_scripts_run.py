"""`scripts/run`, the newcomer's first command: it checks the API's port before anything else,
installs the ./ledger shim and says so, and the "Try next" lines it prints run as printed; the
sandbox platform `ledger serve` starts is its own (a port held by another program is named,
or another port taken), and the demo's platforms point at the one actually started.

The server is given the module's database (DATABASE_URL, sandbox on) rather than the embedded
PostgreSQL, which tests/e2e/test_embedded_default.py covers: these tests stay fast."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import STARTUP_SECONDS, create_tokens, free_port, ledger_command

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "postgresql://nobody@127.0.0.1:9/none"
"""A database nothing may reach: a command that gets as far as migrating fails on it."""


def run_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return env | {"DATABASE_URL": database_url, "LEDGER_SANDBOX": "true", "COLUMNS": "80"} | extra


@contextmanager
def held(port: int) -> Iterator[None]:
    """Another program listening on `port` (if one already does, it stays taken all the same)."""
    stranger = socket.socket()
    try:
        with suppress(OSError):
            stranger.bind(("127.0.0.1", port))
            stranger.listen()
        yield
    finally:
        stranger.close()


@contextmanager
def scripts_run(env: dict[str, str], port: int) -> Iterator[tuple[str, Path, Path]]:
    """`scripts/run --port N` until healthy: (base URL, stdout file, stderr file)."""
    folder = Path(tempfile.mkdtemp(prefix="scripts-run-"))
    out, err = folder / "stdout", folder / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [str(ROOT / "scripts" / "run"), "--port", str(port)],
            cwd=ROOT, env=env, stdout=stdout, stderr=stderr, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS + 60  # scripts/setup may install first
        while True:
            if process.poll() is not None:
                pytest.fail(f"scripts/run exited {process.returncode}:\n{err.read_text()}")
            with suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"scripts/run did not serve:\n{err.read_text()}")
            time.sleep(0.2)
        yield base, out, err
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def try_next(stdout: Path) -> list[str]:
    """The command lines under "Try next" (the last line, the docs URL, is not one)."""
    text = stdout.read_text()
    assert "Try next" in text, text
    lines = text.split("Try next", 1)[1].splitlines()[1:]
    commands = [line.strip() for line in lines if line.startswith("  ")]
    assert commands[-1].endswith("/docs  shows the whole API")
    return commands[:-1]


def test_a_taken_port_is_one_line_before_anything_is_done() -> None:
    port = free_port()
    with held(port):
        run = subprocess.run(
            [str(ROOT / "scripts" / "run"), "--port", str(port)],
            cwd=ROOT, env=run_env(NOWHERE), capture_output=True, text=True, timeout=60,
        )
        serve = subprocess.run(
            [ledger_command(), "serve", "--port", str(port)],
            env=run_env(NOWHERE), capture_output=True, text=True, timeout=60,
        )
    assert run.returncode == 1
    (line,) = run.stderr.splitlines()
    found = re.fullmatch(
        rf"scripts/run: port {port} is in use by another program; pick another: "
        r"scripts/run --port (\d+)",
        line,
    )
    assert found and int(found[1]) > port, line
    assert run.stdout == "", "nothing installed, migrated or loaded"

    assert serve.returncode == 1
    (line,) = serve.stderr.splitlines()
    assert re.fullmatch(
        rf"port {port} is in use by another program; pick another: ledger serve --port \d+", line
    ), "said before the database (unreachable here) was touched"


def test_the_try_next_lines_run_as_printed_and_the_demo_follows_its_platform(
    database_url: str,
) -> None:
    assert os.access(ROOT / "ledger", os.X_OK), "the ./ledger shim"
    first_platform = free_port()
    env = run_env(database_url, LEDGER_SANDBOX_PLATFORM_PORT=str(first_platform))
    with scripts_run(env, free_port()) as (base, out, err):
        assert "the command line: ./ledger in " in err.read_text()
        commands = try_next(out)
        # `ledger` when it is on this PATH (an activated virtualenv), else the shim
        cli = "ledger" if shutil.which("ledger") else "./ledger"
        assert any(c.startswith(f"{cli} call GET /v1/channels/") for c in commands), commands
        assert any(c.startswith(f"FINANCE=$({cli} tokens create") for c in commands)
        assert all(c.startswith(("export ", f"{cli} ", "FINANCE=")) for c in commands), commands
        # pasted into a shell in the checkout, one after the other
        shell = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(commands)],
            cwd=ROOT, env=run_env(database_url), capture_output=True, text=True, timeout=180,
        )
        assert shell.returncode == 0, shell.stderr
        assert shell.stderr.count("200 OK") == 2 and "201 Created" in shell.stderr, shell.stderr
        assert '"balanced": true' in shell.stdout
        (operator,) = create_tokens(database_url, "operator")
        platforms = gateways(base, operator)
        assert set(platforms.values()) == {f"http://127.0.0.1:{first_platform}"}

    # another program on the default port: this server's platform takes the next free one,
    # and the demo's platforms move to it
    with held(8100):
        with scripts_run(run_env(database_url), free_port()) as (base, _, err):
            said = re.search(
                r"port 8100 is in use by another program: this server's sandbox video platform "
                r"takes port (\d+)",
                err.read_text(),
            )
            assert said, err.read_text()
            platform = int(said[1])
            assert set(gateways(base, operator).values()) == {f"http://127.0.0.1:{platform}"}
            ours = httpx.get(f"http://127.0.0.1:{platform}/sandbox/faults", timeout=5)
            assert ours.status_code == 200, "the sandbox platform this server started answers"

        # named explicitly, a taken port is an error, said before anything is migrated
        refused = subprocess.run(
            [ledger_command(), "serve", "--port", str(free_port())],
            env=run_env(NOWHERE, LEDGER_SANDBOX_PLATFORM_PORT="8100"),
            capture_output=True, text=True, timeout=60,
        )
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "LEDGER_SANDBOX_PLATFORM_PORT=8100 is in use by another program; the sandbox platform "
        "must be this server's own: set a free port, or unset it to have one chosen"
    ]


def gateways(base: str, operator: str) -> dict[str, str]:
    """The demo platforms' partner API addresses, by name."""
    reply = httpx.get(
        f"{base}/v1/platforms", headers={"Authorization": f"Bearer {operator}"}, timeout=10
    )
    assert reply.status_code == 200, reply.text
    return {
        p["name"]: p["gateway_url"]
        for p in reply.json()["items"]
        if p["name"] in ("iQiyi", "Tencent Video")
    }
